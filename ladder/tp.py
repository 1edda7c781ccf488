"""Tensor parallelism: the communicator the model calls and weight sharding (the process group is started by
ladder.parallelize.init_distributed).

Sharding (Megatron style, as in gpt-fast's tp.py):
  attention  q/k/v_proj column-parallel (split by query / KV heads), o_proj row-parallel
  MLP        gate/up_proj column-parallel (split along ffn_dim),    down_proj row-parallel
  embeddings, norms and the LM head are replicated.
Each rank's attention/MLP output is then a partial sum that an all-reduce makes whole. *Where* that
all-reduce is waited on is decided by the wiring in ladder/model.py, so the communicator exposes the
collective as two halves: `start` (launch) and `wait` (block until done).
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
import torch.distributed as dist
from torch.distributed import _functional_collectives as funcol

from .config import ModelConfig


@runtime_checkable
class Communicator(Protocol):
    """What the model (ladder/model.py) may ask of a communicator, and all it may ask.

    `start` launches the all-reduce of a partial sum and returns a handle; `wait` blocks until that
    collective is done and returns the reduced tensor (a handle may also be None or an already-reduced
    tensor, returned as is); `all_reduce` is both at once; `count` is the number of collectives launched so
    far; `size` and `rank` place this process in the tensor-parallel group. Nothing else (no `group`):
    process-group code that needs one checks for it.
    """
    size: int
    rank: int

    def start(self, partial: torch.Tensor) -> Any: ...

    def wait(self, handle: Any) -> torch.Tensor | None: ...

    def all_reduce(self, partial: torch.Tensor) -> torch.Tensor: ...

    def count(self) -> int: ...


class SingleDevice:
    """The communicator of an unsharded model: every collective is the identity."""

    size = 1
    rank = 0

    def start(self, partial: torch.Tensor):
        """Launch the all-reduce of `partial`; returns a handle for `wait`."""
        return partial

    def wait(self, handle) -> torch.Tensor | None:
        """Block until the collective behind `handle` is complete; returns the reduced tensor.

        A handle may also be None (nothing pending) or an already-complete tensor.
        """
        return handle

    def all_reduce(self, partial: torch.Tensor) -> torch.Tensor:
        """Blocking all-reduce: launch and wait at once."""
        return self.wait(self.start(partial))

    def count(self) -> int:
        return 0


class TensorParallel(SingleDevice):
    """All-reduce over a torch.distributed process group (gloo on CPU, NCCL on CUDA).

    Uses functional collectives: `start` returns at once with the collective in flight. Only the modules
    are compiled (ladder/cudagraph.py), never the collectives, so each all-reduce is waited on exactly
    where the wiring in ladder/model.py waits on it.
    """

    def __init__(self, group: dist.ProcessGroup | None = None):
        if not dist.is_initialized():
            raise RuntimeError("torch.distributed is not initialised; call ladder.parallelize.init_distributed() "
                               "or launch with torchrun")
        self.group = group if group is not None else dist.group.WORLD
        self.size = dist.get_world_size(self.group)
        self.rank = dist.get_rank(self.group)
        self.n_collectives = 0  # launched all-reduces, for tests and reports

    def start(self, partial):
        self.n_collectives += 1
        return funcol.all_reduce(partial, "sum", self.group)

    def wait(self, handle):
        if isinstance(handle, funcol.AsyncCollectiveTensor):
            return funcol.wait_tensor(handle.elem)
        return handle

    def count(self) -> int:
        return self.n_collectives


class WrappedComm:
    """A communicator around another (`comm`): an emulated link (ladder.link), a recorder (ladder.trace), real
    collectives on a CUDA stream of their own (ladder.cudagraph). It keeps the wrapped one's place in the
    group (size, rank, group); a subclass changes `start` and/or `wait`, and `all_reduce` follows."""

    def __init__(self, comm):
        self.comm = comm
        self.size, self.rank = comm.size, comm.rank
        self.group = getattr(comm, "group", None)

    def start(self, partial: torch.Tensor):
        return self.comm.start(partial)

    def wait(self, handle):
        return self.comm.wait(handle)

    def all_reduce(self, partial: torch.Tensor) -> torch.Tensor:
        return self.wait(self.start(partial))

    def count(self) -> int:
        return self.comm.count()


# --------------------------------------------------------------------------------------------- sharding
# parameter name suffix -> (dimension to split, kind). Column-parallel weights split their output rows
# (dim 0); row-parallel weights split their input columns (dim 1). Everything else is replicated.
_SPLITS = {
    "self_attn.q_proj.weight": 0, "self_attn.k_proj.weight": 0, "self_attn.v_proj.weight": 0,
    "self_attn.o_proj.weight": 1,
    "mlp.gate_proj.weight": 0, "mlp.up_proj.weight": 0,
    "mlp.down_proj.weight": 1,
}


def split_dim(name: str) -> int | None:
    """The dimension along which parameter `name` is sharded, or None if it is replicated."""
    for suffix, dim in _SPLITS.items():
        if name.endswith(suffix):
            return dim
    return None


def shard_tensor(name: str, full: torch.Tensor, rank: int, size: int) -> torch.Tensor:
    """This rank's slice of one full parameter (contiguous blocks of heads / hidden units)."""
    dim = split_dim(name)
    if dim is None or size == 1:
        return full
    if full.shape[dim] % size:
        raise ValueError(f"{name}: dimension {dim} of shape {tuple(full.shape)} does not divide by TP size {size}")
    return full.chunk(size, dim=dim)[rank].contiguous()


def shard_state_dict(state: dict[str, torch.Tensor], config: ModelConfig, rank: int, size: int) -> dict:
    """Pure function: the full (unsharded) state dict -> rank `rank`'s shard at TP degree `size`.

    Contiguous head blocks keep grouped-query attention consistent: rank r holds query heads
    [r*H/p, (r+1)*H/p) and KV heads [r*KV/p, (r+1)*KV/p), and local query head j uses local KV head
    j // (H/KV), exactly the grouping of the full model.
    """
    config.local_sizes(size)  # refuses shapes that do not divide, naming the dimension
    return {name: shard_tensor(name, t, rank, size) for name, t in state.items()}


def gather_state_dict(model: torch.nn.Module, comm: SingleDevice) -> dict[str, torch.Tensor]:
    """Inverse of shard_state_dict: reassemble full weights from every rank (collective; all ranks call)."""
    out = {}
    for name, t in model.state_dict().items():
        dim = split_dim(name)
        if dim is None or comm.size == 1:
            out[name] = t.detach().clone()
            continue
        parts = [torch.empty_like(t) for _ in range(comm.size)]
        dist.all_gather(parts, t.detach().contiguous(), group=comm.group)
        out[name] = torch.cat(parts, dim=dim)
    return out
