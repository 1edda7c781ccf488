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
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist

from . import link as links
from .config import ModelConfig, preset
from .generate import generate
from .launch import release_memory
from .model import Transformer, build_model
from .provenance import provenance
from .tp import SingleDevice

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
        self.model_config()  # validates the shape, wiring and TP degree

    @property
    def preset_name(self) -> str:
        return self.preset if isinstance(self.preset, str) else "custom"

    def model_config(self) -> ModelConfig:
        base = self.preset if isinstance(self.preset, ModelConfig) else preset(self.preset)
        seq = max(base.max_seq_len, self.prompt_len + self.new_tokens)
        cfg = base.replace(**{**self.overrides, "wiring": self.wiring, "max_seq_len": seq,
                              "ladder_layers": self.ladder_layers if self.wiring == "hybrid" else 0})
        cfg.local_sizes(self.tp)
        return cfg

    def params(self) -> dict:
        d = dataclasses.asdict(self)
        d["preset"] = self.preset_name
        lk = links.get(self.link)
        d["link"] = dataclasses.asdict(lk) if lk else None
        return d


# --------------------------------------------------------------------------------------------- measuring
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
        from .cudagraph import StreamCollectives
        model_comm = StreamCollectives(comm, device)  # NCCL on its own stream: capturable start/wait
    model_comm = links.emulate(model_comm, lk, device)
    dtype = DTYPES[cfg.dtype]
    key = _weights_key(cfg, mcfg)
    if shared is not None and key in shared:
        twin = _share(shared[key], mcfg, model_comm, device)
        if twin is not None:
            return twin.eval()
    if cfg.checkpoint:
        from .hf import load_pretrained
        over = {"wiring": mcfg.wiring, "max_seq_len": mcfg.max_seq_len}
        if mcfg.wiring == "hybrid":
            over["ladder_layers"] = mcfg.ladder_layers
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
            from .cudagraph import GraphedDecode, compile_modules
            compile_modules(self.model)
            if self.device.type == "cuda" and cfg.cuda_graph:
                self.graphed = self.fns["decode_fn"] = GraphedDecode()
        self.model.setup_cache(cfg.batch, cfg.prompt_len + cfg.new_tokens)
        self.i, self.prefill_s, self.decode_s, self.n_coll = 0, [], [], None

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
        rec["provenance"] = provenance(cfg.params())
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


def run(cfgs: list[BenchConfig], comm=None, device="cpu", progress: bool = True,
        interleave: bool = False) -> list[dict]:
    """Benchmark each configuration (collective); a progress bar on rank 0.

    `interleave=True` keeps every model in memory and takes the samples round-robin (config A, B, C, A,
    B, C, ...), so a slow drift of a shared machine's load hits every configuration alike; use it for
    small models whose ratios matter. Otherwise configurations run one after another.
    """
    from tqdm.auto import tqdm
    comm = comm or SingleDevice()
    quiet = not progress or comm.rank != 0
    if not interleave:
        bar = tqdm(cfgs, desc=f"bench tp={comm.size}", disable=quiet, file=sys.stderr)
        out = []
        for cfg in bar:
            bar.set_postfix_str(f"{cfg.preset_name} {cfg.wiring} b={cfg.batch}")
            out.append(run_one(cfg, comm, device))
        return out
    shared = {}  # one copy of the weights per shape
    cases = [_Case(cfg, comm, device, shared) for cfg in cfgs]
    with tqdm(total=sum(c.runs for c in cases), desc=f"bench tp={comm.size} (interleaved)", disable=quiet,
              file=sys.stderr) as bar:
        for r in range(max(c.runs for c in cases)):
            for c in cases:
                if r < c.runs:
                    c.step()
                    bar.update()
    out = [c.record() for c in cases]
    for c in cases:
        c.close()
    return out


def _local(comm, cfgs, progress, interleave):
    return run(cfgs, comm, "cpu", progress, interleave)


def run_local(cfgs: list[BenchConfig], progress: bool = True, interleave: bool = False) -> list[dict]:
    """Run configurations on local CPU gloo processes (one thread each), one launch per TP degree.

    CUDA configurations with ranks="virtual" (one GPU, peers emulated) run in this process.
    Returns one record per configuration, in the order given.
    """
    from .launch import launch_local
    for c in cfgs:
        if c.device != "cpu" and c.ranks != "virtual":
            raise ValueError(f"run_local runs on CPU gloo processes; got device={c.device!r} (use torchrun, "
                             "or ranks='virtual' for one rank on one GPU)")
    devices = {c.device for c in cfgs}
    if devices != {"cpu"}:
        if len(devices) > 1:
            raise ValueError(f"run_local: one device per call, got {sorted(devices)}")
        return run(cfgs, None, devices.pop(), progress, interleave)
    results: dict[int, dict] = {}
    # virtual-rank configs run in one process (one thread, like each real rank)
    for n in sorted({1 if c.ranks == "virtual" else c.tp for c in cfgs}):
        idx = [i for i, c in enumerate(cfgs) if (1 if c.ranks == "virtual" else c.tp) == n]
        recs = launch_local(_local, n, [cfgs[i] for i in idx], progress, interleave)[0]  # ranks agree; take rank 0
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
        "compile", "tokens_per_s", "prefill_s", "decode_s_per_token", "allreduces_per_generation", "backend")


def flat(rec: dict) -> dict:
    """A CSV row: the main parameters and medians, the link by name."""
    row = {k: rec.get(k) for k in FLAT}
    row["link"] = rec["link"]["name"] if rec.get("link") else "none"
    row["tokens_per_s_min"] = rec["tokens_per_s_spread"]["min"]
    row["tokens_per_s_max"] = rec["tokens_per_s_spread"]["max"]
    row["git_commit"] = rec["provenance"]["git_commit"]
    return row


def write_records(records: list[dict], out: str | os.PathLike) -> Path:
    """Append records as JSON lines to `out` (.jsonl) and as rows to the .csv beside it."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as f:
        for r in records:
            f.write(json.dumps(r, default=str) + "\n")
    path_csv = out.with_suffix(".csv")
    new = not path_csv.exists()
    with path_csv.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(flat(records[0]))) if records else None
        if w:
            if new:
                w.writeheader()
            w.writerows(flat(r) for r in records)
    return out


def read_records(path: str | os.PathLike) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def torchrun_command(nproc: int, args: list[str], p2p: bool = True) -> tuple[list[str], dict]:
    """(argv, env) that launch this CLI with torchrun on one node; `p2p=False` sets NCCL_P2P_DISABLE=1."""
    from .launch import torchrun_argv
    env = dict(os.environ)
    if not p2p:
        env["NCCL_P2P_DISABLE"] = "1"
    return torchrun_argv(nproc, "ladder.bench", args), env


def run_torchrun(nproc: int, out: str | os.PathLike, p2p: bool = True, **options) -> list[dict]:
    """Run the CLI under torchrun on this node (one process per GPU) and return its records.

    `options` become CLI flags (`batch=[1, 4]` -> `--batch 1 4`, `compile=True` -> `--compile`).
    `p2p=False` sets NCCL_P2P_DISABLE=1 (NVLink peer-to-peer off: traffic through host memory / PCIe).
    """
    import subprocess
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
def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m ladder.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", nargs="+", default=["cpu-bench"])
    ap.add_argument("--wiring", nargs="+", default=["standard", "parallel", "ladder", "upper_bound"])
    ap.add_argument("--ladder-layers", type=int, default=0, help="for wiring=hybrid")
    ap.add_argument("--batch", type=int, nargs="+", default=[1])
    ap.add_argument("--dtype", nargs="+", default=None, help="default: bfloat16 on CUDA, float32 on CPU")
    ap.add_argument("--link", nargs="+", default=["none"], help="emulated link(s): none, a preset, custom:A:B")
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--samples", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="torch.compile prefill and decode (CUDA graphs)")
    ap.add_argument("--nccl-p2p-disable", action="store_true", help="set NCCL_P2P_DISABLE=1 (before NCCL starts)")
    ap.add_argument("--tp", type=int, default=None, help="without torchrun: run N local gloo processes")
    ap.add_argument("--virtual", action="store_true", help="one process, peers emulated (ladder.link.VirtualRanks)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--out", default=None, help="append records to this .jsonl (and a .csv beside it)")
    ap.add_argument("--checkpoint", default=None,
                    help="a Hugging Face Llama / ladder-Llama checkpoint (directory or hub id) to time instead of "
                         "random weights of --preset; its shape replaces --preset, --wiring rewires it")
    ap.add_argument("--debug", action="store_true", help="show the traceback of an error")
    a = ap.parse_args(argv)

    def _main(a):
        presets = a.preset
        if a.checkpoint:  # the checkpoint's own shape, so ladder_layers is checked against its real depth
            from transformers import AutoConfig

            from .hf import config_from_hf, resolve_checkpoint
            presets = [config_from_hf(AutoConfig.from_pretrained(resolve_checkpoint(a.checkpoint)),
                                      max_seq_len=a.prompt_len + a.new_tokens, wiring="standard", ladder_layers=0)]
        if a.nccl_p2p_disable:
            os.environ["NCCL_P2P_DISABLE"] = "1"
        under_torchrun = "WORLD_SIZE" in os.environ
        device = a.device or ("cuda" if torch.cuda.is_available() and under_torchrun else "cpu")
        dtypes = a.dtype or (["bfloat16"] if device.startswith("cuda") else ["float32"])
        comm, dev = SingleDevice(), torch.device(device)
        if under_torchrun:
            from .tp import init_distributed
            comm, dev = init_distributed(device=device)
        tp = comm.size if under_torchrun else (a.tp or 1)
        base = dict(tp=tp, prompt_len=a.prompt_len, new_tokens=a.new_tokens, warmup=a.warmup, samples=a.samples,
                    compile=a.compile, device=device, ladder_layers=a.ladder_layers,
                    ranks="virtual" if a.virtual else "processes", checkpoint=a.checkpoint)
        cfgs = sweep(base, preset=presets, wiring=a.wiring, batch=a.batch, dtype=dtypes,
                     link=[None if x == "none" else x for x in a.link])
        if under_torchrun or tp == 1 or a.virtual:
            records = run(cfgs, comm, dev)
        else:
            records = run_local(cfgs)
        if comm.rank == 0:
            for r in records:
                print(json.dumps(flat(r)))
            if a.out:
                write_records(records, a.out)
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
