"""Denoisers split by noise level: one network per interval of timesteps.

eDiff-I (Balaji et al., arXiv 2211.01324) trains one denoiser, then splits it into experts
for high and low noise, each fine-tuned on its own interval: more weights, the same FLOPs
per call. A few-step student calls its network at K fixed timesteps only, so K experts
(one per call) give it K times the capacity at no cost in sampling time.
"""

from __future__ import annotations

import torch
from torch import nn


class TimestepExperts(nn.Module):
    """`experts[k]` denoises the timesteps in (starts[k+1], starts[k]] (the last one, all
    below its start): `starts` descending, the first the highest timestep served.

    Each expert is a denoiser with the signature `(x_t, t, labels)`; a batch with mixed
    timesteps is split among them and put back together in its order.
    """

    def __init__(self, experts: list[nn.Module], starts: list[int]) -> None:
        super().__init__()
        if len(experts) != len(starts) or not experts:
            raise ValueError(f"{len(experts)} experts for {len(starts)} interval starts")
        if any(a <= b for a, b in zip(starts, starts[1:], strict=False)):
            raise ValueError(f"interval starts must descend, got {starts}")
        self.experts = nn.ModuleList(experts)
        self.starts = list(starts)
        # the starts below the first, ascending: torch.bucketize's boundaries
        self.register_buffer("boundaries", torch.tensor(starts[:0:-1]), persistent=False)

    @property
    def null_label(self) -> int:
        return self.experts[0].null_label

    def served(self, k: int) -> tuple[int, int]:
        """The timesteps expert k serves, lowest and highest (the first: all above too)."""
        low = self.starts[k + 1] + 1 if k + 1 < len(self.starts) else 0
        return low, self.starts[k]

    def expert_index(self, t: torch.Tensor) -> torch.Tensor:
        """Which expert serves each timestep of `t`."""
        below = torch.bucketize(t, self.boundaries.to(t.device))  # boundaries under t
        return len(self.experts) - 1 - below

    def forward(
        self, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        index = self.expert_index(t)
        if torch.jit.is_tracing() or bool((index == index[0]).all()):
            # one expert for the whole batch (every sampling call); an ONNX trace of the
            # unrolled sampler bakes the expert of each of its constant timesteps
            return self.experts[int(index[0])](x_t, t, labels)
        out = None
        for k in index.unique().tolist():
            rows = (index == k).nonzero().squeeze(1)
            part = self.experts[k](x_t[rows], t[rows], None if labels is None else labels[rows])
            if out is None:
                out = part.new_empty((x_t.shape[0], *part.shape[1:]))
            out[rows] = part
        return out
