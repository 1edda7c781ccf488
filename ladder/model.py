"""A Llama-3-style decoder with a swappable residual wiring.

Everything except the wiring is shared by all variants: RMSNorm, rotary embeddings (with Llama-3.1
scaling), grouped-query attention with a static KV cache, and a SwiGLU MLP. Parameter names follow
Hugging Face's `LlamaForCausalLM` (minus its `model.` prefix), so a Llama checkpoint is our state dict.

The model is written for one device. Under tensor parallelism each rank builds the same modules with
local sizes (`ModelConfig.local_sizes`), every attention/MLP output is a partial sum, and the wiring
decides where its all-reduce is started and where it is waited on (`comm.start` / `comm.wait`, see
ladder/tp.py). The five wirings are the `*_layer` functions below.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .config import WIRING_SPECS, ModelConfig, Wiring
from .tp import SingleDevice, shard_state_dict, split_dim


# --------------------------------------------------------------------------------------------- wirings
class Stream(NamedTuple):
    """The residual stream carried between layers.

    `x` holds every module output that has been added so far; `attn` and `mlp` are module outputs that
    are not in `x` yet: communicator handles (possibly an all-reduce still in flight), or None.
    """
    x: torch.Tensor
    attn: Any = None
    mlp: Any = None

    def settle(self, comm) -> torch.Tensor:
        """Wait for and add every pending output: the full residual stream (for two_batch_layer's stream,
        the pair of half-batch streams)."""
        if isinstance(self.x, tuple):
            return tuple(add_pending(x, p, comm) for x, p in zip(self.x, self.mlp or (None,) * len(self.x)))
        return add_pending(add_pending(self.x, self.attn, comm), self.mlp, comm)


def add_pending(x: torch.Tensor, handle, comm) -> torch.Tensor:
    return x if handle is None else x + comm.wait(handle)


def standard_layer(block, s: Stream, comm, **ctx) -> Stream:
    """x = x + AR(attn(N1(x))); x = x + AR(mlp(N2(x))) — each all-reduce blocks the next module."""
    x = s.settle(comm)
    x = x + comm.all_reduce(block.attention(block.input_layernorm(x), **ctx))
    mlp = comm.all_reduce(block.feed_forward(block.post_attention_layernorm(x)))
    # The (already reduced) MLP output is handed on rather than added here. The next layer adds it first
    # thing: the same sum when that layer is standard, and exactly what the paper's hybrid needs when it
    # is a ladder layer (whose attention reads the stream *without* this MLP output).
    return Stream(x, mlp=mlp)


def parallel_layer(block, s: Stream, comm, **ctx) -> Stream:
    """PaLM/GPT-J: x = x + AR(attn(N(x)) + mlp(N(x))) — one shared norm, one all-reduce per layer."""
    x = s.settle(comm)
    h = block.input_layernorm(x)
    return Stream(x + comm.all_reduce(block.attention(h, **ctx) + block.feed_forward(h)))


def ladder_layer(block, s: Stream, comm, **ctx) -> Stream:
    """Ladder: each module reads a stream that lacks the previous module's output, whose all-reduce is
    still in flight and runs behind this module's compute."""
    x = add_pending(s.x, s.attn, comm)  # previous attention's AR had the previous MLP to hide behind
    attn = comm.start(block.attention(block.input_layernorm(x), **ctx))
    x = add_pending(x, s.mlp, comm)  # previous MLP's AR ran behind the attention just launched
    mlp = comm.start(block.feed_forward(block.post_attention_layernorm(x)))
    return Stream(x, attn, mlp)


def upper_bound_layer(block, s: Stream, comm, **ctx) -> Stream:
    """Standard dataflow with no all-reduce at all: each rank keeps its own partial stream.

    NOT a valid model at TP > 1 (ranks disagree); it is the speed ceiling of zero communication.
    """
    x = s.settle(comm)
    x = x + block.attention(block.input_layernorm(x), **ctx)
    x = x + block.feed_forward(block.post_attention_layernorm(x))
    return Stream(x)


def two_batch_layer(block, s: Stream, comm, **ctx) -> Stream:
    """Two-batch overlap, ladder's exact rival (no retraining; vLLM's and SGLang's two-batch overlap): the
    standard dataflow on two halves of the batch, interleaved so that each half's all-reduce runs behind the
    other half's module. Every module then runs twice on half the tokens, re-reading its weights: at decode
    that costs about a whole extra pass over the weights until the batch is large enough to be compute bound."""
    xa, xb = s.x if isinstance(s.x, tuple) else s.x.chunk(2)
    pa, pb = s.mlp or (None, None)
    ctx_b = {**ctx, "batch_start": xa.shape[0]} if "input_pos" in ctx else ctx  # B's rows of the KV cache
    xa = add_pending(xa, pa, comm)  # A's previous MLP all-reduce ran behind B's previous MLP
    ha = comm.start(block.attention(block.input_layernorm(xa), **ctx))
    xb = add_pending(xb, pb, comm)  # B's previous MLP all-reduce ran behind A's attention
    hb = comm.start(block.attention(block.input_layernorm(xb), **ctx_b))
    xa = xa + comm.wait(ha)  # behind B's attention
    ma = comm.start(block.feed_forward(block.post_attention_layernorm(xa)))
    xb = xb + comm.wait(hb)  # behind A's MLP
    mb = comm.start(block.feed_forward(block.post_attention_layernorm(xb)))
    return Stream((xa, xb), mlp=(ma, mb))


# Each wiring's layer function; the hybrid (config.Wiring.per_layer) has none of its own: its layers run
# these. The rest of a wiring's description is its record in config.WIRING_SPECS.
LAYER_WIRINGS = {"standard": standard_layer, "parallel": parallel_layer, "ladder": ladder_layer,
                 "upper_bound": upper_bound_layer, "two_batch": two_batch_layer}


def register_wiring(spec: Wiring, layer) -> None:
    """Add a wiring: its record and its layer function `layer(block, stream, comm, **ctx) -> Stream`. The
    model, the TP runtime, the tracer (ladder.trace) and the performance model then all run it. A wiring
    used in spawned processes (TP on local ranks) must be registered by a module those processes import."""
    if spec.per_layer:
        raise ValueError("a per-layer wiring is composed from the others (as the hybrid is); register its layers' wirings")
    WIRING_SPECS[spec.name] = spec
    LAYER_WIRINGS[spec.name] = layer


# --------------------------------------------------------------------------------------------- modules
class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # normalise in float32 and cast back before the gain, as Llama does
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def rope_inv_freq(config: ModelConfig) -> torch.Tensor:
    """Rotary inverse frequencies, with Llama-3.1 scaling when config.rope_scaling is set."""
    hd = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    rs = config.rope_scaling
    if not rs:
        return inv_freq
    factor, low, high = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
    old_len = rs["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    # long wavelengths are slowed down by `factor`, short ones kept, and the band between interpolated
    scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
    return torch.where(medium, smoothed, scaled)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Hugging Face's (half-split) rotary layout, so HF Llama q/k weights load without permutation."""
    return x * cos + rotate_half(x) * sin


class KVCache(nn.Module):
    """Static cache allocated once; decode steps write in place at `input_pos`."""

    def __init__(self, batch: int, n_kv_heads: int, max_seq_len: int, head_dim: int, dtype, device):
        super().__init__()
        shape = (batch, n_kv_heads, max_seq_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def update(self, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor, batch_start: int = 0):
        rows = slice(batch_start, batch_start + k.shape[0])  # two_batch_layer's second half starts past the first
        self.k[rows, :, input_pos] = k
        self.v[rows, :, input_pos] = v
        return self.k[rows], self.v[rows]


class Attention(nn.Module):
    def __init__(self, config: ModelConfig, tp: int):
        super().__init__()
        local = config.local_sizes(tp)
        self.n_heads, self.n_kv_heads, self.head_dim = local["n_heads"], local["n_kv_heads"], config.head_dim
        hd = self.head_dim
        self.q_proj = nn.Linear(config.dim, self.n_heads * hd, bias=False)
        self.k_proj = nn.Linear(config.dim, self.n_kv_heads * hd, bias=False)
        self.v_proj = nn.Linear(config.dim, self.n_kv_heads * hd, bias=False)
        self.o_proj = nn.Linear(self.n_heads * hd, config.dim, bias=False)
        self.kv_cache: KVCache | None = None

    def forward(self, x, cos, sin, input_pos=None, mask=None, batch_start=0):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if input_pos is not None:  # cached prefill / decode: attend over the cache, masked by position
            k, v = self.kv_cache.update(input_pos, k, v, batch_start)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, -1))  # a partial sum under TP


class MLP(nn.Module):
    def __init__(self, config: ModelConfig, tp: int):
        super().__init__()
        ffn = config.local_sizes(tp)["ffn_dim"]
        self.gate_proj = nn.Linear(config.dim, ffn, bias=False)
        self.up_proj = nn.Linear(config.dim, ffn, bias=False)
        self.down_proj = nn.Linear(ffn, config.dim, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))  # a partial sum under TP


class Block(nn.Module):
    """One layer's modules. How they are connected is the wiring's business, not the block's."""

    def __init__(self, config: ModelConfig, tp: int, wiring: str):
        super().__init__()
        self.input_layernorm = RMSNorm(config.dim, config.norm_eps)
        self.self_attn = Attention(config, tp)
        # a wiring that shares one norm between attention and MLP (parallel) has no second one
        self.post_attention_layernorm = None if WIRING_SPECS[wiring].shares_norm else RMSNorm(config.dim, config.norm_eps)
        self.mlp = MLP(config, tp)

    # The wirings call the modules through these two methods. Activation checkpointing is not decided
    # here: ladder.parallelize wraps the modules' forward, so a block is the same with it or without.
    def attention(self, h, **ctx):
        return self.self_attn(h, **ctx)

    def feed_forward(self, h):
        return self.mlp(h)


class Transformer(nn.Module):
    def __init__(self, config: ModelConfig, comm=None):
        super().__init__()
        self.config = config
        self.comm = comm if comm is not None else SingleDevice()
        config.local_sizes(self.comm.size)  # clear error for shapes that do not divide
        self.wirings = config.layer_wirings()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.dim)
        self.layers = nn.ModuleList(Block(config, self.comm.size, w) for w in self.wirings)
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.lm_head = nn.Linear(config.dim, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self._init_buffers()

    def _init_buffers(self, device=None):
        """Non-persistent rotary cos/sin tables (recomputed, never loaded)."""
        c = self.config
        inv_freq = rope_inv_freq(c).to(device)
        freqs = torch.outer(torch.arange(c.max_seq_len, device=device, dtype=torch.float32), inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        self.register_buffer("rope_cos", emb.cos(), persistent=False)
        self.register_buffer("rope_sin", emb.sin(), persistent=False)

    # ----- caches
    def setup_cache(self, batch: int, max_seq_len: int | None = None):
        """Allocate the static KV cache once (per layer: batch x local KV heads x max_seq_len x head_dim)."""
        max_seq_len = max_seq_len or self.config.max_seq_len
        if max_seq_len > self.config.max_seq_len:
            raise ValueError(f"max_seq_len={max_seq_len} exceeds config.max_seq_len={self.config.max_seq_len}")
        p = self.lm_head.weight
        for block in self.layers:
            a = block.self_attn
            a.kv_cache = KVCache(batch, a.n_kv_heads, max_seq_len, a.head_dim, p.dtype, p.device)
        self.cache_len = max_seq_len

    def clear_cache(self):
        for block in self.layers:
            block.self_attn.kv_cache = None
        self.cache_len = 0

    # ----- forward
    def forward(self, tokens: torch.Tensor, input_pos: torch.Tensor | None = None) -> torch.Tensor:
        """Logits for `tokens` (batch x seq).

        Without `input_pos`: a full causal forward (training, evaluation). With `input_pos` (the absolute
        positions of `tokens`): a cached step — prefill or decode — that writes into the static KV cache.
        """
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be (batch, seq), got shape {tuple(tokens.shape)}")
        parts = self.config.spec.batch_parts
        if tokens.shape[0] < parts:
            raise ValueError(f"wiring={self.config.wiring!r} splits the batch in {parts} parts: it needs a batch of "
                             f"at least {parts}, got {tokens.shape[0]}")
        ctx = self.step_context(tokens.shape[1], input_pos)
        s = Stream(self.embed_tokens(tokens))
        for block, wiring in zip(self.layers, self.wirings):
            s = LAYER_WIRINGS[wiring](block, s, self.comm, **ctx)
        x = s.settle(self.comm)
        return self.lm_head(self.norm(torch.cat(x) if isinstance(x, tuple) else x))

    def step_context(self, t: int, input_pos: torch.Tensor | None = None) -> dict:
        """What every attention call of a step of `t` tokens receives: rotary cos/sin, and for a cached step
        its positions and the mask over the cache."""
        ctx = {}
        if input_pos is None:
            if t > self.config.max_seq_len:
                raise ValueError(f"sequence length {t} exceeds config.max_seq_len={self.config.max_seq_len}")
            pos = slice(0, t)
        else:
            if getattr(self, "cache_len", 0) == 0:
                raise RuntimeError("input_pos given but no KV cache: call model.setup_cache(batch) first")
            pos = input_pos
            ctx["input_pos"] = input_pos
            # query at position p sees cache slots 0..p (later slots hold stale or empty entries)
            slots = torch.arange(self.cache_len, device=input_pos.device)
            ctx["mask"] = (slots[None, :] <= input_pos[:, None])[None, None]
        dtype = self.embed_tokens.weight.dtype
        ctx["cos"], ctx["sin"] = self.rope_cos[pos].to(dtype), self.rope_sin[pos].to(dtype)
        return ctx

    # ----- weights
    def load_full_state_dict(self, state: dict[str, torch.Tensor], strict: bool = True):
        """Load unsharded weights: this rank keeps only its own shard."""
        state = dict(state)
        if self.config.tie_embeddings:
            state.pop("lm_head.weight", None)
        local = shard_state_dict(state, self.config, self.comm.rank, self.comm.size)
        missing, unexpected = self.load_state_dict(local, strict=False)
        if self.config.tie_embeddings:
            missing = [m for m in missing if m != "lm_head.weight"]
        if strict and (missing or unexpected):
            raise ValueError(f"state dict does not match the model: missing {missing}, unexpected {unexpected}")
        return self


def init_weights(model: Transformer, std: float = 0.02, seed: int | None = None) -> Transformer:
    """N(0, std) for every linear and embedding weight, ones for norms (the paper's init).

    Replicated weights get the same draw on every rank; sharded ones a per-rank stream.
    """
    device = model.lm_head.weight.device
    gens = {}
    if seed is not None:
        gens = {"replicated": torch.Generator(device=device).manual_seed(seed),
                "sharded": torch.Generator(device=device).manual_seed(seed + 7919 * (model.comm.rank + 1))}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("layernorm.weight") or name == "norm.weight":
                p.fill_(1.0)
            else:
                kind = "replicated" if split_dim(name) is None else "sharded"
                p.normal_(0.0, std, generator=gens.get(kind))
    return model


def build_model(config: ModelConfig, comm=None, *, device="cpu", dtype=torch.float32,
                state_dict: dict | None = None, seed: int | None = 0) -> Transformer:
    """Construct a model directly on `device` in `dtype`, allocating only this rank's shard.

    With `state_dict` (full, unsharded weights) the shard is sliced from it; otherwise weights are drawn
    from N(0, 0.02) locally (for speed runs: a 70B shape is never materialised whole).
    """
    device = torch.device(device)
    with torch.device("meta"):
        model = Transformer(config, comm)
    model = model.to(dtype).to_empty(device=device)
    if config.tie_embeddings:  # to_empty keeps the tie, but re-assert it for clarity
        model.lm_head.weight = model.embed_tokens.weight
    model._init_buffers(device)
    if state_dict is not None:
        model.load_full_state_dict(state_dict)  # copy_ casts to dtype: no second full copy of the weights
    else:
        init_weights(model, seed=seed)
    return model
