"""Which all-reduce runs behind which module: read off the wiring code, never described by hand.

Two tracers of the same question:

* `trace_log` / `trace_wiring` run the wiring functions of ladder/model.py on *symbolic* activations (sets
  of module names) with a communicator that only records: the dataflow of any wiring in microseconds, the
  event log that ladder.perfmodel replays on its timeline, and chapter 1's dataflow table and diagram.
* `record_step` runs one *real* cached forward step (prefill or decode) of a real model, through the
  model's own communicator wrapped in a recorder, and logs each module's compute and each all-reduce's
  start and wait in program order. `overlap_table` counts from it, exactly, how many all-reduces have a
  whole module of compute between their start and their wait (standard 0 of 2L, ladder 2L - 1 of 2L,
  a hybrid with N ladder layers 2N - 1) and which module, of how many bytes and FLOPs, each one hides
  behind. No clock is read: the count is the same on every machine and every run.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch

from .config import RESIDUAL_WIRINGS, WIRING_SPECS, ModelConfig
from .link import VirtualRanks
from .model import LAYER_WIRINGS, Stream, build_model
from .tp import WrappedComm
# pandas is imported inside the function that uses it: importing ladder.trace does not load it.

WIRINGS = RESIDUAL_WIRINGS  # the residual wirings; two_batch is traced too (trace_log), but is a schedule, not drawn


# --------------------------------------------------------------------------------------------- tracing
class _Sym:
    """A symbolic activation: the set of module outputs summed into it."""

    def __init__(self, parts):
        self.parts = frozenset(parts)

    def __add__(self, other):
        return _Sym(self.parts | other.parts)

    def chunk(self, n):  # two_batch_layer's halves of the batch carry the same module outputs
        return (self,) * n


@dataclass
class _Handle:
    partial: _Sym
    index: int  # position in the event log where the collective started


@dataclass
class _TracingComm:
    """A communicator that records when collectives start and are waited on."""
    size: int = 2
    rank: int = 0
    log: list = field(default_factory=list)

    def start(self, partial):
        h = _Handle(partial, len(self.log))
        self.log.append(("start", h))
        return h

    def wait(self, handle):
        if isinstance(handle, _Handle):
            self.log.append(("wait", handle))
            return handle.partial
        return handle

    def all_reduce(self, partial):
        return self.wait(self.start(partial))


class _TracingBlock:
    """Stands in for ladder.model.Block: norms are the identity, modules record what they read."""

    def __init__(self, layer: int, log: list):
        self.layer, self.log = layer, log
        self.input_layernorm = self.post_attention_layernorm = lambda x: x

    def _module(self, kind, h):
        name = f"{kind}{self.layer}"
        self.log.append(("compute", name, h.parts))
        return _Sym({name})

    def attention(self, h, **ctx):
        return self._module("attn", h)

    def feed_forward(self, h):
        return self._module("mlp", h)


def trace_log(layer_wirings: list[str]) -> list[tuple]:
    """The event log of one forward step through the real wiring functions, in program order:
    ("compute", module, parts read), ("start", handle) and ("wait", handle), then the final settle's
    waits (before the LM head). ladder.perfmodel replays this log, so its timeline is the code's."""
    comm = _TracingComm()
    s = Stream(_Sym({"emb"}))
    for layer, w in enumerate(layer_wirings):
        s = LAYER_WIRINGS[w](_TracingBlock(layer, comm.log), s, comm)
    s.settle(comm)
    return comm.log


@functools.lru_cache(maxsize=None)
def event_log(layer_wirings: tuple[str, ...]) -> tuple:
    """`trace_log`, cached: it depends only on the per-layer wirings, and a calibration of the performance
    model replays the same few logs ~17k times."""
    return tuple(trace_log(list(layer_wirings)))


def n_allreduces(cfg: ModelConfig) -> int:
    """All-reduces one forward step launches, as the wiring code launches them (the one count the
    performance model, the replay and the benchmark's time estimate all use)."""
    return sum(e[0] == "start" for e in event_log(tuple(cfg.layer_wirings())))


def trace_wiring(wiring: str, n_layers: int = 2, ladder_layers: int = 1) -> list[dict]:
    """Run `wiring`'s layer functions symbolically; one record per module.

    Each record: module name, layer, `reads` (the module outputs contained in the stream it reads, in
    order; "emb" is the embedding), `missing` (earlier outputs it does not see), and its all-reduce:
    "blocking" (waited on before any other module runs), "overlapped" (another module computes while
    it is in flight) or "none".
    """
    if wiring not in WIRING_SPECS:
        raise ValueError(f"unknown wiring {wiring!r}; expected one of {tuple(WIRING_SPECS)}")
    layer_wirings = ModelConfig(n_layers=n_layers, dim=8, n_heads=2, n_kv_heads=2, ffn_dim=8, vocab_size=8,
                                ).rewired(wiring, ladder_layers).layer_wirings()
    comm = _TracingComm()
    comm.log = trace_log(layer_wirings)

    order = [e[1] for e in comm.log if e[0] == "compute"]
    # each module output's all-reduce: was any other module computed between start and wait?
    ar = {}
    for i, (kind, h, *_) in enumerate(comm.log):
        if kind != "start":
            continue
        j = next(k for k, e in enumerate(comm.log) if e[0] == "wait" and e[1] is h)
        overlapped = any(e[0] == "compute" for e in comm.log[i + 1:j])
        for name in h.partial.parts:
            ar[name] = "overlapped" if overlapped else "blocking"
    records = []
    for _, name, reads in (e for e in comm.log if e[0] == "compute"):
        earlier = order[:order.index(name)]
        records.append({"wiring": wiring, "module": name, "layer": int(name.lstrip("atnmlp")),
                        "reads": ["emb"] + [m for m in earlier if m in reads],
                        "missing": [m for m in earlier if m not in reads],
                        "all_reduce": ar.get(name, "none"), "shares_all_reduce_with":
                        sorted(p for h in [e[1] for e in comm.log if e[0] == "start" and name in e[1].partial.parts]
                               for p in h.partial.parts if p != name)})
    return records


# --------------------------------------------------------------------------------------------- a real step
class _Recorded:
    """A handle of the wrapped communicator, numbered in launch order."""

    def __init__(self, inner, index: int):
        self.inner, self.index = inner, index


class RecordingComm(WrappedComm):
    """Wraps a model's communicator and logs, in program order, ("start", i, bytes) when all-reduce i is
    launched and ("wait", i) when the model waits on it; the collectives themselves are the wrapped
    communicator's (a real process group, VirtualRanks, an emulated link)."""

    def __init__(self, inner, log: list | None = None):
        super().__init__(inner)
        self.log = [] if log is None else log
        self.n = 0

    def start(self, partial: torch.Tensor):
        h = _Recorded(self.comm.start(partial), self.n)
        self.log.append(("start", self.n, partial.numel() * partial.element_size()))
        self.n += 1
        return h

    def wait(self, handle):
        if isinstance(handle, _Recorded):
            self.log.append(("wait", handle.index))
            return self.comm.wait(handle.inner)
        return self.comm.wait(handle)  # None or an already reduced tensor: no collective is waited on


def _module_cost(module: torch.nn.Module, tokens: int, context: int | None) -> tuple[int, int]:
    """(weight bytes read, FLOPs) of one module call on `tokens` tokens (per rank): matmul FLOPs are
    2 x weights x tokens, plus attention's scores and values over `context` cache positions."""
    weights = sum(p.numel() for p in module.parameters())
    nbytes = sum(p.numel() * p.element_size() for p in module.parameters())
    flops = 2 * weights * tokens
    if context and hasattr(module, "n_heads"):
        flops += 4 * tokens * context * module.n_heads * module.head_dim
    return nbytes, flops


@torch.inference_mode()
def record_step(model, tokens: torch.Tensor, input_pos: torch.Tensor) -> list[tuple]:
    """The event log of one cached forward step of `model` (a ladder.Transformer with its KV cache set up):
    ("compute", module, weight bytes, FLOPs) for every attention, MLP and the LM head when it returns,
    ("start", i, bytes) and ("wait", i) for every all-reduce, in the order the code ran them."""
    log: list = []
    context = getattr(model, "cache_len", None) or None
    n_tok = tokens.numel()
    hooks = []

    def hook(name):
        def fn(module, args, out):
            log.append(("compute", name, *_module_cost(module, n_tok, context if name.startswith("attn") else None)))
        return fn

    for i, block in enumerate(model.layers):
        hooks.append(block.self_attn.register_forward_hook(hook(f"attn{i}")))
        hooks.append(block.mlp.register_forward_hook(hook(f"mlp{i}")))
    hooks.append(model.lm_head.register_forward_hook(hook("head")))
    inner = model.comm
    model.comm = RecordingComm(inner, log)
    try:
        model(tokens, input_pos)
    finally:
        model.comm = inner
        for h in hooks:
            h.remove()
    return log


def overlaps(log: list[tuple]) -> list[dict]:
    """One record per all-reduce of a `record_step` log: the module that produced it (the last compute
    before its start), the modules that computed between its start and its wait (`hidden_behind`), with
    their weight bytes and FLOPs. An all-reduce is overlapped when at least one whole module ran in between."""
    out, pos = [], {}
    for k, e in enumerate(log):
        if e[0] in ("start", "wait"):
            pos.setdefault(e[1], {})[e[0]] = k
    for i, p in sorted(pos.items()):
        s, w = p["start"], p.get("wait", len(log))
        producer = next((e[1] for e in reversed(log[:s]) if e[0] == "compute"), None)
        between = [e for e in log[s + 1:w] if e[0] == "compute"]
        out.append({"all_reduce": i, "bytes": log[s][2], "after": producer,
                    "hidden_behind": [e[1] for e in between], "overlapped": bool(between),
                    "hidden_weight_bytes": sum(e[2] for e in between), "hidden_flops": sum(e[3] for e in between),
                    "waited": "wait" in p})
    return out


def step_overlap(config: ModelConfig, tp: int = 2, batch: int = 1, prompt_len: int = 8, decode: bool = True,
                 seed: int = 0) -> list[dict]:
    """`overlaps` of one real step of `config` on one rank of a TP = `tp` group (ladder.link.VirtualRanks:
    this rank's shard and its real module code; the peers' partial sums are not needed to know the order):
    the decode step after a `prompt_len` prefill, or the prefill itself with `decode=False`."""
    model = build_model(config.replace(max_seq_len=max(config.max_seq_len, prompt_len + 1)), VirtualRanks(tp), seed=seed)
    model.setup_cache(batch, prompt_len + 1)
    gen = torch.Generator().manual_seed(seed)
    prompt = torch.randint(0, config.vocab_size, (batch, prompt_len), generator=gen)
    with torch.inference_mode():
        if not decode:
            return overlaps(record_step(model, prompt, torch.arange(prompt_len)))
        model(prompt, torch.arange(prompt_len))
        nxt = torch.randint(0, config.vocab_size, (batch, 1), generator=gen)
        return overlaps(record_step(model, nxt, torch.tensor([prompt_len])))


def overlap_table(config: ModelConfig, wirings=("standard", "parallel", "ladder", "hybrid", "upper_bound"),
                  ladder_layers: int | None = None, tp: int = 2, batch: int = 1, prompt_len: int = 8):
    """Per wiring, from one real decode step of `config`: all-reduces launched, how many have a whole module
    between start and wait, and what they hide behind (mean weight MB and MFLOPs of those modules). The
    hybrid converts the top `ladder_layers` layers (default: half). A pandas DataFrame, one row per wiring."""
    import pandas as pd
    rows = []
    for w in wirings:
        cfg = config.rewired(w, ladder_layers if ladder_layers is not None else config.n_layers // 2)
        ov = step_overlap(cfg, tp=tp, batch=batch, prompt_len=prompt_len)
        hidden = [o for o in ov if o["overlapped"]]
        n = len(cfg.ladder_layer_indices())
        rows.append({"wiring": f"hybrid (top {n} of {config.n_layers} layers ladder)" if cfg.spec.per_layer else w,
                     "all-reduces per step": len(ov), "behind a whole module": len(hidden),
                     "exposed": len(ov) - len(hidden),
                     "hidden behind": ", ".join(sorted({m.rstrip("0123456789") for o in hidden for m in o["hidden_behind"]})) or "-",
                     "MB of weights behind each": (sum(o["hidden_weight_bytes"] for o in hidden) / len(hidden) / 1e6) if hidden else 0.0,
                     "MFLOPs behind each": (sum(o["hidden_flops"] for o in hidden) / len(hidden) / 1e6) if hidden else 0.0})
    return pd.DataFrame(rows)
