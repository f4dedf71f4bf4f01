"""Test helper for test_distributed.py: deterministic families and a torchrun worker.

The deterministic families draw their noise from each image itself (a fixed projection of its
pixels), not from an RNG, and have no batch norm or dropout: a batch split across processes
then gets exactly the noise it would get whole, so N-process training must equal
single-process training up to float rounding. `det_gan` exercises the GAN pattern (D twice,
frozen during G's backward, two optimizers); `det_ddpm` exercises gradient clipping between
`backward()` and `step()` (at a norm low enough to be active) and logs the pre-clipping
norm as `grad_norm`.

Run as a script under torchrun, it is `fashiongen train` with probes:
    torchrun --nproc-per-node 2 dist_worker.py REPORT_DIR RUN_DIR_ARGS... [--next ARGS...]
Each `--next`-separated argument list is one `fashiongen train` command, all in one process
group that the worker initialises (so `train` finds it already up). For each run, every rank
writes REPORT_DIR/<run>.rank<R>.json: the SHA-256 of its final model state and the
filesystem changes it made under the run folder (seen by an audit hook).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from fashiongen.models.adversarial import adversarial_step
from fashiongen.models.base import Batch
from fashiongen.models.ddpm import DDPM, DDPMConfig
from fashiongen.models.gan import GAN, GANConfig

PROJECTION_SEED = 1234
MAX_GRAD_NORM = 0.25  # below the gradient norms seen here, so clipping always acts


def image_noise(x0: torch.Tensor, dim: int) -> torch.Tensor:
    """(B, dim) standardised noise that is a function of each image alone."""
    gen = torch.Generator().manual_seed(PROJECTION_SEED)
    projection = torch.randn(x0[0].numel(), dim, generator=gen).to(x0.device)
    v = x0.flatten(1) @ projection
    return (v - v.mean(1, keepdim=True)) / v.std(1, keepdim=True)


@dataclass(frozen=True)
class DetGANConfig(GANConfig):
    name: str = "det_gan"
    use_batchnorm: bool = False
    dropout: float = 0.0


class DetGAN(GAN):
    Config = DetGANConfig

    def train_step(
        self, batch: Batch, optimizers: dict[str, torch.optim.Optimizer]
    ) -> dict[str, float]:
        x0, labels = batch
        return adversarial_step(
            self.generator,
            self.discriminator,
            x0,
            self.batch_labels(labels),
            image_noise(x0, self.config.latent_dim),
            optimizers,
        )


@dataclass(frozen=True)
class DetDDPMConfig(DDPMConfig):
    name: str = "det_ddpm"
    cond_drop_prob: float = 0.0


class DetDDPM(DDPM):
    Config = DetDDPMConfig

    def train_step(
        self, batch: Batch, optimizers: dict[str, torch.optim.Optimizer]
    ) -> dict[str, float]:
        x0, _ = batch
        pixels = ((x0 + 1) * 127.5).round().long().flatten(1).sum(1)  # exact integer hash
        t = pixels % (self.max_timestep + 1)
        eps = image_noise(x0, x0[0].numel()).view_as(x0)
        x_t = self.schedule.q_sample(x0, t, eps)
        loss = F.mse_loss(
            self.net(x_t, t, None), self.schedule.target(x0, eps, t, self.config.prediction)
        )
        optimizer = optimizers["net"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.net.parameters(), MAX_GRAD_NORM)
        optimizer.step()
        return {"loss": loss.item(), "grad_norm": grad_norm.item()}


@dataclass(frozen=True)
class DivergingGANConfig(DetGANConfig):
    name: str = "diverging_gan"


class DivergingGAN(DetGAN):
    """Rank 1 nudges G every DIVERGE_EVERY_N_STEPS steps, like a family decision taken on
    local statistics (D reversion): the loop must put rank 0's parameters back."""

    Config = DivergingGANConfig
    DIVERGE_EVERY_N_STEPS = 3

    def train_step(
        self, batch: Batch, optimizers: dict[str, torch.optim.Optimizer]
    ) -> dict[str, float]:
        import torch.distributed as dist

        losses = super().train_step(batch, optimizers)
        self.num_calls = getattr(self, "num_calls", 0) + 1
        if (
            dist.is_initialized()
            and dist.get_rank() == 1
            and self.num_calls % self.DIVERGE_EVERY_N_STEPS == 0
        ):
            with torch.no_grad():
                next(self.generator.parameters()).add_(1e-3)
        return losses


@dataclass(frozen=True)
class FlakyGANConfig(DetGANConfig):
    name: str = "flaky_gan"


class FlakyGAN(DetGAN):
    """Rank 1 alone reports a non-finite loss at its NAN_AT_CALL-th step: every rank must
    roll back together."""

    Config = FlakyGANConfig
    NAN_AT_CALL = 7

    def train_step(
        self, batch: Batch, optimizers: dict[str, torch.optim.Optimizer]
    ) -> dict[str, float]:
        import torch.distributed as dist

        losses = super().train_step(batch, optimizers)
        self.num_calls = getattr(self, "num_calls", 0) + 1
        if dist.is_initialized() and dist.get_rank() == 1 and self.num_calls == self.NAN_AT_CALL:
            losses["g_loss"] = float("nan")
        return losses


DET_FAMILIES = {"det_gan": DetGAN, "det_ddpm": DetDDPM}
TEST_FAMILIES = {**DET_FAMILIES, "diverging_gan": DivergingGAN, "flaky_gan": FlakyGAN}


# ---------------------------------------------------------------- the torchrun worker


def _is_write(event: str, args: tuple) -> str | None:
    """The path an audit event changes, if it is a filesystem change."""
    if event == "open":
        path, mode, flags = args
        writes = (mode is not None and any(c in mode for c in "wax+")) or (
            flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
        )
        return path if writes and isinstance(path, str | os.PathLike) else None
    if event in (
        "os.mkdir",
        "os.remove",
        "os.rmdir",
        "os.rename",
        "os.truncate",
        "shutil.rmtree",
        "shutil.move",
    ):
        return args[0] if isinstance(args[0], str | os.PathLike) else None
    if event in ("tempfile.mkstemp", "tempfile.mkdtemp"):
        return args[0]
    return None


def main(argv: list[str]) -> int:
    import torch.distributed as dist

    from fashiongen.cli import main as cli_main
    from fashiongen.digests import tensors_digest
    from fashiongen.models import MODELS
    from fashiongen.training import loop  # where the loop builds its model

    MODELS.update(TEST_FAMILIES)
    report_dir = Path(argv[0])
    runs: list[list[str]] = [[]]
    for arg in argv[1:]:
        if arg == "--next":
            runs.append([])
        else:
            runs[-1].append(arg)

    built: list[torch.nn.Module] = []
    build_model = loop.build_model
    loop.build_model = lambda *a, **k: built.append(build_model(*a, **k)) or built[-1]
    changes: list[str] = []
    watched: list[str] = []

    def audit(event: str, args: tuple) -> None:
        path = _is_write(event, args) if watched else None
        if path is not None and os.path.abspath(os.fspath(path)).startswith(watched[0]):
            changes.append(f"{event} {os.fspath(path)}")

    sys.addaudithook(audit)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    for run in runs:
        out = Path(run[run.index("--out") + 1]).resolve()
        watched[:] = [str(out)]
        changes.clear()
        code = cli_main(["train", *run])
        watched.clear()
        report = {
            "exit_code": code,
            "state_sha256": tensors_digest(built[-1].state_dict()),
            "changes": list(changes),
        }
        (report_dir / f"{out.name}.rank{rank}.json").write_text(json.dumps(report))
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
