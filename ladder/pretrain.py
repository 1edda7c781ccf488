"""The from-scratch experiment (notebooks/03_pretraining.ipynb): train each wiring on the same data,
evaluate, and compare with the paper's Table 3 (claims H5, H6).

Each run lives in its own folder named by a hash of everything that determines it, so a notebook
re-run with the same parameters resumes or reuses finished runs and a changed parameter starts anew.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pandas as pd
import torch

from .claims import ClaimEntry
from .config import ModelConfig, preset
from .data import TokenBlocks
from .eval import PAPER_TASKS, headline, lm_eval_scores, perplexity  # lm_eval_scores: no progress bars
from .launch import release_memory
from .model import build_model
from .paths import paper_table, run_key
from .train import TrainConfig, read_metrics, save_hf, train

TABLE_TASKS = ["arc_challenge", "arc_easy", "hellaswag", "piqa", "sciq", "winogrande"]  # Table 3's columns
WIRING_LABEL = {"standard": "Standard", "parallel": "Parallel", "ladder": "Ladder"}


def model_config(size: str | dict, wiring: str, vocab_size: int, seq_len: int) -> ModelConfig:
    """A preset name (e.g. "1B") or a dict of ModelConfig fields (may hold a "name"), at the given wiring,
    with the tokenizer's vocabulary and room for `seq_len`."""
    if isinstance(size, str):
        cfg = preset(size, wiring=wiring, vocab_size=vocab_size)
        return cfg.replace(max_seq_len=max(seq_len, cfg.max_seq_len))
    fields = {k: v for k, v in size.items() if k != "name"}
    return ModelConfig(**{"max_seq_len": seq_len, "tie_embeddings": True, **fields, "wiring": wiring,
                          "vocab_size": vocab_size})


def size_name(size: str | dict) -> str:
    if isinstance(size, str):
        return size
    return size.get("name") or f"{size['n_layers']}L-d{size['dim']}"


# how a run executes, not what it computes (the trajectory is the same, and a run resumes under either):
# left out of the run folder's key
EXECUTION_ONLY = ("fsdp", "activation_checkpointing", "progress", "progress_interval")


def train_run(size, wiring: str, seed: int, train_blocks: TokenBlocks, val_blocks: TokenBlocks, cfg: TrainConfig,
              tokenizer, root: str | Path, data_key: str = "", device: str = "auto", nproc: int = 1) -> dict:
    """Train one (size, wiring, seed) run — init seed and data-order seed both `seed` — and save it as an
    HF checkpoint in <run>/hf. Returns the training summary plus run metadata.

    `nproc` > 1 trains on that many torchrun processes (one per GPU; data parallel, sharded with
    `cfg.fsdp`) and loads the trained model back from <run>/hf.
    """
    cfg = dataclasses.replace(cfg, seed=seed, device=device)
    model_cfg = model_config(size, wiring, len(tokenizer), train_blocks.seq_len)
    key_cfg = {k: v for k, v in cfg.to_dict().items() if k not in EXECUTION_ONLY}
    run = Path(root) / f"{size_name(size)}-{wiring}-s{seed}-{run_key(model_cfg.to_dict(), key_cfg, data_key)}"
    dev = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    job = dict(model_cfg=model_cfg, seed=seed, train_blocks=train_blocks, val_blocks=val_blocks, cfg=cfg,
               tokenizer=tokenizer, run=run, device=dev)
    if nproc > 1:
        from .hf import load_pretrained
        from .launch import rank_device, torchrun_call
        dev = rank_device(dev)
        job.update(device=dev, cfg=dataclasses.replace(cfg, device="auto"))
        summary = torchrun_call("ladder.pretrain:train_and_export", job, nproc=nproc, work_dir=run / "job",
                                device=dev, progress=cfg.progress)
        model = load_pretrained(run / "hf", device="cpu", max_seq_len=model_cfg.max_seq_len)
    else:
        model, summary = train_and_export(**job, keep_model=True)
        model = model.to("cpu")  # kept for evaluate_runs; off the GPU, which the next run's training needs
    summary.update(size=size_name(size), seed=seed, run_dir=str(run), hf_dir=str(run / "hf"),
                   val_ppl=math.exp(summary["val_loss"]))
    summary["model"] = model
    return summary


def train_and_export(model_cfg: ModelConfig, seed: int, train_blocks: TokenBlocks, val_blocks: TokenBlocks,
                     cfg: TrainConfig, tokenizer, run: Path, device: str, keep_model: bool = False):
    """Build, train and export one run (in one process, or on every rank under torchrun). Returns the
    summary, or (model, summary) with `keep_model`."""
    model = build_model(model_cfg, device=device, seed=seed)
    summary = train(model, train_blocks, val_blocks, cfg, run)
    save_hf(model, run / "hf", tokenizer)
    return (model, summary) if keep_model else summary


def loss_curves(runs: list[dict]) -> pd.DataFrame:
    """Per-step metrics of every run, long format, labelled by wiring and seed."""
    frames = []
    for r in runs:
        m = pd.DataFrame(read_metrics(r["run_dir"]))
        m["run"] = f"{r['wiring']} (seed {r['seed']})"
        m["wiring"], m["seed"], m["size"] = r["wiring"], r["seed"], r["size"]
        frames.append(m)
    return pd.concat(frames, ignore_index=True)


def evaluate_runs(runs: list[dict], val_blocks: TokenBlocks, tasks=None, limit=None, batch_size: int = 8,
                  ppl_blocks: int | None = None, wikitext_limit: int | None = None) -> list[dict]:
    """lm-eval scores (the paper's tasks) and held-out perplexity for every run; adds them to the runs.

    `limit` caps the examples of each task; `wikitext_limit` separately caps the WikiText articles
    (rolling perplexity over whole articles is the slow part on a CPU)."""
    tasks = list(tasks or PAPER_TASKS)
    rolling = [t for t in tasks if t == "wikitext"]
    others = [t for t in tasks if t != "wikitext"]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    for r in runs:
        r["scores"] = lm_eval_scores(r["hf_dir"], others, limit=limit, batch_size=batch_size)
        if rolling:
            r["scores"].update(lm_eval_scores(r["hf_dir"], rolling, limit=wikitext_limit or limit, batch_size=batch_size))
        release_memory()  # lm-eval's copy of the model
        # one run's model on the GPU at a time (six 3B models in fp32 do not fit in one)
        r["heldout_ppl"] = perplexity(r["model"].to(device), val_blocks, batch_size, max_blocks=ppl_blocks)
        r["model"].to("cpu")
        release_memory()
    return runs


def results_table(runs: list[dict], paper: pd.DataFrame | None = None) -> pd.DataFrame:
    """Table 3's layout: accuracy (%) per task, their average, WikiText word perplexity — our runs, and
    the paper's rows beside them when `paper` (ladder/paper/pretraining.csv) is given."""
    rows = []
    for r in runs:
        h = headline(r["scores"])
        row = {"model": f"{WIRING_LABEL.get(r['wiring'], r['wiring'])}-{r['size']} (seed {r['seed']})",
               "source": "ours", **{t: h.get(t) for t in TABLE_TASKS}}
        accs = [row[t] for t in TABLE_TASKS if row[t] is not None]
        row["avg"] = sum(accs) / len(accs) if accs else None  # over the tasks that were run
        row["wikitext_ppl"] = h.get("wikitext")
        if "lambada_openai" in h:
            row["lambada_acc"] = h["lambada_openai"]
        row["heldout_ppl"] = r.get("heldout_ppl")
        rows.append(row)
    ours = pd.DataFrame(rows)
    if paper is None:
        return ours.rename(columns=substitute_labels()).set_index("model")
    ours = ours.rename(columns=substitute_labels())
    theirs = paper[["model", *TABLE_TASKS, "avg", "wikitext_ppl"]].rename(columns=substitute_labels())
    theirs = theirs.assign(source="paper")
    return pd.concat([ours, theirs], ignore_index=True).set_index("model")


def substitute_labels() -> dict:
    """Column names that say which benchmark was really measured (offline, SciQ's column is OpenBookQA)."""
    from .eval import SUBSTITUTES, offline_default
    return {t: f"{t} = {sub} (ours)" for t, sub in SUBSTITUTES.items()} if offline_default() else {}


def load_paper_table() -> pd.DataFrame:
    return paper_table("pretraining.csv")


# the paper's from-scratch budget (Table 3's caption: ~100B FineWeb-edu tokens), for the compute comparison in
# the H5/H6 entry's "how" (parameters x tokens, ours against the paper's model of the same preset name)
PAPER_TOKENS = 100e9


def unigram_entropy(train_blocks: TokenBlocks, val_blocks: TokenBlocks, vocab_size: int) -> float:
    """Cross-entropy (nats/token) of held-out targets under the training split's token frequencies
    (add-one smoothed): the loss of a model that ignores context."""
    counts = torch.bincount(train_blocks.tokens[:, 1:].reshape(-1), minlength=vocab_size).double() + 1
    logp = (counts / counts.sum()).log()
    return float(-logp[val_blocks.tokens[:, 1:].reshape(-1)].mean())


def training_claim(runs: list[dict], size: str, unigram: float, metric: str = "val_loss",
                   data: str = "a FineWeb/C4 substitute", paper_size: str = "1B") -> ClaimEntry:
    """The H5/H6 claims entry: each wiring's held-out loss per seed, paired by seed (the seeds trained in
    both standard and ladder; same initial weights and data order), the unigram entropy the rule judges
    "learned" against, and the scale. Measurements only: ladder.claims decides whether the models learned,
    whether there are enough seeds and what the gap says. `paper_size`: the paper's model this one stands
    in for, for the compute ratio in "how"."""
    def by_seed(w):
        return {int(r["seed"]): float(r[metric]) for r in runs if r["wiring"] == w and r["size"] == size}
    std, lad, par = by_seed("standard"), by_seed("ladder"), by_seed("parallel")
    if not std or not lad:
        raise ValueError(f"need standard and ladder runs at size {size!r}")
    seeds = sorted(set(std) & set(lad))
    if not seeds:
        raise ValueError(f"no seed trained in both standard ({sorted(std)}) and ladder ({sorted(lad)}) at size {size!r}")
    one = next(r for r in runs if r["size"] == size)
    spread = {w: (max(v.values()) - min(v.values())) if len(v) > 1 else None for w, v in
              (("standard", std), ("ladder", lad), ("parallel", par)) if v}
    s_loss, l_loss = [std[k] for k in seeds], [lad[k] for k in seeds]
    gap = sum(l_loss) / len(seeds) - sum(s_loss) / len(seeds)
    unpaired = {w: {str(k): v for k, v in d.items() if k not in seeds} for w, d in (("standard", std), ("ladder", lad))}
    fmt = lambda xs: ", ".join(f"{x:.3f}" for x in xs)
    ours = (f"{size} model, {one['tokens']:,} tokens, {len(seeds)} seed{'s' if len(seeds) != 1 else ''} per wiring "
            f"(paired): held-out loss ladder {fmt(l_loss)} vs standard {fmt(s_loss)} (mean gap {gap:+.3f} nats)"
            + (f"; parallel {fmt(par[k] for k in sorted(par))}" if par else "") + f"; unigram entropy {unigram:.2f}")
    ratio = preset(paper_size).num_params() * PAPER_TOKENS / (one["params"] * one["tokens"])
    how = (f"trained from scratch on {data}, {one['params'] / 1e6:.1f}M parameters: the paper's {paper_size} / "
           f"~{PAPER_TOKENS / 1e9:.0f}B tokens is ~10^{round(math.log10(ratio))}x more compute (parameters x tokens)")
    return ClaimEntry(evidence="small-scale-training", quantity=f"{metric} gap ladder - standard (nats)", value=gap,
                      ours=ours, how=how, seeds=tuple(seeds), standard=tuple(s_loss), ladder=tuple(l_loss),
                      unigram_entropy=float(unigram), params=float(one["params"]), tokens=float(one["tokens"]),
                      extra={"metric": metric, "parallel": [par[k] for k in sorted(par)], "seed_spread": spread,
                             "params_non_embedding": one["params_non_embedding"],
                             **({"unpaired": unpaired} if any(unpaired.values()) else {})})
