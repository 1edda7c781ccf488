"""Pre-training data: documents -> train/validation split -> tokenizer -> packed token blocks.

The paper trains on FineWeb-edu (`HuggingFaceFW/fineweb-edu`, streamed from the hub) with StarCoder's
tokenizer. Offline, the same code reads local parquet/jsonl/txt files; here that is real FineWeb
(sample-10BT) documents that lean toward legal/government topics, plus the first 1,000 C4 documents
(`local_sources()`) — a *substitute* for FineWeb-edu, not the same distribution.

Pipeline (each step a function, so the notebook shows it):
    docs = load_documents(local_sources())                     # datasets.Dataset with "id", "text"
    train_docs, val_docs = split_documents(docs, 0.05, seed=0) # by document, deterministic
    tok = train_tokenizer(train_docs["text"], 8192, out_dir)   # or load_tokenizer("bigcode/starcoder")
    train = pack(train_docs, tok, seq_len=256)                 # TokenBlocks [n, 257], EOS between docs
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch

from .paths import data_path, is_hub_id
# datasets, tokenizers and transformers are imported inside the functions that use them: `python -m ladder.train`
# (which imports ladder.data) starts without them.

FINEWEB_EDU = "HuggingFaceFW/fineweb-edu"
FINEWEB_EDU_CONFIG = "sample-10BT"
EOS = "<|endoftext|>"
IGNORE_INDEX = -100  # targets with this value do not count in the loss (torch's cross_entropy default)

# Short names for tokenizers available offline in the data directory; anything else is a local
# directory or a hub id (the paper's is "bigcode/starcoder", vocab 49152).
LOCAL_TOKENIZERS = {"gpt2": ("tokenizers", "gpt2"), "llama3": ("tokenizers", "llama3_hf")}


# --------------------------------------------------------------------------------------------- blocks
@dataclass
class TokenBlocks:
    """Fixed-length training sequences.

    `tokens` is [n, seq_len + 1]: a model reads `tokens[:, :-1]` and predicts `tokens[:, 1:]`.
    `loss_mask` (same shape, or None = everything counts) says which *target* positions count, i.e.
    `loss_mask[:, 1:]` selects the next-token predictions that enter the loss.
    `doc` ([n], or None = unknown) is the index, in packing order, of the document each block starts in:
    the blocks cut from one long document share it, and their losses are not independent, so a bootstrap
    over held-out blocks resamples documents whole (ladder.stats.paired_gap's `clusters`).
    """
    tokens: torch.Tensor
    loss_mask: torch.Tensor | None = None
    doc: torch.Tensor | None = None

    def __post_init__(self):
        if self.tokens.dim() != 2 or self.tokens.shape[1] < 2:
            raise ValueError(f"tokens must be [n, seq_len + 1] with seq_len >= 1, got {tuple(self.tokens.shape)}")
        if self.loss_mask is not None and self.loss_mask.shape != self.tokens.shape:
            raise ValueError(f"loss_mask shape {tuple(self.loss_mask.shape)} != tokens shape {tuple(self.tokens.shape)}")
        if self.doc is not None and tuple(self.doc.shape) != (len(self.tokens),):
            raise ValueError(f"doc shape {tuple(self.doc.shape)} != ({len(self.tokens)},): one document index per block")

    def __len__(self) -> int:
        return self.tokens.shape[0]

    @property
    def seq_len(self) -> int:
        return self.tokens.shape[1] - 1

    @property
    def num_tokens(self) -> int:
        """Training tokens (predicted positions) in all blocks."""
        return len(self) * self.seq_len

    def __getitem__(self, idx) -> "TokenBlocks":
        mask = None if self.loss_mask is None else self.loss_mask[idx]
        return TokenBlocks(self.tokens[idx], mask, None if self.doc is None else self.doc[idx])

    def inputs_targets(self, idx=slice(None)) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets) for the selected blocks; targets outside the loss mask are IGNORE_INDEX."""
        t = self.tokens[idx]
        x, y = t[:, :-1], t[:, 1:].clone()
        if self.loss_mask is not None:
            y[~self.loss_mask[idx][:, 1:]] = IGNORE_INDEX
        return x, y

    def batches(self, batch_size: int, seed: int = 0, start: int = 0,
                rank: int = 0, world_size: int = 1) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Endless (inputs, targets) batches in a seeded random order, reshuffled every epoch.

        Batch k is the same for a given (seed, batch_size) however the iteration was started, so
        `start=k` resumes a run exactly where it stopped. Under data parallelism, rank r of W takes
        global batches r, r + W, r + 2W, ... (pass `start` in global batches).
        """
        per_epoch = len(self) // batch_size
        if per_epoch == 0:
            raise ValueError(f"only {len(self)} blocks: fewer than one batch of {batch_size}")
        k = start + rank
        perm_epoch, perm = -1, None
        while True:
            epoch, i = divmod(k, per_epoch)
            if epoch != perm_epoch:
                g = torch.Generator().manual_seed(seed * 100_003 + epoch)
                perm, perm_epoch = torch.randperm(len(self), generator=g), epoch
            yield self.inputs_targets(perm[i * batch_size:(i + 1) * batch_size])
            k += world_size

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"tokens": self.tokens, "loss_mask": self.loss_mask, "doc": self.doc}, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TokenBlocks":
        d = torch.load(path, weights_only=True)
        return cls(d["tokens"], d["loss_mask"], d.get("doc"))  # files saved before `doc` existed: None


def block_documents(doc_lengths: Sequence[int], width: int, n_blocks: int) -> torch.Tensor:
    """The document (its index in `doc_lengths`, the packing order) in which each of `n_blocks` consecutive
    blocks of `width` tokens starts, for documents of `doc_lengths` tokens concatenated."""
    ends = np.cumsum(np.asarray(doc_lengths, dtype=np.int64))
    return torch.from_numpy(np.searchsorted(ends, np.arange(n_blocks, dtype=np.int64) * width, side="right"))


# --------------------------------------------------------------------------------------------- documents
def local_sources() -> list[Path]:
    """The offline stand-in for FineWeb-edu in the data directory (LADDER_DATA): real FineWeb
    sample-10BT documents (legal-topic skew; rows repeat across files, deduplicated on `id`) and C4."""
    return [data_path("text", "fineweb_10bt_legal_pilot"), data_path("text", "c4_en_first1000", "c4_sample.jsonl")]


_BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".txt": "text"}


def _local_files(source: str | os.PathLike) -> tuple[str, list[str]]:
    p = Path(source).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"data source {str(source)!r} not found: expected a parquet/jsonl/txt file, a folder "
                                f"of them, or the hub dataset {FINEWEB_EDU!r} (set LADDER_DATA for the offline data)")
    files = sorted(f for f in p.iterdir() if f.suffix in _BUILDERS) if p.is_dir() else [p]
    if not files:
        raise FileNotFoundError(f"no .parquet/.jsonl/.json/.txt files in {p}")
    kinds = {_BUILDERS.get(f.suffix) for f in files}
    if None in kinds or len(kinds) > 1:
        raise ValueError(f"{p}: expected files of one kind among {sorted(_BUILDERS)}, got {sorted({f.suffix for f in files})}")
    return kinds.pop(), [str(f) for f in files]


def _load_one(source, max_docs: int | None, hub_config: str):
    import datasets
    if is_hub_id(str(source)):
        # The real path: stream a sample of the hub dataset (the full FineWeb-edu is terabytes).
        stream = datasets.load_dataset(str(source), name=hub_config, split="train", streaming=True)
        rows = [{"id": str(r.get("id", f"{source}:{i}")), "text": r["text"]}
                for i, r in zip(range(max_docs or 100_000), stream)]
        return datasets.Dataset.from_list(rows)
    builder, files = _local_files(source)
    kw = {"sample_by": "paragraph"} if builder == "text" else {}
    ds = datasets.load_dataset(builder, data_files=files, split="train", **kw)
    if "text" not in ds.column_names:
        raise ValueError(f"{source}: no 'text' column (columns: {ds.column_names})")
    name = Path(str(source)).name
    ids = [str(i) for i in ds["id"]] if "id" in ds.column_names else [f"{name}:{i}" for i in range(len(ds))]
    ds = datasets.Dataset.from_dict({"id": ids, "text": ds["text"]})
    return ds.select(range(min(max_docs, len(ds)))) if max_docs else ds


def load_documents(sources: Sequence[str | os.PathLike] | str | os.PathLike | None = None, *,
                   max_docs: int | None = None, hub_config: str = FINEWEB_EDU_CONFIG, min_chars: int = 1):
    """Documents from local files and/or the hub as one `datasets.Dataset` with "id" and "text" columns.

    `sources`: parquet/jsonl/txt files or folders of them, or "HuggingFaceFW/fineweb-edu" (streamed,
    `hub_config` sample, first `max_docs` documents); default `local_sources()`. Rows with a repeated
    `id` (or repeated text) are dropped, keeping the first: the local FineWeb files repeat rows.
    """
    import datasets
    if sources is None:
        sources = local_sources()
    elif isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    parts = [_load_one(s, max_docs, hub_config) for s in sources]
    ds = datasets.concatenate_datasets(parts)
    seen_ids, seen_text = set(), set()

    def first(row):
        h = hashlib.sha1(row["text"].encode()).digest()
        keep = row["id"] not in seen_ids and h not in seen_text and len(row["text"]) >= min_chars
        seen_ids.add(row["id"]), seen_text.add(h)
        return keep
    return ds.filter(first, load_from_cache_file=False)  # stateful filter: must run in one process


def _unit_hash(text: str, seed: int) -> float:
    """A number in [0, 1) fixed by the document's text and the seed."""
    h = hashlib.sha256(f"{seed}\0{text}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def split_documents(ds, val_fraction: float = 0.05, seed: int = 0):
    """(train, validation) split by whole document.

    A document goes to validation when a hash of (seed, its text) falls below `val_fraction`, so the
    split does not depend on file order, and identical texts can never land on both sides.
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    is_val = [_unit_hash(t, seed) < val_fraction for t in ds["text"]]
    val_idx = [i for i, v in enumerate(is_val) if v]
    train_idx = [i for i, v in enumerate(is_val) if not v]
    if not val_idx or not train_idx:
        raise ValueError(f"split of {len(ds)} documents at val_fraction={val_fraction} left one side empty")
    return ds.select(train_idx), ds.select(val_idx)


# --------------------------------------------------------------------------------------------- tokenizers
def train_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: str | os.PathLike | None = None):
    """A byte-level BPE (GPT-2 style, `<|endoftext|>` as EOS) trained with `tokenizers` on `texts`.

    Returned as a transformers `PreTrainedTokenizerFast`, saved to `out_dir` when given.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast
    if vocab_size < 257:
        raise ValueError(f"vocab_size={vocab_size}: a byte-level BPE needs at least 256 bytes + EOS")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS, pad_token=EOS,
                                   unk_token=None, model_max_length=1_000_000)
    if out_dir is not None:
        fast.save_pretrained(str(out_dir))
    return fast


def forget_how_loaded(tokenizer):
    """Drop what transformers keeps of how this copy was loaded (is_local, local_files_only: HF_HUB_OFFLINE's
    value), which it would otherwise write into every checkpoint saved with the tokenizer: one machine's loading
    flags, not part of the tokenizer. Returns the tokenizer."""
    for key in ("is_local", "local_files_only"):
        tokenizer.init_kwargs.pop(key, None)
    return tokenizer


def load_tokenizer(name_or_path: str | os.PathLike):
    """A tokenizer by local directory, short name ("gpt2", "llama3" from the data directory), or hub id
    (the paper's: "bigcode/starcoder"). Makes sure it has an EOS token, which packing needs."""
    from transformers import AutoTokenizer
    name = str(name_or_path)
    if name in LOCAL_TOKENIZERS:
        path = data_path(*LOCAL_TOKENIZERS[name])
    else:
        path = Path(name).expanduser()
        if not path.exists() and not is_hub_id(name):
            raise FileNotFoundError(f"unknown tokenizer {name!r}: not a directory, not one of the offline names "
                                    f"{sorted(LOCAL_TOKENIZERS)}, and not a hub id like 'bigcode/starcoder'")
    try:
        tok = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as e:
        raise FileNotFoundError(f"could not load tokenizer {name!r} (offline, no such hub repo, or a gated one whose "
                                f"licence is not accepted or no token is set?): {e}") from e
    forget_how_loaded(tok)
    if tok.eos_token is None:
        if EOS not in tok.get_vocab():
            raise ValueError(f"tokenizer {name!r} has no EOS token; cannot separate documents when packing")
        tok.eos_token = EOS
    return tok


# --------------------------------------------------------------------------------------------- packing
def tokenize(texts: Sequence[str], tokenizer, batch: int = 1000) -> list[list[int]]:
    """Token ids per text, without special tokens (packing adds EOS itself)."""
    out = []
    for i in range(0, len(texts), batch):
        out += tokenizer(list(texts[i:i + batch]), add_special_tokens=False)["input_ids"]
    return out


def pack(texts_or_token_lists, tokenizer, seq_len: int, *, add_eos: bool = True) -> TokenBlocks:
    """Concatenate documents (each followed by EOS) and cut the stream into blocks of seq_len + 1 tokens.

    Accepts a `datasets.Dataset` with a "text" column, a list of strings, or a list of token-id lists.
    The incomplete tail is dropped. Blocks do not overlap, so every token is predicted once per epoch.
    """
    docs = texts_or_token_lists
    if hasattr(docs, "column_names"):
        docs = docs["text"]
    docs = list(docs)
    if docs and isinstance(docs[0], str):
        docs = tokenize(docs, tokenizer)
    eos = tokenizer.eos_token_id if tokenizer is not None else None
    if add_eos and eos is None:
        raise ValueError("pack(add_eos=True) needs a tokenizer with an EOS token")
    sep = [eos] if add_eos else []
    pieces = [np.asarray(list(ids) + sep, dtype=np.int64) for ids in docs]
    stream = np.concatenate(pieces) if pieces else np.zeros(0)
    n = len(stream) // (seq_len + 1)
    if n == 0:
        raise ValueError(f"{len(stream)} tokens are fewer than one block of seq_len + 1 = {seq_len + 1}")
    return TokenBlocks(torch.from_numpy(stream[:n * (seq_len + 1)].astype(np.int64)).view(n, seq_len + 1),
                       doc=block_documents([len(p) for p in pieces], seq_len + 1, n))


def prepare_corpus(out_dir: str | os.PathLike, *, sources=None, tokenizer: str | None = None,
                   vocab_size: int = 8192, seq_len: int = 256, val_fraction: float = 0.05, seed: int = 0,
                   max_docs: int | None = None, tokenizer_train_chars: int = 20_000_000):
    """The whole pipeline, cached in `out_dir`: returns (tokenizer, train_blocks, val_blocks, info).

    `tokenizer=None` trains a byte-level BPE of `vocab_size` on the training split (saved in
    out_dir/tokenizer); otherwise `load_tokenizer(tokenizer)`.
    """
    out = Path(out_dir)
    tok_dir, train_f, val_f = out / "tokenizer", out / "train.pt", out / "val.pt"
    docs = load_documents(sources, max_docs=max_docs)
    train_docs, val_docs = split_documents(docs, val_fraction, seed)
    if tokenizer is None:
        if (tok_dir / "tokenizer.json").exists():
            tok = load_tokenizer(tok_dir)
        else:
            texts, total = [], 0
            for t in train_docs["text"]:  # cap the tokenizer's training text: it is the slow part
                texts.append(t)
                total += len(t)
                if total >= tokenizer_train_chars:
                    break
            tok = train_tokenizer(texts, vocab_size, tok_dir)
    else:
        tok = load_tokenizer(tokenizer)
        tok.save_pretrained(str(tok_dir))
    if train_f.exists() and val_f.exists():
        train, val = TokenBlocks.load(train_f), TokenBlocks.load(val_f)
    else:
        train, val = pack(train_docs, tok, seq_len).save(train_f), pack(val_docs, tok, seq_len).save(val_f)
        train, val = TokenBlocks.load(train_f), TokenBlocks.load(val_f)
    if train.seq_len != seq_len:
        raise ValueError(f"cached blocks in {out} have seq_len {train.seq_len}, asked for {seq_len}; use a new out_dir")
    info = {"documents": len(docs), "train_documents": len(train_docs), "val_documents": len(val_docs),
            "train_tokens": train.num_tokens, "val_tokens": val.num_tokens, "vocab_size": len(tok),
            "seq_len": seq_len, "tokenizer": tokenizer or f"byte-level BPE trained here ({vocab_size})"}
    return tok, train, val, info
