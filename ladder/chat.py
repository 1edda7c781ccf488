"""Conversation data for retraining (the paper's BAAI/Infinity-Instruct) and plain-text blocks: load,
normalise to chat-template roles, apply the tokenizer's chat template with the loss on assistant
responses only, and pack into TokenBlocks; `sample_texts` draws a corpus from a model (self-distillation)
when its training text is not on disk."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import torch

from .data import TokenBlocks, pack

INFINITY_INSTRUCT = "BAAI/Infinity-Instruct"
# the 7M subset: 7.45M conversations, ~11 GB of text, about the paper's 3B-token budget ("0625" has 660k)
INFINITY_INSTRUCT_CONFIG = "7M"
# ShareGPT speaker names (Infinity-Instruct's "conversations") -> chat-template roles
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


def text_blocks(texts, tokenizer, seq_len: int) -> TokenBlocks:
    """Plain text packed into blocks (EOS between documents), every next-token prediction counted."""
    return pack(texts, tokenizer, seq_len)


def normalize_conversation(example: dict) -> list[dict]:
    """One example as chat messages [{"role", "content"}], from ShareGPT ("conversations": from/value,
    Infinity-Instruct's format) or OpenAI style ("messages": role/content)."""
    turns = example.get("conversations") or example.get("messages")
    if not turns:
        raise ValueError(f"example has neither 'conversations' nor 'messages': keys {sorted(example)}")
    out = []
    for t in turns:
        role = t.get("role", t.get("from"))
        if role not in ROLES:
            raise ValueError(f"unknown speaker {role!r} (expected one of {sorted(ROLES)})")
        out.append({"role": ROLES[role], "content": t.get("content", t.get("value", ""))})
    return out


def load_conversations(n: int, dataset: str = INFINITY_INSTRUCT, config: str | None = INFINITY_INSTRUCT_CONFIG,
                       split: str = "train"):
    """The first `n` rows of a chat dataset, as a `datasets.Dataset`: a hub dataset (Infinity-Instruct by
    default; downloaded once to the HF cache, so tokenizing it can run in parallel) or a local json/jsonl
    file. Rows hold "conversations" (ShareGPT) or "messages" (OpenAI style); see normalize_conversation."""
    import datasets
    if Path(dataset).exists():
        ds = datasets.load_dataset("json", data_files=str(dataset), split=split)
    else:
        ds = datasets.load_dataset(dataset, name=config, split=split)
    return ds.select(range(min(n, len(ds))))


def chat_example(messages: Sequence[dict], tokenizer) -> tuple[list[int], list[bool]]:
    """Token ids of a chat-templated conversation and, per token, whether it belongs to an assistant
    response (the tokens the model is trained to produce, including the end-of-turn token).

    The template is applied to growing prefixes: the tokens that turn i adds after the generation
    prompt of turns < i are the assistant's when turn i is an assistant turn. This works for any chat
    template whose rendering of a prefix is a prefix of the rendering of the whole (Llama-3's is).
    """
    if tokenizer.chat_template is None:
        raise ValueError("the tokenizer has no chat template; use text_blocks() for plain text")
    ids, mask = [], []
    for i, m in enumerate(messages):
        if m["role"] == "assistant":
            prompt = _template(tokenizer, messages[:i], add_generation_prompt=True)
            if prompt[:len(ids)] != ids:
                raise ValueError("the chat template does not render a conversation prefix as a prefix; "
                                 "cannot locate the assistant tokens")
            mask += [False] * (len(prompt) - len(ids))
            ids = prompt
        full = _template(tokenizer, messages[:i + 1], add_generation_prompt=False)
        if full[:len(ids)] != ids:
            raise ValueError("the chat template does not render a conversation prefix as a prefix; "
                             "cannot locate the assistant tokens")
        mask += [m["role"] == "assistant"] * (len(full) - len(ids))
        ids = full
    return ids, mask


def _template(tokenizer, messages, add_generation_prompt: bool) -> list[int]:
    if not messages:
        return []
    out = tokenizer.apply_chat_template(list(messages), tokenize=True, add_generation_prompt=add_generation_prompt)
    return list(out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out)


def _chat_row(row: dict, tokenizer) -> dict:
    ids, mask = chat_example(normalize_conversation(row), tokenizer)
    return {"input_ids": ids, "loss_mask": mask}


def chat_blocks(conversations, tokenizer, seq_len: int, num_proc: int | None = None) -> TokenBlocks:
    """Chat-templated conversations packed into blocks, the loss only on assistant responses.

    `conversations`: lists of messages, or a `datasets.Dataset` of chat rows (tokenized with
    `Dataset.map`, on `num_proc` processes: the 7M conversations of the paper-scale run take hours on one).
    Conversations are concatenated and cut into blocks of seq_len + 1 tokens (like `pack`); the tail
    is padded with EOS and masked out.
    """
    import numpy as np
    ids, masks = [], []  # one numpy array per conversation: billions of tokens fit (Python ints would not)
    if hasattr(conversations, "map") and hasattr(conversations, "column_names"):
        tokenized = conversations.map(_chat_row, fn_kwargs={"tokenizer": tokenizer}, num_proc=num_proc,
                                      remove_columns=conversations.column_names, desc="chat template")
        for batch in tokenized.with_format("numpy").iter(batch_size=10_000):
            ids += list(batch["input_ids"])
            masks += list(batch["loss_mask"])
    else:
        for conv in conversations:
            i, m = chat_example(conv, tokenizer)
            ids.append(np.asarray(i, dtype=np.int64))
            masks.append(np.asarray(m, dtype=bool))
    if not ids:
        raise ValueError("no conversations to pack")
    stream, mask = np.concatenate(ids).astype(np.int64), np.concatenate(masks).astype(bool)
    if not mask.any():
        raise ValueError("no assistant tokens in the conversations: nothing to train on")
    width = seq_len + 1
    n = math.ceil(len(stream) / width)
    pad = n * width - len(stream)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    tokens = torch.from_numpy(np.concatenate([stream, np.full(pad, pad_id, dtype=np.int64)])).view(n, width)
    loss_mask = torch.from_numpy(np.concatenate([mask, np.zeros(pad, dtype=bool)])).view(n, width)
    return TokenBlocks(tokens, loss_mask)


@torch.inference_mode()
def sample_texts(model, tokenizer, n: int, max_new_tokens: int, *, batch_size: int = 32,
                 temperature: float = 1.0, top_k: int | None = None, seed: int = 0) -> list[str]:
    """`n` texts sampled from a native model, each started from BOS and cut at the first EOS.

    Used offline to build a retraining corpus from the source model (self-distillation).
    """
    from .generate import generate
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    texts = []
    for b in range(math.ceil(n / batch_size)):
        rows = min(batch_size, n - b * batch_size)
        prompt = torch.full((rows, 1), bos, dtype=torch.long, device=model.lm_head.weight.device)
        out, _ = generate(model, prompt, max_new_tokens, temperature=temperature, top_k=top_k, seed=seed + b)
        for row in out[:, 1:].tolist():
            if tokenizer.eos_token_id in row:
                row = row[:row.index(tokenizer.eos_token_id)]
            texts.append(tokenizer.decode(row, skip_special_tokens=True))
    model.clear_cache()
    return [t for t in texts if t.strip()]
