"""Data-parallel training across processes with `torch.distributed` (under `torchrun`).

`torchrun --nproc-per-node N -m fashiongen train ...` starts N copies of the training loop.
`setup` reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
MASTER_ADDR/PORT) and, when WORLD_SIZE > 1, joins the process group: gloo on the CPU, nccl
on CUDA (one GPU per process, `cuda:LOCAL_RANK`). Without torchrun, or with one process,
nothing is initialised and the loop runs exactly as it does single-process.

How the replicas stay one model (`ReplicaSync`), the same maths as
`torch.nn.parallel.DistributedDataParallel` but without its bucketed overlap of
communication with the backward pass:
- Every rank starts from rank 0's parameters and buffers (broadcast once).
- Gradients are averaged when each backward pass ends: a post-accumulate-grad hook on every
  parameter an optimizer owns marks it ready and queues one autograd final callback (the
  engine's `queue_callback`, private API that DDP and FSDP use the same way), which
  flattens the ready gradients into one buffer, all-reduces it (SUM) and divides by the world
  size. Families own their optimizers and call sub-networks several times per step (a GAN's
  D twice, frozen during G's backward), which DDP's reducer cannot follow; per-backward
  averaging can, and because it happens inside `backward()`, anything a family does between
  `backward()` and `optimizer.step()` (DDPM's `clip_grad_norm_`) sees the global gradient,
  as in single-process training. Averaging is linear, so several backward passes
  accumulating into one `.grad` before a step are averaged correctly too. Requirement, as
  for DDP without `find_unused_parameters`: in each backward pass, a parameter gets a
  gradient on every rank or on none.
- State no optimizer owns (BatchNorm running statistics, the D-reversion controller's
  counters and snapshot, a VAE's step counter) is broadcast from rank 0 after every step, as
  DDP broadcasts buffers; running statistics are therefore those of rank 0's shard, and in
  training BatchNorm normalises by each rank's local batch (DDP without SyncBatchNorm).
- Per-step agreement: one small all-gather of [parameter checksum, weights finite,
  losses...] lets every rank roll back together after a non-finite loss or weight on any
  rank, log losses averaged over ranks, and notice replicas whose parameters diverged (a
  family decision taken on local statistics, such as D reversion: rank 0's decision wins)
  and copy rank 0's over them; one all-reduce (MAX) of [stop requested, time budget spent]
  makes all ranks stop at the same step. Checkpoints are read by rank 0 alone and sent to
  the others (`run_on_main`).
- Before every checkpoint the replicas' full states are hashed and compared: they must be
  bit-identical.
Every rank draws its own noise (its global RNG is seeded from the run seed and its rank) and
sees its slice of each global batch of one shared permutation, so the union of the ranks'
slices is the single-process batch (Goyal et al., arXiv 1706.02677, for large global batches).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from fashiongen.digests import tensors_digest
from fashiongen.errors import ConfigError, FashiongenError

T = TypeVar("T")


# ---------------------------------------------------------------- the process group


@dataclass(frozen=True)
class DistContext:
    """Where this process stands among the training processes (world size 1 = alone)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False  # whether `setup` initialised the process group (and tears it down)

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and prints."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    def check_batch_size(self, batch_size: int) -> None:
        if batch_size % self.world_size:
            raise ConfigError(
                f"train.batch_size={batch_size} is the global batch: it must be "
                f"divisible by the number of processes ({self.world_size})"
            )

    def shard(self, batch_index: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous slice of a global batch's indices (B,) -> (B / world_size,)."""
        if not self.is_distributed:
            return batch_index
        per_rank = len(batch_index) // self.world_size
        return batch_index[self.rank * per_rank : (self.rank + 1) * per_rank]

    def default_num_threads(self) -> int | None:
        """CPU threads per process when train.num_threads is 0: the cores shared out among
        this node's processes (None single-process: leave torch's default)."""
        if not self.is_distributed:
            return None
        return max(1, available_cpus() // self.local_world_size)

    def barrier(self) -> None:
        if self.is_distributed:
            dist.barrier(**self._device_ids())

    def _device_ids(self) -> dict[str, Any]:
        return {"device_ids": [self.device.index]} if self.device.type == "cuda" else {}

    def broadcast_object(self, obj: T) -> T:
        """Rank 0's `obj` on every rank (pickled; CPU tensors travel too)."""
        if not self.is_distributed:
            return obj
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_gather_object(self, obj: T) -> list[T]:
        """Every rank's `obj`, in rank order."""
        if not self.is_distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def run_on_main(self, fn: Callable[[], T]) -> T:
        """Run `fn` on rank 0 only and give every rank its result, or raise its user error
        (a `FashiongenError`) on every rank. Doubles as a barrier."""
        if not self.is_distributed:
            return fn()
        outcome: tuple[str, Any] = ("ok", None)
        if self.is_main:
            try:
                outcome = ("ok", fn())
            except FashiongenError as e:
                outcome = ("error", e)
        kind, value = self.broadcast_object(outcome)
        if kind == "error":
            raise value
        return value

    @contextlib.contextmanager
    def local_main_first(self) -> Iterator[None]:
        """Let each node's local rank 0 go first (e.g. download a dataset), then the others."""
        if self.local_rank != 0:
            self.barrier()
        yield
        if self.local_rank == 0:
            self.barrier()


def available_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def setup(device_kind: str) -> DistContext:
    """Join the process group torchrun describes, for training on `device_kind` (the
    `train.device` setting: auto, cpu, cuda or mps).

    Single-process (no WORLD_SIZE, or 1) returns a context of world size 1 and initialises
    nothing. A process group that the caller already initialised is used as it is.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext()
    if device_kind == "auto":
        device_kind = "cuda" if torch.cuda.is_available() else "cpu"
    if device_kind not in ("cpu", "cuda"):
        raise ConfigError(
            f"distributed training runs on cpu or cuda, not {device_kind}: set train.device"
        )
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
    device = torch.device("cpu")
    if device_kind == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"local rank {local_rank} has no GPU: this node has "
                f"{torch.cuda.device_count()}; start at most that many processes"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    owns_group = not dist.is_initialized()
    if owns_group:
        dist.init_process_group(
            "nccl" if device.type == "cuda" else "gloo",
            **({"device_id": device} if device.type == "cuda" else {}),
        )
    return DistContext(
        rank=rank,
        world_size=world_size,
        local_rank=local_rank,
        local_world_size=local_world_size,
        device=device,
        owns_group=owns_group,
    )


def teardown(ctx: DistContext) -> None:
    """Leave the process group `setup` joined (one it found already initialised stays)."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def rank_seed(seed: int, rank: int, step: int = 0) -> int:
    """A seed for rank `rank`'s noise, distinct from the run seed's other streams (weight
    initialisation, data order, grid noise) and from every other rank's and step's."""
    digest = hashlib.sha256(f"fashiongen-noise/{seed}/{rank}/{step}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


# ---------------------------------------------------------------- tensor collectives


def _groups(tensors: Sequence[torch.Tensor]) -> list[list[torch.Tensor]]:
    """Tensors grouped by (device, dtype), so each group flattens into one buffer."""
    groups: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.device, t.dtype), []).append(t)
    return list(groups.values())


@torch.no_grad()
def all_reduce_mean_(tensors: Sequence[torch.Tensor], world_size: int) -> None:
    """Replace each tensor by its mean over ranks: one all-reduce per (device, dtype)."""
    for group in _groups(tensors):
        flat = _flatten_dense_tensors(group)
        dist.all_reduce(flat)
        flat.div_(world_size)
        for t, mean in zip(group, _unflatten_dense_tensors(flat, group), strict=True):
            t.copy_(mean)


@torch.no_grad()
def broadcast_(tensors: Sequence[torch.Tensor], src: int = 0) -> None:
    """Overwrite each tensor with rank `src`'s: one broadcast per (device, dtype)."""
    for group in _groups(tensors):
        flat = _flatten_dense_tensors(group)
        dist.broadcast(flat, src=src)
        for t, theirs in zip(group, _unflatten_dense_tensors(flat, group), strict=True):
            t.copy_(theirs)


# ---------------------------------------------------------------- gradient averaging


class _GradientAverager:
    """Averages the gradients of `params` over ranks at the end of every backward pass."""

    def __init__(self, params: Sequence[torch.nn.Parameter], world_size: int) -> None:
        self.params = list(params)
        self.world_size = world_size
        self.ready: set[int] = set()
        self.queued = False
        self.handles = [
            p.register_post_accumulate_grad_hook(self._on_grad_ready) for p in self.params
        ]

    def _on_grad_ready(self, param: torch.Tensor) -> None:
        self.ready.add(id(param))
        if not self.queued:
            self.queued = True
            # Runs once this backward pass has accumulated every gradient (as DDP's reducer
            # finalises its buckets); the public multi-grad hook fires before accumulation.
            torch.autograd.Variable._execution_engine.queue_callback(self._average)

    def _average(self) -> None:
        grads = [p.grad for p in self.params if id(p) in self.ready]
        self.ready.clear()
        self.queued = False
        if any(g.is_sparse for g in grads):
            raise NotImplementedError("distributed training does not average sparse gradients")
        all_reduce_mean_(grads, self.world_size)

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []


# ---------------------------------------------------------------- replicas


@dataclass
class StepVerdict:
    """What all ranks agreed about one training step."""

    finite: bool
    losses: dict[str, float]  # averaged over ranks (`event_` keys: rank 0's, whose state wins)
    bad_key: str = ""  # not finite: the first non-finite loss on any rank, else WEIGHTS


WEIGHTS = "weights"  # StepVerdict.bad_key when the losses were finite but some weights not


class ReplicaSync:
    """Keeps one model's replicas identical across ranks; does nothing at world size 1.

    Built by the training loop after the model and its optimizers; `close` removes the hooks.
    """

    def __init__(
        self, ctx: DistContext, model: torch.nn.Module, optimizers: dict[str, torch.optim.Optimizer]
    ) -> None:
        self.ctx = ctx
        self.model = model
        self.num_resyncs = 0  # times rank 0's parameters were copied over diverged replicas
        owned: dict[int, torch.nn.Parameter] = {}
        for opt in optimizers.values():
            for group in opt.param_groups:
                for p in group["params"]:
                    owned.setdefault(id(p), p)
        self.owned = list(owned.values())
        self.averager = (
            _GradientAverager([p for p in self.owned if p.requires_grad], ctx.world_size)
            if ctx.is_distributed
            else None
        )

    def close(self) -> None:
        if self.averager is not None:
            self.averager.remove()

    def _unowned_state(self) -> list[torch.Tensor]:
        """Parameters no optimizer steps and all buffers: what only a family changes."""
        owned = {id(p) for p in self.owned}
        tensors = [p for p in self.model.parameters() if id(p) not in owned]
        return tensors + list(self.model.buffers())

    def broadcast_from_main(self, extra: dict[str, torch.Tensor] | None = None) -> None:
        """Copy rank 0's parameters, buffers and `extra` tensors (EMA) to every rank."""
        if self.ctx.is_distributed:
            broadcast_([*self.model.parameters(), *self.model.buffers(), *(extra or {}).values()])

    def _checksum(self) -> float:
        """A cheap fingerprint of the optimised parameters (float64 sum of sums)."""
        if not self.owned:
            return 0.0
        with torch.no_grad():
            return float(torch.stack([p.sum(dtype=torch.float64) for p in self.owned]).sum())

    def agree_on_step(self, losses: dict[str, float], *, weights_finite: bool) -> StepVerdict:
        """After `train_step`: agree that every rank's losses and weights are finite (all
        ranks then roll back or go on together), average the losses, re-align the replicas.

        `weights_finite` is this rank's own check of its weights (the loop makes it only at
        steps whose state is logged or saved: it reads every tensor). At world size 1 this
        only checks. Otherwise a small all-gather of [parameter checksum, weights finite,
        losses...] lets every rank see every rank's; when all are finite, the state no
        optimizer owns is broadcast from rank 0, and parameters too if the checksums differ.
        """
        keys = list(losses)
        if not self.ctx.is_distributed:
            bad = next((k for k in keys if not math.isfinite(losses[k])), "")
            bad = bad or ("" if weights_finite else WEIGHTS)
            return StepVerdict(not bad, losses, bad)
        row = torch.tensor(
            [self._checksum(), float(weights_finite), *(losses[k] for k in keys)],
            dtype=torch.float64,
            device=self.ctx.device,
        )
        rows = [torch.empty_like(row) for _ in range(self.ctx.world_size)]
        dist.all_gather(rows, row)
        table = torch.stack(rows).cpu()  # (world_size, 2 + num_losses)
        finite_by_key = torch.isfinite(table[:, 2:]).all(0)
        bad = next((k for k, ok in zip(keys, finite_by_key.tolist(), strict=True) if not ok), "")
        bad = bad or ("" if bool(table[:, 1].all()) else WEIGHTS)
        if bad:
            return StepVerdict(False, losses, bad)
        if not torch.equal(table[:, 0], table[:1, 0].expand(self.ctx.world_size)):
            broadcast_(self.owned)
            self.num_resyncs += 1
        broadcast_(self._unowned_state())
        means = table[:, 2:].mean(0).tolist()
        averaged = {
            k: (float(table[0, 2 + i]) if k.startswith("event_") else means[i])
            for i, k in enumerate(keys)
        }
        return StepVerdict(True, averaged)

    def agree_to_stop(self, stop_requested: bool, out_of_time: bool) -> tuple[bool, bool]:
        """(stop, out of time), each true on every rank when true on any."""
        if not self.ctx.is_distributed:
            return stop_requested, out_of_time
        flags = torch.tensor([float(stop_requested), float(out_of_time)], device=self.ctx.device)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        stop, late = flags.tolist()
        return bool(stop), bool(late)

    def check_identical(self, extra: dict[str, torch.Tensor] | None = None) -> None:
        """Raise if any rank's parameters, buffers or `extra` tensors differ from rank 0's."""
        if not self.ctx.is_distributed:
            return
        tensors = dict(self.model.state_dict())
        tensors.update({f"extra.{k}": v for k, v in (extra or {}).items()})
        digests = self.ctx.all_gather_object(tensors_digest(tensors))
        differing = [r for r, d in enumerate(digests) if d != digests[0]]
        if differing:
            raise RuntimeError(
                f"model replicas diverged: ranks {differing} differ from rank 0 "
                "(a bug in fashiongen.distributed)"
            )
