"""Inference speed benchmark: the paper's measurement, on any wiring, TP degree, batch, shape, dtype and link.

As in the paper (ladder-residual.md, "How the paper measured speed"): random N(0, 0.02) weights built
shard by shard, a random prompt of `prompt_len` tokens then `new_tokens` generated tokens (top-k 200
sampling), warm-up runs then measured samples; tokens/s = batch x new_tokens / (prefill + decode).
Every rank runs the same loop in lockstep (a barrier before each sample) and each sample's time is the
slowest rank's, so all ranks hold the same record.

API:  `run_local([BenchConfig(...), ...])` on local gloo processes (notebooks, tests);
      `run(cfgs, comm, device)` inside an initialised process group.
CLI:  torchrun --nproc-per-node 8 -m ladder.bench --preset llama3-70B --wiring standard ladder \
          --batch 1 4 16 64 --prompt-len 1024 --new-tokens 512 --dtype bfloat16 --compile --out runs.jsonl
      (without torchrun, `--tp N` runs N local gloo processes).
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist

from . import link as links
from .config import ModelConfig, WIRINGS, preset
from .config import PRESETS as SHAPES
from .cudagraph import GraphedDecode, StreamCollectives, compile_modules
from .generate import generate
from .launch import launch_local, release_memory, torchrun_argv
from .model import Transformer, build_model
from .parallelize import init_distributed
from .paths import resolve_checkpoint
from .provenance import provenance
from .tp import SingleDevice
# transformers, ladder.hf (which imports transformers) and tqdm.auto are imported inside the functions that use them:
# `python -m ladder.bench` starts without them.

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class BenchConfig:
    """One benchmark configuration (one record)."""
    preset: str | ModelConfig = "cpu-bench"
    wiring: str = "standard"
    ladder_layers: int = 0
    tp: int = 1
    batch: int = 1
    prompt_len: int = 64
    new_tokens: int = 32
    dtype: str = "float32"
    device: str = "cpu"
    link: str | dict | None = None  # an emulated link (ladder.link preset name, "custom:A:B", dict) or None
    warmup: int = 1
    samples: int = 3
    compile: bool = False  # regional compilation (ladder.cudagraph.compile_modules): the wiring stays in Python
    cuda_graph: bool = True  # with compile on CUDA: each decode step captured in one CUDA graph
    checkpoint: str | None = None  # an HF checkpoint instead of random weights
    top_k: int | None = 200
    temperature: float = 1.0
    seed: int = 0
    overrides: dict = field(default_factory=dict)  # ModelConfig fields, e.g. {"n_layers": 4}
    probe_allreduce: bool = False  # also time one blocking all-reduce of the decode/prefill message
    # "processes": tp real ranks (gloo/NCCL). "virtual": one process computes one rank's shard and the
    # peers are emulated (ladder.link.VirtualRanks): only the link's modelled cost, no real collective.
    ranks: str = "processes"
    # what the emulated link's time runs on: "wall" (a wait sleeps) or "virtual" (ladder.link.VirtualClock:
    # compute counts as this thread's CPU time and a wait advances the clock; virtual ranks, one thread)
    clock: str = "wall"

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; choose one of {', '.join(DTYPES)}")
        for name in ("tp", "batch", "prompt_len", "new_tokens", "samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"BenchConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise ValueError(f"BenchConfig.warmup must be >= 0, got {self.warmup}")
        links.get(self.link)  # validates
        if self.ranks not in ("processes", "virtual"):
            raise ValueError(f"BenchConfig.ranks must be 'processes' or 'virtual', got {self.ranks!r}")
        if self.clock not in links.CLOCKS:
            raise ValueError(f"BenchConfig.clock must be one of {', '.join(links.CLOCKS)}, got {self.clock!r}")
        if self.clock == "virtual" and (self.ranks != "virtual" or self.device != "cpu" or links.get(self.link) is None):
            raise ValueError("BenchConfig.clock='virtual' simulates an emulated link's time on one CPU process: it "
                             "needs ranks='virtual', device='cpu' and a link")
        self.model_config()  # validates the shape, wiring and TP degree

    @property
    def preset_name(self) -> str:
        return self.preset if isinstance(self.preset, str) else "custom"

    def model_config(self) -> ModelConfig:
        base = self.preset if isinstance(self.preset, ModelConfig) else preset(self.preset)
        seq = max(base.max_seq_len, self.prompt_len + self.new_tokens)
        cfg = base.replace(**{**self.overrides, "max_seq_len": seq}).rewired(self.wiring, self.ladder_layers)
        cfg.local_sizes(self.tp)
        return cfg

    def params(self) -> dict:
        d = dataclasses.asdict(self)
        d["preset"] = self.preset_name
        lk = links.get(self.link)
        d["link"] = dataclasses.asdict(lk) if lk else None
        return d


# --------------------------------------------------------------------------------------------- measuring
def run_provenance(params: dict | None = None) -> dict:
    """ladder.provenance.provenance, with the commit taken from $LADDER_COMMIT where git cannot tell it (a
    copy of the working tree without .git, as on the GPU machines: scripts/gpu_check.sh passes it in)."""
    prov = provenance(params)
    env = os.environ.get("LADDER_COMMIT", "").strip()
    if env and prov.get("git_commit", "unknown") == "unknown":
        prov["git_commit"], prov["git_commit_source"] = env, "LADDER_COMMIT"
    return prov


def _slowest(values: list[float], comm) -> list[float]:
    """Each sample's time as the maximum over ranks, so every rank reports the same numbers."""
    t = torch.tensor(values, dtype=torch.float64)
    if comm.size > 1 and comm.group is not None:
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=comm.group)
    return t.tolist()


def _barrier(comm):
    if comm.size > 1 and comm.group is not None:
        dist.barrier(group=comm.group)


def _spread(xs: list[float]) -> dict:
    q = statistics.quantiles(xs, n=4) if len(xs) > 1 else [xs[0]] * 3
    return {"min": min(xs), "q25": q[0], "median": statistics.median(xs), "q75": q[2], "max": max(xs)}


def _weights_key(cfg: BenchConfig, mcfg: ModelConfig) -> tuple:
    """Configurations with equal keys have identical weights (the wiring adds or removes no weight
    except the parallel wiring's second norm), so interleaved runs can share one copy."""
    shape = mcfg.replace(wiring="standard", ladder_layers=0)
    return (shape, cfg.tp, cfg.ranks, cfg.dtype, cfg.seed, cfg.checkpoint)


def _share(model, mcfg: ModelConfig, model_comm, device):
    """A model of config `mcfg` whose parameters are `model`'s own tensors (no copy)."""
    with torch.device("meta"):
        twin = Transformer(mcfg, model_comm)
    twin.load_state_dict(model.state_dict(), strict=False, assign=True)
    if mcfg.tie_embeddings:
        twin.lm_head.weight = twin.embed_tokens.weight
    if any(p.is_meta for p in twin.parameters()):
        return None
    twin._init_buffers(device)
    return twin


def _build(cfg: BenchConfig, comm, device, shared: dict | None = None):
    mcfg = cfg.model_config()
    lk = links.get(cfg.link)
    device = torch.device(device)
    model_comm = comm
    if device.type == "cuda" and comm.size > 1 and comm.group is not None and cfg.compile and cfg.cuda_graph:
        model_comm = StreamCollectives(comm, device)  # NCCL on its own stream: capturable start/wait
    model_comm = links.emulate(model_comm, lk, device, clock=cfg.clock)
    dtype = DTYPES[cfg.dtype]
    key = _weights_key(cfg, mcfg)
    if shared is not None and key in shared:
        twin = _share(shared[key], mcfg, model_comm, device)
        if twin is not None:
            return twin.eval()
    if cfg.checkpoint:
        from .hf import load_pretrained
        over = {"wiring": mcfg.wiring, "max_seq_len": mcfg.max_seq_len, "ladder_layers": mcfg.ladder_layers}
        model = load_pretrained(cfg.checkpoint, comm=model_comm, device=device, dtype=dtype, **over)
    else:
        model = build_model(mcfg, model_comm, device=device, dtype=dtype, seed=cfg.seed)
    if shared is not None:
        shared[key] = model
    return model.eval()


def _probe_allreduce(cfg: BenchConfig, model, device, reps: int = 20) -> dict:
    """Median wall time of one blocking all-reduce of a decode-step and a prefill message."""
    comm, out = model.comm, {}
    dtype = DTYPES[cfg.dtype]
    for name, tokens in (("decode", 1), ("prefill", cfg.prompt_len)):
        x = torch.ones(cfg.batch, tokens, model.config.dim, dtype=dtype, device=device)
        times = []
        for _ in range(reps + 2):
            _barrier(comm)
            t0 = time.perf_counter()
            comm.all_reduce(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - t0)
        out[f"allreduce_{name}_s"] = statistics.median(_slowest(times[2:], comm))
    return out


class _Case:
    """One configuration, set up on this rank: the model, the prompt, and the samples taken so far."""

    def __init__(self, cfg: BenchConfig, comm, device, shared: dict | None = None):
        comm = comm or SingleDevice()
        if cfg.ranks == "virtual":
            comm = links.VirtualRanks(cfg.tp)
        if comm.size != cfg.tp:
            raise ValueError(f"config asks for tp={cfg.tp} but the communicator has {comm.size} ranks")
        self.cfg, self.comm, self.device = cfg, comm, torch.device(device)
        self.model = _build(cfg, comm, self.device, shared)
        gen = torch.Generator().manual_seed(cfg.seed)  # the same prompt on every rank
        self.prompt = torch.randint(0, self.model.config.vocab_size, (cfg.batch, cfg.prompt_len),
                                    generator=gen).to(self.device)
        self.fns, self.graphed = {}, None
        if cfg.compile:  # compile the modules, not the step, so every all-reduce wait stays where the wiring puts it
            compile_modules(self.model)
            if self.device.type == "cuda" and cfg.cuda_graph:
                self.graphed = self.fns["decode_fn"] = GraphedDecode()
        self.model.setup_cache(cfg.batch, cfg.prompt_len + cfg.new_tokens)
        self.i, self.prefill_s, self.decode_s, self.decode_wait_s, self.n_coll = 0, [], [], [], None

    @property
    def runs(self) -> int:
        return self.cfg.warmup + self.cfg.samples

    def step(self):
        """One generation (a warm-up or a measured sample), started in lockstep with the other ranks."""
        cfg = self.cfg
        _barrier(self.comm)
        def count():  # graph replays run collectives the communicator does not see
            return self.model.comm.count() + (self.graphed.count() if self.graphed else 0)
        before = count()
        _, t = generate(self.model, self.prompt, cfg.new_tokens, temperature=cfg.temperature, top_k=cfg.top_k,
                        seed=cfg.seed + self.i, **self.fns)
        self.n_coll = count() - before
        if self.i >= cfg.warmup:
            self.prefill_s.append(t.prefill_s)
            self.decode_s.append(t.decode_s)
            if t.decode_wait_s is not None:
                self.decode_wait_s.append(t.decode_wait_s)
        self.i += 1

    def record(self) -> dict:
        cfg, comm = self.cfg, self.comm
        prefill_s, decode_s = _slowest(self.prefill_s, comm), _slowest(self.decode_s, comm)
        tps = [cfg.batch * cfg.new_tokens / (p + d) for p, d in zip(prefill_s, decode_s)]
        steps = max(cfg.new_tokens - 1, 1)
        mcfg = self.model.config
        rec = {
            **cfg.params(),
            "n_layers": mcfg.n_layers, "dim": mcfg.dim, "num_params": mcfg.num_params(),
            "model_config": mcfg.to_dict(),
            "tokens_per_s": statistics.median(tps), "tokens_per_s_spread": _spread(tps),
            "prefill_s": statistics.median(prefill_s), "prefill_s_spread": _spread(prefill_s),
            "decode_s_per_token": statistics.median(decode_s) / steps,
            "decode_s_per_token_spread": _spread([d / steps for d in decode_s]),
            "samples_tokens_per_s": tps, "samples_prefill_s": prefill_s, "samples_decode_s": decode_s,
            "allreduces_per_generation": self.n_coll,
            "backend": dist.get_backend(comm.group) if comm.size > 1 and comm.group is not None else "none",
            "world_size": comm.size, "threads_per_rank": torch.get_num_threads(),
        }
        if cfg.probe_allreduce:
            rec.update(_probe_allreduce(cfg, self.model, self.device))
        if hasattr(self.model.comm, "late_s"):  # the host link (EmulatedLink): what its waits cost beyond the model
            lk = self.model.comm                # (warm-ups included): ~0 when each wait ends at its deadline
            rec["link_waits"], rec["link_late_s"], rec["link_modelled_s"] = lk.waited, lk.late_s, lk.modelled_s
            # each sample's decode time spent waiting on the link (on the virtual clock: exactly the link time
            # the wiring did not hide; on the wall clock the sleeps, overshoot included)
            rec["samples_decode_wait_s"] = _slowest(self.decode_wait_s, comm)
        if hasattr(self.model.comm, "durations"):  # the GPU link (CudaEmulatedLink): its calibration and
            lk = self.model.comm                   # what each message's all-reduce asked for vs got
            dim, nbytes = mcfg.dim, DTYPES[cfg.dtype].itemsize
            rec["link_calibration"] = lk.calibration()
            rec["link_durations"] = {name: lk.durations(cfg.batch * tokens * dim * nbytes, reps=5)
                                     for name, tokens in (("decode", 1), ("prefill", cfg.prompt_len))}
        rec["provenance"] = run_provenance(cfg.params())
        return rec

    def close(self):
        """Free the model now, before the next case builds its own: a compiled module is part of a reference
        cycle (module -> its compiled call -> module) that only the cycle collector frees, and under
        torchrun one rank's weights are tens of GB."""
        self.model = self.fns = self.graphed = None
        release_memory()


def run_one(cfg: BenchConfig, comm=None, device="cpu") -> dict:
    """Benchmark one configuration on this rank (collective: every rank of `comm` calls it)."""
    case = _Case(cfg, comm, device)
    for _ in range(case.runs):
        case.step()
    rec = case.record()
    case.close()
    return rec


def _group_key(cfg: BenchConfig, by: tuple[str, ...] | None):
    return () if by is None else tuple(repr(getattr(cfg, f)) for f in by)


def _emit(rec: dict, out, tags: dict | None, write: bool) -> dict:
    if tags:
        rec.update(tags)
    if write and out is not None:
        append_record(rec, out)
    return rec


def run(cfgs: list[BenchConfig], comm=None, device="cpu", progress: bool = True,
        interleave: bool = False, *, interleave_by: tuple[str, ...] | None = None,
        out: str | os.PathLike | None = None, tags: dict | None = None) -> list[dict]:
    """Benchmark each configuration (collective); a progress bar on rank 0.

    `interleave=True` takes the samples round-robin (config A, B, C, A, B, C, ...), so a slow drift of a
    shared machine's load hits every configuration alike, and configurations of one shape share one copy
    of the weights; use it for ratios. `interleave_by` (BenchConfig field names, e.g. ("tp", "batch"))
    splits the configurations into round-robin groups of equal values, measured one group after another
    (first appearance order): each statistic compares configurations of one group, so the pairing is kept,
    and a group's records exist as soon as it ends. Without `interleave_by` all configurations are one group.
    Otherwise (interleave=False) configurations run one after another.

    `out`: every record is appended to this JSON-lines file (ladder.bench.append_record: flushed and synced)
    as soon as it is measured, so a run killed part-way keeps every record it finished (a group's records
    are finished when its last round ends). `tags` are fields added to every record (e.g. {"set": "virtual"}).

    Memory: a shape's models (and the weights they share) are freed, and the cycle collector run, after the
    last group that uses the shape and before the next shape is built; a compiled module sits in a reference
    cycle, so without the collection one GPU would hold two shapes' weights (70B and 405B ranks: ~75 GB).
    """
    from tqdm.auto import tqdm
    comm = comm or SingleDevice()
    quiet = not progress or comm.rank != 0
    write = comm.rank == 0
    if not interleave:
        bar = tqdm(cfgs, desc=f"bench tp={comm.size}", disable=quiet, file=sys.stderr)
        res = []
        for cfg in bar:
            bar.set_postfix_str(f"{cfg.preset_name} {cfg.wiring} b={cfg.batch}")
            res.append(_emit(run_one(cfg, comm, device), out, tags, write))
        return res
    groups: dict[tuple, list[int]] = {}
    for i, cfg in enumerate(cfgs):
        groups.setdefault(_group_key(cfg, interleave_by), []).append(i)
    order = list(groups.values())
    wkey = [_weights_key(c, c.model_config()) for c in cfgs]
    results: dict[int, dict] = {}
    shared = {}  # one copy of the weights per shape
    with tqdm(total=sum(c.warmup + c.samples for c in cfgs), desc=f"bench tp={comm.size} (interleaved)",
              disable=quiet, file=sys.stderr) as bar:
        for g, idx in enumerate(order):
            cases = [_Case(cfgs[i], comm, device, shared) for i in idx]
            for r in range(max(c.runs for c in cases)):
                for c in cases:
                    if r < c.runs:
                        c.step()
                        bar.update()
            for i, c in zip(idx, cases):
                results[i] = _emit(c.record(), out, tags, write)
            for c in cases:
                c.close()
            del cases, c
            later = {wkey[i] for rest in order[g + 1:] for i in rest}
            for k in [k for k in shared if k not in later]:  # this shape is done: free it before the next
                del shared[k]
            release_memory()
    return [results[i] for i in range(len(cfgs))]


def _local(comm, cfgs, progress, interleave, interleave_by, out, tags):
    return run(cfgs, comm, "cpu", progress, interleave, interleave_by=interleave_by, out=out, tags=tags)


def run_local(cfgs: list[BenchConfig], progress: bool = True, interleave: bool = False, *,
              interleave_by: tuple[str, ...] | None = None, out: str | os.PathLike | None = None,
              tags: dict | None = None) -> list[dict]:
    """Run configurations on local CPU gloo processes (one thread each), one launch per TP degree.

    CUDA configurations with ranks="virtual" (one GPU, peers emulated) run in this process.
    Returns one record per configuration, in the order given; `interleave_by`, `out` and `tags` as in `run`
    (records are appended to `out` as they are measured, by rank 0).
    """
    for c in cfgs:
        if c.device != "cpu" and c.ranks != "virtual":
            raise ValueError(f"run_local runs on CPU gloo processes; got device={c.device!r} (use torchrun, "
                             "or ranks='virtual' for one rank on one GPU)")
    devices = {c.device for c in cfgs}
    if devices != {"cpu"}:
        if len(devices) > 1:
            raise ValueError(f"run_local: one device per call, got {sorted(devices)}")
        return run(cfgs, None, devices.pop(), progress, interleave, interleave_by=interleave_by, out=out,
                   tags=tags)
    results: dict[int, dict] = {}
    out = None if out is None else str(out)
    # virtual-rank configs run in one process (one thread, like each real rank)
    for n in sorted({1 if c.ranks == "virtual" else c.tp for c in cfgs}):
        idx = [i for i, c in enumerate(cfgs) if (1 if c.ranks == "virtual" else c.tp) == n]
        recs = launch_local(_local, n, [cfgs[i] for i in idx], progress, interleave, interleave_by, out,
                            tags)[0]  # ranks agree; take rank 0
        results.update(zip(idx, recs))
    return [results[i] for i in range(len(cfgs))]


def sweep(base: dict | None = None, **axes) -> list[BenchConfig]:
    """The cartesian product of `axes` (lists of BenchConfig field values) over `base` fields.

    >>> sweep(dict(preset="tiny"), wiring=["standard", "ladder"], batch=[1, 4])  # 4 configs
    """
    base = base or {}
    keys = list(axes)
    return [BenchConfig(**{**base, **dict(zip(keys, vals))}) for vals in itertools.product(*(axes[k] for k in keys))]


# --------------------------------------------------------------------------------------------- storing
FLAT = ("preset", "wiring", "ladder_layers", "tp", "batch", "prompt_len", "new_tokens", "dtype", "device",
        "compile", "tokens_per_s", "decode_ms_per_token", "prefill_s", "decode_s_per_token",
        "allreduces_per_generation", "backend")


def flat(rec: dict) -> dict:
    """A CSV row: the main parameters and medians, the link by name. Decode ms per token stands beside
    tokens/s: at a large batch on a slow link, tokens/s is mostly the prefill's link time."""
    row = {k: rec.get(k) for k in FLAT}
    row["decode_ms_per_token"] = 1e3 * rec["decode_s_per_token"]
    row["link"] = rec["link"]["name"] if rec.get("link") else "none"
    row["tokens_per_s_min"] = rec["tokens_per_s_spread"]["min"]
    row["tokens_per_s_max"] = rec["tokens_per_s_spread"]["max"]
    row["git_commit"] = rec["provenance"]["git_commit"]
    return row


def write_records(records: list[dict], out: str | os.PathLike) -> Path:
    """Append records as JSON lines to `out` (.jsonl) and as rows to the .csv beside it."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for r in records:
        append_record(r, out)
    write_csv(records, out)
    return out


def write_csv(records: list[dict], out: str | os.PathLike) -> Path:
    """Append records as rows (`flat`) to the .csv beside `out`."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    path_csv = out.with_suffix(".csv")
    new = not path_csv.exists()
    with path_csv.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(flat(records[0]))) if records else None
        if w:
            if new:
                w.writeheader()
            w.writerows(flat(r) for r in records)
    return out


def start_records(path: str | os.PathLike) -> Path:
    """Begin a fresh JSON-lines record file at `path`: an existing one (a previous or killed run's) is
    truncated, so the file holds exactly this run's records. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    return path


def append_record(rec: dict, path: str | os.PathLike) -> None:
    """Append one record as one JSON line, flushed and fsync'd before returning: a run killed at any later
    moment (even SIGKILL, or the machine's timeout) keeps it. One write per line, so a kill cannot split
    a line between two records."""
    line = json.dumps(rec, default=str) + "\n"
    with open(path, "a") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def read_records(path: str | os.PathLike) -> list[dict]:
    """The records of a JSON-lines file. A last line cut short (a kill while it was written) is skipped with
    a warning; a bad line anywhere else is an error."""
    lines = [ln for ln in Path(path).read_text().splitlines() if ln.strip()]
    out = []
    for i, line in enumerate(lines):
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i < len(lines) - 1:
                raise ValueError(f"{path}: line {i + 1} is not a JSON record") from None
            print(f"warning: {path}: its last line is incomplete (a run killed while writing it); skipped",
                  file=sys.stderr)
    return out


def torchrun_command(nproc: int, args: list[str], p2p: bool = True) -> tuple[list[str], dict]:
    """(argv, env) that launch this CLI with torchrun on one node; `p2p=False` sets NCCL_P2P_DISABLE=1."""
    env = dict(os.environ)
    if not p2p:
        env["NCCL_P2P_DISABLE"] = "1"
    return torchrun_argv(nproc, "ladder.bench", args), env


def run_torchrun(nproc: int, out: str | os.PathLike, p2p: bool = True, **options) -> list[dict]:
    """Run the CLI under torchrun on this node (one process per GPU) and return its records.

    `options` become CLI flags (`batch=[1, 4]` -> `--batch 1 4`, `compile=True` -> `--compile`).
    `p2p=False` sets NCCL_P2P_DISABLE=1 (NVLink peer-to-peer off: traffic through host memory / PCIe).
    """
    args = ["--out", str(out)]
    for k, v in options.items():
        flag = "--" + k.replace("_", "-")
        if v is True:
            args.append(flag)
        elif v not in (False, None):
            args += [flag, *map(str, v if isinstance(v, (list, tuple)) else [v])]
    out = Path(out)
    if out.exists():
        out.unlink()
        out.with_suffix(".csv").unlink(missing_ok=True)
    argv, env = torchrun_command(nproc, args, p2p)
    subprocess.run(argv, env=env, check=True)
    return read_records(out)


# --------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m ladder.bench", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog=f"presets: {', '.join(SHAPES)}.  wirings: {', '.join(WIRINGS)}.  links: none, "
               f"{', '.join(links.PRESETS)}, or custom:ALPHA_S:BANDWIDTH_BPS[:STEP_S] (seconds, bytes/s per "
               "direction, seconds per ring step). Every combination of the list-valued options is one "
               "configuration (one record).")
    ap.add_argument("--preset", nargs="+", default=["cpu-bench"], metavar="NAME",
                    help="model shape(s), ladder.config presets (listed below)")
    ap.add_argument("--wiring", nargs="+", default=["standard", "parallel", "ladder", "upper_bound"],
                    help="residual wiring(s) to time (listed below)")
    ap.add_argument("--ladder-layers", type=int, default=0, help="for wiring=hybrid: ladder on the top N layers")
    ap.add_argument("--batch", type=int, nargs="+", default=[1], help="batch size(s)")
    ap.add_argument("--dtype", nargs="+", default=None, choices=list(DTYPES),
                    help="weight/activation dtype(s); default: bfloat16 on CUDA, float32 on CPU")
    ap.add_argument("--link", nargs="+", default=["none"],
                    help="emulated link(s): none (no emulation), a preset, or custom:A:B[:STEP] (listed below)")
    ap.add_argument("--prompt-len", type=int, default=64, help="prompt tokens per sequence")
    ap.add_argument("--new-tokens", type=int, default=32, help="generated tokens per sequence")
    ap.add_argument("--warmup", type=int, default=1, help="unmeasured generations before the samples")
    ap.add_argument("--samples", type=int, default=3, help="measured generations (the record's median and spread)")
    ap.add_argument("--compile", action="store_true",
                    help="regional compilation of norms, attention and MLP (the wiring stays in Python); on "
                         "CUDA each decode step is captured in one CUDA graph")
    ap.add_argument("--nccl-p2p-disable", action="store_true", help="set NCCL_P2P_DISABLE=1 (before NCCL starts)")
    ap.add_argument("--tp", type=int, default=None,
                    help="tensor-parallel degree without torchrun: N local gloo processes (under torchrun: "
                         "the world size); with --virtual: the emulated group's size")
    ap.add_argument("--virtual", action="store_true", help="one process, peers emulated (ladder.link.VirtualRanks)")
    ap.add_argument("--clock", default="wall", choices=["wall", "virtual"],
                    help="what an emulated link's time runs on: wall (a wait sleeps) or virtual (with --virtual "
                         "on CPU: compute counts as CPU time, a wait advances a simulated clock; ladder.link.VirtualClock)")
    ap.add_argument("--device", default=None, help="cpu or cuda; default: cuda under torchrun when available, else cpu")
    ap.add_argument("--out", default=None,
                    help="append each record to this .jsonl as it is measured (flushed), and a .csv beside it "
                         "at the end")
    ap.add_argument("--checkpoint", default=None,
                    help="a Hugging Face Llama / ladder-Llama checkpoint (directory or hub id) to time instead of "
                         "random weights of --preset; its shape replaces --preset, --wiring rewires it")
    ap.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return ap


def main(argv=None):
    ap = build_parser()
    a = ap.parse_args(argv)

    def _main(a):
        presets = a.preset
        if a.checkpoint:  # the checkpoint's own shape, so ladder_layers is checked against its real depth
            path = resolve_checkpoint(a.checkpoint)  # a wrong path is named before transformers loads (seconds)
            from transformers import AutoConfig

            from .hf import config_from_hf
            presets = [config_from_hf(AutoConfig.from_pretrained(path),
                                      max_seq_len=a.prompt_len + a.new_tokens, wiring="standard", ladder_layers=0)]
        if a.nccl_p2p_disable:
            os.environ["NCCL_P2P_DISABLE"] = "1"
        under_torchrun = "WORLD_SIZE" in os.environ
        device = a.device or ("cuda" if torch.cuda.is_available() and under_torchrun else "cpu")
        dtypes = a.dtype or (["bfloat16"] if device.startswith("cuda") else ["float32"])
        comm, dev = SingleDevice(), torch.device(device)
        if under_torchrun:
            comm, dev = init_distributed(device=device)
        tp = comm.size if under_torchrun else (a.tp or 1)
        base = dict(tp=tp, prompt_len=a.prompt_len, new_tokens=a.new_tokens, warmup=a.warmup, samples=a.samples,
                    compile=a.compile, device=device, ladder_layers=a.ladder_layers,
                    ranks="virtual" if a.virtual else "processes", checkpoint=a.checkpoint, clock=a.clock)
        cfgs = sweep(base, preset=presets, wiring=a.wiring, batch=a.batch, dtype=dtypes,
                     link=[None if x == "none" else x for x in a.link])
        if under_torchrun or tp == 1 or a.virtual:
            records = run(cfgs, comm, dev, out=a.out)
        else:
            records = run_local(cfgs, out=a.out)
        if comm.rank == 0:
            for r in records:
                print(json.dumps(flat(r)))
            if a.out:
                write_csv(records, a.out)
        if under_torchrun:
            dist.destroy_process_group()

    try:
        _main(a)
    except (ValueError, KeyError, FileNotFoundError, OSError) as e:  # bad presets, TP degrees, links, paths
        if a.debug:
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"error: {msg} (--debug shows the traceback)", file=sys.stderr)
        raise SystemExit(1) from None



if __name__ == "__main__":
    main()
