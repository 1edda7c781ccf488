"""Llama adaptation: rewire a pretrained Llama's upper layers to ladder, retrain briefly, evaluate.

The paper's experiment (its Llama-3.1-8B-Instruct table): take the pretrained model, switch the last 16
(or 20) of its 32 layers to the ladder dataflow with the weights unchanged, evaluate (quality drops),
retrain on ~3B tokens of instruction data (BAAI/Infinity-Instruct), evaluate again (quality recovers).

    model = load_pretrained(src, wiring="hybrid", ladder_layers=N)   # ladder.hf: the native runtime
    summary = retrain(model, train_blocks, val_blocks, token_budget, out_dir)   # ladder.train.train
    ckpt = save_hf(model, out_dir / "hf", tokenizer)                 # a LadderLlamaForCausalLM checkpoint
    scores = evaluate_checkpoint(ckpt, val_blocks, tasks)            # perplexity + lm-eval

Retraining data:
  * on a connected GPU node, instruction data: `load_conversations()` loads Infinity-Instruct and
    `chat_blocks()` applies the tokenizer's chat template (in parallel processes), with the loss only
    on assistant responses (`TokenBlocks.loss_mask`);
  * offline, plain text with the full loss: `text_blocks()` over held-out documents, or, for a model
    whose training corpus we do not have (stories260K: only a 1.9k-token TinyStories sample is on disk),
    `sample_texts()` draws a retraining corpus from the *source* model itself (self-distillation), while
    quality is measured on real text that was never trained on.

`quality_curve()` turns a run's checkpoints into quality vs retraining tokens.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import torch

# conversation data and chat templates live in ladder.chat, evaluation helpers in ladder.eval (with the one
# task -> metric table); re-exported here for the notebook and older callers
from .chat import (INFINITY_INSTRUCT, INFINITY_INSTRUCT_CONFIG, ROLES, chat_blocks, chat_example,  # noqa: F401
                   load_conversations, normalize_conversation, sample_texts, text_blocks)
from .data import TokenBlocks
from .eval import TASK_METRIC, lm_eval_scores, perplexity, primary_metric  # noqa: F401
from .hf import config_from_hf, load_pretrained, resolve_checkpoint
from .model import build_model


# --------------------------------------------------------------------------------------------- retraining
def steps_for_budget(token_budget: float, batch_size: int, seq_len: int, grad_accum: int = 1) -> int:
    """Optimizer steps that consume `token_budget` training tokens (at least one)."""
    if token_budget <= 0:
        raise ValueError(f"token_budget must be positive, got {token_budget}")
    return max(1, round(token_budget / (batch_size * grad_accum * seq_len)))


def retrain(model, train_blocks: TokenBlocks, val_blocks: TokenBlocks | None, token_budget: float,
            out_dir: str | os.PathLike, *, batch_size: int = 8, grad_accum: int = 1, lr: float = 1e-4,
            warmup_frac: float = 0.05, n_points: int = 6, keep_checkpoints: bool = False, **train_kw) -> dict:
    """Supervised fine-tuning of a (converted) native model for `token_budget` tokens with ladder.train.

    Defaults follow the paper's fine-tuning recipe in spirit (AdamW, short warm-up, cosine decay); the
    learning rate is a parameter. `n_points` validation losses are spread evenly over the run (the
    quality-vs-tokens curve). A checkpoint is written at each of them, so a killed run resumes from the
    last one; with `keep_checkpoints` all are kept (for benchmark curves; costly for large models), else
    only the newest. Returns ladder.train.train's summary plus the TrainConfig used.
    """
    import torch.distributed as dist
    from .train import TrainConfig, train
    world = dist.get_world_size() if dist.is_initialized() else 1  # data-parallel ranks share the budget
    steps = steps_for_budget(token_budget, batch_size * world, train_blocks.seq_len, grad_accum)
    every = max(1, steps // max(1, n_points))
    cfg = TrainConfig(**{**dict(max_steps=steps, batch_size=batch_size, grad_accum=grad_accum, lr=lr,
                                warmup_steps=max(1, round(warmup_frac * steps)), eval_every=every,
                                eval_batches=10**9, ckpt_every=every,
                                keep_checkpoints=0 if keep_checkpoints else 1), **train_kw})
    summary = train(model, train_blocks, val_blocks, cfg, out_dir)
    return {**summary, "train_config": cfg.to_dict()}


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
def evaluate_checkpoint(checkpoint, val_blocks: TokenBlocks | None, tasks: Sequence[str] = (), *,
                        limit: int | None = None, batch_size: int = 8, device: str = "cpu", **overrides) -> dict:
    """Perplexity of a HF checkpoint on `val_blocks` (native runtime) and lm-eval scores on `tasks`.

    `overrides` rewire the checkpoint on load (e.g. wiring="hybrid", ladder_layers=4 evaluates the
    converted-but-not-retrained model without saving it); lm-eval always sees the saved checkpoint,
    so pass a converted checkpoint for it (see `save_converted`).
    """
    out = {}
    if val_blocks is not None:
        model = load_pretrained(checkpoint, device=device, max_seq_len=max(val_blocks.seq_len, 256), **overrides)
        out["ppl"] = perplexity(model.eval(), val_blocks, batch_size)
    out["tasks"] = lm_eval_scores(checkpoint, tasks, limit, batch_size)
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
        state = torch.load(d / "trainer_state.pt", weights_only=False, map_location="cpu")
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
    from .paths import data_path
    from .provenance import REPO_ROOT
    if name == "stories260K":
        return data_path("models", "stories260K", "hf")
    p = Path(name).expanduser()
    for cand in (p, REPO_ROOT / p):
        if (cand / "config.json").is_file():
            return cand
    local = name.startswith((".", "/", "~", "data/", "runs/")) or name.count("/") != 1
    return None if local else name


def ladder_counts(n_layers: int, fractions: Sequence[float]) -> list[int]:
    """Numbers of converted (upper) layers for fractions of the depth: ceil, so 0.5 and 0.625 of 32
    layers are the paper's 16 and 20, and of stories260K's 5 layers 3 and 4."""
    return sorted({min(n_layers, max(1, math.ceil(f * n_layers - 1e-9))) for f in fractions})


def retraining_data(path, tokenizer, *, kind: str = "auto", seq_len: int = 128, corpus_tokens: int = 65_536,
                    eval_tokens: int = 16_384, seed: int = 0, device: str = "cpu", eval_text: str | None = None,
                    instruct_data: str = INFINITY_INSTRUCT,
                    instruct_config: str | None = INFINITY_INSTRUCT_CONFIG) -> tuple[TokenBlocks, TokenBlocks, str]:
    """(train blocks, held-out evaluation blocks, a description) for retraining the converted model.

    kind: "instruct" (`instruct_data`: Infinity-Instruct on the hub by default, or a local json/jsonl of
    conversations; chat template, loss on responses), "text"
    (documents: the local FineWeb/C4 stand-in offline, FineWeb-edu from the hub online; split by
    document exactly as notebook 03 does, so its model's held-out documents stay held out),
    "self" (text sampled from the source model; evaluation on `eval_text`, default the TinyStories
    sample), or "auto": "self" for stories260K, "instruct" online when the tokenizer has a chat
    template, else "text".
    """
    from . import data
    from .eval import offline_default
    is_stories = Path(str(path)).parts[-2:] == ("stories260K", "hf")
    if kind == "auto":
        if is_stories:
            kind = "self"
        elif not offline_default() and getattr(tokenizer, "chat_template", None):
            kind = "instruct"
        else:
            kind = "text"
    if kind == "self":
        source = load_pretrained(path, device=device, max_seq_len=max(seq_len + 1, 256))
        n = math.ceil(corpus_tokens / (seq_len - 1))
        texts = sample_texts(source, tokenizer, n, seq_len - 1, batch_size=256, seed=seed)
        train = text_blocks(texts, tokenizer, seq_len)
        if eval_text is None:
            from .paths import data_path
            eval_text = data_path("text", "tinystories_sample", "tinystories_sample.txt")
        docs = [d for d in Path(eval_text).read_text().split("\n\n") if d.strip()]
        val = text_blocks(docs, tokenizer, seq_len)
        note = (f"retraining text: {len(texts)} samples from the source model (self-distillation, "
                f"{train.num_tokens:,} tokens); evaluation: {Path(eval_text).name} (real text, never trained on, "
                f"{val.num_tokens:,} tokens)")
    elif kind == "text":
        sources = None if offline_default() else [data.FINEWEB_EDU]
        docs = data.load_documents(sources, max_docs=None if sources is None else 20_000)
        train_docs, val_docs = data.split_documents(docs, 0.05, seed=0)
        train = _take_tokens(train_docs["text"], tokenizer, seq_len, corpus_tokens)
        val = _take_tokens(val_docs["text"], tokenizer, seq_len, eval_tokens)
        where = "local FineWeb/C4 stand-in" if sources is None else data.FINEWEB_EDU
        note = (f"retraining text: {train.num_tokens:,} tokens of training-split documents ({where}); "
                f"evaluation: {val.num_tokens:,} tokens of held-out documents (full loss)")
    elif kind == "instruct":
        per_conv = 512  # a rough size, only to decide how many conversations to stream
        n_train = max(8, corpus_tokens // per_conv)
        n_val = max(4, eval_tokens // per_conv)
        convs = load_conversations(n_val + n_train, instruct_data, instruct_config)
        if len(convs) <= n_val:
            raise ValueError(f"{instruct_data} has {len(convs)} conversations: too few for {n_val} held out "
                             f"and {n_train} for training")
        procs = max(1, min(32, (os.cpu_count() or 1) - 1)) if len(convs) > 100_000 else None
        val = chat_blocks(convs.select(range(n_val)), tokenizer, seq_len, procs)
        train = chat_blocks(convs.select(range(n_val, len(convs))), tokenizer, seq_len, procs)
        name = instruct_data if Path(instruct_data).exists() else f"{instruct_data} ({instruct_config})"
        note = (f"retraining data: {len(convs) - n_val} {name} conversations, chat template, loss on assistant "
                f"responses only; evaluation: the {n_val} conversations before them")
    else:
        raise ValueError(f"unknown retraining data kind {kind!r}; choose auto, instruct, text or self")
    return train, val, note


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


def run_adaptation(name: str, out_root: str | os.PathLike, *, fractions: Sequence[float] = (0.5, 0.625),
                   retrain_tokens: float = 200_000, seq_len: int = 128, batch_size: int = 16, lr: float = 1e-3,
                   tasks: Sequence[str] = (), limit: int | None = None, data_kind: str = "auto",
                   corpus_tokens: int = 65_536, eval_tokens: int = 16_384, n_points: int = 6,
                   eval_batch_size: int = 8, device: str = "cpu", seed: int = 0, control: bool = False,
                   grad_accum: int = 1, nproc: int = 1, fsdp: bool = False, activation_checkpointing: bool = False,
                   export_dtype: str | None = None, progress: bool = False) -> dict | None:
    """The paper's adaptation experiment on one pretrained Llama: evaluate it, convert its upper layers
    (each fraction of the depth), evaluate right after conversion, retrain, evaluate again, and trace
    quality vs retraining tokens. `control`: also retrain the unconverted source on the same data (how
    much of the remaining gap is the retraining data's, not the rewiring's). Returns None (with a printed
    note) when a local checkpoint is missing.

    Retraining runs in this process, or with `nproc` > 1 on that many torchrun processes (one per GPU;
    `fsdp` shards the model, as an 8B full fine-tune needs). `export_dtype` (e.g. "bfloat16") sets the
    dtype of the saved retrained checkpoints.
    """
    import shutil
    from transformers import AutoConfig, AutoTokenizer
    path = resolve_model(name)
    if path is None:
        print(f"note: {name} not found (no config.json there); skipping it. Run its notebook first to create it.")
        return None
    out = Path(out_root) / _slug(name)
    shutil.rmtree(out, ignore_errors=True)  # a rerun starts fresh instead of resuming stale runs
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    n_layers = AutoConfig.from_pretrained(str(path)).num_hidden_layers
    counts = ladder_counts(n_layers, fractions)
    train_blocks, val_blocks, note = retraining_data(path, tokenizer, kind=data_kind, seq_len=seq_len,
                                                     corpus_tokens=corpus_tokens, eval_tokens=eval_tokens,
                                                     seed=seed, device=device)
    ev = dict(limit=limit, batch_size=eval_batch_size, device=device)
    retrain_kw = dict(tokenizer=tokenizer, device=device, batch_size=batch_size, grad_accum=grad_accum, lr=lr,
                      n_points=n_points, progress=progress, seed=seed, nproc=nproc, fsdp=fsdp,
                      activation_checkpointing=activation_checkpointing,
                      export_dtype=None if export_dtype is None else getattr(torch, export_dtype))
    rows = [{"model": name, "variant": "source", "ladder_layers": 0, "retrain_tokens": 0,
             **_flatten(evaluate_checkpoint(path, val_blocks, tasks, **ev))}]
    curves, checkpoints, summaries = {}, {"source": str(path)}, {}
    for n in counts:
        conv = save_converted(path, n, out / f"hybrid{n}_converted", tokenizer)
        rows.append({"model": name, "variant": f"Hybrid-{n}L, no retraining", "ladder_layers": n,
                     "retrain_tokens": 0, **_flatten(evaluate_checkpoint(conv, val_blocks, tasks, **ev))})
        res = adapt(path, n, train_blocks, val_blocks, retrain_tokens, out / f"hybrid{n}", **retrain_kw)
        # the final validation loss of the run is the retrained model's held-out perplexity already
        rows.append({"model": name, "variant": f"Hybrid-{n}L, retrained", "ladder_layers": n,
                     "retrain_tokens": res["summary"]["tokens"],
                     **_flatten(evaluate_checkpoint(res["checkpoint"], None, tasks, **ev)),
                     "ppl": math.exp(res["summary"]["val_loss"])})
        curves[n] = quality_curve(out / f"hybrid{n}", path, n, start_ppl=rows[-2]["ppl"])
        checkpoints[f"hybrid{n}_converted"], checkpoints[f"hybrid{n}"] = str(conv), str(res["checkpoint"])
        summaries[n] = res["summary"]
    if control:
        res = adapt(path, 0, train_blocks, val_blocks, retrain_tokens, out / "source_retrained", **retrain_kw)
        rows.insert(1, {"model": name, "variant": "source, retrained (control)", "ladder_layers": 0,
                        "retrain_tokens": res["summary"]["tokens"],
                        **_flatten(evaluate_checkpoint(res["checkpoint"], None, tasks, **ev)),
                        "ppl": math.exp(res["summary"]["val_loss"])})
        checkpoints["source_retrained"], summaries[0] = str(res["checkpoint"]), res["summary"]
    return {"model": name, "path": str(path), "n_layers": n_layers, "ladder_layers": counts, "data": note,
            "rows": rows, "curves": curves, "checkpoints": checkpoints, "train_summaries": summaries,
            "tasks": list(tasks), "limit": limit}


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
    """{"ppl": x, "tasks": {task: scores}} -> {"ppl": x, task: headline value in %}."""
    out = {"ppl": ev.get("ppl")}
    for task, scores in ev.get("tasks", {}).items():
        v = primary_metric(scores, task)
        out[task] = None if v is None else 100 * v
    return out


def recovery(rows: list[dict], metric: str = "ppl") -> dict[int, dict]:
    """Per converted depth: the metric for source / converted / retrained and the fraction of the
    conversion's damage that retraining recovered (1 = back to the source, 0 = none); with a control
    row (the source retrained on the same data) also the fraction recovered toward the control."""
    src = next(r for r in rows if r["variant"] == "source")[metric]
    ctrl = next((r[metric] for r in rows if r["variant"].startswith("source, retrained")), None)
    out = {}
    for n in sorted({r["ladder_layers"] for r in rows if r["ladder_layers"]}):
        conv = next(r for r in rows if r["ladder_layers"] == n and r["retrain_tokens"] == 0)[metric]
        ret = next(r for r in rows if r["ladder_layers"] == n and r["retrain_tokens"] > 0)[metric]
        drop = conv - src
        out[n] = {"source": src, "converted": conv, "retrained": ret,
                  "recovered": (conv - ret) / drop if drop else float("nan")}
        if ctrl is not None:
            out[n]["control"] = ctrl
            out[n]["recovered_vs_control"] = (conv - ret) / (conv - ctrl) if conv != ctrl else float("nan")
    return out


def comparison_table(rows: list[dict], paper_csv: str | os.PathLike | None = None):
    """Our rows beside the paper's adaptation table (a pandas DataFrame): one row per variant (the
    source, then each converted depth without and with retraining; the smaller depth is matched to the
    paper's 16L, the larger to its 20L), columns (benchmark, ours | paper) for the benchmarks we ran
    that the paper has, our perplexity, and each side's average over its own benchmarks."""
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
        row = {("model", ""): label, ("perplexity", "ours"): r.get("ppl")}
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


# --------------------------------------------------------------------------------------------- speed
def speed_configs(result: dict, *, tp: int = 2, links: Sequence[str | None] = (None,), **bench_kw) -> list:
    """ladder.bench configurations for one adaptation result: the source (standard wiring) and each
    retrained hybrid, loaded from their checkpoints into the native TP runtime, at TP degree `tp`,
    for each (emulated) link. `bench_kw` are further BenchConfig fields (batch, prompt_len, ...)."""
    from transformers import AutoConfig
    from .bench import BenchConfig
    base = config_from_hf(AutoConfig.from_pretrained(result["path"]))
    cfgs = []
    for link in links:
        link = None if link in (None, "none", "") else link
        cfgs.append(BenchConfig(preset=base, wiring="standard", tp=tp, link=link, checkpoint=result["path"],
                                **bench_kw))
        for n in result["ladder_layers"]:
            cfgs.append(BenchConfig(preset=base, wiring="hybrid", ladder_layers=n, tp=tp, link=link,
                                    checkpoint=result["checkpoints"][f"hybrid{n}"], **bench_kw))
    return cfgs


def speedup_table(records: list[dict]) -> list[dict]:
    """One row per (link, hybrid): tokens/s of the hybrid and of the standard source, and their ratio."""
    rows = []
    key = lambda r: (r["link"] or {}).get("name", "none (measured gloo)") if isinstance(r["link"], dict) else \
        (r["link"] or "none (measured gloo)")
    std = {key(r): r for r in records if r["wiring"] == "standard"}
    for r in records:
        if r["wiring"] != "hybrid":
            continue
        s = std[key(r)]
        rows.append({"link": key(r), "tp": r["tp"], "ladder_layers": r["ladder_layers"],
                     "standard_tokens_per_s": s["tokens_per_s"], "hybrid_tokens_per_s": r["tokens_per_s"],
                     "speedup": r["tokens_per_s"] / s["tokens_per_s"],
                     "speedup_ci": ratio_ci(r["samples_tokens_per_s"], s["samples_tokens_per_s"]),
                     "step_ms": 1000 * s["decode_s_per_token"], "samples": len(r["samples_tokens_per_s"])})
    return rows


def ratio_ci(a, b, n_boot: int = 2000, seed: int = 0) -> list[float]:
    """95% bootstrap interval of median(a) / median(b), resampling the repeated runs of each side."""
    import random
    import statistics
    rng = random.Random(seed)
    boots = sorted(statistics.median(rng.choices(a, k=len(a))) / statistics.median(rng.choices(b, k=len(b)))
                   for _ in range(n_boot))
    return [boots[int(0.025 * n_boot)], boots[int(0.975 * n_boot) - 1]]
