"""Numerical checks shared by the tests and the architecture notebook."""
from __future__ import annotations

import torch

from .config import ModelConfig
from .model import build_model


@torch.inference_mode()
def cached_logits(config: ModelConfig, state_dict: dict, tokens: torch.Tensor, prefill_len: int, comm=None):
    """Logits of a cached run: prefill `tokens[:, :prefill_len]`, then decode the rest one token at a time.

    Returns (logits concatenated over all positions, number of all-reduces launched).
    """
    model = build_model(config, comm, state_dict=state_dict)
    launched_before = model.comm.count()
    model.setup_cache(tokens.shape[0], tokens.shape[1])
    outs = [model(tokens[:, :prefill_len], torch.arange(prefill_len))]
    for i in range(prefill_len, tokens.shape[1]):
        outs.append(model(tokens[:, i:i + 1], torch.tensor([i])))
    return torch.cat(outs, dim=1), model.comm.count() - launched_before


def tp_cached_logits(comm, config, state_dict, tokens, prefill_len):
    """`cached_logits` on one rank of a TP group (for ladder.launch.launch_local)."""
    return cached_logits(config, state_dict, tokens, prefill_len, comm)
