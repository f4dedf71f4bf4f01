"""Where the networks run: picking the device (`train.device`, `--device`) and compiling a
family's networks with `torch.compile` (`train.compile`), falling back to eager execution
when no working compiler is found. Used by training, sampling, `synth` and the report."""

from __future__ import annotations

import shutil
import sys
from typing import Protocol

import torch
from tqdm import tqdm

from fashiongen.errors import ConfigError


class Compilable(Protocol):
    """What `compile_networks` needs of a family (`models.base.Family` has it); a protocol, so
    this ground-floor module does not import the families above it."""

    def compile_networks(self) -> list[str]: ...


def select_device(name: str) -> torch.device:
    """`auto` picks CUDA, then Apple MPS, then the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is 'cuda' but no CUDA device is available")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("train.device is 'mps' but MPS is not available")
    return torch.device(name)


def compile_networks(model: Compilable, device: torch.device, *, announce: bool = True) -> None:
    """`train.compile`: compile the family's networks in place, or say why not and train
    eagerly. A tiny function is compiled (forward and backward) first, so a missing or broken
    C++ compiler (inductor needs one for CPU code) is a warning, not a failed run; a network
    whose own forward fails to compile later runs eagerly too (dynamo's suppress_errors)."""
    problem = None
    if device.type == "cpu" and not any(shutil.which(c) for c in ("c++", "g++", "clang++")):
        problem = "no C++ compiler was found"
    else:
        try:
            probe = torch.ones(4, device=device, requires_grad=True)
            torch.compile(lambda x: (x.sin() * 2).sum())(probe).backward()
        except Exception as error:  # noqa: BLE001 - any compiler failure means: run eagerly
            problem = f"compiling failed ({str(error).strip().splitlines()[0][:160]})"
    if problem:
        if announce:
            tqdm.write(
                f"warning: train.compile: {problem}; training without compiling", file=sys.stderr
            )
        return
    torch._dynamo.config.suppress_errors = True
    # Compile afresh: shapes an earlier run in this process saw would otherwise make this one
    # compile dynamic-shape kernels, which round differently (the same seed, other bytes).
    torch._dynamo.reset()
    model.compile_networks()  # quietly: stderr stays for warnings and the one error line
