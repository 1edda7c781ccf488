"""The from-scratch experiment (notebooks/03_pretraining.ipynb): train each wiring on the same data,
evaluate, and compare with the paper's Table 3 (claims H5, H6).

Each run lives in its own folder named by a hash of everything that determines it, so a notebook
re-run with the same parameters resumes or reuses finished runs and a changed parameter starts anew.
"""
from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path
from typing import Callable, Iterable, Mapping

import pandas as pd
import torch

from . import claims as claim_rules
from .claims import ClaimEntry
from .config import ModelConfig, preset
from .data import TokenBlocks
from .eval import (PAPER_TASKS, SUBSTITUTES, TASK_LABELS, headline,  # lm_eval_scores: no progress bars
                   lm_eval_scores, offline_default, perplexity)
from .generate import generate
from .launch import rank_device, release_memory, torchrun_call
from .model import build_model
from .paths import paper_table, run_key
from .provenance import REPO_ROOT, write_result
from .stats import t_interval
from .train import TrainConfig, read_metrics, reuse_report, save_hf, train
# matplotlib, seaborn and ladder.hf (which imports transformers) are imported inside the functions that use them:
# importing ladder.pretrain does not load them.

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


def train_config(tokens_per_wiring: int, seq_len: int, nproc: int = 1, warmup_frac: float = 0.08,
                 **fields) -> TrainConfig:
    """The TrainConfig of every run: as many optimizer steps (at least 1) as `tokens_per_wiring` allows at
    `seq_len` tokens per sequence on `nproc` processes, warm-up over `warmup_frac` of them (at least 1 step),
    no progress bars. `fields`: any other TrainConfig field (batch_size, grad_accum, lr, amp, ...)."""
    cfg = TrainConfig(**{"progress": False, **fields})
    steps = max(1, tokens_per_wiring // cfg.tokens_per_step(seq_len, nproc))
    return dataclasses.replace(cfg, max_steps=steps, warmup_steps=max(1, round(warmup_frac * steps)))


def run_plan(sizes: list, wirings: list[str], seeds: list[int],
             extra_standard_seeds: Iterable[int] = ()) -> list[tuple]:
    """(size, wiring, seed) of every run, in training order: each seed in every wiring, then the standard
    model's extra seeds (those not already in `seeds`)."""
    plan = [(size, w, s) for size in sizes for s in seeds for w in wirings]
    return plan + [(size, "standard", s) for size in sizes for s in extra_standard_seeds if s not in seeds]


# every run trains on the same number of tokens (train_all prints it above the table)
SUMMARY_COLUMNS = ("size", "wiring", "seed", "params_non_embedding", "params", "train_loss", "val_loss", "val_ppl",
                   "tokens_per_s", "wall_s")
# the summary table's labels on the page (ladder.tables.styled), with the unit that sets each column's rounding
SUMMARY_LABELS = {"params_non_embedding": "params (non-embedding)", "train_loss": "train loss (nats)",
                  "val_loss": "held-out loss (nats)", "val_ppl": "held-out ppl", "tokens_per_s": "speed (tokens/s)",
                  "wall_s": "wall (s)"}
# the corpus table's labels (ladder.data.prepare_corpus's info, one row)
CORPUS_LABELS = {"documents": "documents", "train_documents": "training documents",
                 "val_documents": "held-out documents", "train_tokens": "training tokens",
                 "val_tokens": "held-out tokens", "vocab_size": "vocabulary", "seq_len": "sequence length"}


def summary_frame(runs: list[dict]) -> pd.DataFrame:
    """One row per run: its training summary, and "reused" (the run had already finished in an earlier
    execution with identical parameters, so its measured summary is shown and nothing was retrained)."""
    return pd.DataFrame([{**{k: r.get(k) for k in SUMMARY_COLUMNS}, "reused": r.get("reused", False)} for r in runs])


def train_all(sizes: list, wirings: list[str], seeds: list[int], extra_standard_seeds: Iterable[int],
              train_blocks: TokenBlocks, val_blocks: TokenBlocks, cfg: TrainConfig, tokenizer, root: str | Path,
              data_key: str = "", nproc: int = 1,
              log: Callable[[str], None] | None = print) -> tuple[list[dict], pd.DataFrame]:
    """Train every run of `run_plan` (`train_run`; finished runs are reused) and return (runs, summary
    table). `log` gets one line saying how many runs of how many tokens are trained, and `reuse_report`'s
    paragraph when runs were reused."""
    plan = run_plan(sizes, wirings, seeds, extra_standard_seeds)
    step_tokens = cfg.tokens_per_step(train_blocks.seq_len, nproc)
    if log:
        log(f"{len(plan)} runs x {cfg.max_steps} steps x {step_tokens} tokens = "
            f"{cfg.max_steps * step_tokens:,} tokens each")
    runs = [train_run(size, w, s, train_blocks, val_blocks, cfg, tokenizer, root, data_key, nproc=nproc)
            for size, w, s in plan]
    report = reuse_report(runs)
    if log and report:
        log(report)
    return runs, summary_frame(runs)


def plot_loss_curves(runs: list[dict], path: str | Path | None = None):
    """Training loss (5-step running mean) and validation loss against training tokens, every wiring and
    seed; the y range of the validation panel is cut 1.5 nats above its lowest point. Saved to `path` (png)
    when given. Returns the matplotlib Figure."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    curves = loss_curves(runs)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    smooth = curves.assign(loss=curves.groupby("run")["loss"].transform(lambda s: s.rolling(5, min_periods=1).mean()))
    sns.lineplot(data=smooth, x="tokens", y="loss", hue="wiring", style="seed", ax=axes[0])
    axes[0].set(title="Training loss (5-step running mean)", xlabel="training tokens",
                ylabel="cross-entropy (nats/token)")
    val = curves.dropna(subset=["val_loss"])
    sns.lineplot(data=val, x="tokens", y="val_loss", hue="wiring", style="seed", markers=True, ax=axes[1])
    axes[1].set(title="Validation loss (held-out documents)", xlabel="training tokens",
                ylabel="cross-entropy (nats/token)")
    lo = val["val_loss"].min()
    axes[1].set_ylim(lo - 0.1, lo + 1.5)
    wirings = ", ".join(dict.fromkeys(r["wiring"] for r in runs))
    sizes = ", ".join(dict.fromkeys(str(r["size"]) for r in runs))
    fig.suptitle(f"Loss while training from scratch: {wirings} wirings ({sizes}), same data and token budget")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


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
    return {t: f"{t} = {sub} (ours)" for t, sub in SUBSTITUTES.items()} if offline_default() else {}


def table_labels() -> dict:
    """`results_table`'s labels on the page (ladder.tables.styled): the benchmarks as the paper names them, with
    the unit; a substituted benchmark says what was measured instead."""
    subs = substitute_labels()
    labels = {subs.get(t, t): f"{TASK_LABELS[t]} (%)" + (f" = {SUBSTITUTES[t]} (ours)" if t in subs else "")
              for t in TABLE_TASKS}
    return {**labels, "avg": "avg (%)", "lambada_acc": f"{TASK_LABELS['lambada_openai']} (%)",
            "wikitext_ppl": f"{TASK_LABELS['wikitext']} ppl", "heldout_ppl": "held-out ppl"}


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


# ------------------------------------------------------------------------------------ the chapter's report
def data_name(sources) -> str:
    """What the runs were trained on, as the H5/H6 entry's "how" says it."""
    return "FineWeb-edu" if sources else "a FineWeb/C4 substitute"


def judge_claims(runs: list[dict], sizes: list, unigram: float, sources=None,
                 thresholds: Mapping[str, Mapping] | None = None) -> tuple[dict, dict, dict]:
    """The chapter's claims and their verdicts: H5 from the first size's runs (standing in for the paper's
    1B), H6 when a "3B" size was trained. Returns (claims {id: ClaimEntry}, verdicts {id: (verdict,
    reason)}, thresholds {id: thresholds of ladder/paper/claims.csv}); `thresholds` defaults to that file's."""
    thr = dict(thresholds) if thresholds is not None else {r["id"]: r["thresholds"] for r in claim_rules.paper_claims()}
    claims = {"H5": training_claim(runs, size_name(sizes[0]), unigram, data=data_name(sources), paper_size="1B")}
    if any(size_name(s) == "3B" for s in sizes):
        claims["H6"] = training_claim(runs, "3B", unigram, data=data_name(sources), paper_size="3B")
    verdicts = {cid: claim_rules.judge(cid, e, thr[cid]) for cid, e in claims.items()}
    return claims, verdicts, thr


def verdict_table(claims: Mapping[str, ClaimEntry], verdicts: Mapping[str, tuple]) -> pd.DataFrame:
    """One row per claim: what we measured, the verdict of ladder.claims and its reason."""
    return pd.DataFrame({cid: {"ours": e["ours"], "verdict (ladder.claims)": verdicts[cid][0], "why": verdicts[cid][1]}
                         for cid, e in claims.items()}).T


def standard_run(runs: list[dict]) -> dict:
    """The first standard run: the checkpoint chapter 4 converts, and the one the chapter's scale numbers
    (parameters, tokens/s) describe."""
    return next(r for r in runs if r["wiring"] == "standard")


def _mean(xs) -> float:
    """The mean; NaN for no values (e.g. a profile that trains no parallel wiring)."""
    xs = list(xs)
    return sum(xs) / len(xs) if xs else float("nan")


def direction(standard: Iterable[float], ladder: Iterable[float]) -> str:
    """Which wiring is ahead seed by seed (same initial weights and batches for both): lower loss is ahead."""
    ahead = {"ladder" if l < s else "standard" for l, s in zip(ladder, standard)}
    if ahead == {"ladder"}:
        return "ladder ahead of standard for every seed"
    if ahead == {"standard"}:
        return "standard ahead of ladder for every seed"
    return "ahead for some seeds, behind for others"


def chapter_values(runs: list[dict], claims: Mapping[str, ClaimEntry], verdicts: Mapping[str, tuple],
                   thresholds: Mapping[str, Mapping], unigram: float, steps: int,
                   tokens_per_step: int) -> dict[str, object]:
    """Every number and phrase chapter 3's prose cites ({glue:text}`name`), by glue name: the H5 verdict and its
    inputs (thresholds of ladder/paper/claims.csv), mean held-out losses per wiring, the paired gap's interval,
    the distance from the paper's scale, and the training budget (`steps` optimizer steps of `tokens_per_step`)."""
    h5, t5, std0 = claims["H5"], thresholds["H5"], standard_run(runs)
    paired = t_interval([b - a for a, b in zip(h5.standard, h5.ladder)]) if len(h5.seeds) > 1 else None
    return {
        "h5_verdict": verdicts["H5"][0],
        "h5_unigram": unigram,
        "h5_gap": h5["value"],
        "h5_gap_ci": ("no interval with one seed" if paired is None else
                      f"95% CI {paired['ci'][0]:+.3f} to {paired['ci'][1]:+.3f}"),
        "h5_n_seeds": len(h5.seeds),
        "h5_reason": verdicts["H5"][1],
        "h5_margin": t5["margin_nats"],
        "h5_min_seeds": int(t5["min_seeds"]),
        "h5_learn_margin": t5["learn_margin_nats"],
        "h5_min_scale": f"{t5['min_params'] / 1e9:g}B parameters and {t5['min_tokens'] / 1e9:g}B tokens",
        # how far from the paper's 1B run: orders of magnitude in parameters and in tokens
        "pretrain_params_orders": math.log10(preset("1B").num_params() / h5.params),
        "pretrain_tokens_orders": math.log10(PAPER_TOKENS / h5.tokens),
        "h5_std_loss": _mean(h5["standard"]),
        "h5_ladder_loss": _mean(h5["ladder"]),
        "h5_parallel_loss": _mean(h5["parallel"]),
        "h5_worst_loss": max(r["val_loss"] for r in runs),
        "pretrain_ppl": math.exp(_mean(h5["standard"])),
        "h5_direction": direction(h5["standard"], h5["ladder"]),
        "pretrain_tokens": steps * tokens_per_step,
        "pretrain_steps": steps,
        "pretrain_params": std0["params_non_embedding"],
        "pretrain_tokens_per_s": std0["tokens_per_s"] or float("nan"),
        "h6_verdict": verdicts["H6"][0] if "H6" in verdicts else "not run",
    }


# the notebook parameters stored in the result file's provenance block
RESULT_PARAMS = ("profile", "sizes", "wirings", "seeds", "extra_standard_seeds", "sources", "max_docs", "tokenizer",
                 "vocab_size", "seq_len", "batch_size", "grad_accum", "tokens_per_wiring", "lr", "warmup_frac", "amp",
                 "eval_tasks", "eval_limit", "wikitext_limit", "threads")


def write_chapter_result(results: str | Path, runs: list[dict], claims: Mapping[str, ClaimEntry], data_info: dict,
                         cfg: TrainConfig, table: pd.DataFrame, unigram: float, params: Mapping, wall_s: float,
                         export_standard: bool = True, repo_root: Path = REPO_ROOT,
                         log: Callable[[str], None] | None = print) -> Path:
    """Write <results>/pretraining.json (claims block, data, train config, every run's summary with its folders
    relative to `repo_root`, the Table 3 layout, the unigram entropy, the notebook's wall time `wall_s`, and the
    notebook `params` in the provenance block) and, with `export_standard`, copy the standard run's HF checkpoint
    to <results>/checkpoints/standard (the one chapter 4 converts). Returns the result file's path."""
    results, repo_root = Path(results), Path(repo_root)
    if export_standard:
        dest = results / "checkpoints" / "standard"
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(standard_run(runs)["hf_dir"], dest)
        if log:
            log(f"standard checkpoint: {dest.relative_to(repo_root)} "
                f"{sum(f.stat().st_size for f in dest.iterdir()) / 1e6:.1f} MB")
    records = [{k: v for k, v in r.items() if k != "model"} for r in runs]
    for r in records:
        r["run_dir"] = str(Path(r["run_dir"]).relative_to(repo_root))
        r["hf_dir"] = str(Path(r["hf_dir"]).relative_to(repo_root))
    payload = {"claims": claim_rules.block(claims), "data": data_info, "train_config": cfg.to_dict(), "runs": records,
               "table": json.loads(table.reset_index().to_json(orient="records")), "unigram_entropy": unigram,
               "notebook_wall_s": wall_s}
    return write_result(results / "pretraining.json", payload, dict(params))


def sample_texts(runs: list[dict], val_blocks: TokenBlocks, tokenizer, wirings=("standard", "ladder"),
                 prompt_len: int = 24, new_tokens: int = 48) -> dict[str, str]:
    """What the first run of each wiring writes after the start of the first held-out block: greedy, and
    sampled (temperature 0.8, top-k 50, seed 0). The prompt (at most a third of the model's context) and the
    new tokens together fit the model's context. Returns {"prompt": text, "<wiring>, greedy": text,
    "<wiring>, sampled": text, ...}."""
    room = runs[0]["model"].config.max_seq_len
    prompt = val_blocks.tokens[:1, :min(prompt_len, room // 3)]
    new = min(new_tokens, room - prompt.shape[1])
    out = {"prompt": tokenizer.decode(prompt[0].tolist())}
    for w in wirings:
        model = next(r for r in runs if r["wiring"] == w)["model"].eval()
        greedy, _ = generate(model, prompt, new)
        sampled, _ = generate(model, prompt, new, temperature=0.8, top_k=50, seed=0)
        out[f"{w}, greedy"] = tokenizer.decode(greedy[0, prompt.shape[1]:].tolist())
        out[f"{w}, sampled"] = tokenizer.decode(sampled[0, prompt.shape[1]:].tolist())
    return out
