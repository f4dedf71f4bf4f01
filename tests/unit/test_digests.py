"""`fashiongen.digests`: the one tensor hasher (checkpoints, distributed checks, ONNX names)."""

from __future__ import annotations

import torch

from fashiongen.digests import state_digest, tensors_digest


def test_tensors_digest_sees_names_dtypes_shapes_and_bits_not_order():
    a = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.zeros(0)}
    assert tensors_digest(a) == tensors_digest(dict(reversed(list(a.items()))))
    changed = [
        {**a, "w2": a["w"]},  # an extra name
        {**a, "w": a["w"].double()},
        {**a, "w": a["w"].reshape(3, 2)},
        {
            **a,
            "w": a["w"]
            .clone()
            .index_put_((torch.tensor([0]), torch.tensor([0])), torch.tensor(-0.0)),
        },  # 0.0 -> -0.0: one bit
    ]
    assert len({tensors_digest(a), *map(tensors_digest, changed)}) == 1 + len(changed)


def test_state_digest_covers_nested_values():
    state = {"step": 3, "opt": [{"lr": 0.1, "m": torch.ones(2)}], "rng": (1, 2)}
    assert state_digest(state) == state_digest(
        {"step": 3, "opt": [{"lr": 0.1, "m": torch.ones(2)}], "rng": (1, 2)}
    )
    assert state_digest(state) != state_digest({**state, "step": 4})
    assert state_digest(state) != state_digest(
        {**state, "opt": [{"lr": 0.1, "m": torch.ones(2).double()}]}
    )
