"""Fetch the offline data (text samples, eval sets, tokenizers, stories260K) from its public homes.

    python -m ladder.fetch [--dest DIR] [--only PREFIX ...] [--base-url URL] [--debug]
    make data

Every file is listed in `ladder/data_manifest.csv` (also `data/manifest.csv`): its path in the data folder,
the raw GitHub URL at the pinned commit it was taken from, size, sha256 and licence. A download goes to a
temporary name beside its target and is renamed only after its size and sha256 match, so a partial or
corrupt file is never used; a file already present with the wrong hash is named and fetched again.
Files marked `derive` (stories260K in Hugging Face format) are rebuilt from their fetched sources by
`derive_stories260k` and checked against the same recorded hashes. Files marked `skip` (the derived
Llama-3 tokenizer.json, which no cpu/smoke notebook or test reads) are not fetched.

The destination is the data folder, by the rule the notebooks read it with (`ladder.paths.data_root()`):
$LADDER_DATA (which must exist: a mistyped variable is an error, not a new folder), else ../shared/data
beside the checkout, else the user cache ~/.cache/ladder.
`--base-url` (or $LADDER_FETCH_BASE) replaces `https://raw.githubusercontent.com` (a mirror, or the
tests' local server).
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import http.client
import json
import os
import struct
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import numpy as np

from .root import DataFolderError, fetch_root
# safetensors is imported inside derive_stories260k, the one function that uses it: `python -m ladder.fetch` starts
# without it.

ORIGIN = "https://raw.githubusercontent.com"


class FetchError(RuntimeError):
    """A file could not be fetched or verified (named in the message)."""


@dataclass(frozen=True)
class Entry:
    path: str
    fetch: str          # download | derive | skip
    url: str
    revision: str
    bytes: int
    sha256: str
    licence: str
    derived_from: str


def manifest() -> list[Entry]:
    with (files("ladder") / "data_manifest.csv").open(newline="") as f:
        return [Entry(**{**r, "bytes": int(r["bytes"])}) for r in csv.DictReader(f)]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def is_valid(path: Path, e: Entry) -> bool:
    return path.is_file() and path.stat().st_size == e.bytes and sha256(path) == e.sha256


def _commit(tmp: Path, dest: Path, e: Entry) -> None:
    """Rename `tmp` over `dest` only if it is the file the manifest records; else delete it and raise."""
    size, digest = tmp.stat().st_size, sha256(tmp)
    if size != e.bytes or digest != e.sha256:
        tmp.unlink()
        raise FetchError(f"{e.path}: got {size} bytes with sha256 {digest[:12]}..., expected {e.bytes} bytes "
                         f"with sha256 {e.sha256[:12]}... (source {e.url or e.derived_from}); nothing was kept, "
                         "run the fetch again")
    os.replace(tmp, dest)


def download(e: Entry, root: Path, base_url: str | None = None, timeout: float = 60) -> Path:
    dest = root / e.path
    dest.parent.mkdir(parents=True, exist_ok=True)
    url = e.url.replace(ORIGIN, base_url.rstrip("/"), 1) if base_url else e.url
    tmp = dest.with_name(f".{dest.name}.part-{os.getpid()}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r, open(tmp, "wb") as f:
            while chunk := r.read(1 << 20):
                f.write(chunk)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:  # includes a connection closed mid-body
        tmp.unlink(missing_ok=True)
        raise FetchError(f"{e.path}: download from {url} failed ({err}); check the network (or --base-url) "
                         "and run the fetch again, or, offline, set LADDER_DATA to a copy of the data "
                         "folder") from None
    _commit(tmp, dest, e)
    return dest


# --------------------------------------------------------------------------------------------- derived
def _llama2c_to_hf(model_bin: Path) -> dict:
    """stories260K's llama2.c checkpoint -> HF Llama tensors (numpy), q/k rows permuted from the
    interleaved RoPE pairs of llama2.c to the rotate_half halves HF uses."""
    b = model_bin.read_bytes()
    dim, hidden, n_layers, n_heads, n_kv, vocab, seq = struct.unpack("<7i", b[:28])
    if vocab < 0:
        raise FetchError(f"{model_bin}: unshared classifier weights are not supported")
    a = np.frombuffer(b, dtype="<f4", offset=28)
    hd, pos = dim // n_heads, [0]

    def take(*shape):
        n = int(np.prod(shape))
        t = a[pos[0]:pos[0] + n].reshape(shape)
        pos[0] += n
        return t
    emb, att = take(vocab, dim), take(n_layers, dim)
    wq, wk, wv = take(n_layers, dim, dim), take(n_layers, n_kv * hd, dim), take(n_layers, n_kv * hd, dim)
    wo, ffn = take(n_layers, dim, dim), take(n_layers, dim)
    w1, w2, w3 = take(n_layers, hidden, dim), take(n_layers, dim, hidden), take(n_layers, hidden, dim)
    final = take(dim)
    take(seq, hd // 2), take(seq, hd // 2)  # precomputed RoPE tables, not stored by HF
    if pos[0] != a.size:
        raise FetchError(f"{model_bin}: {a.size - pos[0]} unexpected trailing floats")

    def perm(w, n):
        d1, d2 = w.shape
        return w.reshape(n, d1 // n // 2, 2, d2).transpose(0, 2, 1, 3).reshape(d1, d2)
    out = {"model.embed_tokens.weight": emb, "model.norm.weight": final}
    for i in range(n_layers):
        p = f"model.layers.{i}."
        out.update({p + "input_layernorm.weight": att[i], p + "post_attention_layernorm.weight": ffn[i],
                    p + "self_attn.q_proj.weight": perm(wq[i], n_heads),
                    p + "self_attn.k_proj.weight": perm(wk[i], n_kv), p + "self_attn.v_proj.weight": wv[i],
                    p + "self_attn.o_proj.weight": wo[i], p + "mlp.gate_proj.weight": w1[i],
                    p + "mlp.down_proj.weight": w2[i], p + "mlp.up_proj.weight": w3[i]})
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def _tokenizer_json(tok_bin: Path, vocab_size: int = 512) -> dict:
    """llama2.c's tok512.bin (pieces + scores) -> a HF `tokenizers` BPE (Llama-2 style, byte fallback);
    merges from the piece scores as in transformers' SentencePiece conversion."""
    b, o, pieces, scores = tok_bin.read_bytes(), 4, [], []
    for _ in range(vocab_size):
        s, n = struct.unpack_from("<fi", b, o)
        pieces.append(b[o + 8:o + 8 + n].decode("utf-8"))
        scores.append(s)
        o += 8 + n
    names = {1: "<s>", 2: "</s>"}
    vocab = {names.get(i, p.replace(" ", "▁")): i for i, p in enumerate(pieces)}
    score = {p: scores[i] for p, i in vocab.items()}
    merges = []
    for piece, i in vocab.items():
        if i < 3 + 256:  # specials and byte tokens are not merges
            continue
        local = [(piece[:k], piece[k:]) for k in range(1, len(piece)) if piece[:k] in vocab and piece[k:] in vocab]
        merges += [(m, score[piece]) for m in sorted(local, key=lambda m: (vocab[m[0]], vocab[m[1]]))]
    merges = [list(m) for m, _ in sorted(merges, key=lambda x: -x[1])]
    special = [{"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False,
                "normalized": False, "special": True} for i, c in enumerate(["<unk>", "<s>", "</s>"])]
    bos = {"SpecialToken": {"id": "<s>", "type_id": 0}}
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": special,
        "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"},
                       {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
        "pre_tokenizer": None,
        "post_processor": {"type": "TemplateProcessing", "single": [bos, {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [bos, {"Sequence": {"id": "A", "type_id": 0}},
                                    {"SpecialToken": {"id": "<s>", "type_id": 1}},
                                    {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"},
            {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": vocab, "merges": merges}}


STORIES_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 172,
    "num_hidden_layers": 5, "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 8,
    "vocab_size": 512, "max_position_embeddings": 512, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
    "rope_scaling": None, "hidden_act": "silu", "tie_word_embeddings": True, "attention_bias": False,
    "attention_dropout": 0.0, "mlp_bias": False, "initializer_range": 0.02, "pretraining_tp": 1,
    "use_cache": True, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32"}
STORIES_JSON = {
    "config.json": STORIES_CONFIG,
    "generation_config.json": {"bos_token_id": 1, "eos_token_id": 2, "do_sample": False},
    "special_tokens_map.json": {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
    "tokenizer_config.json": {
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
        "unk_token": "<unk>", "model_max_length": 512, "add_bos_token": True, "add_eos_token": False,
        "clean_up_tokenization_spaces": False, "legacy": False,
        "model_input_names": ["input_ids", "attention_mask"]}}


def derive_stories260k(root: Path, entries: list[Entry]) -> None:
    """Write models/stories260K/hf/* from the llama2.c files, each checked against the manifest."""
    from safetensors.numpy import save_file
    src = root / "models" / "stories260K" / "llama2c"
    hf = root / "models" / "stories260K" / "hf"
    hf.mkdir(parents=True, exist_ok=True)
    by_name = {Path(e.path).name: e for e in entries}
    for name, e in by_name.items():
        tmp = hf / f".{name}.part-{os.getpid()}"
        if name == "model.safetensors":
            save_file(_llama2c_to_hf(src / "stories260K.bin"), str(tmp), metadata={"format": "pt"})
        else:
            obj = _tokenizer_json(src / "tok512.bin") if name == "tokenizer.json" else STORIES_JSON[name]
            tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False), encoding="utf-8")
        _commit(tmp, hf / name, e)


# --------------------------------------------------------------------------------------------- fetch
def fetch(root: Path | None = None, only=None, base_url: str | None = None, log=print) -> list[str]:
    """Make every manifest file present and valid under `root`; returns the paths fetched or derived."""
    root = Path(root) if root else fetch_root()
    base_url = base_url or os.environ.get("LADDER_FETCH_BASE")
    entries = [e for e in manifest() if e.fetch != "skip" and (not only or any(e.path.startswith(p) for p in only))]
    if only and not entries:
        raise FetchError(f"--only {only}: no file of the manifest starts with that (e.g. eval/, models/stories260K)")
    done = []
    derive = []
    for e in entries:
        dest = root / e.path
        if is_valid(dest, e):
            continue
        if e.fetch == "derive":
            derive.append(e)
            continue
        if dest.exists():
            log(f"[fetch] {e.path}: present but its size/sha256 does not match the manifest; fetching it again")
        log(f"[fetch] {e.path} ({e.bytes / 1e6:.2f} MB)")
        download(e, root, base_url)
        done.append(e.path)
    if derive:
        for src in {s for e in derive for s in e.derived_from.split()}:
            se = next(x for x in manifest() if x.path == src)
            if not is_valid(root / src, se):
                log(f"[fetch] {src} (source of derived files)")
                download(se, root, base_url)
                done.append(src)
        log(f"[fetch] deriving {len(derive)} files of models/stories260K/hf from the llama2.c checkpoint")
        derive_stories260k(root, derive)
        done += [e.path for e in derive]
    return done


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ladder.fetch", description=__doc__.split("\n\n")[0])
    ap.add_argument("--dest", type=Path, help="data folder, created if missing (default: $LADDER_DATA, which "
                    "must exist; else ../shared/data beside the checkout; else ~/.cache/ladder)")
    ap.add_argument("--only", nargs="+", metavar="PREFIX", help="only files whose path starts with these")
    ap.add_argument("--base-url", help=f"replaces {ORIGIN} in the manifest's URLs (a mirror)")
    ap.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = ap.parse_args(argv)
    try:
        root = args.dest or fetch_root()
        done = fetch(root, args.only, args.base_url)
    except (FetchError, OSError, DataFolderError) as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"[fetch] {root}: {len(done)} files fetched or derived, everything else already verified")
    return 0


if __name__ == "__main__":
    sys.exit(main())
