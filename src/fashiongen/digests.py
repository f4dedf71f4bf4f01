"""SHA-256 digests of tensors and training states: the one hasher of the package.

`tensors_digest` hashes named tensors (names, dtypes, shapes and raw bytes, in sorted name
order), so two digests are equal exactly when the tensors are bit-identical; checkpoints
store it in their header, distributed training compares it across ranks, and the ONNX
export names its cached files by it. `state_digest` hashes a whole training state (nested
dicts, lists, tensors and plain values) for the checksum inside `state.pt`.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 hex digest of named tensors, in sorted name order."""
    digest = hashlib.sha256()
    for key in sorted(tensors):
        _update(digest, key)
        _update(digest, tensors[key])
    return digest.hexdigest()


def state_digest(state: Any) -> str:
    """SHA-256 hex digest of a training state: nested dicts, lists, tensors, plain values."""
    digest = hashlib.sha256()
    _update(digest, state)
    return digest.hexdigest()


def _update(digest: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        digest.update(f"T{t.dtype}{tuple(t.shape)};".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, dict):
        digest.update(f"D{len(value)};".encode())
        for k, v in value.items():  # insertion order, which pickling keeps
            _update(digest, k)
            _update(digest, v)
    elif isinstance(value, list | tuple):
        digest.update(f"L{len(value)};".encode())
        for v in value:
            _update(digest, v)
    else:
        text = repr(value)
        digest.update(f"{type(value).__name__}{len(text)}:{text};".encode())
