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

import math
import os
from pathlib import Path
from typing import Sequence

import torch

from .claims import ClaimEntry
from .data import TokenBlocks
from .eval import block_losses, headline_value, lm_eval_scores, perplexity
from .hf import config_from_hf, load_pretrained, resolve_checkpoint
from .launch import release_memory
from .model import build_model
from .retraining_data import retraining_data


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
    import torch.distributed as dist
    from .train import TrainConfig, train
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
    from .train import save_hf
    if nproc > 1:  # this same function on every rank, under torchrun
        from .launch import rank_device, torchrun_call
        device = rank_device(device)
        kwargs = dict(source=str(resolve_checkpoint(source)),  # downloaded once, here, not by every rank
                      ladder_layers=ladder_layers, train_blocks=train_blocks, val_blocks=val_blocks,
                      token_budget=token_budget, out_dir=str(out_dir), tokenizer=tokenizer, device=device,
                      dtype=dtype, export_dtype=export_dtype, **retrain_kw)
        return torchrun_call("ladder.adapt:adapt", kwargs, nproc=nproc, work_dir=Path(out_dir) / "job",
                             device=device, progress=retrain_kw.get("progress", True))
    rewire = {"wiring": "hybrid", "ladder_layers": ladder_layers} if ladder_layers else {"wiring": "standard"}
    model = load_pretrained(source, device=device, dtype=dtype, max_seq_len=max(train_blocks.seq_len, 256), **rewire)
    summary = retrain(model, train_blocks, val_blocks, token_budget, out_dir, **retrain_kw)
    ckpt = save_hf(model, Path(out_dir) / "hf", tokenizer, dtype=export_dtype)
    return {"checkpoint": ckpt, "summary": summary}


# --------------------------------------------------------------------------------------------- evaluation
def evaluate_checkpoint(checkpoint, sets: dict[str, TokenBlocks] | None, tasks: Sequence[str] = (), *,
                        limit: int | None = None, batch_size: int = 8, device: str = "cpu", **overrides) -> dict:
    """A HF checkpoint on named held-out sets (native runtime) and on lm-eval `tasks`:
    {"sets": {name: {"ppl", "losses", "tokens"}}, "tasks": {task: scores}}, where "losses" and "tokens"
    are per block (summed loss, scored tokens: the units of `ladder.stats.paired_gap`).

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
                                 "tokens": tokens.tolist()}
        del model
        release_memory()  # lm-eval loads its own copy next (an 8B model is 32 GB in fp32)
    out["tasks"] = lm_eval_scores(checkpoint, tasks, limit, batch_size)
    release_memory()
    return out


def save_converted(source, ladder_layers, out_dir: str | os.PathLike, tokenizer=None) -> Path:
    """convert() a HF Llama and save it (with its tokenizer) as a LadderLlamaForCausalLM checkpoint."""
    from .hf import convert
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
    from .train import _checkpoints, read_metrics, save_hf
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
    from safetensors.torch import load_model
    from transformers import AutoConfig
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
    from .paths import data_path, local_candidates
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
    import itertools
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
    from transformers import AutoConfig, AutoTokenizer
    from .paths import run_key
    path = resolve_model(name)
    if path is None:
        print(f"note: {name} not found (no config.json there); skipping it. Run its notebook first to create it.")
        return None
    path = resolve_checkpoint(path)  # a hub id: downloaded once here, and every later step reads that folder
    # one folder per data and training setup: re-executing with the same parameters reuses finished runs
    # (and resumes killed ones) instead of retraining; a changed parameter gets a new folder
    key = run_key(name, data_kind, corpus_tokens, eval_tokens, seq_len, seed, batch_size, grad_accum, n_points,
                  export_dtype)
    out = Path(out_root) / f"{_slug(name)}-{key}"
    tokenizer = AutoTokenizer.from_pretrained(str(path))
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

    def retrained(n, recipe, tokens, trained_top):
        """Retrain the model converted at depth n (0: the source itself) with `recipe` for `tokens`."""
        run_dir = out / f"{f'hybrid{n}' if n else 'source'}-{_slug(recipe_name(recipe))}-{int(tokens)}tok"
        res = adapt(path, n, data.train, data.select, tokens, run_dir, lr=recipe["lr"],
                    trainable_layers=trained_top if recipe["train"] == "converted" else None, **retrain_kw)
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
            "limit": limit}


def recovery_entry(result: dict) -> ClaimEntry:
    """The claim-H7 entry of one adaptation result (measurements only; ladder.claims judges it), on the
    *test* set, each a paired bootstrap over its held-out sequences: the smallest converted depth retrained
    against the source retrained on the same data (the control: the rule's comparator), `drop` (what the
    conversion cost against the control) and, beside them, the gap to the original (untouched source) model,
    which the paper compares with. Without a control, gap_to_control is None (the rule then says so) and
    the cost is measured against the source. "ours" and "how" describe it for the claims table."""
    from .stats import paired_gap
    rows = {r["variant"]: r for r in result["rows"]}
    n = result["ladder_layers"][0]
    conv, ret, src = rows[f"Hybrid-{n}L, no retraining"], rows[f"Hybrid-{n}L, retrained"], rows["source"]
    ctrl = rows.get("source, retrained (control)")
    ref = ctrl or src
    tokens = src["test_tokens"]
    gap = paired_gap(ret["test_losses"], ctrl["test_losses"], tokens) if ctrl else None
    drop = paired_gap(conv["test_losses"], ref["test_losses"], tokens)
    to_source = paired_gap(ret["test_losses"], src["test_losses"], tokens)
    loss = lambda r: math.log(r["test_ppl"])
    shares = recovery(result["rows"])
    towards = "recovered_vs_control" if ctrl else "recovered"
    recovered, deepest = shares[n][towards], result["ladder_layers"][-1]
    versus = "no control retrained on the same data" if gap is None else (
        f"gap to the control {gap['gap']:+.3f} nats (95% CI {gap['ci'][0]:+.3f} to {gap['ci'][1]:+.3f}, "
        f"{gap['n']} test sequences)")
    ours = (f"{display_name(result['model'])}, last {n} of {result['n_layers']} layers converted, "
            f"{recipe_name(result['recipe'])}, {result['data'].split(';')[0]}: test loss {loss(src):.3f} "
            f"(source) -> {loss(conv):.3f} converted -> {loss(ret):.3f} after {ret['retrain_tokens']:,} retraining "
            f"tokens; {100 * recovered:.0f}% of the conversion's cost recovered (against the "
            f"{'control' if ctrl else 'source'}); {versus}; gap to the original model {to_source['gap']:+.3f} nats "
            f"(95% CI {to_source['ci'][0]:+.3f} to {to_source['ci'][1]:+.3f})"
            + (f"; last {deepest}: {100 * shares[deepest][towards]:.0f}%" if deepest != n else ""))
    how = ("loss on a held-out test set, paired bootstrap over its sequences; recipe chosen on a separate "
           "selection set")
    ci = {"drop": drop["ci"], "gap_to_source": to_source["ci"], **({"gap_to_control": gap["ci"]} if gap else {})}
    return ClaimEntry(
        evidence="small-scale-training", quantity="gap_to_control (nats, test set)",
        subject=display_name(result["model"]), ours=ours, how=how, n=drop["n"], ci=ci,
        value=None if gap is None else gap["gap"], gap_to_control=None if gap is None else gap["gap"],
        drop=drop["gap"], gap_to_source=to_source["gap"], recovered=recovered, params=result.get("params", 0),
        extra={"n_sequences": drop["n"], "recovered_towards": "control" if ctrl else "source", "ladder_layers": n,
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


def comparison_table(rows: list[dict], paper_csv: str | os.PathLike | None = None):
    """Our rows beside the paper's adaptation table (a pandas DataFrame): one row per variant (the
    source, then each converted depth without and with retraining; the smaller depth is matched to the
    paper's 16L, the larger to its 20L), columns (benchmark, ours | paper) for the benchmarks we ran
    that the paper has, our perplexity on the test set (and on real text, for a self-distilled model),
    and each side's average over its own benchmarks."""
    import pandas as pd
    from .paths import paper_file
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
        label = f"{r['model']}: {r['variant']}"
        if p is not None:
            label += f"  [paper: {p['model'] if p['variant'] == 'source' else p['variant']}]"
        row = {("model", ""): label, ("perplexity", "ours"): r.get("test_ppl", r.get("ppl"))}
        if any(x.get("real_ppl") is not None for x in rows):
            row[("real-text perplexity", "ours")] = r.get("real_ppl")
        for b in bench:
            row[(b, "ours")] = r.get(b)
            row[(b, "paper")] = None if p is None else float(p[paper_col.get(b, b)])
        ours = [r.get(b) for b in bench if r.get(b) is not None]
        row[("avg", "ours")] = sum(ours) / len(ours) if ours else None
        row[("avg", "paper")] = None if p is None else float(p["avg"])
        out.append(row)
    df = pd.DataFrame(out).set_index(("model", ""))
    df.index.name = "model"
    df.columns = pd.MultiIndex.from_tuples(df.columns)
    return df
