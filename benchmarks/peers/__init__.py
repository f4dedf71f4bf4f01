"""What a user would otherwise copy: four tutorial set-ups, ported plainly to PyTorch.

Each peer keeps its tutorial's networks, loss, optimizer and batch size; only the data path
is ours (the whole split in memory, as for the project's own runs), which can only make the
peers faster. Every peer has the same small surface, used by the benchmarks:

    peer = PEERS["tf-dcgan"](seed=0)
    peer.train_step(x0)              # x0: (B, 1, 28, 28) in [-1, 1]; returns the losses
    peer.sample(n, generator)        # (n, 1, 28, 28) in [-1, 1]
    peer.networks                    # {"generator": ..., ...} for parameters and FLOPs
"""

from __future__ import annotations

from peers.diffusers_ddpm import DiffusersDDPM
from peers.keras_vae import KerasVAE
from peers.mlp_gan import MLPGAN
from peers.tf_dcgan import TFTutorialDCGAN

PEERS = {
    "tf-dcgan": TFTutorialDCGAN,
    "mlp-gan": MLPGAN,
    "keras-vae": KerasVAE,
    "diffusers-ddpm": DiffusersDDPM,
}
