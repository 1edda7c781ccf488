"""gpt-fast style generation: one prefill, then one cached decode step per token.

The cache is allocated once (`model.setup_cache`), positions are passed explicitly, the loop runs under
`torch.inference_mode`, and the decode step can be compiled (`compile=True`: CUDA graphs via
mode="reduce-overhead" on GPU). Every rank of a TP group runs the same loop; logits are replicated, and
sampling uses noise drawn from the same seeded generator on every rank, so all ranks pick the same tokens.

Sampling is graph-safe (gpt-fast's exponential-noise trick): for E_i ~ Exponential(1), argmax_i p_i / E_i
is a draw from the categorical distribution p (the index of the smallest of the Exponential(p_i) variables
E_i / p_i). The noise is drawn *outside* the compiled or graph-captured step from a seeded generator and
passed in as a tensor, so the step holds no torch.Generator (which dynamo cannot trace with fullgraph=True
and a CUDA graph would freeze) and a seeded run repeats exactly.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from .model import Transformer


def sample(logits: torch.Tensor, temperature: float = 0.0, top_k: int | None = None,
           noise: torch.Tensor | None = None) -> torch.Tensor:
    """Next token ids (batch,) from the last position's logits; greedy (argmax) when temperature == 0.

    With temperature > 0, `noise` (batch x vocab, Exponential(1) draws, see `draw_noise`) picks the token.
    """
    logits = logits[:, -1].float()
    if temperature <= 0:
        return logits.argmax(-1)
    if noise is None:
        raise ValueError("sampling with temperature > 0 needs `noise` (ladder.generate.draw_noise)")
    logits = logits / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
        logits = torch.where(logits < kth, torch.full_like(logits, -float("inf")), logits)
    probs = torch.softmax(logits, dim=-1)
    return (probs / noise).argmax(-1)  # filtered tokens have p = 0 and can never win


def draw_noise(batch: int, vocab: int, generator: torch.Generator, device) -> torch.Tensor:
    """Exponential(1) noise for one sampling step, drawn outside any compiled or captured region."""
    return torch.empty(batch, vocab, device=device).exponential_(generator=generator)


def prefill(model: Transformer, tokens: torch.Tensor, input_pos: torch.Tensor, **sampling) -> torch.Tensor:
    return sample(model(tokens, input_pos), **sampling)


def decode_one(model: Transformer, token: torch.Tensor, input_pos: torch.Tensor, **sampling) -> torch.Tensor:
    return sample(model(token[:, None], input_pos), **sampling)


@dataclass
class Timing:
    prefill_s: float
    decode_s: float
    new_tokens: int
    batch: int
    decode_wait_s: float | None = None  # of decode_s, the time spent waiting on an emulated link (ladder.link)

    @property
    def tokens_per_s(self) -> float:
        """The paper's metric: batch x new tokens / (prefill + decode) wall time."""
        return self.batch * self.new_tokens / (self.prefill_s + self.decode_s)


def _sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def generate(model: Transformer, prompt: torch.Tensor, max_new_tokens: int, *, temperature: float = 0.0,
             top_k: int | None = None, seed: int = 0, decode_fn=None, prefill_fn=None) -> tuple[torch.Tensor, Timing]:
    """Generate `max_new_tokens` after `prompt` (batch x prompt_len); returns (tokens, timing).

    `decode_fn` / `prefill_fn` default to `decode_one` / `prefill`; pass compiled versions to compile.
    The model's cache must hold prompt_len + max_new_tokens positions (allocated here if it does not).
    Times are wall time, or the clock of the model's emulated link when it has one (ladder.link.VirtualClock:
    simulated time).
    """
    if prompt.dim() != 2:
        raise ValueError(f"prompt must be (batch, prompt_len), got shape {tuple(prompt.shape)}")
    batch, plen = prompt.shape
    total = plen + max_new_tokens
    if getattr(model, "cache_len", 0) < total or model.layers[0].self_attn.kv_cache.k.shape[0] < batch:
        model.setup_cache(batch, total)
    device = model.lm_head.weight.device
    prompt = prompt.to(device)  # e.g. a prompt taken from CPU-side token blocks, for a model on a GPU
    gen = torch.Generator(device=device).manual_seed(seed)
    sampling = dict(temperature=temperature, top_k=top_k)
    vocab = model.config.vocab_size

    def noise():
        return draw_noise(batch, vocab, gen, device) if temperature > 0 else None
    decode_fn = decode_fn or decode_one
    prefill_fn = prefill_fn or prefill
    out = torch.empty(batch, total, dtype=prompt.dtype, device=device)
    out[:, :plen] = prompt

    link_clock = getattr(model.comm, "clock", None)
    now = link_clock.now if link_clock is not None else time.perf_counter
    _sync(device)
    t0 = now()
    token = prefill_fn(model, prompt, torch.arange(plen, device=device), noise=noise(), **sampling)
    out[:, plen] = token
    _sync(device)
    t1 = now()
    wait0 = link_clock.waited_s if link_clock is not None else None
    pos = torch.tensor([plen], device=device)
    for i in range(1, max_new_tokens):
        token = decode_fn(model, token, pos, noise=noise(), **sampling).clone()
        out[:, plen + i] = token
        pos += 1
    _sync(device)
    t2 = now()
    wait = link_clock.waited_s - wait0 if link_clock is not None else None
    return out, Timing(t1 - t0, t2 - t1, max_new_tokens, batch, wait)


def compiled_steps(mode: str = "reduce-overhead"):
    """(prefill_fn, decode_fn): the whole step compiled with torch.compile (fullgraph), as gpt-fast does.

    Fine at TP = 1. Under tensor parallelism whole-step compilation may move all-reduce waits (inductor
    fuses layer l+1's two norms and so waits for MLP(l)'s all-reduce before attention(l+1)); the speed
    benchmark therefore compiles the modules only and keeps the wiring in Python (ladder.cudagraph).
    """
    decode = torch.compile(decode_one, mode=mode, fullgraph=True)
    pre = torch.compile(prefill, fullgraph=True, dynamic=True)
    return pre, decode
