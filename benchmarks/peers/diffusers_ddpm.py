"""Hugging Face diffusers' "train a diffusion model" tutorial, sized down for a CPU.

`UNet2DModel` at 32x32 (Fashion-MNIST padded by 2 pixels of background), channels 16/32/64,
one layer per block, attention at the middle level: 0.65M parameters. `DDPMScheduler` with
1000 linear-beta steps, epsilon prediction and MSE; AdamW 1e-4 with 500 warm-up steps;
batch 64. Sampling with `DDIMScheduler` (50 steps unless asked otherwise), as the tutorial
suggests for speed. Needs the benchmark-only extra: `pip install -e '.[bench]'`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

PAD = 2  # 28 -> 32, the power-of-two size UNet2DModel's three levels need
WARMUP_STEPS = 500


class DiffusersDDPM:
    batch_size = 64

    def __init__(self, seed: int = 0) -> None:
        from diffusers import DDPMScheduler, UNet2DModel

        torch.manual_seed(seed)
        self.unet = UNet2DModel(
            sample_size=32,
            in_channels=1,
            out_channels=1,
            layers_per_block=1,
            block_out_channels=(16, 32, 64),
            norm_num_groups=8,
            down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        )
        self.scheduler = DDPMScheduler(num_train_timesteps=1000)
        self.networks = {"unet": self.unet}
        self.optimizer = torch.optim.AdamW(self.unet.parameters(), lr=1e-4)
        self.warmup = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: min(1.0, (step + 1) / WARMUP_STEPS)
        )

    def train_step(self, x0: torch.Tensor) -> dict[str, float]:
        x0 = F.pad(x0, (PAD,) * 4, value=-1.0)
        noise = torch.randn_like(x0)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (x0.shape[0],))
        predicted = self.unet(self.scheduler.add_noise(x0, noise, t), t).sample
        loss = F.mse_loss(predicted, noise)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.warmup.step()
        return {"loss": loss.item()}

    @torch.no_grad()
    def sample(
        self,
        num_samples: int,
        generator: torch.Generator,
        *,
        num_steps: int = 50,
        sampler: str = "ddim",
    ) -> torch.Tensor:
        from diffusers import DDIMScheduler, DDPMScheduler

        kind = DDIMScheduler if sampler == "ddim" else DDPMScheduler
        scheduler = kind.from_config(self.scheduler.config)
        scheduler.set_timesteps(num_steps)
        self.unet.eval()
        chunks = []
        for count in [min(250, num_samples - i) for i in range(0, num_samples, 250)]:
            x = torch.randn(count, 1, 32, 32, generator=generator)
            for t in scheduler.timesteps:
                x = scheduler.step(self.unet(x, t).sample, t, x, generator=generator).prev_sample
            chunks.append(x[:, :, PAD:-PAD, PAD:-PAD].clamp(-1, 1))
        self.unet.train()
        return torch.cat(chunks)
