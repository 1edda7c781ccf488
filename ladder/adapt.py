"""Llama adaptation: rewire a pretrained Llama's upper layers to ladder, retrain briefly, evaluate.

The paper's experiment (its Llama-3.1-8B-Instruct table): take the pretrained model, switch the last 16
(or 20) of its 32 layers to the ladder dataflow with the weights unchanged, evaluate (quality drops),
retrain on ~3B tokens of instruction data (BAAI/Infinity-Instruct), evaluate again (quality recovers).

    model = load_pretrained(src, wiring="hybrid", ladder_layers=N)   # ladder.hf: the native runtime
    summary = retrain(model, train_blocks, val_blocks, token_budget, out_dir)   # ladder.train.train
    ckpt = save_hf(model, out_dir / "hf", tokenizer)                 # a LadderLlamaForCausalLM checkpoint
    scores = evaluate_checkpoint(ckpt, {"test": blocks}, tasks)      # perplexity + lm-eval

`run_adaptation()` is the whole experiment on one model: the retraining data (`ladder.retraining_data`:
instruction data on a connected node; offline, plain text or text sampled from the source itself), a
recipe search on a selection set, the control (the source retrained on the same data), and the test-set
numbers that `recovery_entry()` turns into claim H7's entry. `quality_curve()` turns a run's checkpoints
into quality vs retraining tokens.
"""
from __future__ import annotations

import itertools
import json
import logging
import math
import os
import time
import warnings
from pathlib import Path
from typing import Sequence

import torch
import torch.distributed as dist
import transformers
from safetensors.torch import load_model
from transformers import AutoConfig, AutoTokenizer

from . import bench, replay, speedup
from . import claims as rules
from .claims import ClaimEntry, block
from .config import preset
from .data import TokenBlocks, forget_how_loaded
from .eval import TASK_LABELS, block_losses, headline_value, lm_eval_scores, perplexity
from .hf import config_from_hf, convert, load_pretrained, resolve_checkpoint
from .paths import data_path, local_candidates, paper_file, run_key
from .launch import rank_device, release_memory, torchrun_call
from .model import build_model
from .provenance import write_result
from .retraining_data import HELD_OUT_VERSION, resolve_kind, retraining_data
from .stats import paired_gap
from .train import TrainConfig, _checkpoints, read_metrics, reuse_report, save_hf, train
# pandas, seaborn and matplotlib are imported inside the functions that use them (tables, plots): importing
# ladder.adapt does not load them.


# --------------------------------------------------------------------------------------------- retraining
def steps_for_budget(token_budget: float, batch_size: int, seq_len: int, grad_accum: int = 1) -> int:
    """Optimizer steps that consume `token_budget` training tokens (at least one)."""
    if token_budget <= 0:
        raise ValueError(f"token_budget must be positive, got {token_budget}")
    return max(1, round(token_budget / (batch_size * grad_accum * seq_len)))


def retrain(model, train_blocks: TokenBlocks, val_blocks: TokenBlocks | None, token_budget: float,
            out_dir: str | os.PathLike, *, batch_size: int = 8, grad_accum: int = 1, lr: float = 1e-4,
            warmup_frac: float = 0.05, n_points: int = 6, keep_checkpoints: bool = False,
            trainable_layers: int | None = None, **train_kw) -> dict:
    """Supervised fine-tuning of a (converted) native model for `token_budget` tokens with ladder.train.

    Defaults follow the paper's fine-tuning recipe in spirit (AdamW, short warm-up, cosine decay); the
    learning rate is a parameter. `n_points` validation losses are spread evenly over the run (the
    quality-vs-tokens curve). A checkpoint is written at each of them, so a killed run resumes from the
    last one; with `keep_checkpoints` all are kept (for benchmark curves; costly for large models), else
    only the newest. `trainable_layers` = N trains only the top N layers (embeddings, lower layers and
    the final norm frozen); None trains every parameter, as the paper did. Returns ladder.train.train's
    summary plus the TrainConfig used.
    """
    freeze_below(model, trainable_layers)
    world = dist.get_world_size() if dist.is_initialized() else 1  # data-parallel ranks share the budget
    steps = steps_for_budget(token_budget, batch_size * world, train_blocks.seq_len, grad_accum)
    every = max(1, steps // max(1, n_points))
    cfg = TrainConfig(**{**dict(max_steps=steps, batch_size=batch_size, grad_accum=grad_accum, lr=lr,
                                warmup_steps=max(1, round(warmup_frac * steps)), eval_every=every,
                                eval_batches=10**9, ckpt_every=every,
                                keep_checkpoints=0 if keep_checkpoints else 1), **train_kw})
    summary = train(model, train_blocks, val_blocks, cfg, out_dir)
    return {**summary, "train_config": cfg.to_dict()}


def freeze_below(model, trainable_layers: int | None):
    """Leave only the top `trainable_layers` layers trainable (None or all layers: everything)."""
    n = len(model.layers)
    if trainable_layers is None:
        return model
    if not 1 <= trainable_layers <= n:
        raise ValueError(f"trainable_layers={trainable_layers}: the model has {n} layers (choose 1..{n}, or None for all)")
    for p in model.parameters():
        p.requires_grad_(False)
    for block in model.layers[n - trainable_layers:]:
        for p in block.parameters():
            p.requires_grad_(True)
    return model


def adapt(source, ladder_layers, train_blocks: TokenBlocks, val_blocks: TokenBlocks | None, token_budget: float,
          out_dir: str | os.PathLike, *, tokenizer=None, device: str = "cpu", dtype=torch.float32,
          export_dtype: torch.dtype | None = None, nproc: int = 1, **retrain_kw) -> dict:
    """The whole path: HF Llama checkpoint -> native hybrid (last `ladder_layers` layers ladder) ->
    retraining -> a LadderLlamaForCausalLM checkpoint in out_dir/hf. Returns {"checkpoint", "summary"}.

    `ladder_layers=0` retrains the source model unchanged (standard wiring, exported as a plain
    LlamaForCausalLM): the control that separates the effect of the retraining data from the rewiring.

    `nproc` > 1 retrains on that many local processes (one per GPU) launched with torchrun, and waits for
    them; add `fsdp=True` (and `activation_checkpointing=True`) to shard the model, which full fine-tuning
    of Llama-3.1-8B needs (see ladder.train). The result is the same as in one process accumulating
    `nproc` micro-batches per step.
    """
    if nproc > 1:  # this same function on every rank, under torchrun
        device = rank_device(device)
        kwargs = dict(source=str(resolve_checkpoint(source)),  # downloaded once, here, not by every rank
                      ladder_layers=ladder_layers, train_blocks=train_blocks, val_blocks=val_blocks,
                      token_budget=token_budget, out_dir=str(out_dir), tokenizer=tokenizer, device=device,
                      dtype=dtype, export_dtype=export_dtype, **retrain_kw)
        return torchrun_call("ladder.adapt:adapt", kwargs, nproc=nproc, work_dir=Path(out_dir) / "job",
                             device=device, progress=retrain_kw.get("progress", True))
    # the hybrid rule itself is ModelConfig.rewired (load_pretrained applies it); here 0 converted layers loads the
    # source as what it is, standard, so its retrained control is saved as a plain Llama checkpoint
    rewire = {"wiring": "hybrid", "ladder_layers": ladder_layers} if ladder_layers else {"wiring": "standard"}
    model = load_pretrained(source, device=device, dtype=dtype, max_seq_len=max(train_blocks.seq_len, 256), **rewire)
    summary = retrain(model, train_blocks, val_blocks, token_budget, out_dir, **retrain_kw)
    ckpt = save_hf(model, Path(out_dir) / "hf", tokenizer, dtype=export_dtype)
    return {"checkpoint": ckpt, "summary": summary}


# --------------------------------------------------------------------------------------------- evaluation
def evaluate_checkpoint(checkpoint, sets: dict[str, TokenBlocks] | None, tasks: Sequence[str] = (), *,
                        limit: int | None = None, batch_size: int = 8, device: str = "cpu", **overrides) -> dict:
    """A HF checkpoint on named held-out sets (native runtime) and on lm-eval `tasks`:
    {"sets": {name: {"ppl", "losses", "tokens", "docs"}}, "tasks": {task: scores}}, where "losses", "tokens"
    and "docs" are per block (summed loss, scored tokens, the document it starts in; None where the blocks
    do not know it): the units of `ladder.stats.paired_gap`.

    `overrides` rewire the checkpoint on load (e.g. wiring="hybrid", ladder_layers=4 evaluates the
    converted-but-not-retrained model without saving it); lm-eval always sees the saved checkpoint,
    so pass a converted checkpoint for it (see `save_converted`).
    """
    out = {"sets": {}}
    sets = {k: v for k, v in (sets or {}).items() if v is not None}
    if sets:
        seq = max(256, *(b.seq_len for b in sets.values()))
        model = load_pretrained(checkpoint, device=device, max_seq_len=seq, **overrides).eval()
        for name, blocks in sets.items():
            losses, tokens = block_losses(model, blocks, batch_size)
            out["sets"][name] = {"ppl": math.exp(float(losses.sum() / tokens.sum())), "losses": losses.tolist(),
                                 "tokens": tokens.tolist(), "docs": None if blocks.doc is None else blocks.doc.tolist()}
        del model
        release_memory()  # lm-eval loads its own copy next (an 8B model is 32 GB in fp32)
    out["tasks"] = lm_eval_scores(checkpoint, tasks, limit, batch_size)
    release_memory()
    return out


def save_converted(source, ladder_layers, out_dir: str | os.PathLike, tokenizer=None) -> Path:
    """convert() a HF Llama and save it (with its tokenizer) as a LadderLlamaForCausalLM checkpoint."""
    out_dir = Path(out_dir)
    convert(source, ladder_layers=ladder_layers).save_pretrained(out_dir)
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir)
    return out_dir


def quality_curve(run_dir: str | os.PathLike, source, ladder_layers, val_blocks: TokenBlocks | None = None, *,
                  start_ppl: float | None = None, tasks: Sequence[str] = (), from_checkpoints: bool = False,
                  limit: int | None = None, tokenizer=None, batch_size: int = 8, device: str = "cpu") -> list[dict]:
    """Quality vs retraining tokens: held-out perplexity of the converted model before retraining
    (tokens = 0; `start_ppl` if already known) and along the retraining run in `run_dir`.

    By default the points are the validation losses ladder.train logged (metrics.jsonl, on the same
    held-out blocks), so nothing is recomputed. With `tasks` or `from_checkpoints`, every kept
    checkpoint (retrain(..., keep_checkpoints=True)) is loaded and evaluated: perplexity on
    `val_blocks` and, for `tasks`, lm-eval on an exported copy.
    """
    run_dir = Path(run_dir)
    path = resolve_checkpoint(source)
    rewired = dict(wiring="hybrid", ladder_layers=ladder_layers)
    seq = max(val_blocks.seq_len if val_blocks is not None else 0, 256)
    if start_ppl is None:
        if val_blocks is None:
            raise ValueError("quality_curve needs val_blocks or start_ppl for the point before retraining")
        start_ppl = perplexity(load_pretrained(path, device=device, max_seq_len=seq, **rewired), val_blocks, batch_size)
    curve = [{"step": 0, "tokens": 0, "ppl": start_ppl}]
    if not (tasks or from_checkpoints):
        return curve + [{"step": m["step"], "tokens": m["tokens"], "ppl": math.exp(m["val_loss"])}
                        for m in read_metrics(run_dir) if "val_loss" in m]
    if val_blocks is None:
        raise ValueError("evaluating checkpoints needs val_blocks")
    config = config_from_hf(AutoConfig.from_pretrained(path), max_seq_len=seq, **rewired)
    for d in _checkpoints(run_dir):
        state = torch.load(d / "trainer_state.pt", weights_only=True, map_location="cpu")
        model = build_model(config, device=device)
        load_model(model, str(d / "model.safetensors"), device=str(device))
        rec = {"step": state["step"], "tokens": state["tokens_seen"],
               "ppl": perplexity(model.eval(), val_blocks, batch_size)}
        if tasks:
            hf_dir = save_hf(model, run_dir / "curve" / f"step_{state['step']:06d}", tokenizer)
            rec["tasks"] = lm_eval_scores(hf_dir, tasks, limit, batch_size)
        curve.append(rec)
    return curve


# --------------------------------------------------------------------------------------------- experiment
def resolve_model(name: str):
    """A model name of the notebook's parameters -> a checkpoint path or hub id, or None if a local
    checkpoint is missing. "stories260K" is the pretrained checkpoint in the data directory; a relative
    path is taken from the repository root (e.g. notebook 03's data/results/cpu/checkpoints/standard)."""
    if name == "stories260K":
        return data_path("models", "stories260K", "hf")
    p = Path(name).expanduser()
    for cand in local_candidates(p):
        if (cand / "config.json").is_file():
            return cand
    local = name.startswith((".", "/", "~", "data/", "runs/")) or name.count("/") != 1
    return None if local else name


def ladder_counts(n_layers: int, fractions: Sequence[float]) -> list[int]:
    """Numbers of converted (upper) layers for fractions of the depth: ceil, so 0.5 and 0.625 of 32
    layers are the paper's 16 and 20, and of stories260K's 5 layers 3 and 4."""
    return sorted({min(n_layers, max(1, math.ceil(f * n_layers - 1e-9))) for f in fractions})


TRAIN_CHOICES = ("all", "converted")  # which parameters a recipe retrains: every one, or the converted layers only


def recipes(lr: float, explore: dict | None = None) -> list[dict]:
    """The retraining recipes to try: every combination of `explore`'s lists ({"lr": [...], "train":
    ["all", "converted"]}, each key optional), or just {"lr": lr, "train": "all"} (the paper's full
    fine-tune)."""
    grid = {"lr": [lr], "train": ["all"], **(explore or {})}
    unknown = set(grid) - {"lr", "train"}
    if unknown:
        raise ValueError(f"explore: unknown recipe keys {sorted(unknown)} (known: lr, train; and tokens, the "
                         "search budget, for run_adaptation)")
    bad = [t for t in grid["train"] if t not in TRAIN_CHOICES]
    if bad:
        raise ValueError(f"explore: train must be one of {TRAIN_CHOICES}, got {bad}")
    return [{"lr": float(lr_), "train": t} for lr_, t in itertools.product(grid["lr"], grid["train"])]


def recipe_name(recipe: dict) -> str:
    return f"lr {recipe['lr']:g}, train {recipe['train']}"


def run_folder(name: str, data_kind, corpus_tokens, eval_tokens, seq_len, seed, batch_size, grad_accum, n_points,
               export_dtype, nproc: int = 1, held_out_version: int = 1) -> str:
    """The folder of one model's adaptation runs: one per data and training setup, so re-executing with the same
    parameters reuses finished runs (and resumes killed ones) instead of retraining, and a changed parameter
    gets a new folder. The process count sets the tokens of an optimizer step, so a run is never resumed with
    another; so does the way the held-out sets are built (`retraining_data.HELD_OUT_VERSION`), which the runs
    log their validation curve on. At 1 process and version 1 a folder keeps the key it always had."""
    key = run_key(name, data_kind, corpus_tokens, eval_tokens, seq_len, seed, batch_size, grad_accum, n_points,
                  export_dtype, *([f"nproc={nproc}"] if nproc > 1 else []),
                  *([f"held_out=v{held_out_version}"] if held_out_version > 1 else []))
    return f"{_slug(name)}-{key}"


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def weights_digest(checkpoint: str | os.PathLike) -> str:
    """sha256 over the weight files of a checkpoint folder (names and contents): what the source model is,
    where its name or path says nothing (a local folder retrained in place, as chapter 3's export is)."""
    import hashlib
    h = hashlib.sha256()
    files = sorted(f for f in Path(checkpoint).iterdir() if f.is_file() and f.name.endswith(WEIGHT_SUFFIXES))
    if not files:
        raise FileNotFoundError(f"{checkpoint}: no weight file ({', '.join(WEIGHT_SUFFIXES)}) to identify it by")
    for f in files:
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def claim_run_folder(out: Path, source: str | os.PathLike, log=print) -> Path:
    """Tie a run folder to the weights of its source. The folder is keyed by the model's name and the
    parameters, not by its weights: if the weights behind that name changed since the folder's runs were
    trained, those runs belong to another model, so the folder is set aside (renamed, not deleted) and `out`
    starts anew. A folder from before sources were recorded is adopted as it is."""
    record, digest = out / "source.json", weights_digest(source)
    if record.is_file():
        before = json.loads(record.read_text()).get("weights_sha256")
        if before != digest:
            stale = out.with_name(f"{out.name}-replaced-{str(before)[:10]}")
            out.rename(stale)
            log(f"note: the weights of {source} changed since the runs in {out.name} were trained; those runs "
                f"were moved to {stale.name} and are retrained")
    out.mkdir(parents=True, exist_ok=True)
    if not record.is_file():
        record.write_text(json.dumps({"source": str(source), "weights_sha256": digest}, indent=1) + "\n")
    return out


def run_adaptation(name: str, out_root: str | os.PathLike, *, fractions: Sequence[float] = (0.5, 0.625),
                   retrain_tokens: float = 200_000, seq_len: int = 128, batch_size: int = 16, lr: float = 1e-3,
                   explore: dict | None = None, tasks: Sequence[str] = (), limit: int | None = None,
                   data_kind: str = "auto", corpus_tokens: int = 65_536, eval_tokens: int = 16_384,
                   n_points: int = 6, eval_batch_size: int = 8, device: str = "cpu", seed: int = 0,
                   control: bool = False, grad_accum: int = 1, nproc: int = 1, fsdp: bool = False,
                   activation_checkpointing: bool = False, export_dtype: str | None = None,
                   progress: bool = False) -> dict | None:
    """The paper's adaptation experiment on one pretrained Llama: evaluate it, convert its upper layers
    (each fraction of the depth), evaluate right after conversion, retrain, evaluate again, and trace
    quality vs retraining tokens. Returns None (with a printed note) when a local checkpoint is missing.

    Recipe search: with `explore` (see `recipes`; its optional "tokens" is the search budget, by default
    `retrain_tokens`), the smallest converted depth is retrained with every recipe and the one with the
    lowest loss on the *selection* set is used, with the full `retrain_tokens`, for every depth and the
    control; the *test* set is scored only afterwards (`recovery_entry`), so the choice does not flatter
    the result. Runs live in a folder keyed by the parameters: a re-execution reuses finished runs and
    resumes killed ones. `control`: also retrain the unconverted source on the same data with the same recipe
    (what retraining does to any model on this data is not credited to, or blamed on, the rewiring).

    Retraining runs in this process, or with `nproc` > 1 on that many torchrun processes (one per GPU;
    `fsdp` shards the model, as an 8B full fine-tune needs). `export_dtype` (e.g. "bfloat16") sets the
    dtype of the saved retrained checkpoints.
    """
    path = resolve_model(name)
    if path is None:
        print(f"note: {name} not found (no config.json there); skipping it. Run its notebook first to create it.")
        return None
    path = resolve_checkpoint(path)  # a hub id: downloaded once here, and every later step reads that folder
    tokenizer = forget_how_loaded(AutoTokenizer.from_pretrained(str(path)))  # saved with each converted checkpoint
    held_out_version = HELD_OUT_VERSION[resolve_kind(path, tokenizer, data_kind)]
    out = Path(out_root) / run_folder(name, data_kind, corpus_tokens, eval_tokens, seq_len, seed, batch_size,
                                      grad_accum, n_points, export_dtype, nproc, held_out_version)
    claim_run_folder(out, path)
    hf_config = AutoConfig.from_pretrained(str(path))
    n_layers, params = hf_config.num_hidden_layers, config_from_hf(hf_config).num_params()
    counts = ladder_counts(n_layers, fractions)
    data = retraining_data(path, tokenizer, kind=data_kind, seq_len=seq_len, corpus_tokens=corpus_tokens,
                           eval_tokens=eval_tokens, seed=seed, device=device, cache_dir=out / "data")
    sets = {"select": data.select, "test": data.test, "real": data.real}
    ev = dict(limit=limit, batch_size=eval_batch_size, device=device)
    retrain_kw = dict(tokenizer=tokenizer, device=device, batch_size=batch_size, grad_accum=grad_accum,
                      n_points=n_points, progress=progress, seed=seed, nproc=nproc, fsdp=fsdp,
                      activation_checkpointing=activation_checkpointing,
                      export_dtype=None if export_dtype is None else getattr(torch, export_dtype))

    trained = []  # every retraining run's summary, for the reuse report

    def retrained(n, recipe, tokens, trained_top):
        """Retrain the model converted at depth n (0: the source itself) with `recipe` for `tokens`."""
        run_dir = out / f"{f'hybrid{n}' if n else 'source'}-{_slug(recipe_name(recipe))}-{int(tokens)}tok"
        res = adapt(path, n, data.train, data.select, tokens, run_dir, lr=recipe["lr"],
                    trainable_layers=trained_top if recipe["train"] == "converted" else None, **retrain_kw)
        trained.append(res["summary"])
        row = {"model": name, "ladder_layers": n, "retrain_tokens": res["summary"]["tokens"],
               "recipe": recipe_name(recipe), **_flatten(evaluate_checkpoint(res["checkpoint"], sets, tasks, **ev))}
        return res, row, run_dir

    rows = [{"model": name, "variant": "source", "ladder_layers": 0, "retrain_tokens": 0,
             **_flatten(evaluate_checkpoint(path, sets, tasks, **ev))}]
    converted, checkpoints = {}, {"source": str(path)}
    for n in counts:
        ckpt = checkpoints[f"hybrid{n}_converted"] = str(save_converted(path, n, out / f"hybrid{n}_converted", tokenizer))
        converted[n] = {"model": name, "variant": f"Hybrid-{n}L, no retraining", "ladder_layers": n,
                        "retrain_tokens": 0, **_flatten(evaluate_checkpoint(ckpt, sets, tasks, **ev))}
    # the recipe search, on the smallest converted depth (the paper's 16 of 32), for explore["tokens"]
    # (default: the full budget; a smaller one searches cheaply and the winner is then retrained in full)
    first, study = counts[0], []
    search_tokens = (explore or {}).get("tokens", retrain_tokens)
    for recipe in recipes(lr, {k: v for k, v in (explore or {}).items() if k != "tokens"}):
        res, row, run_dir = retrained(first, recipe, search_tokens, first)
        study.append({"recipe": recipe, "name": recipe_name(recipe), "tokens": row["retrain_tokens"],
                      "select_loss": math.log(row["ppl"]), "res": res, "row": row,
                      "curve": quality_curve(run_dir, path, first, start_ppl=converted[first]["ppl"])})
    best = min(study, key=lambda r: r["select_loss"])
    curves, summaries = {}, {}
    for n in counts:
        if n == first and search_tokens == retrain_tokens:
            res, row, curves[n] = best["res"], best["row"], best["curve"]
        else:
            res, row, run_dir = retrained(n, best["recipe"], retrain_tokens, n)
            curves[n] = quality_curve(run_dir, path, n, start_ppl=converted[n]["ppl"])
        rows += [converted[n], {**row, "variant": f"Hybrid-{n}L, retrained"}]
        checkpoints[f"hybrid{n}"], summaries[n] = str(res["checkpoint"]), res["summary"]
    if control:  # the same recipe on the unconverted source (train "converted": the same top layers as `first`)
        res, row, _ = retrained(0, best["recipe"], retrain_tokens, first)
        rows.insert(1, {**row, "variant": "source, retrained (control)"})
        checkpoints["source_retrained"], summaries[0] = str(res["checkpoint"]), res["summary"]
    study = [{k: v for k, v in r.items() if k not in ("res", "row")} for r in study]
    return {"model": name, "path": str(path), "n_layers": n_layers, "params": params, "ladder_layers": counts,
            "data": data.note, "rows": rows, "curves": curves, "checkpoints": checkpoints,
            "train_summaries": summaries, "study": study, "recipe": best["recipe"], "tasks": list(tasks),
            "limit": limit, "reuse": reuse_report(trained)}


def recovery_entry(result: dict) -> ClaimEntry:
    """The claim-H7 entry of one adaptation result (measurements only; ladder.claims judges it), on the *test*
    set, each a paired bootstrap over its held-out documents (over sequences where the blocks do not know their
    documents): the smallest converted depth retrained against the source retrained on the same data (the
    control: the rule's comparator), `drop` (what the conversion cost against the control) and, beside them,
    the gap to the original (untouched source) model, which the paper compares with. Without a control,
    gap_to_control is None (the rule then says so) and the cost is measured against the source. "ours" and
    "how" describe it for the claims table."""
    rows = {r["variant"]: r for r in result["rows"]}
    n = result["ladder_layers"][0]
    conv, ret, src = rows[f"Hybrid-{n}L, no retraining"], rows[f"Hybrid-{n}L, retrained"], rows["source"]
    ctrl = rows.get("source, retrained (control)")
    ref = ctrl or src
    tokens, docs = src["test_tokens"], src.get("test_docs")  # every row scored the same test blocks
    gap = paired_gap(ret["test_losses"], ctrl["test_losses"], tokens, clusters=docs) if ctrl else None
    drop = paired_gap(conv["test_losses"], ref["test_losses"], tokens, clusters=docs)
    to_source = paired_gap(ret["test_losses"], src["test_losses"], tokens, clusters=docs)
    units = (f"{drop['sequences']} test sequences" if docs is None else
             f"{drop['sequences']} test sequences from {drop['n']} documents")
    loss = lambda r: math.log(r["test_ppl"])
    shares = recovery(result["rows"])
    towards = "recovered_vs_control" if ctrl else "recovered"
    recovered, deepest = shares[n][towards], result["ladder_layers"][-1]
    versus = "no control retrained on the same data" if gap is None else (
        f"gap to the control {gap['gap']:+.3f} nats (95% CI {gap['ci'][0]:+.3f} to {gap['ci'][1]:+.3f}, "
        f"{units})")
    ours = (f"{display_name(result['model'])}, last {n} of {result['n_layers']} layers converted, "
            f"{recipe_name(result['recipe'])}, {result['data'].split(';')[0]}: test loss {loss(src):.3f} "
            f"(source) -> {loss(conv):.3f} converted -> {loss(ret):.3f} after {ret['retrain_tokens']:,} retraining "
            f"tokens; {100 * recovered:.0f}% of the conversion's cost recovered (against the "
            f"{'control' if ctrl else 'source'}); {versus}; gap to the original model {to_source['gap']:+.3f} nats "
            f"(95% CI {to_source['ci'][0]:+.3f} to {to_source['ci'][1]:+.3f})"
            + (f"; last {deepest}: {100 * shares[deepest][towards]:.0f}%" if deepest != n else ""))
    how = ("loss on a held-out test set, paired bootstrap over its "
           + ("sequences" if docs is None else "documents (a document's sequences resampled together)")
           + "; recipe chosen on a separate selection set")
    ci = {"drop": drop["ci"], "gap_to_source": to_source["ci"], **({"gap_to_control": gap["ci"]} if gap else {})}
    return ClaimEntry(
        evidence="small-scale-training", quantity="gap_to_control (nats, test set)",
        subject=display_name(result["model"]), ours=ours, how=how, n=drop["n"], ci=ci,
        value=None if gap is None else gap["gap"], gap_to_control=None if gap is None else gap["gap"],
        drop=drop["gap"], gap_to_source=to_source["gap"], recovered=recovered, params=result.get("params", 0),
        extra={"n_sequences": drop["sequences"], "n_documents": None if docs is None else drop["n"],
               "recovered_towards": "control" if ctrl else "source", "ladder_layers": n,
               "n_layers": result["n_layers"], "recipe": result["recipe"], "retrain_tokens": ret["retrain_tokens"],
               "test_loss": {"source": loss(src), "converted": loss(conv), "retrained": loss(ret),
                             "control": None if ctrl is None else loss(ctrl)}})


def display_name(name: str) -> str:
    """A short label for a model of the notebook's parameters (the from-scratch chapter's checkpoint by role)."""
    if Path(name).parts[-2:] == ("checkpoints", "standard"):
        return "from-scratch standard (chapter 3)"
    if name.count("/") == 1 and not Path(name).exists():
        return name  # a hub id
    p = Path(name)
    return (p.parent.name if p.name == "hf" else p.name) or name


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name.strip("/")).strip("_")


def _flatten(ev: dict) -> dict:
    """evaluate_checkpoint's result as table columns: "ppl" (the selection set), "<set>_ppl" for the
    others, the test set's per-block losses, and each task's headline value in %."""
    sets = ev.get("sets", {})
    out = {"ppl": sets.get("select", {}).get("ppl")}
    for name, r in sets.items():
        if name != "select":
            out[f"{name}_ppl"] = r["ppl"]
    if "test" in sets:
        out["test_losses"], out["test_tokens"] = sets["test"]["losses"], sets["test"]["tokens"]
        out["test_docs"] = sets["test"].get("docs")
    for task, scores in ev.get("tasks", {}).items():
        out[task] = headline_value(scores, task)
    return out


def recovery(rows: list[dict], metric: str = "test_ppl") -> dict[int, dict]:
    """Per converted depth: the perplexity `metric` of source / converted / retrained (and of the control,
    the source retrained on the same data, when there is one) and the share of the conversion's cost that
    retraining recovered, measured in loss (log perplexity, nats): "recovered" towards the source,
    "recovered_vs_control" towards the control (1 = all of it, 0 = none)."""
    def share(conv, ret, ref):
        lc, lr_, lf = math.log(conv), math.log(ret), math.log(ref)
        return (lc - lr_) / (lc - lf) if lc != lf else float("nan")
    src = next(r for r in rows if r["variant"] == "source")[metric]
    ctrl = next((r[metric] for r in rows if r["variant"].startswith("source, retrained")), None)
    out = {}
    for n in sorted({r["ladder_layers"] for r in rows if r["ladder_layers"]}):
        conv = next(r for r in rows if r["ladder_layers"] == n and r["retrain_tokens"] == 0)[metric]
        ret = next(r for r in rows if r["ladder_layers"] == n and r["retrain_tokens"] > 0)[metric]
        out[n] = {"source": src, "converted": conv, "retrained": ret, "recovered": share(conv, ret, src)}
        if ctrl is not None:
            out[n]["control"] = ctrl
            out[n]["recovered_vs_control"] = share(conv, ret, ctrl)
    return out


def comparison_table(rows: list[dict], paper_csv: str | os.PathLike | None = None, split_labels: bool = False):
    """Our rows beside the paper's adaptation table (a pandas DataFrame): one row per variant (the
    source, then each converted depth without and with retraining; the smaller depth is matched to the
    paper's 16L, the larger to its 20L), columns (benchmark, ours | paper) for the benchmarks we ran
    that the paper has, our perplexity on the test set (and on real text, for a self-distilled model),
    and each side's average over its own benchmarks. `split_labels`: the index is (model, variant) and the
    paper's matching row is a column ("paper row"), instead of one long label holding all three."""
    import pandas as pd
    paper = pd.read_csv(paper_csv or paper_file("adaptation.csv"))
    depths = sorted({r["ladder_layers"] for r in rows if r["ladder_layers"]})
    paper_depth = dict(zip(depths, (16, 20)))
    paper_col = {"truthfulqa_mc2": "truthfulqa"}
    bench = [c for c in ("mmlu", "arc_challenge", "openbookqa", "hellaswag", "truthfulqa_mc2", "gsm8k", "ifeval")
             if any(r.get(c) is not None for r in rows)]
    out = []
    for r in rows:
        n, retrained = r["ladder_layers"], r["retrain_tokens"] > 0
        p = None
        if not r["variant"].startswith("source, retrained"):
            sel = paper[(paper.ladder_layers == (paper_depth.get(n) if n else 0)) & (paper.retrained == retrained)]
            p = sel.iloc[0] if len(sel) else None
        paper_row = None if p is None else (p["model"] if p["variant"] == "source" else p["variant"])
        label = f"{r['model']}: {r['variant']}" + (f"  [paper: {paper_row}]" if paper_row else "")
        row = {("model", ""): label} if not split_labels else \
            {("model", ""): r["model"], ("variant", ""): r["variant"], ("paper row", ""): paper_row}
        row[("perplexity", "ours")] = r.get("test_ppl", r.get("ppl"))
        if any(x.get("real_ppl") is not None for x in rows):
            row[("real-text perplexity", "ours")] = r.get("real_ppl")
        for b in bench:
            row[(b, "ours")] = r.get(b)
            row[(b, "paper")] = None if p is None else float(p[paper_col.get(b, b)])
        ours = [r.get(b) for b in bench if r.get(b) is not None]
        row[("avg", "ours")] = sum(ours) / len(ours) if ours else None
        row[("avg", "paper")] = None if p is None else float(p["avg"])
        out.append(row)
    df = pd.DataFrame(out)
    if split_labels:
        df = df.set_index([("model", ""), ("variant", "")])
        df.index.names = ["model", "variant"]
    else:
        df = df.set_index(("model", ""))
        df.index.name = "model"
    df.columns = pd.MultiIndex.from_tuples(df.columns)
    return df


# --------------------------------------------------------------------------------------------- the chapter
# What notebooks/04_llama_adaptation.ipynb runs, shows and records, so that the notebook holds only its
# parameters, the calls and their tables and figures (glue and display stay in the notebook).
PER_MODEL = ("retrain_tokens", "corpus_tokens", "lr", "control")  # parameters that may be {model: value}
RESULT_PARAMS = ("models", "fractions", "data_kind", "retrain_tokens", "corpus_tokens", "eval_tokens", "seq_len",
                 "batch_size", "lr", "explore", "n_points", "control", "tasks", "limit", "speed", "speed_tp",
                 "speed_links", "speed_batch", "speed_prompt_len", "speed_new_tokens", "speed_samples", "device",
                 "threads")  # the notebook parameters recorded in the result file's provenance
DEPTH_NAMES = ("upper half", "larger fraction")  # the converted depths, smallest first (16 and 20 of 32)
CONTROL = "source, retrained (control)"  # run_adaptation's variant name of the control


def setup_chapter(threads: int = 1, device: str = "auto") -> str:
    """Quiet the libraries' progress output and warnings, set torch's threads and the plots' theme; returns
    the device ("auto": cuda when there is one, else cpu)."""
    import seaborn as sns
    warnings.filterwarnings("ignore", message="IProgress not found")
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    torch.set_num_threads(threads)
    sns.set_theme(style="whitegrid", context="notebook")
    return device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")


def per_model(value, name: str):
    """A parameter given for every model, or per model as {model: value} (a model it does not name gets
    its first value)."""
    return value.get(name, next(iter(value.values()))) if isinstance(value, dict) else value


def run_models(models: Sequence[str], work: str | os.PathLike, *, explore: dict | None = None, nproc: int = 1,
               **params) -> list[dict]:
    """`run_adaptation` on each model in turn, under `work`: the parameters in PER_MODEL may be
    {model: value} (see `per_model`), `explore` is {model: search}; the rest go as they are. A model
    whose local checkpoint is missing is skipped (run_adaptation prints a note); none at all is an error.
    Each result gets "seconds", its wall time."""
    results = []
    for name in models:
        t0 = time.perf_counter()
        kw = {k: per_model(v, name) if k in PER_MODEL else v for k, v in params.items()}
        res = run_adaptation(name, work, explore=(explore or {}).get(name), nproc=nproc, progress=nproc > 1, **kw)
        if res is None:
            continue
        res["seconds"] = time.perf_counter() - t0
        results.append(res)
        print(f"{name}: {res['n_layers']} layers, converted {res['ladder_layers']}, {res['seconds']:.0f} s")
        print("  " + res["data"])
        if res.get("reuse"):
            print("  " + res["reuse"])
    if not results:
        raise RuntimeError(f"none of the models {list(models)} could be loaded")
    return results


# ------------------------------------------------------------------------------------ tables and figures
def adaptation_table(results: list[dict]):
    """All models' `comparison_table`s in one DataFrame for the page: index (model, variant), the paper's
    matching row, perplexity on the test set (and on real text), each benchmark's accuracy (ours | paper) and
    the averages, with short labels that carry the unit."""
    import pandas as pd
    df = pd.concat([comparison_table([{**x, "model": display_name(x["model"])} for x in r["rows"]], split_labels=True)
                    for r in results])
    rename = {("perplexity", "ours"): ("perplexity", "test"), ("real-text perplexity", "ours"): ("perplexity", "real text"),
              ("paper row", ""): ("paper's row", "")}
    df.columns = pd.MultiIndex.from_tuples([rename.get(c) or (f"{TASK_LABELS.get(c[0], c[0])} (%)", c[1])
                                            for c in df.columns])
    return df


def recovery_table(results: list[dict], metric: str = "test_ppl"):
    """Per model and converted depth: `recovery`'s perplexities and the share of the conversion's cost that
    retraining recovered, towards the source and towards the control, in %."""
    import pandas as pd
    out = []
    for r in results:
        for n, v in recovery(r["rows"], metric).items():
            out.append({"model": display_name(r["model"]), "converted layers": f"last {n} of {r['n_layers']}",
                        "source ppl": v["source"], "converted ppl": v["converted"], "retrained ppl": v["retrained"],
                        "control ppl": v.get("control"), "recovered vs source (%)": 100 * v["recovered"],
                        "recovered vs control (%)": 100 * v["recovered_vs_control"] if "control" in v else None})
    return pd.DataFrame(out)


def _refs(result: dict, loss: bool = False) -> dict:
    """The reference lines of a result's plots: the source's and (if run) the control's selection-set
    perplexity, or loss in nats."""
    rows = {x["variant"]: x for x in result["rows"]}
    f = math.log if loss else float
    return {"source": f(rows["source"]["ppl"]), "control": f(rows[CONTROL]["ppl"]) if CONTROL in rows else None}


def recovery_curve(results: list[dict]):
    """The quality-vs-retraining-tokens points of every converted depth (selection-set perplexity; 0 tokens:
    right after conversion), a DataFrame: model, converted, layers, k tokens, ppl."""
    import pandas as pd
    return pd.DataFrame([{"model": display_name(r["model"]), "converted": DEPTH_NAMES[i],
                          "layers": f"last {n} of {r['n_layers']}", "k tokens": p["tokens"] / 1000, "ppl": p["ppl"]}
                         for r in results for i, (n, pts) in enumerate(r["curves"].items()) for p in pts])


def plot_recovery(results: list[dict], path: str | os.PathLike | None = None):
    """One panel per model: selection-set perplexity along retraining for each converted depth, with the source (dotted)
    and the control (dashed). Saved to `path` if given; returns the figure."""
    import seaborn as sns
    g = sns.relplot(data=recovery_curve(results), x="k tokens", y="ppl", hue="converted", col="model", kind="line",
                    marker="o", facet_kws={"sharey": False, "sharex": False}, height=3.6, aspect=1.3)
    for ax, r in zip(g.axes.flat, results):
        lines = _reference_lines(ax, r, loss=False, control_label="source, retrained")
        ax.set(xlabel="retraining tokens (thousands)", ylabel="selection-set perplexity")
        ax.set_title(f"{display_name(r['model'])}: last {' or '.join(map(str, r['ladder_layers']))} "
                     f"of {r['n_layers']}", fontsize="small")
        ax.legend(handles=lines, loc="upper right", fontsize="small")
    g.figure.suptitle("Converted models recover with retraining", y=1.03)
    if path:
        g.figure.savefig(path, dpi=120, bbox_inches="tight")
    return g.figure


def _reference_lines(ax, r: dict, loss: bool, control_label: str) -> list:
    """The source's (dotted) and, when there is one, the control's (dashed) level on a retraining plot."""
    ref = _refs(r, loss=loss)
    lines = [ax.axhline(ref["source"], color="k", ls=":", label="source")]
    if ref["control"] is not None:
        lines.append(ax.axhline(ref["control"], color="grey", ls="--", label=control_label))
    return lines


def recipe_study(results: list[dict]) -> list[dict]:
    """For each model whose recipe was searched: {"caption", "table"}, the table one row per recipe with its
    final selection-set loss, the share of the conversion's cost it recovered (against the control when there
    is one, else the source; selection set) and whether it was chosen."""
    import pandas as pd
    out = []
    for r in results:
        if len(r["study"]) < 2:
            continue
        rows = {x["variant"]: x for x in r["rows"]}
        n = r["ladder_layers"][0]
        conv = math.log(rows[f"Hybrid-{n}L, no retraining"]["ppl"])
        ref = rows.get(CONTROL, rows["source"])
        table = pd.DataFrame([{"recipe": s["name"], "selection loss (nats)": s["select_loss"],
                               "recovered (%)": 100 * (conv - s["select_loss"]) / (conv - math.log(ref["ppl"])),
                               "chosen": "✓" if s["recipe"] == r["recipe"] else ""} for s in r["study"]])
        caption = (f"{display_name(r['model'])}: last {n} of {r['n_layers']} converted, {r['study'][0]['tokens']:,} "
                   f"retraining tokens each; share of the conversion's cost recovered against the {ref['variant']} "
                   "(selection set; the control ran the chosen recipe for the full budget)")
        out.append({"caption": caption, "table": table})
    return out


def recipe_curves(results: list[dict]):
    """Selection-set loss (nats) along retraining for every recipe tried, of the models with a search."""
    import pandas as pd
    return pd.DataFrame([{"model": display_name(r["model"]), "recipe": s["name"], "k tokens": p["tokens"] / 1000,
                          "loss": math.log(p["ppl"])}
                         for r in results if len(r["study"]) > 1 for s in r["study"] for p in s["curve"]])


def plot_recipes(results: list[dict], path: str | os.PathLike | None = None):
    """The recipe search's curves, one panel per searched model, with the source and control lines; None when
    no model had a search. Saved to `path` if given."""
    import seaborn as sns
    searched = [r for r in results if len(r["study"]) > 1]
    if not searched:
        return None
    g = sns.relplot(data=recipe_curves(results), x="k tokens", y="loss", hue="recipe", col="model", kind="line",
                    marker="o", facet_kws={"sharey": False}, height=3.6, aspect=1.4)
    for ax, r in zip(g.axes.flat, searched):
        lines = _reference_lines(ax, r, loss=True, control_label=CONTROL)
        ax.set(xlabel="retraining tokens (thousands)", ylabel="selection-set loss (nats)")
        ax.legend(handles=lines, loc="upper right", fontsize="small")
    g.figure.suptitle("Recipe search: selection-set loss along retraining", y=1.03)
    if path:
        g.figure.savefig(path, dpi=120, bbox_inches="tight")
    return g.figure


# ------------------------------------------------------------------------------------------------ speed
def gpu_speed_commands(results: list[dict]) -> list[str]:
    """The ladder.bench command lines that measure each retrained hybrid against its source on a GPU node."""
    run = "torchrun --nproc-per-node 8 -m ladder.bench --batch 1 4 16 --prompt-len 1024 --new-tokens 512 --compile"
    out = []
    for r in results:
        out.append(f"{run} --checkpoint {r['path']} --wiring standard --out speed.jsonl")
        out += [f"{run} --checkpoint {r['checkpoints'][f'hybrid{n}']} --wiring hybrid --ladder-layers {n} "
                "--out speed.jsonl" for n in r["ladder_layers"]]
    return out


def measure_hybrid_speed(results: list[dict], *, device: str = "cpu", tp: int = 2, links: Sequence = ("none",),
                         batch: int = 1, prompt_len: int = 32, new_tokens: int = 32, samples: int = 3,
                         virtual: dict | None = None, warmup: int = 1) -> tuple[list[dict], list[ClaimEntry]]:
    """The converted models' tensor-parallel speed (ladder.bench, as in the speed-up chapter) and claim H8's
    entries: (rows of `speedup.hybrid_table` with "model", entries).

    On CPU, each retrained hybrid and its source run on `tp` local gloo processes, once per link of `links`
    ("none": the real link alone), samples interleaved round-robin over the configurations so that warm-up and
    load drift hit all alike; the first model at its smallest converted depth gives the "processes" entries.
    `virtual` ({"preset", "overrides", "ladder_layers", "regime"}) adds a shape whose decode step is well above
    timer noise, one rank's shard with its peers emulated (random weights) and the link set to the regime's
    a/c on the virtual clock (ladder.replay.hybrid: decode steps, replayed too): the "virtual" entry. On another
    device nothing runs: the GPU node's commands are printed and ([], []) returned."""
    if device != "cpu":
        print("\n".join(gpu_speed_commands(results)))
        print("(run the printed commands on the GPU node; see the book's GPU page)")
        return [], []
    kw = dict(batch=batch, prompt_len=prompt_len, new_tokens=new_tokens, samples=samples, warmup=warmup)
    rows = []
    for r in results:
        records = bench.run_local(speedup.hybrid_configs(r, tp=tp, links=links, **kw), progress=False, interleave=True)
        rows += [{"model": display_name(r["model"]), **row} for row in speedup.hybrid_table(records)]
    first, n = display_name(results[0]["model"]), results[0]["ladder_layers"][0]
    entries = [speedup.hybrid_entry(row, ranks="processes", batch=batch, device=device,
                                    what=f"{row['model']} hybrid with {row['ladder_layers']} converted layers vs its source")
               for row in rows if row["model"] == first and row["ladder_layers"] == n]
    if virtual:
        if "regime" not in virtual:
            raise ValueError("speed_virtual needs a 'regime' (a name of ladder.replay.regimes, e.g. 'paper, NVLink'): "
                             "its link is set to that regime's a/c, as chapter 2's are")
        shape = preset(virtual["preset"], **virtual.get("overrides", {}))
        ratio = replay.regime_ratio(virtual["regime"])
        got = replay.hybrid(shape, virtual["ladder_layers"], ratio, tp=tp, warmup=warmup, samples=samples,
                            **{k: kw[k] for k in ("batch", "prompt_len", "new_tokens")})
        name = f"{virtual['preset']} {shape.n_layers}L d{shape.dim} (virtual ranks, {virtual['regime']})"
        vrows = [{"model": name, **got["row"]}]
        rows += vrows
        entries += [speedup.hybrid_entry(row, ranks="virtual", batch=batch, device=device,
                                         what=f"{row['model']}: hybrid with {row['ladder_layers']} ladder layers vs standard")
                    for row in vrows]
    return rows, entries


def speed_table(rows: list[dict]):
    """`measure_hybrid_speed`'s rows for the page: tokens/s of source and hybrid, their ratio with its 95% CI
    (of tokens/s, or of the decode step for a regime-set link: "ratio of"), the replay's where there is one, the
    source's decode step and the number of runs."""
    import pandas as pd
    return pd.DataFrame([{"model": r["model"], "link": speedup.link_label(r), "converted layers": r["ladder_layers"],
                          "source (tokens/s)": r["standard_tokens_per_s"], "hybrid (tokens/s)": r["hybrid_tokens_per_s"],
                          "speed-up (×)": r["speedup"], "ratio of": r.get("measure", "tokens/s"),
                          "95% CI (×)": f"{r['speedup_ci'][0]:.2f}–{r['speedup_ci'][1]:.2f}",
                          "replay (×)": f"{r['replay_speedup']:.2f}" if "replay_speedup" in r else "–",
                          "decode step (ms)": r["step_ms"], "runs": r["samples"]} for r in rows])


def plot_speed(rows: list[dict], tp: int):
    """One horizontal bar per measured (model, link, depth): the hybrid's tokens/s over its source's, with the
    95% CI as whiskers and a line at 1 (no change); each (model, link) in its own colour, named on the axis."""
    import matplotlib.pyplot as plt
    groups = list(dict.fromkeys((r["model"], r["link"]) for r in rows))
    colours = dict(zip(groups, plt.get_cmap("tab10").colors))
    fig, ax = plt.subplots(figsize=(7.5, 0.9 + 0.55 * len(rows)))
    for i, r in enumerate(rows):
        lo, hi = r["speedup_ci"]
        ax.barh(i, r["speedup"], color=colours[(r["model"], r["link"])], height=0.6,
                xerr=[[r["speedup"] - lo], [hi - r["speedup"]]], capsize=3)
    ax.set_yticks(range(len(rows)), [f"{r['model']}\n{speedup.link_label(r)}, {r['ladder_layers']} converted"
                                     for r in rows],
                  fontsize="small")
    ax.invert_yaxis()
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set(xlabel=f"speed-up: hybrid tokens/s ÷ source tokens/s (×, TP = {tp})",
           title="Converted hybrid vs its source: decode speed (whiskers: 95% CI)")
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------- claims and record
def chapter_claims(results: list[dict], h8: Sequence[ClaimEntry] = ()) -> dict:
    """The chapter's claim entries (measurements only; ladder.claims judges them): H7 for every model, each
    against its own control; H8 from `measure_hybrid_speed` when it measured something."""
    return {"H7": [recovery_entry(r) for r in results], **({"H8": list(h8)} if h8 else {})}


def claim_lines(claims: dict) -> str:
    """Each entry judged by its claim's rule (ladder/paper/claims.csv): claim, verdict, reason | what we measured."""
    thr = {r["id"]: r["thresholds"] for r in rules.paper_claims()}
    return "\n".join(" ".join([k, *rules.judge(k, e, thr[k]), "|", e["ours"]]) for k, v in claims.items() for e in v)


def chapter_values(results: list[dict], claims: dict) -> dict:
    """Every number the chapter's text cites ({glue:text} name -> value), from the first model (the one the
    page discusses) at its smallest converted depth, its H7 entry and the H8 entries."""
    first = results[0]
    n_half, n_large = first["ladder_layers"][0], first["ladder_layers"][-1]
    rec = recovery(first["rows"], "test_ppl")
    h, h7 = rec[n_half], claims["H7"][0]
    towards = "recovered_vs_control" if h7["recovered_towards"] == "control" else "recovered"
    verdict, reason = rules.judge("H7", h7, {r["id"]: r["thresholds"] for r in rules.paper_claims()}["H7"])
    by_variant = {x["variant"]: x for x in first["rows"]}
    real = lambda variant: (by_variant.get(variant) or {}).get("real_ppl") or float("nan")
    h8 = claims.get("H8", [])
    steps = [e["step_ms"] for e in h8 if e["subject"] == display_name(first["model"])]
    values = {
        "adapt_model": first["model"], "adapt_n_layers": first["n_layers"], "adapt_half": n_half,
        "adapt_large": n_large, "adapt_ppl_source": h["source"], "adapt_ppl_converted": h["converted"],
        "adapt_ppl_retrained": h["retrained"], "adapt_ppl_control": h.get("control", float("nan")),
        "adapt_recovered": 100 * h7["recovered"], "adapt_recovered_large": 100 * rec[n_large][towards],
        "adapt_reference": h7["recovered_towards"], "adapt_tokens": first["train_summaries"][n_half]["tokens"],
        "adapt_recipe": recipe_name(first["recipe"]), "adapt_recipes_tried": len(first["study"]),
        "adapt_drop": h7["drop"], "adapt_real_source": real("source"), "adapt_real_control": real(CONTROL),
        "adapt_real_retrained": real(f"Hybrid-{n_half}L, retrained"), "h7_gap_source": h7["gap_to_source"],
        "h7_gap_control": h7.get("gap_to_control", float("nan")),
        "adapt_step_ms": f"{min(steps):.1f} to {max(steps):.1f} ms" if steps else "(not measured)",
        "h7_verdict": verdict, "h7_reason": reason}
    if h8:  # the emulated-link shape's speed-up when it ran, else the first entry's
        values["adapt_speedup"] = next((e["speedup"] for e in h8 if e["evidence"] == "cpu-emulated-link"), h8[0]["speedup"])
    return values


def write_chapter_result(path: str | os.PathLike, results: list[dict], claims: dict, speed_rows: list[dict],
                         params: dict, seconds: float) -> Path:
    """data/results/<profile>/adaptation.json: the claims block, every model's result, the recovery per
    depth (test set), the speed rows and the wall time, with `params` in the provenance."""
    payload = {"experiment": "llama_adaptation", "claims": block(claims), "results": [dict(r) for r in results],
               "recovery": {r["model"]: recovery(r["rows"], "test_ppl") for r in results}, "speed": list(speed_rows),
               "seconds": seconds}
    return write_result(path, payload, params)
