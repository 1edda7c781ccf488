"""The one place that launches processes: local gloo ranks, and torchrun from a notebook or a script.

* `launch_local(fn, world_size, *args)`: `fn(comm, *args)` on N local CPU processes over gloo (tests,
  notebooks; no torchrun needed).
* `torchrun_argv(nproc, module, args)`: the torchrun command line for `python -m module args` on N
  processes of this node (ladder.bench.run_torchrun runs the benchmark CLI with it).
* `torchrun_call(fn, kwargs, nproc=N, ...)`: call a function on N torchrun ranks and return rank 0's result.

Run one function on N local processes under torchrun, from a notebook or a script, and wait for it.

A notebook is one process, but retraining an 8B model or pretraining a 3B one wants every GPU of the node.
`torchrun_call("ladder.adapt:adapt", kwargs, nproc=8, work_dir=...)` pickles the keyword arguments
(data, tokenizer, configs) to work_dir/job.pt, launches

    python -m torch.distributed.run --standalone --nproc-per-node 8 -m ladder.launch work_dir/job.pt

streams its output, and returns what rank 0's call returned. Every rank initialises the process group
(NCCL on CUDA, gloo on CPU) and calls the same function with the same arguments; the function is
written for data parallelism (ladder.train splits the batches by rank). The ranks map job.pt's tensors
from disk (`torch.load(mmap=True)`), so a billion-token dataset is in memory once, not once per rank.
"""
from __future__ import annotations

import collections
import gc
import importlib
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from .parallelize import init_distributed, init_process_group
from .tp import TensorParallel


# --------------------------------------------------------------------------------------------- local gloo ranks
def _local_worker(rank, fn, world_size, init_file, out_dir, args):
    torch.set_num_threads(1)  # ranks share the machine's cores
    init_process_group("cpu", init_method=f"file://{init_file}", rank=rank, world_size=world_size)  # gloo
    try:
        result = fn(TensorParallel(), *args)
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def launch_local(fn, world_size: int, *args) -> list:
    """Run `fn(comm, *args)` on `world_size` local CPU processes over gloo; returns each rank's result.

    For tests and notebooks (no torchrun needed). `fn` must be importable (defined at module level).
    """
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_local_worker, args=(fn, world_size, os.path.join(tmp, "init"), tmp, args), nprocs=world_size)
        # full unpickling (a rank returns any picklable object): these files are this call's own, written by
        # the ranks it just spawned into a private temporary folder, and deleted with it
        return [torch.load(os.path.join(tmp, f"rank{r}.pt"), weights_only=False) for r in range(world_size)]


# --------------------------------------------------------------------------------------------- torchrun
def release_memory():
    """Hand this process's unreferenced GPU memory back to the driver (for a model that comes next, in
    this process or in a torchrun rank on the same GPU); on CPU, only collect garbage."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def torchrun_argv(nproc: int, module: str, args: list[str]) -> list[str]:
    """`python -m torch.distributed.run --standalone --nproc-per-node N -m module args...` on this node."""
    if nproc < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc}")
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", module, *map(str, args)]


def rank_device(device: str) -> str:
    """"cuda" or "cpu": under torchrun each rank takes its own GPU (LOCAL_RANK), so a device index such as
    "cuda:0" given to the notebook must not reach the ranks."""
    return "cuda" if str(device).startswith("cuda") else "cpu"


def torchrun_call(fn: str, kwargs: dict, *, nproc: int, work_dir: str | os.PathLike, device: str = "cuda",
                  progress: bool = True):
    """Call `fn` ("package.module:function") with `kwargs` on `nproc` torchrun processes; return rank 0's
    result. `device` ("cuda" or "cpu") picks NCCL or gloo. Raises RuntimeError with the ranks' own
    error when they fail."""
    name = fn.partition(":")[2]
    if not name:
        raise ValueError(f"fn must be 'module:function', got {fn!r}")
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    job, result = work_dir / "job.pt", work_dir / "result.pt"
    result.unlink(missing_ok=True)
    torch.save({"fn": fn, "device": rank_device(device), "kwargs": kwargs}, job)
    release_memory()  # what this process's allocator still holds on GPU 0 is not there for rank 0
    argv = torchrun_argv(nproc, "ladder.launch", [str(job)])
    tail = collections.deque(maxlen=60)
    try:
        with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
            for line in proc.stdout:  # streamed, so a long run shows its progress
                tail.append(line)
                if progress:
                    print(line, end="", flush=True)
    finally:
        job.unlink(missing_ok=True)  # the data copy (GBs at paper scale); a rerun writes it again
    if proc.returncode != 0:
        # the rank's own exception, not torchrun's ChildFailedError that wraps it
        errors = [l.split("]:", 1)[-1].strip() for l in tail
                  if re.search(r"\w+(Error|Exception|Interrupt): ", l) and "ChildFailedError" not in l]
        raise RuntimeError(f"{name} on {nproc} processes failed (exit code {proc.returncode}): "
                           f"{errors[-1] if errors else 'see the output below'}\n"
                           f"command: {' '.join(argv)}\nlast output:\n" + "".join(tail))
    # full unpickling: result.pt is what this call's own ranks returned (any picklable object), written during
    # this call; nothing from another run or another machine is read (torchrun_call deletes it first)
    return torch.load(result, weights_only=False)


def main(argv=None):
    """One rank: `torchrun --nproc-per-node N -m ladder.launch JOB.pt` (JOB.pt written by torchrun_call)."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or not Path(argv[0]).is_file():
        raise SystemExit("usage: torchrun --nproc-per-node N -m ladder.launch JOB.pt "
                         "(written by ladder.launch.torchrun_call)")
    path = Path(argv[0])
    # full unpickling: JOB.pt holds the function's keyword arguments (tokenizers, configs, data), written a
    # moment ago by torchrun_call in the same run and deleted when the ranks finish; resumable state
    # (trainer_state.pt in a run folder, which may come from elsewhere) is loaded with weights_only=True
    job = torch.load(path, mmap=True, weights_only=False)
    init_distributed(device=job["device"])
    try:
        module, _, name = job["fn"].partition(":")
        result = getattr(importlib.import_module(module), name)(**job["kwargs"])
        if dist.get_rank() == 0:
            torch.save(result, path.with_name("result.pt"))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
