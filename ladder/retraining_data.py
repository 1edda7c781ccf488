"""The data the adaptation experiment (ladder.adapt) retrains and evaluates on, `retraining_data()`:

  * conversations (the paper's BAAI/Infinity-Instruct): load, normalise to chat-template roles, apply the
    tokenizer's chat template with the loss on assistant responses only, pack into TokenBlocks;
  * plain text: documents split as the from-scratch chapter splits them, packed with the full loss;
  * self-distillation: `sample_texts` draws a corpus from the source model when its training text is not
    on disk (stories260K).

Every kind comes with two disjoint held-out sets, one to choose a recipe on and one to test on.
"""
from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import torch

from . import data
from .data import TokenBlocks, block_documents, pack
from .eval import offline_default
from .generate import generate
from .paths import data_path
# datasets and ladder.hf (which imports transformers) are imported inside the functions that use them: importing
# ladder.retraining_data does not load them.

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
    return TokenBlocks(tokens, loss_mask, block_documents([len(i) for i in ids], width, n))


@torch.inference_mode()
def sample_texts(model, tokenizer, n: int, max_new_tokens: int, *, batch_size: int = 32,
                 temperature: float = 1.0, top_k: int | None = None, seed: int = 0) -> list[str]:
    """`n` texts sampled from a native model, each started from BOS and cut at the first EOS.

    Used offline to build a retraining corpus from the source model (self-distillation).
    """
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


class RetrainingData(NamedTuple):
    """What the adaptation experiment trains and evaluates on. `select` and `test` are disjoint held-out
    sets of the training distribution: `select` traces the retraining curves and chooses the recipe,
    `test` is touched once, for the final comparison with the control (claim H7). `real`: for
    self-distillation only, real text of the kind the source was trained on (small)."""
    train: TokenBlocks
    select: TokenBlocks
    test: TokenBlocks
    note: str
    real: TokenBlocks | None = None


def retraining_data(path, tokenizer, *, kind: str = "auto", seq_len: int = 128, corpus_tokens: int = 65_536,
                    eval_tokens: int = 16_384, seed: int = 0, device: str = "cpu", eval_text: str | None = None,
                    instruct_data: str = INFINITY_INSTRUCT, instruct_config: str | None = INFINITY_INSTRUCT_CONFIG,
                    cache_dir: str | os.PathLike | None = None) -> RetrainingData:
    """Training blocks and two held-out sets (`eval_tokens` each) for retraining the converted model.
    With `cache_dir`, the data is read from there when a previous call with the same arguments left it
    (the caller keys the folder by the arguments), else built and saved there.

    kind: "instruct" (`instruct_data`: Infinity-Instruct on the hub by default, or a local json/jsonl of
    conversations; chat template, loss on responses; the first conversations are held out), "text"
    (documents: the local FineWeb/C4 stand-in offline, FineWeb-edu from the hub online; split by
    document exactly as notebook 03 does, so its model's held-out documents stay held out),
    "self" (text sampled from the source model, held-out sets sampled with other seeds; `real` is
    `eval_text`, default the TinyStories sample), or "auto": "self" for stories260K, "instruct" online
    when the tokenizer has a chat template, else "text".
    """
    if cache_dir is not None and (Path(cache_dir) / "note.txt").is_file():
        cached = _load_data(Path(cache_dir))
        if cached.select.doc is not None and cached.test.doc is not None:
            return cached
        # saved before blocks knew their documents: rebuilt (the same tokens; the reuse check of the
        # retraining runs trained on it compares their first steps' losses)
    made = _make_data(path, tokenizer, kind, seq_len, corpus_tokens, eval_tokens, seed, device, eval_text,
                      instruct_data, instruct_config)
    if cache_dir is not None:
        _save_data(made, Path(cache_dir))
    return made


def resolve_kind(path, tokenizer, kind: str = "auto") -> str:
    """The data kind `retraining_data` builds: `kind` itself, or for "auto" "self" for stories260K, "instruct"
    online when the tokenizer has a chat template, else "text"."""
    if kind not in ("auto", *HELD_OUT_VERSION):
        raise ValueError(f"unknown retraining data kind {kind!r}; choose auto, instruct, text or self")
    if kind != "auto":
        return kind
    if Path(str(path)).parts[-2:] == ("stories260K", "hf"):
        return "self"
    return "instruct" if not offline_default() and getattr(tokenizer, "chat_template", None) else "text"


def _save_data(d: RetrainingData, folder: Path):
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for name in ("train", "select", "test", "real"):
        if getattr(d, name) is not None:
            getattr(d, name).save(tmp / f"{name}.pt")
    (tmp / "note.txt").write_text(d.note)  # written last: its presence marks a complete cache
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def _load_data(folder: Path) -> RetrainingData:
    blocks = {n: TokenBlocks.load(folder / f"{n}.pt") if (folder / f"{n}.pt").is_file() else None
              for n in ("train", "select", "test", "real")}
    return RetrainingData(note=(folder / "note.txt").read_text(), **blocks)


def _make_data(path, tokenizer, kind, seq_len, corpus_tokens, eval_tokens, seed, device, eval_text,
               instruct_data, instruct_config) -> RetrainingData:
    from .hf import load_pretrained
    kind = resolve_kind(path, tokenizer, kind)
    real = None
    if kind == "self":
        source = load_pretrained(path, device=device, max_seq_len=max(seq_len + 1, 256))

        def sampled(tokens, seed):  # one sample per block: seq_len - 1 new tokens after BOS, then EOS
            texts = sample_texts(source, tokenizer, math.ceil(tokens / (seq_len - 1)), seq_len - 1,
                                 batch_size=256, seed=seed)
            return texts, text_blocks(texts, tokenizer, seq_len)
        texts, train = sampled(corpus_tokens, seed)
        # other seeds than the training corpus's batches (seed + batch index), so no sample repeats
        select, test = (sampled(eval_tokens, seed + offset)[1] for offset in (1_000_003, 2_000_003))
        if eval_text is None:
            eval_text = data_path("text", "tinystories_sample", "tinystories_sample.txt")
        docs = [d for d in Path(eval_text).read_text().split("\n\n") if d.strip()]
        real = text_blocks(docs, tokenizer, seq_len)
        note = (f"retraining text: {len(texts)} samples from the source model (self-distillation, "
                f"{train.num_tokens:,} tokens); held out: {select.num_tokens:,} + {test.num_tokens:,} tokens of "
                f"further samples (selection, test); real text: {Path(eval_text).name} ({real.num_tokens:,} "
                "tokens, never trained on)")
    elif kind == "text":
        sources = None if offline_default() else [data.FINEWEB_EDU]
        docs = data.load_documents(sources, max_docs=None if sources is None else 20_000)
        train_docs, val_docs = data.split_documents(docs, 0.05, seed=0)
        train = _take_tokens(train_docs["text"], tokenizer, seq_len, corpus_tokens)
        (select, test), cap = held_out_sets(val_docs["text"], tokenizer, seq_len, eval_tokens)
        where = "local FineWeb/C4 stand-in" if sources is None else data.FINEWEB_EDU
        note = (f"retraining text: {train.num_tokens:,} tokens of training-split documents ({where}); held out: "
                f"{select.num_tokens:,} + {test.num_tokens:,} tokens from {select.doc.unique().numel()} + "
                f"{test.doc.unique().numel()} held-out documents, at most the first {cap:,} tokens of each "
                "(selection, test; full loss)")
    else:  # "instruct": resolve_kind admits no other kind
        per_conv = 512  # a rough size, only to decide how many conversations to stream
        n_train = max(8, corpus_tokens // per_conv)
        n_val = max(4, eval_tokens // per_conv)
        convs = load_conversations(2 * n_val + n_train, instruct_data, instruct_config)
        if len(convs) <= 2 * n_val:
            raise ValueError(f"{instruct_data} has {len(convs)} conversations: too few for 2 x {n_val} held out "
                             f"and {n_train} for training")
        procs = max(1, min(32, (os.cpu_count() or 1) - 1)) if len(convs) > 100_000 else None
        select = chat_blocks(convs.select(range(n_val)), tokenizer, seq_len, procs)
        test = chat_blocks(convs.select(range(n_val, 2 * n_val)), tokenizer, seq_len, procs)
        train = chat_blocks(convs.select(range(2 * n_val, len(convs))), tokenizer, seq_len, procs)
        name = instruct_data if Path(instruct_data).exists() else f"{instruct_data} ({instruct_config})"
        note = (f"retraining data: {len(convs) - 2 * n_val} {name} conversations, chat template, loss on "
                f"assistant responses only; held out: the {2 * n_val} conversations before them ({n_val} "
                f"selection, {n_val} test)")
    return RetrainingData(train, select, test, note, real)


# Bumped when a kind's held-out sets are built differently: the retraining runs log their validation curve on
# the selection set, so the run folder is keyed by it (ladder.adapt.run_folder) and runs logged on the old sets
# are not reused with new ones. text 2 (2026-12-07): document starts spread over every held-out document.
HELD_OUT_VERSION = {"self": 1, "text": 2, "instruct": 1}


def held_out_sets(texts, tokenizer, seq_len: int, n_tokens: int) -> tuple[tuple[TokenBlocks, TokenBlocks], int]:
    """Two held-out sets (selection, test) of n_tokens // seq_len blocks each, spread over every document of
    `texts`: the documents alternate between the two sets, and each gives at most its first `cap` tokens, `cap`
    the smallest that fills both. Returns ((selection, test), cap).

    Why not whole documents in order: a few long web pages then fill a set (17 documents for the test set's 256
    sequences in the cpu profile), and the interval of a paired gap resamples documents (stats.paired_gap),
    so few documents make it unreliable. A cut document gets no EOS: its text does not end there."""
    docs = data.tokenize(list(texts), tokenizer)
    eos = tokenizer.eos_token_id
    n_blocks = max(1, n_tokens // seq_len)
    need = n_blocks * (seq_len + 1)
    halves = docs[0::2], docs[1::2]

    def filled(cap: int) -> int:  # the tokens the smaller set gets when every document gives at most cap
        return min(sum(min(len(d) + 1, cap) for d in half) for half in halves)
    longest = max((len(d) + 1 for d in docs), default=0)
    if filled(longest) < need:
        raise ValueError(f"too little held-out text for two evaluation sets of {n_blocks} x {seq_len + 1} tokens: "
                         f"{len(docs)} held-out documents give {filled(longest):,} tokens to the smaller set")
    lo, hi = 1, longest  # filled() grows with cap: the smallest cap that fills both sets
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if filled(mid) >= need else (mid + 1, hi)
    def start(d):  # a whole document ends with EOS; a cut one does not (its text goes on)
        return d + [eos] if len(d) + 1 <= lo else d[:lo]
    sets = tuple(pack([start(d) for d in half], tokenizer, seq_len, add_eos=False)[:n_blocks] for half in halves)
    return sets, lo


def _take_tokens(texts, tokenizer, seq_len: int, n_tokens: int) -> TokenBlocks:
    """Pack documents in order until about n_tokens training tokens."""
    chosen, count = [], 0
    for t in texts:
        chosen.append(t)
        count += len(t) // 3  # a cheap over-estimate of tokens; packing below cuts exactly
        if count >= 2 * n_tokens:
            break
    blocks = text_blocks(chosen, tokenizer, seq_len)
    return blocks[:max(1, n_tokens // seq_len)]
