"""The replay: what each wiring's decode step should cost, from module times measured in isolation and a
link expressed as a ratio to them.

Chapter 2's wall-clock runs on a CPU move with the machine's speed that day; a fixed emulated link then
sits sometimes below, sometimes above the compute it should hide behind, and the verdict follows the
link, not ladder. This module makes the experiment a function of one dimensionless number:

    r = a / c,   a = one all-reduce's time,   c = the mean compute of one module (attention or MLP)

* `module_times` measures one rank's attention, MLP and LM head at a decode step in isolation, pass after
  pass over the model in the step's order (so each finds its weights where the step finds them), and keeps
  a low quantile of each (thread CPU time when torch runs one thread: another process on the machine
  stretches wall time, not this thread's CPU time).
* `replay` feeds them, with a = r x c, through ladder.perfmodel.timeline, the same replay of the wiring
  code's start/wait log that the GPU performance model uses: step time per wiring, ladder's speed-up,
  the upper bound's, the share of the upper bound's gain ladder recovers, and the communication share.
* `curves` sweeps r; `regimes` places real hardware on the same axis, from published all-reduce
  latencies (independent of the paper) over the performance model's module time for the paper's
  shapes, and from the paper's own grid.
* `link_for` turns a ratio into the emulated link that realises it on this machine today.

So a faster or slower machine runs the same experiment, and the wall-clock measurements become points
that validate the curve rather than the verdict itself.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch

from . import bench  # bench.run_local looked up at call time (tests patch it)
from .bench import BenchConfig
from .config import WIRING_SPECS, ModelConfig, preset
from .link import VirtualRanks
from .model import build_model
from .paths import paper_table
from .perfmodel import HARDWARE, Hardware, calibrate, module_costs, timeline
from .speedup import measured_entry, paired_bootstrap
from .speedup import ratios as speed_ratios
from .stats import bootstrap
from .stats import quantile as quantile_of
from .trace import n_allreduces
# pandas and matplotlib are imported inside the functions that use them: importing ladder.replay does not load them.

WIRINGS = ("standard", "parallel", "ladder", "upper_bound")


# --------------------------------------------------------------------------------------------- measuring
@torch.inference_mode()
def module_times(cfg: ModelConfig, tp: int = 2, batch: int = 1, context: int = 64, reps: int = 50,
                 quantile: float = 0.2, warmup: int = 2, seed: int = 0, dtype=torch.float32,
                 back_to_back: bool = False) -> dict:
    """Seconds of one rank's attention (with its norm), MLP (with its norm) and norm + LM head at a decode
    step over a `context`-slot cache: `reps` passes over the model in the decode step's order (after `warmup`
    passes), every module timed as the pass reaches it; the `quantile` of each kind (low: the undisturbed
    cost). Returns {"attn", "mlp", "head", "clock", "reps", "quantile", "back_to_back"}.

    Each module is timed where the step meets it, after the rest of the model has been through the cache:
    a model larger than the cache finds its weights in memory, as the decode step does. Timing one layer over
    and over finds them in cache instead; on a 2-core Xeon with a large L3 (2026-12-07) that read attention
    + MLP 1.5x too fast, so the emulated link was set 1.5x too short and the replay missed the measured
    speed-up by 12-15%.

    `back_to_back`: each sample is the mean of two calls of the module in a row, as two-batch overlap runs
    it (its two half-batches one after the other): the second call finds the module's weights in cache."""
    if not 0 <= quantile <= 1:
        raise ValueError(f"quantile must be in [0, 1], got {quantile}")
    model = build_model(cfg.replace(wiring="standard", max_seq_len=max(cfg.max_seq_len, context)),
                        VirtualRanks(tp), seed=seed, dtype=dtype)
    model.setup_cache(batch, context)
    pos = torch.tensor([context - 1])
    ctx = model.step_context(1, pos)
    x = torch.randn(batch, 1, cfg.dim, generator=torch.Generator().manual_seed(seed)).to(dtype)

    def one_pass():  # (kind, call) in the decode step's order
        for b in model.layers:
            yield "attn", lambda b=b: b.self_attn(b.input_layernorm(x), **ctx)
            yield "mlp", lambda b=b: b.mlp(b.post_attention_layernorm(x))
        yield "head", lambda: model.lm_head(model.norm(x))
    # one torch thread: this thread's CPU time is the module's cost, whatever else runs on the machine
    cpu_clock = torch.get_num_threads() == 1
    clock = time.thread_time_ns if cpu_clock else time.perf_counter_ns
    for _ in range(warmup):
        for _, f in one_pass():
            f()
    samples = {"attn": [], "mlp": [], "head": []}
    calls_per_sample = 2 if back_to_back else 1
    for _ in range(reps):
        for kind, f in one_pass():
            t0 = clock()
            for _ in range(calls_per_sample):
                f()
            samples[kind].append((clock() - t0) * 1e-9 / calls_per_sample)
    out = {k: quantile_of(sorted(v), quantile) for k, v in samples.items()}
    return {**out, "clock": "thread CPU time" if cpu_clock else "wall time", "reps": reps, "quantile": quantile,
            "back_to_back": back_to_back}


def unit_compute(costs: dict) -> float:
    """c: the mean of one attention's and one MLP's time, the compute an all-reduce can hide behind."""
    return (costs["attn"] + costs["mlp"]) / 2


# --------------------------------------------------------------------------------------------- replaying
@dataclass(frozen=True)
class Replay:
    ratio: float               # a / c
    allreduce_s: float         # a
    step_s: dict               # wiring -> predicted decode step (s)
    speedup: float             # standard / ladder
    upper_bound_speedup: float  # standard / upper bound
    recovered: float           # (standard - ladder) / (standard - upper bound)
    comm_share: float          # all-reduce time / (all-reduce + compute) of the standard step, nothing overlapped


def replay(cfg: ModelConfig, costs: dict, ratio: float, wirings=WIRINGS, half_costs: dict | None = None) -> Replay:
    """Predicted decode step of each wiring with one all-reduce costing `ratio` x c (see `unit_compute`).

    Two-batch overlap ("two_batch" in `wirings`) runs every module on half the batch, twice: it needs
    `half_costs`, the module times measured at half the batch (the LM head still runs once, on all of it).
    The link is a latency (a pure alpha), so half a message costs the same a."""
    if ratio < 0:
        raise ValueError(f"a/c must be >= 0, got {ratio}")
    split = {w for w in wirings if WIRING_SPECS[w].batch_parts == 2}
    if split and half_costs is None:
        raise ValueError(f"replaying {', '.join(sorted(split))} needs half_costs: the module times at half the batch")
    a = ratio * unit_compute(costs)
    step = {w: timeline(cfg.rewired(w), {**half_costs, "head": costs["head"]} if w in split else costs, a)[0]
            for w in wirings}
    std, lad, ub = step["standard"], step["ladder"], step["upper_bound"]
    comm = n_allreduces(cfg.rewired("standard")) * a
    serial = cfg.n_layers * (costs["attn"] + costs["mlp"]) + costs["head"]
    return Replay(ratio, a, step, std / lad, std / ub, (std - lad) / (std - ub) if std > ub else float("nan"),
                  comm / (comm + serial))


def curves(cfg: ModelConfig, costs: dict, ratios, wirings=WIRINGS, half_costs: dict | None = None) -> "pd.DataFrame":
    """`replay` over a sweep of a/c: one row per ratio."""
    import pandas as pd
    rows = []
    for r in ratios:
        p = replay(cfg, costs, float(r), wirings, half_costs)
        rows.append({"a/c": p.ratio, "all-reduce (ms)": p.allreduce_s * 1e3,
                     **{f"{w} step (ms)": s * 1e3 for w, s in p.step_s.items()},
                     "ladder speed-up": p.speedup, "upper bound speed-up": p.upper_bound_speedup,
                     "recovered": p.recovered, "communication share": p.comm_share})
    return pd.DataFrame(rows)


def link_for(ratio: float, costs: dict) -> str:
    """The emulated link (a ladder.link spec) whose decode all-reduce costs `ratio` x c on this machine:
    a pure latency (the bandwidth term is negligible: 1 TB/s)."""
    return f"custom:{ratio * unit_compute(costs):.6g}:1e12"


# --------------------------------------------------------------------------------------------- real hardware
# Published small-message all-reduce times, independent of the paper. The message of one decode all-reduce
# at batch 1 is dim x 2 bytes: 16 KB for the 70B shape, 32 KB for 405B.
PUBLISHED = [
    {"name": "H100 NVLink, TP=8, one-shot all-reduce (TensorRT-LLM/SGLang kernel)", "short": "H100 one-shot", "shape": "llama3-70B", "tp": 8,
     "allreduce_us": 7.8, "note": "32,768 elements (64 KB in bf16), TP=8",
     "source": "sgl-project/sglang PR 2904 (benchmark table)"},
    {"name": "H100 NVLink, TP=8, vLLM custom all-reduce", "short": "H100 vLLM custom", "shape": "llama3-70B", "tp": 8,
     "allreduce_us": 11.8, "note": "32,768 elements, TP=8, no CUDA graph",
     "source": "sgl-project/sglang PR 2904 (benchmark table)"},
    {"name": "8x H100, PyTorch one-shot all-reduce (measured by a user)", "short": "H100 PyTorch one-shot", "shape": "llama3-70B", "tp": 8,
     "allreduce_us": 17.0, "note": "small messages", "source": "pytorch/pytorch issue 131739"},
    {"name": "PCIe without peer-to-peer (2 GPUs)", "short": "PCIe, no P2P", "shape": "llama3-70B", "tp": 8,
     "allreduce_us": 17.1, "note": "16 KB, 2x RTX 2080 Ti; 8 GPUs would be slower",
     "source": "Anthony-Hoo.github.io, 'AutoDL multi-GPU interconnection test'"},
    {"name": "2 nodes x 8 GPUs, InfiniBand NDR", "short": "2 nodes, IB NDR", "shape": "llama3.1-405B", "tp": 16,
     "allreduce_us": 46.0, "note": "4-512 B, 2 nodes x 8 H20 (NVLSTree)", "source": "NVIDIA/nccl issue 1244"},
    {"name": "2 nodes x 8 H100, TCPXO", "short": "2 nodes, TCPXO", "shape": "llama3.1-405B", "tp": 16,
     "allreduce_us": 138.6, "note": "16 KB (the 405B message is 32 KB)",
     "source": "lessizzmore/create-a3mega-ztan-fork, NCCL test results"},
]


def gpu_module_costs(shape: str, tp: int, hw: Hardware | str = "H100-SXM", batch: int = 1,
                     context: int = 1536) -> dict:
    """The performance model's seconds per module for one rank of `shape` at a decode step (bf16)."""
    hw = HARDWARE[hw] if isinstance(hw, str) else hw
    return module_costs(preset(shape), tp, batch, 1, context, hw)


def regimes(hw: Hardware | str = "H100-SXM", paper_grid=None, paper_slow_speedup: float | None = None) -> list[dict]:
    """Real hardware on the a/c axis: each published all-reduce time over the performance model's module
    time c for that shape on `hw` (pass the calibrated Hardware; the module time is a roofline / fitted
    efficiency), plus the ratio the paper's own 70B TP=8 batch-1 row implies if all of the upper bound's
    gain is all-reduce time: share s = 1 - standard/upper bound, and with two all-reduces per layer
    s = a / (a + c), so a/c = s / (1 - s); and, given `paper_slow_speedup` (claim H2's ~1.6x), the ratio at
    which a ladder that hides every all-reduce would show that speed-up: a/c = x - 1."""
    out = []
    for p in PUBLISHED:
        c = unit_compute(gpu_module_costs(p["shape"], p["tp"], hw))
        out.append({**p, "c_us": c * 1e6, "a/c": p["allreduce_us"] * 1e-6 / c})
    if paper_grid is not None:
        row = paper_grid[(paper_grid.tp == 8) & (paper_grid.batch == 1)].iloc[0]
        s = 1 - row.standard / row.upper_bound
        out.append({"name": "implied by the paper's 70B TP=8 grid (batch 1, NVLink)", "short": "paper, NVLink",
                    "shape": "llama3-70B", "tp": 8, "allreduce_us": None, "c_us": None, "a/c": s / (1 - s),
                    "note": f"1 - standard/upper bound = {s:.2f}", "source": "the paper (70B grid, Table 1)"})
    if paper_slow_speedup is not None:
        # a speed-up of x with the all-reduces fully hidden: standard pays 2L (c + a), ladder 2L c, so a/c = x - 1
        out.append({"name": f"implied by the paper's {paper_slow_speedup:.2f}x with NVLink peer-to-peer off",
                    "short": "paper, P2P off", "shape": "llama3-70B", "tp": 8, "allreduce_us": None, "c_us": None,
                    "a/c": paper_slow_speedup - 1, "note": "if ladder hides every all-reduce",
                    "source": "the paper (claim H2)"})
    return out


def plot_curves(curve, regimes: list[dict] | None = None, measured=None, ax=None, title: str | None = None):
    """Ladder's and the upper bound's predicted speed-up over standard against a/c (`curves`), real hardware's
    ratios (`regimes`) as marked vertical lines, and measured runs as points with their intervals
    (`measured`: rows with "a/c", "speed-up", "lo", "hi", "label")."""
    import matplotlib.pyplot as plt
    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 4.2))
    x = curve["a/c"]
    ax.plot(x, curve["upper bound speed-up"], color="#7f8c8d", ls="--", label="upper bound (no all-reduce), replay")
    ax.plot(x, curve["ladder speed-up"], color="#27ae60", lw=2, label="ladder, replay")
    if "two_batch step (ms)" in curve:
        ax.plot(x, curve["standard step (ms)"] / curve["two_batch step (ms)"], color="#8e44ad", lw=1.5,
                label="two-batch overlap, replay")
    ax.axhline(1.0, color="black", lw=0.8)
    # each regime a dotted line, labelled upright along it from the top; regimes within 2% of the axis of each
    # other share one label ("A / B"), so no two labels sit on top of each other
    groups: list[list[dict]] = []
    span = float(x.max() - x.min()) or 1.0
    for r in sorted(regimes or [], key=lambda r: r["a/c"]):
        ax.axvline(r["a/c"], color="#2980b9", lw=0.8, ls=":")
        if groups and r["a/c"] - groups[-1][-1]["a/c"] < 0.02 * span:
            groups[-1].append(r)
        else:
            groups.append([r])
    for g in groups:
        ax.text(g[0]["a/c"], 0.98, " / ".join(r.get("short", r["name"]) for r in g), rotation=90, va="top",
                ha="right", fontsize=7, color="#2980b9", transform=ax.get_xaxis_transform())
    if measured is not None and len(measured):
        m = measured
        ax.errorbar(m["a/c"], m["speed-up"], yerr=[m["speed-up"] - m["lo"], m["hi"] - m["speed-up"]], fmt="o",
                    color="#c0392b", capsize=3, label="measured here (emulated link), 95% CI")
    ax.set_xlabel("a/c: one all-reduce's time / one module's compute")
    ax.set_ylabel("decode speed-up over standard")
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    return ax


# --------------------------------------------------------------------------------------------- validating
def decode_rounds(records: list[dict], **match) -> list[tuple[float, float, float]]:
    """(standard, ladder, upper bound) decode steps per second, one triple per measurement round, from
    benchmark records (`samples_decode_s`, the whole decode of one generation) whose fields equal `match`."""
    pick = {}
    for r in records:
        if r["wiring"] in ("standard", "ladder", "upper_bound") and all(r.get(k) == v for k, v in match.items()):
            steps = max(r["new_tokens"] - 1, 1)
            pick.setdefault(r["wiring"], [steps / d for d in r["samples_decode_s"]])
    if len(pick) < 3:
        return []
    return list(zip(pick["standard"], pick["ladder"], pick["upper_bound"]))


def wait_rounds(records: list[dict], **match) -> list[tuple[float, float]]:
    """(standard, ladder) seconds of link wait per decode, one pair per measurement round, from benchmark
    records with `samples_decode_wait_s` (an emulated link) whose fields equal `match`."""
    pick = {}
    for r in records:
        if r["wiring"] in ("standard", "ladder") and all(r.get(k) == v for k, v in match.items()):
            pick.setdefault(r["wiring"], r.get("samples_decode_wait_s") or [])
    if len(pick) < 2 or not pick["standard"] or not pick["ladder"]:
        return []
    return list(zip(pick["standard"], pick["ladder"]))


def hidden_share(rounds: list[tuple[float, float]]) -> tuple[float, list[float]]:
    """The share of standard's link wait that ladder hides, 1 - ladder's wait / standard's, median over paired
    rounds with its bootstrap 95% interval. On the virtual clock it is the share of the upper bound's gain that
    ladder recovers, with the compute's run-to-run noise taken out: the wirings do the same compute, and the
    upper bound's gain over standard is standard's wait."""
    if not rounds:
        raise ValueError("hidden_share needs at least one (standard, ladder) round")
    if any(s <= 0 for s, _ in rounds):
        raise ValueError("standard waited no time on the link: there is nothing to hide (is a link emulated?)")
    def stat(pick):
        return statistics.median(1 - lad / std for std, lad in pick)
    return stat(rounds), bootstrap(rounds, statistic=stat)


def validate(shape: ModelConfig, ratios: dict[str, float], tp: int = 2, batch: int = 1, prompt_len: int = 32,
             new_tokens: int = 24, samples: int = 7, warmup: int = 1, reps: int = 50, progress: bool = False,
             clock: str = "virtual") -> dict:
    """Measure standard, ladder and the upper bound on this machine (one rank's shard, peers emulated) with
    an emulated link set to each ratio a/c of `ratios` ({name: a/c}), the samples of every configuration
    taken round-robin; and replay the same ratios from module times measured just before (`module_times`).

    Returns {"costs", "links" ({name: spec}), "records", "rows"}: one row per ratio with the measured
    decode speed-up and share of the upper bound's gain recovered (medians over rounds, paired-bootstrap
    95% intervals), the replay's prediction of both, and the replay's error on the speed-up."""
    costs = module_times(shape, tp=tp, batch=batch, context=prompt_len + new_tokens, reps=reps)
    links = {name: link_for(r, costs) for name, r in ratios.items()}
    base = dict(preset=shape, tp=tp, batch=batch, prompt_len=prompt_len, new_tokens=new_tokens, samples=samples,
                warmup=warmup, ranks="virtual", clock=clock)
    first = next(iter(ratios))
    cfgs = [BenchConfig(**base, wiring=w, link=links[name]) for name in ratios
            for w in ("standard", "ladder", "upper_bound") if w != "upper_bound" or name == first]
    records = bench.run_local(cfgs, progress=progress, interleave=True)
    for c, r in zip(cfgs, records):
        r["ratio_name"] = next(n for n in ratios if links[n] == c.link)
    ub = next(r for r in records if r["wiring"] == "upper_bound")
    rows = []
    for name, ratio in ratios.items():
        rs = [r for r in records if r["ratio_name"] == name and r["wiring"] != "upper_bound"] + [ub]
        rounds = decode_rounds(rs)
        est = speed_ratios(*map(list, zip(*rounds)))
        ci = paired_bootstrap(rounds)
        pred = replay(shape, costs, ratio)
        waits = wait_rounds(rs)  # none to hide at a/c = 0: then no share
        hidden, hidden_ci = (hidden_share(waits) if waits and all(std > 0 for std, _ in waits)
                             else (float("nan"), [float("nan"), float("nan")]))
        rows.append({"name": name, "a/c": ratio, "link": links[name], "allreduce_ms": pred.allreduce_s * 1e3,
                     "clock": clock, "rounds": len(rounds), "speedup": est["speedup"], "speedup_ci": ci["speedup"],
                     "recovered": est["recovered"], "recovered_ci": ci["recovered"],
                     "hidden": hidden, "hidden_ci": hidden_ci,
                     "comm_share": est["comm_share"], "replay_speedup": pred.speedup,
                     "replay_recovered": pred.recovered, "replay_comm_share": pred.comm_share,
                     "replay_error": est["speedup"] / pred.speedup - 1,
                     # the link as the waiting wiring paid it: mean lateness of a wait past its deadline
                     "standard_wait_late_us": 1e6 * next(r["link_late_s"] / max(r["link_waits"], 1) for r in rs
                                                         if r["wiring"] == "standard")})
    return {"costs": costs, "links": links, "records": records, "rows": rows}


def regime_ratio(name: str, hw: Hardware | None = None) -> float:
    """The a/c of one regime of `regimes` by its short name (e.g. "paper, NVLink"), with the performance model
    calibrated on the paper's grid unless `hw` is given (chapter 2 places the regimes the same way)."""
    grid = paper_table("speed_grid.csv")
    regs = {r["short"]: r["a/c"] for r in regimes(hw or calibrate(grid)[0], grid, paper_slow_speedup=1.6)}
    if name not in regs:
        raise ValueError(f"unknown regime {name!r}; choose one of {', '.join(regs)}")
    return regs[name]


def hybrid(shape: ModelConfig, ladder_layers: int, ratio: float, tp: int = 2, batch: int = 1, prompt_len: int = 32,
           new_tokens: int = 24, samples: int = 7, warmup: int = 1, reps: int = 50, progress: bool = False) -> dict:
    """A hybrid (ladder on its top `ladder_layers`) against the same shape all standard, one rank's shard with the
    link at a/c = `ratio` on the virtual clock (claim H8 on CPU, measured as H1-H3 are): the decode speed-up
    paired by round with its bootstrap 95% interval, the share of standard's link wait the hybrid hides, and
    the replay of both wirings from module times measured in isolation just before.

    Returns {"costs", "link", "records", "row"}; the row has `ladder.speedup.hybrid_table`'s fields (its
    speed-up is the decode step's) plus "a/c", "replay_speedup", "replay_error", "hidden" (`hidden_share`) with
    its interval "hidden_ci", and "measure"."""
    costs = module_times(shape, tp=tp, batch=batch, context=prompt_len + new_tokens, reps=reps)
    link = link_for(ratio, costs)
    base = dict(preset=shape, tp=tp, batch=batch, prompt_len=prompt_len, new_tokens=new_tokens, samples=samples,
                warmup=warmup, ranks="virtual", clock="virtual", link=link)
    std, hyb = bench.run_local([BenchConfig(**base, wiring="standard"),
                          BenchConfig(**base, wiring="hybrid", ladder_layers=ladder_layers)],
                         progress=progress, interleave=True)
    pairs = list(zip(std["samples_decode_s"], hyb["samples_decode_s"]))
    def stat(pick):
        return statistics.median(s / h for s, h in pick)
    a = ratio * unit_compute(costs)
    predicted = (timeline(shape.rewired("standard"), costs, a)[0]
                 / timeline(shape.rewired("hybrid", ladder_layers), costs, a)[0])
    speedup = stat(pairs)
    hidden, hidden_ci = hidden_share(list(zip(std["samples_decode_wait_s"], hyb["samples_decode_wait_s"])))
    steps = max(new_tokens - 1, 1)
    row = {"link": link, "tp": tp, "ladder_layers": ladder_layers, "standard_tokens_per_s": std["tokens_per_s"],
           "hybrid_tokens_per_s": hyb["tokens_per_s"], "speedup": speedup, "speedup_ci": bootstrap(pairs, statistic=stat),
           "step_ms": 1e3 * statistics.median(std["samples_decode_s"]) / steps, "samples": len(pairs),
           "a/c": ratio, "replay_speedup": predicted, "replay_error": speedup / predicted - 1, "hidden": hidden,
           "hidden_ci": hidden_ci, "measure": "decode step", "clock": "virtual"}
    return {"costs": costs, "link": link, "records": [std, hyb], "row": row}


RIVALS = ("standard", "faster all-reduce", "two-batch overlap", "ladder", "upper bound")


def rivals(shape: ModelConfig, ratio: float, batch: int = 4, tp: int = 2, faster: float = 0.5, prompt_len: int = 32,
           new_tokens: int = 24, samples: int = 7, warmup: int = 1, reps: int = 50, progress: bool = False,
           clock: str = "virtual") -> dict:
    """Ladder against the exact methods that attack the same exposed all-reduce, at one batch size and one
    link (a/c = `ratio`), measured here round-robin and replayed from module times:

    * standard, the baseline; the upper bound, the ceiling (no all-reduce);
    * a faster all-reduce (one-shot / custom all-reduce kernels): standard with a link `faster` x as costly;
    * two-batch overlap: the batch split in two halves (`two_batch_layer`), exact, no retraining;
    * ladder.

    Returns {"costs", "half_costs", "link", "rows"}: per method the measured decode step (median ms and its
    spread over rounds), its speed-up over standard (paired by round, bootstrap interval) and the replay's."""
    if batch < 2:
        raise ValueError("two-batch overlap needs a batch of at least 2")
    context = prompt_len + new_tokens
    costs = module_times(shape, tp=tp, batch=batch, context=context, reps=reps)
    # two-batch overlap runs each module on one half and then, straight after, on the other: time it so
    half = module_times(shape, tp=tp, batch=batch // 2, context=context, reps=reps, back_to_back=True)
    link, fast = link_for(ratio, costs), link_for(ratio * faster, costs)
    spec = {"standard": ("standard", link), "faster all-reduce": ("standard", fast),
            "two-batch overlap": ("two_batch", link), "ladder": ("ladder", link), "upper bound": ("upper_bound", link)}
    base = dict(preset=shape, tp=tp, batch=batch, prompt_len=prompt_len, new_tokens=new_tokens, samples=samples,
                warmup=warmup, ranks="virtual", clock=clock)
    records = bench.run_local([BenchConfig(**base, wiring=w, link=lk) for w, lk in spec.values()], progress=progress,
                        interleave=True)
    steps = max(new_tokens - 1, 1)
    per_round = {m: [d / steps for d in r["samples_decode_s"]] for m, r in zip(spec, records)}
    base_p = replay(shape, costs, ratio, wirings=("standard", "ladder", "upper_bound", "two_batch"), half_costs=half)
    fast_p = replay(shape, costs, ratio * faster)
    predicted = {"standard": base_p.step_s["standard"], "faster all-reduce": fast_p.step_s["standard"],
                 "two-batch overlap": base_p.step_s["two_batch"], "ladder": base_p.step_s["ladder"],
                 "upper bound": base_p.step_s["upper_bound"]}
    rows = []
    for m in RIVALS:
        pairs = list(zip(per_round["standard"], per_round[m]))
        sp = statistics.median(s / x for s, x in pairs)
        ci = bootstrap(pairs, statistic=lambda pick: statistics.median(s / x for s, x in pick))
        rows.append({"method": m, "batch": batch, "a/c": ratio * (faster if m == "faster all-reduce" else 1),
                     "step_ms": 1e3 * statistics.median(per_round[m]), "speedup": sp, "speedup_ci": ci,
                     "replay_step_ms": 1e3 * predicted[m], "replay_speedup": predicted["standard"] / predicted[m]})
    return {"costs": costs, "half_costs": half, "link": link, "records": records, "rows": rows}


# --------------------------------------------------------------------------------------------- reporting
def _ci_text(x: float, ci, pct: bool = False) -> str:
    """'1.42 (1.29–1.45)', or a share '89% (69%–90%)'; a share whose interval is under two points wide keeps one
    decimal ('98.5% (98.5%–98.5%)'), where whole percent would round its ends apart."""
    digits = 1 if ci[1] - ci[0] < 0.02 else 0
    f = (lambda v: f"{v:.{digits}%}") if pct else (lambda v: f"{v:.2f}")
    return f"{f(x)} ({f(ci[0])}–{f(ci[1])})"


def validation_table(rows: list[dict]) -> "pd.DataFrame":
    """`validate`'s rows for reading: measured speed-up and recovered share with their 95% intervals beside
    the replay's, the share of standard's link wait ladder hid (the virtual clock's recovered share), and the
    replay's error."""
    import pandas as pd
    # numbers as text with their own precision: a Styler would print every float with six decimals
    return pd.DataFrame([{"regime": r["name"], "a/c": f"{r['a/c']:.2f}", "all-reduce (ms)": f"{r['allreduce_ms']:.3f}",
                          "speed-up, measured (95% CI)": _ci_text(r["speedup"], r["speedup_ci"]),
                          "speed-up, replay": f"{r['replay_speedup']:.2f}",
                          "recovered, from step times (95% CI)": _ci_text(r["recovered"], r["recovered_ci"], pct=True),
                          "recovered, replay": f"{r['replay_recovered']:.1%}",
                          "link wait hidden (95% CI)": ("–" if r.get("hidden") is None or r["hidden"] != r["hidden"]
                                                        else _ci_text(r["hidden"], r["hidden_ci"], pct=True)),
                          "replay error": f"{r['replay_error']:+.1%}"} for r in rows])


def plot_rivals(rows: list[dict], ax=None, title: str | None = None):
    """`rivals`' rows: each method's measured decode speed-up over standard (bars, 95% intervals) and the
    replay's (diamonds)."""
    import matplotlib.pyplot as plt
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.2))
    y = list(range(len(rows)))
    sp = [r["speedup"] for r in rows]
    ax.barh(y, sp, xerr=[[s - r["speedup_ci"][0] for s, r in zip(sp, rows)],
                         [r["speedup_ci"][1] - s for s, r in zip(sp, rows)]],
            color="#95a5a6", capsize=3, label="measured here (95% CI)")
    ax.plot([r["replay_speedup"] for r in rows], y, "D", color="#c0392b", label="replay")
    ax.set_yticks(y, [r["method"] for r in rows])
    ax.axvline(1, color="black", lw=0.8)
    ax.set_xlabel(title or "decode speed-up over standard")
    ax.legend(fontsize=8, loc="lower right")
    return ax


def claim_entry(row: dict, records: list[dict], shape: ModelConfig, tp: int):
    """The claims entry (ladder.claims.ClaimEntry) of one `validate` row: the measured decode speed-up and
    recovered share, paired by round, with the regime's a/c the link was set to and the replay's error."""
    ub = [r for r in records if r["wiring"] == "upper_bound"]
    rounds = decode_rounds([r for r in records if r.get("ratio_name") == row["name"]] + ub[:1])
    what = (f"{shape.n_layers}L d{shape.dim}, one rank of TP={tp}, batch {records[0]['batch']}: ladder / standard "
            f"decode with the link at a/c = {row['a/c']:.2f} ({row['name']}); the replay predicts "
            f"{row['replay_speedup']:.2f}x")
    how = (f"CPU, one rank's shard with its peer emulated; every all-reduce costs {row['allreduce_ms']:.3f} ms "
           f"= a/c x one module's measured compute")
    virtual = row.get("clock") == "virtual" and row.get("hidden") == row.get("hidden")
    if virtual:
        how += ("; timed on a virtual clock (compute = this thread's CPU time, each wait advances the clock to "
                "its all-reduce's end: nothing sleeps); the share of the upper bound's gain is the share of "
                "standard's link wait that ladder hides")
    return measured_entry(rounds, "cpu-emulated-link", what, how,
                          hidden=(row["hidden"], row["hidden_ci"]) if virtual else None, link_ratio=row["a/c"],
                          replay_error=row["replay_error"], regime=row["name"], link=row["link"], tp=tp,
                          batch=records[0]["batch"], shape=f"{shape.n_layers}L d{shape.dim}")
