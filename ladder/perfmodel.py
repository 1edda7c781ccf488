"""A performance model of tensor-parallel generation: a roofline per module plus alpha-beta all-reduces.

Pure Python (plus the symbolic trace of the wiring code). For a (shape, hardware, TP degree, batch, prompt, new tokens, wiring, link) it predicts
prefill and decode latency and the paper's tokens/s = batch x new tokens / (prefill + decode):

* compute: each module (attention, MLP, LM head) on one rank costs its roofline time,
  max(FLOPs / peak FLOP/s, bytes moved / memory bandwidth) / efficiency, where the bytes are this rank's
  weights plus the KV cache it reads;
* communication: each all-reduce costs the link's ring alpha-beta time (ladder.link.Link) / link
  efficiency;
* the wiring decides what overlaps: `timeline` replays the start/wait log of the wiring functions of
  ladder/model.py themselves (traced by ladder.trace) on a compute stream and a communication
  stream, so the model cannot describe a dataflow the code does not have (e.g. at a hybrid's boundary
  the last standard MLP's all-reduce is waited on before the first ladder attention).

Calibration: one efficiency factor per hardware target (the GPU's fraction of its roofline, the link's
fraction of its alpha-beta rate) and the per-kernel latency, fitted only on the Llama-3-70B TP = 8 column
of the paper's NVLink grid (`fit`); everything else the paper reports is out of sample (`compare`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

from .config import ModelConfig, preset
from .link import PRESETS as LINKS
from .link import Link
from .trace import event_log, n_allreduces


@dataclass(frozen=True)
class Hardware:
    """One accelerator: dense peak FLOP/s for the benchmark dtype, memory bandwidth, and the one fitted factor."""
    name: str
    peak_flops: float
    mem_bw: float
    efficiency: float = 1.0  # achieved fraction of the roofline (fitted; see `fit`)
    launch_s: float = 0.0    # per dependent kernel: launch / drain latency that no roofline sees
    overlap_sm_share: float = 0.0  # share of the GPU a concurrent collective occupies (slows overlapped compute)
    source: str = ""


HARDWARE = {
    # NVIDIA H100 Tensor Core GPU datasheet (SXM5): 989 TFLOPS dense FP16/BF16 Tensor Core (the datasheet's
    # 1,979 is with 2:4 sparsity), 3.35 TB/s HBM3, 80 GB.
    # Launch latency: inside a CUDA graph a dependent kernel still starts ~1-2 us after its predecessor
    # drains (NVIDIA technical blog, "Getting Started with CUDA Graphs"); gpt-fast's decode is such a
    # graph: 1.5 us. That is the uncalibrated default; `calibrate` fits the per-kernel latency (LAUNCH_GRID_S).
    # Overlap: an NCCL all-reduce runs as a kernel on its own SMs (up to 32 channels, one CTA/SM each, on
    # NVLink), so compute that overlaps it has ~32 of the 132 SMs fewer: 0.24.
    "H100-SXM": Hardware("H100-SXM", 989e12, 3.35e12, launch_s=1.5e-6, overlap_sm_share=32 / 132,
                         source="NVIDIA H100 datasheet (SXM5)"),
}


@dataclass(frozen=True)
class Fabric:
    """The interconnect of a TP group and its one fitted factor (achieved fraction of the link's rate)."""
    link: Link
    efficiency: float = 1.0

    def allreduce(self, nbytes: float, p: int) -> float:
        return self.link.allreduce_time(nbytes, p) / self.efficiency


# --------------------------------------------------------------------------------------------- one rank's work
def module_costs(cfg: ModelConfig, tp: int, batch: int, tokens: int, context: float, hw: Hardware,
                 bytes_per: int = 2, expand_kv: bool = True) -> dict[str, float]:
    """Seconds for one rank to run each module once on `tokens` new tokens per sequence attending to
    `context` cache positions: {"attn", "mlp", "head"} (per layer for attn/mlp).

    `expand_kv`: the paper's gpt-fast attention repeats each KV head for its query heads
    (`repeat_interleave`) before SDPA's math backend, so K and V are read once per *query* head on top of
    the cache read itself (our own model uses `enable_gqa` instead).
    """
    loc = cfg.local_sizes(tp)
    d, hd, n = cfg.dim, cfg.head_dim, batch * tokens
    attn_w = d * hd * (2 * loc["n_heads"] + 2 * loc["n_kv_heads"])
    mlp_w = 3 * d * loc["ffn_dim"]
    head_w = d * cfg.vocab_size  # replicated on every rank
    kv_heads = loc["n_kv_heads"] + (loc["n_heads"] if expand_kv else 0)
    kv_bytes = 2 * batch * context * kv_heads * hd * bytes_per  # K and V
    attn_flops = 2 * attn_w * n + 4 * n * context * loc["n_heads"] * hd  # projections + scores/values
    act = n * d * bytes_per  # activations in and out are small next to weights; counted once

    def roof(flops, nbytes, kernels):
        return max(flops / hw.peak_flops, nbytes / hw.mem_bw) / hw.efficiency + kernels * hw.launch_s

    # kernels per module in gpt-fast's decode: attention = norm, fused qkv, rope, cache update, KV
    # expand, scores, softmax, values, o_proj (9); MLP = norm, gate/up, silu*mul, down (4); head = norm, matmul
    return {"attn": roof(attn_flops, attn_w * bytes_per + kv_bytes + 2 * act, 9),
            "mlp": roof(2 * mlp_w * n, mlp_w * bytes_per + 2 * act, 4),
            "head": roof(2 * head_w * n, head_w * bytes_per + act, 2)}


def _run(start: float, cost: float, busy_until: float, slow: float) -> float:
    """End of a compute of `cost` seconds starting at `start` while the link is busy until `busy_until`;
    during that overlap compute runs at (1 - slow) of its speed (the collective holds part of the chip)."""
    overlap = max(0.0, busy_until - start)
    if overlap * (1 - slow) >= cost:
        return start + cost / (1 - slow)
    return start + cost + overlap * slow


def timeline(cfg: ModelConfig, costs: dict[str, float], ar: float, slow: float = 0.0,
             record: bool = True) -> tuple[float, list[tuple]]:
    """Replay one forward step's dependencies; returns (seconds, events) (no events with `record=False`:
    the fit calls this thousands of times and needs only the time).

    events: (stream, label, start, end) with stream "compute" or "comm". `ar` is one all-reduce's time.
    The order is not re-described here: it is the event log of the real wiring functions of
    ladder/model.py (`ladder.trace.trace_log`). A module starts after the previous module's compute and
    after every all-reduce the code waited on since then; an all-reduce starts when the module that
    produced it ends and the link is free (one at a time, in issue order, as NCCL's one stream).
    """
    events = []
    t_comp = 0.0   # when the compute stream is free
    comm_free = 0.0
    ready = 0.0    # latest end of the all-reduces waited on since the last compute
    ends = {}      # handle id -> end of its all-reduce
    for ev in event_log(tuple(cfg.layer_wirings())):
        if ev[0] == "compute":
            name = ev[1]
            start = max(t_comp, ready)
            t_comp = _run(start, costs["attn" if name.startswith("attn") else "mlp"], comm_free, slow)
            if record:
                events.append(("compute", f"L{name.lstrip('atnmlp')} {name.rstrip('0123456789')}", start, t_comp))
        elif ev[0] == "start":
            s = max(t_comp, comm_free)
            comm_free = s + ar
            ends[id(ev[1])] = comm_free
            if record:
                events.append(("comm", "AR " + "+".join(sorted(ev[1].partial.parts)), s, comm_free))
        else:  # wait: whatever computes next needs this all-reduce
            ready = max(ready, ends[id(ev[1])])
    start = max(t_comp, ready)  # the LM head needs the whole (settled) stream
    end = start + costs["head"]
    events.append(("compute", "norm + LM head", start, end))
    return end, events


@dataclass
class Prediction:
    prefill_s: float
    decode_s: float          # all decode steps
    decode_step_s: float     # one decode step
    tokens_per_s: float
    comm_share: float        # all-reduce time / (all-reduce + compute time) if nothing overlapped


def predict(cfg: ModelConfig | str, hw: Hardware | str = "H100-SXM", tp: int = 8, batch: int = 1,
            prompt_len: int = 1024, new_tokens: int = 512, wiring: str | None = None,
            link: Link | Fabric | str = "nvlink4", bytes_per: int = 2, ladder_layers: int = 0) -> Prediction:
    """Predicted prefill/decode latency and tokens/s (the paper's metric) for one configuration."""
    if isinstance(cfg, str):
        cfg = preset(cfg)
    if wiring is not None:
        cfg = cfg.rewired(wiring, ladder_layers)
    hw = HARDWARE[hw] if isinstance(hw, str) else hw
    fab = link if isinstance(link, Fabric) else Fabric(LINKS[link] if isinstance(link, str) else link)
    if batch < 1 or prompt_len < 1 or new_tokens < 1 or tp < 1:
        raise ValueError("tp, batch, prompt_len and new_tokens must all be >= 1")

    parts = cfg.spec.batch_parts
    if batch < parts:
        raise ValueError(f"wiring={cfg.wiring!r} splits the batch in {parts} parts: it needs batch >= {parts}")
    # two-batch overlap runs every module (and all-reduces a message) for half the batch, twice; the LM head
    # runs once on the whole batch
    part = -(-batch // parts)

    def step(tokens, context):
        costs = module_costs(cfg, tp, part, tokens, context, hw, bytes_per)
        costs["head"] = module_costs(cfg, tp, batch, tokens, context, hw, bytes_per)["head"]
        ar = fab.allreduce(part * tokens * cfg.dim * bytes_per, tp)
        t, _ = timeline(cfg, costs, ar, hw.overlap_sm_share, record=False)
        n_ar = n_allreduces(cfg)  # as the code launches them
        n_modules = sum(e[0] == "compute" for e in event_log(tuple(cfg.layer_wirings()))) // 2  # of each kind
        serial = n_modules * (costs["attn"] + costs["mlp"]) + costs["head"]
        return t, n_ar * ar, serial

    # gpt-fast (and ladder/model.py) attend over the whole static cache under a mask, every step
    cache = prompt_len + new_tokens
    pre, pre_comm, pre_comp = step(prompt_len, cache)
    steps = new_tokens - 1
    dec, dec_comm, dec_comp = step(1, cache)
    comm = pre_comm + steps * dec_comm
    share = comm / (comm + pre_comp + steps * dec_comp)
    total = pre + steps * dec
    return Prediction(pre, steps * dec, dec, batch * new_tokens / total, share)


# --------------------------------------------------------------------------------------------- calibration
WIRING_COLUMNS = ("standard", "parallel", "ladder", "upper_bound")


def with_efficiency(hw_eff: float, link_eff: float, hw: str = "H100-SXM", link: str = "nvlink4",
                    launch_s: float | None = None):
    """(Hardware, Fabric) with the given efficiency factors (and per-kernel latency, if given)."""
    h = replace(HARDWARE[hw], efficiency=hw_eff)
    return (h if launch_s is None else replace(h, launch_s=launch_s)), Fabric(LINKS[link], link_eff)


def _predict_row(r: dict, hw: Hardware, fab: Fabric) -> float:
    return predict(r["preset"], hw, r["tp"], r["batch"], r.get("prompt_len", 1024), r.get("new_tokens", 512),
                   wiring=r["wiring"], link=fab).tokens_per_s


# The per-kernel latency is fitted too, from these values (seconds): NVIDIA's blog puts a dependent kernel's
# start 1-2 us after its predecessor inside a CUDA graph, but a decode kernel also drains (its last wave
# runs on part of the SMs), and that tail is per kernel as well. One number per kernel cannot be read off a
# datasheet, so the fit chooses it with the two efficiencies, on the same fitted column only.
LAUNCH_GRID_S = (1e-6, 2e-6, 3e-6, 4e-6, 5e-6)


def fit(rows: list[dict], hw: str = "H100-SXM", link: str = "nvlink4") -> tuple[float, float, float]:
    """Fit (hardware efficiency, link efficiency, per-kernel latency) to rows {preset, tp, batch, wiring,
    tokens_per_s} by least squares on log tokens/s: for each latency of LAUNCH_GRID_S, a coarse grid of the
    two efficiencies in (0, 1] (steps of 0.1), then a fine one (0.01) around the best; the best of all."""

    def loss(he, le, launch):
        h, f = with_efficiency(he, le, hw, link, launch)
        return sum((math.log(_predict_row(r, h, f)) - math.log(r["tokens_per_s"])) ** 2 for r in rows)

    best = None
    for launch in LAUNCH_GRID_S:
        _, he, le = min((loss(a / 10, b / 10, launch), a / 10, b / 10) for a in range(1, 11) for b in range(1, 11))
        cand = min((loss(a, b, launch), a, b, launch) for a in _around(he) for b in _around(le))
        best = cand if best is None or cand < best else best
    return best[1], best[2], best[3]


def _around(x: float) -> list[float]:
    return [round(x + k / 100, 2) for k in range(-5, 6) if 0 < x + k / 100 <= 1.0]


def grid_rows(grid) -> list[dict]:
    """The paper's wiring grid (a DataFrame or list of dicts with standard/parallel/ladder/upper_bound
    columns) as one row per (batch, tp, wiring)."""
    recs = grid.to_dict("records") if hasattr(grid, "to_dict") else list(grid)
    return [{"preset": "llama3-70B", "tp": int(g["tp"]), "batch": int(g["batch"]), "wiring": w,
             "tokens_per_s": float(g[w])} for g in recs for w in WIRING_COLUMNS]


def calibrate(grid, tp: int = 8) -> tuple[Hardware, Fabric, dict]:
    """Fit the two factors and the per-kernel latency on the TP = `tp` column of the paper's 70B NVLink grid only.

    Returns (hardware, fabric, info) where info holds the factors and the in-sample mean |error|.
    """
    rows = [r for r in grid_rows(grid) if r["tp"] == tp]
    if not rows:
        raise ValueError(f"no rows with tp={tp} to calibrate on")
    he, le, launch = fit(rows)
    hw, fab = with_efficiency(he, le, launch_s=launch)
    errs = [abs(_predict_row(r, hw, fab) / r["tokens_per_s"] - 1) for r in rows]
    return hw, fab, {"gpu_efficiency": he, "link_efficiency": le, "launch_us": launch * 1e6,
                     "fitted_on": f"70B TP={tp} NVLink column",
                     "n_fit_rows": len(rows), "in_sample_mean_abs_error": sum(errs) / len(errs)}


def compare(rows: list[dict], hw: Hardware, fab: Fabric) -> list[dict]:
    """Each row with the model's tokens/s and relative error added."""
    out = []
    for r in rows:
        pred = _predict_row(r, hw, fab)
        out.append({**r, "predicted": pred, "error": pred / r["tokens_per_s"] - 1})
    return out


def speedup(preset_name: str, hw: Hardware, fab: Fabric | Link | str, tp: int, batch: int,
            wiring: str = "ladder", prompt_len: int = 1024, new_tokens: int = 512, **kw) -> float:
    """Predicted tokens/s of `wiring` over standard."""
    a = predict(preset_name, hw, tp, batch, prompt_len, new_tokens, wiring=wiring, link=fab, **kw)
    b = predict(preset_name, hw, tp, batch, prompt_len, new_tokens, wiring="standard", link=fab, **kw)
    return a.tokens_per_s / b.tokens_per_s


# --------------------------------------------------------------------------------------------- our CPU runs
def module_shares(cfg: ModelConfig) -> dict[str, float]:
    """Each module's share of one step's compute, by weight count (decode is memory bound; prefill
    FLOPs are proportional to the same counts): {"attn", "mlp" (per layer), "head"}."""
    d, hd = cfg.dim, cfg.head_dim
    attn = d * hd * (2 * cfg.n_heads + 2 * cfg.n_kv_heads)
    mlp = 3 * d * cfg.ffn_dim
    head = d * cfg.vocab_size
    total = cfg.n_layers * (attn + mlp) + head
    return {"attn": attn / total, "mlp": mlp / total, "head": head / total}


def predict_measured(cfg: ModelConfig, wiring: str, compute_prefill_s: float, compute_step_s: float,
                     ar_prefill_s: float, ar_decode_s: float, batch: int, new_tokens: int,
                     ladder_layers: int = 0) -> dict:
    """Predict a CPU measurement from separately measured parts.

    compute_*: the upper bound's measured prefill time and decode time per step (compute only);
    ar_*: one blocking all-reduce of a prefill / decode message, measured alone (communication only).
    The compute is split into modules by `module_shares` and replayed through `timeline` with the
    wiring's dependencies (an emulated link sleeps, so overlapped compute is not slowed).
    """
    cfg = cfg.rewired(wiring, ladder_layers)
    sh = module_shares(cfg)
    pre, _ = timeline(cfg, {k: v * compute_prefill_s for k, v in sh.items()}, ar_prefill_s)
    dec, _ = timeline(cfg, {k: v * compute_step_s for k, v in sh.items()}, ar_decode_s)
    total = pre + (new_tokens - 1) * dec
    return {"prefill_s": pre, "decode_s_per_token": dec, "tokens_per_s": batch * new_tokens / total}
