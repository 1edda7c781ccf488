"""One place for how a model is spread over processes and made cheaper to run (after torchtitan's `parallelize`).

`init_process_group` starts torch.distributed, for every entry point (the benchmark, training, ladder.launch);
`init_distributed` also returns the tensor-parallel communicator (ladder.tp.TensorParallel) the model calls.

`parallelize(model, ...)` then applies, in place and in this order, what `build_model` left out. Tensor
parallelism is not among them: each rank already builds its own shard (ladder.tp), so it is in place first.

1. Activation checkpointing. The forward of every attention and MLP module runs under
   `torch.utils.checkpoint`: its activations are recomputed in the backward pass instead of stored, trading
   compute for the memory that long sequences on big models need. It comes first so that the next two steps
   see the checkpointed forward: the compiler compiles the recomputation too, and FSDP's all-gather runs
   outside the recomputed region (the backward has gathered the weights before the recompute needs them).
2. Compilation, regional. Every RMSNorm, Attention and MLP module is compiled on its own and the wiring
   between them stays in Python, so each all-reduce is still started and waited on where the wiring says
   (ladder/cudagraph.py shows what compiling the whole step does to that order).
3. Data parallelism, last, because it shards or wraps the modules as the steps above left them: FSDP2
   (`fully_shard`: weights, gradients and optimizer state split over the ranks) or DDP (replicas).
"""
from __future__ import annotations

import functools
import os
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.utils.checkpoint
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .model import MLP, Attention, RMSNorm
from .tp import TensorParallel
# torch.distributed.fsdp is imported inside apply_fsdp: `import ladder` (which imports this module) starts without it.


# --------------------------------------------------------------------------------------------- process group
def init_process_group(device: str | None = None, backend: str | None = None, *, init_method: str | None = None,
                       rank: int | None = None, world_size: int | None = None) -> torch.device:
    """Start torch.distributed's default process group and return this rank's device. A group that is
    already up is kept (the call then only picks the device).

    The rendezvous is torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT; LOCAL_RANK picks
    the GPU), unless `init_method`, `rank` and `world_size` are given (local ranks that meet through a file:
    ladder.launch.launch_local). `device` "cuda" (the default when there is a GPU) means NCCL for CUDA tensors
    and gloo for CPU ones, which NCCL refuses (the benchmark reduces its per-sample times on the CPU); "cpu"
    means gloo.
    """
    if init_method is None and not dist.is_initialized():
        missing = [v for v in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
        if missing:
            raise RuntimeError(f"environment variables {missing} are not set: launch with torchrun "
                               "(e.g. `torchrun --nproc-per-node 2 -m ladder.bench ...`)")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    # one GPU per rank, whatever index the caller named (a notebook's "cuda:0" is not every rank's GPU)
    dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if device.startswith("cuda") else torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)  # before the group: NCCL binds each rank to the current device
    if not dist.is_initialized():
        rendezvous = {} if init_method is None else dict(init_method=init_method, rank=rank, world_size=world_size)
        # 30 minutes: the other ranks wait in a barrier while rank 0 alone builds a data cache or writes a checkpoint
        dist.init_process_group(backend or ("cpu:gloo,cuda:nccl" if dev.type == "cuda" else "gloo"),
                                timeout=timedelta(minutes=30), device_id=dev if dev.type == "cuda" else None,
                                **rendezvous)
    return dev


def init_distributed(backend: str | None = None, device: str | None = None) -> tuple[TensorParallel, torch.device]:
    """`init_process_group` from torchrun's environment, then the communicator the model calls: (comm, device).

    backend defaults to NCCL for CUDA tensors (with gloo for the few CPU tensors the benchmark reduces, e.g.
    its per-sample times) when the device is CUDA, and gloo otherwise.
    """
    dev = init_process_group(device, backend)
    return TensorParallel(), dev


# --------------------------------------------------------------------------------------------- the steps
def _checkpointed(forward, *args, **kwargs):
    if not torch.is_grad_enabled():  # evaluation, generation: no backward, nothing to recompute
        return forward(*args, **kwargs)
    return torch.utils.checkpoint.checkpoint(forward, *args, use_reentrant=False, **kwargs)


def apply_activation_checkpointing(model: nn.Module) -> nn.Module:
    """Recompute every attention and MLP module in the backward pass instead of storing its activations.

    The module's *forward* is wrapped, not the module (as torch's checkpoint_wrapper would): the module tree
    stays as it was, so parameter names and state-dict keys (checkpoints load both ways), `isinstance`
    checks, and attributes set later (`setup_cache` puts the KV cache on `block.self_attn`) are untouched.
    """
    for m in model.modules():
        if isinstance(m, (Attention, MLP)) and getattr(m.forward, "func", None) is not _checkpointed:
            # a partial, not a closure: a deep copy of the model then calls its own module's forward
            m.forward = functools.partial(_checkpointed, m.forward)
    return model


def apply_compile(model: nn.Module, **compile_kwargs) -> nn.Module:
    """Regional compilation: `.compile()` every RMSNorm, Attention and MLP module in place.

    Dynamo's code cache is keyed by the module class's code, with parameters as inputs, so one compiled
    artifact serves every layer. Each input shape a module class meets (every batch size, prefill and decode;
    the KV cache makes the batch dimension static) adds one entry to that class's cache, shared by every model
    in the process. Chapter 2's grid (four batches, two shapes) passes dynamo's default limit of 8 entries,
    past which it would silently run the module eagerly and time that: the limit is raised to 64, and
    reaching it is an error rather than a quiet fallback.

    `dynamic=False` by default (dynamo's `automatic_dynamic_shapes=False` while these modules compile): each
    batch size gets its own static graph, as in the measured prototype (reference/gpu.md), instead of a
    second batch size turning the batch dimension symbolic and every later one sharing that dynamic graph.
    """
    compile_kwargs.setdefault("dynamic", False)
    dynamo = torch._dynamo.config
    dynamo.recompile_limit = max(dynamo.recompile_limit, 64)
    dynamo.fail_on_recompile_limit_hit = True
    for m in model.modules():
        if isinstance(m, (RMSNorm, Attention, MLP)):
            m.compile(**compile_kwargs)
    return model


def apply_fsdp(model: nn.Module, bf16: bool = False) -> nn.Module:
    """FSDP2 over all ranks: each attention and each MLP module is one unit (all-gathered just before it
    runs, freed after), the root holds the embeddings, norms and head. Units are the modules, not the
    blocks, because the wirings call a block's attention and MLP separately (`Block.attention`,
    `Block.feed_forward`), in an order that differs per wiring. With `bf16`, compute in bf16 and reduce
    gradients in fp32 while the sharded master weights stay fp32."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else MixedPrecisionPolicy()
    for block in model.layers:
        fully_shard(block.self_attn, mp_policy=mp)
        fully_shard(block.mlp, mp_policy=mp)
    fully_shard(model, mp_policy=mp)
    return model


def apply_ddp(model: nn.Module) -> nn.Module:
    """A DistributedDataParallel replica around `model`: gradients are averaged over the ranks in backward."""
    device = next(model.parameters()).device
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


# --------------------------------------------------------------------------------------------- the entry
DATA_PARALLEL = {"fsdp": "(TrainConfig fsdp=True) shards the model", "ddp": "replicates the model"}


def parallelize(model: nn.Module, *, data_parallel: str | None = None, activation_checkpointing: bool = False,
                compile: bool = False, compile_kwargs: dict | None = None, bf16: bool = False) -> nn.Module:
    """Apply activation checkpointing, regional compilation and data parallelism ("fsdp" or "ddp") to
    `model`, in that order (the module docstring says why), each only when asked for.

    `model` is changed in place. Returns the module to call: `model` itself, or under DDP its wrapper (which
    shares `model`'s parameters, so the optimizer, state dicts and checkpoints keep using `model`). Data
    parallelism needs the process group (`init_process_group`) first; `bf16` is FSDP's mixed precision.
    """
    if data_parallel is not None and data_parallel not in DATA_PARALLEL:
        raise ValueError(f"data_parallel must be None, 'fsdp' or 'ddp', got {data_parallel!r}")
    if data_parallel and not dist.is_initialized():
        raise ValueError(f"data_parallel={data_parallel!r} {DATA_PARALLEL[data_parallel]} over data-parallel ranks: "
                         "launch with torchrun (or init_process_group) first, or train without it in one process")
    if activation_checkpointing:
        apply_activation_checkpointing(model)
    if compile:
        apply_compile(model, **(compile_kwargs or {}))
    if data_parallel == "fsdp":
        apply_fsdp(model, bf16=bf16)
    elif data_parallel == "ddp":
        return apply_ddp(model)
    return model
