"""Run one function on N local processes under torchrun, from a notebook or a script, and wait for it.

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
import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import torch


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
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "ladder.launch", str(job)]
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
    return torch.load(result, weights_only=False)


def main(argv=None):
    """One rank: `torchrun --nproc-per-node N -m ladder.launch JOB.pt` (JOB.pt written by torchrun_call)."""
    import torch.distributed as dist
    from .tp import init_distributed
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or not Path(argv[0]).is_file():
        raise SystemExit("usage: torchrun --nproc-per-node N -m ladder.launch JOB.pt "
                         "(written by ladder.launch.torchrun_call)")
    path = Path(argv[0])
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
