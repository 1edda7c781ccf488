"""A compiled, graph-captured decode step that keeps the wiring's order of all-reduce waits.

Why not compile the whole step: under `torch.compile` of a full decode step at TP > 1, the functional
all-reduces and their waits become graph nodes that inductor may schedule. It fuses layer l+1's two
RMSNorms into one kernel (both read the same residual stream in the standard dataflow, and in the ladder
dataflow the second norm reads it plus MLP(l)'s output), and that fused kernel needs MLP(l)'s reduced
output, so the wait for MLP(l)'s all-reduce is hoisted above attention(l+1): only the attention
all-reduces stay hidden (seen in inductor's output code for a TP = 2 ladder step on CPU/gloo).

So instead (regional compilation):
* `compile_modules` compiles the *modules* (RMSNorm, Attention, MLP); dynamo's code cache is keyed by
  the module class's code, with parameters as inputs, so one compiled artifact serves every layer;
* the wiring functions of ladder/model.py stay in eager Python, so `comm.start` / `comm.wait` run
  exactly where the wiring calls them;
* on CUDA, `GraphedDecode` captures the whole decode step in ONE CUDA graph (torch.cuda.graph). The
  communicators' start/wait are stream and event operations (`StreamCollectives` for real NCCL, a spin
  kernel in ladder.link.CudaEmulatedLink), so the graph records them as dependencies exactly where the
  Python wiring issued them during capture: the captured order of waits is the wiring's order.
On CPU the same wiring code runs eagerly with the compiled modules.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

from .generate import decode_one
from .model import Transformer
from .parallelize import parallelize
from .tp import WrappedComm


def compile_modules(model: Transformer, **compile_kwargs) -> Transformer:
    """Regional compilation: `.compile()` every RMSNorm, Attention and MLP module in place (the wiring
    between them is left in Python). Returns `model`. It is `parallelize`'s compile step (there: why the
    recompile limit is raised and why `dynamic=False`), kept here for the decode path that uses it."""
    return parallelize(model, compile=True, compile_kwargs=compile_kwargs)


class StreamCollectives(WrappedComm):
    """Real all-reduces (NCCL) on one dedicated communication stream, joined by events.

    `start` makes the communication stream wait for the current stream, issues the in-place all-reduce
    there and records a `done` event; `wait` makes the current stream wait for `done`. Both are
    capturable in a CUDA graph. `start` consumes `partial` (reduced in place); every handle is waited on
    the consuming stream before its tensor is dropped, so no record_stream is needed.
    """

    def __init__(self, comm, device=None):
        super().__init__(comm)
        self.stream = torch.cuda.Stream(device)
        self.n_collectives = 0

    def start(self, partial: torch.Tensor):
        self.n_collectives += 1
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            dist.all_reduce(partial, group=self.group)
            done = torch.cuda.Event()
            done.record()
        return _InFlight(partial, done)

    def wait(self, handle):
        if not isinstance(handle, _InFlight):
            return self.comm.wait(handle)
        torch.cuda.current_stream().wait_event(handle.done)
        return handle.tensor

    def count(self) -> int:
        return self.n_collectives


class _InFlight:
    __slots__ = ("tensor", "done")

    def __init__(self, tensor, done):
        self.tensor, self.done = tensor, done


class DecodeGraph:
    """One decode step of `model` (batch size and sampling fixed) captured in one CUDA graph.

    Static input buffers (token, position, noise) are copied into before each replay and the static
    output (next token ids) is returned. Warm-up runs (on a side stream, as torch.cuda.graph requires)
    execute the real step with the first call's inputs, so the KV-cache slot they write holds exactly
    what the step itself writes.
    """

    def __init__(self, model: Transformer, token, input_pos, noise=None, temperature=0.0, top_k=None,
                 warmup: int = 2):
        self.token, self.pos = token.clone(), input_pos.clone()
        self.noise = None if noise is None else noise.clone()
        # the graph writes into these caches' memory: keep them alive (a new setup_cache gets a new graph)
        self.caches = [block.self_attn.kv_cache for block in model.layers]
        kw = dict(temperature=temperature, top_k=top_k)

        def step():
            return decode_one(model, self.token, self.pos, noise=self.noise, **kw)

        before = model.comm.count()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup):
                step()
        torch.cuda.current_stream().wait_stream(side)
        mid = model.comm.count()
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out = step()
        # collectives per step, as the communicator counted them while capturing (replays bypass Python)
        self.collectives = model.comm.count() - mid
        self.warmup_collectives = mid - before

    def __call__(self, token, input_pos, noise=None) -> torch.Tensor:
        self.token.copy_(token)
        self.pos.copy_(input_pos)
        if noise is not None:
            self.noise.copy_(noise)
        self.graph.replay()
        return self.out


class GraphedDecode:
    """A `decode_fn` for ladder.generate.generate: each (model, batch, sampling) captured once, replayed.

    `count()` is the correction to add to `model.comm.count()` so that the sum counts the collectives
    actually executed: replays run collectives the communicator never sees, and the capture pass counted
    collectives that never ran.
    """

    def __init__(self, warmup: int = 2):
        self.warmup, self.graphs, self._uncounted = warmup, {}, 0

    def __call__(self, model, token, input_pos, noise=None, temperature=0.0, top_k=None):
        # the KV cache too: a graph replays into the cache it was captured with, not one allocated since
        key = (id(model), id(model.layers[0].self_attn.kv_cache), tuple(token.shape), temperature, top_k,
               noise is None)
        g = self.graphs.get(key)
        if g is None:
            g = self.graphs[key] = DecodeGraph(model, token, input_pos, noise, temperature, top_k, self.warmup)
            self._uncounted -= g.collectives
        self._uncounted += g.collectives
        return g(token, input_pos, noise)

    def count(self) -> int:
        return self._uncounted


# --------------------------------------------------------------------------------------------- roofline
# Peak HBM bandwidth (bytes/s) by device-name substring, from the vendors' datasheets; first match wins,
# so a name that contains another comes before it (GH200 before H200 before H20, A100 before A10).
# Override with LADDER_HBM_BANDWIDTH (bytes/s), e.g. for a device missing here or a clocked-down part.
HBM_BANDWIDTH = (("GH200", 4.0e12), ("H200", 4.8e12), ("H100 PCIe", 2.0e12), ("H100 NVL", 3.9e12),
                 ("H100", 3.35e12), ("H20", 4.0e12), ("B200", 8.0e12), ("A100-SXM4-80GB", 2.039e12),
                 ("A100 80GB PCIe", 1.935e12), ("A100", 1.555e12), ("L40S", 0.864e12), ("A10", 0.6e12))


def peak_hbm_bandwidth(device=None) -> float | None:
    """The device's peak memory bandwidth (bytes/s): LADDER_HBM_BANDWIDTH, else the table, else None."""
    if os.environ.get("LADDER_HBM_BANDWIDTH"):
        return float(os.environ["LADDER_HBM_BANDWIDTH"])
    name = torch.cuda.get_device_name(device)
    return next((bw for key, bw in HBM_BANDWIDTH if key in name), None)


def decode_bytes(model: Transformer) -> int:
    """Bytes one decode step must read from memory on this rank: every weight except the embedding table
    (a decode step gathers one row of it, unless it is tied to the LM head) plus the whole KV cache
    (attention reads every slot; later ones are masked, not skipped)."""
    skip = set() if model.config.tie_embeddings else {id(model.embed_tokens.weight)}
    n = sum(p.numel() * p.element_size() for p in model.parameters() if id(p) not in skip)
    for block in model.layers:
        c = block.self_attn.kv_cache
        if c is not None:
            n += 2 * c.k.numel() * c.k.element_size()
    return n
