"""Pre-training loop (nanoGPT-style: read it top to bottom).

The paper's recipe is the default: AdamW (0.9, 0.95), weight decay 0.1, eps 1e-10, linear warm-up then
cosine decay to 0.1 x peak, init N(0, 0.02) (`ladder.model.init_weights`, done by `build_model`),
gradient clipping at 1.0, gradient accumulation, bf16 autocast on GPU and plain fp32 on CPU.

Weight decay follows common practice (GPT-NeoX, OLMo, Megatron's defaults for norms): it applies to the
attention and MLP matrices (and an untied output head), not to norm gains or the token embedding.

Every wiring trained with the same `TrainConfig` sees the same batches in the same order (the order is a
function of `seed` and the step only) and, built with the same `build_model(seed=...)`, starts from the
same weights, so differences between runs come from the wiring alone.

Multi-GPU: launch with `torchrun --nproc-per-node N -m ladder.train ...`; rank r takes every N-th batch.
By default the model is replicated (torch's `DistributedDataParallel`). With `fsdp=True` it is sharded
instead (FSDP2, `torch.distributed.fsdp.fully_shard`): weights, gradients and AdamW state are split over
the N ranks, which is what full fine-tuning of an 8B model needs (fp32 weights + AdamW = 16 bytes per
parameter = 128 GB unsharded). The mathematics is the same either way: N ranks x 1 micro-batch equals one
process accumulating N micro-batches. `activation_checkpointing=True` recomputes each attention and MLP
module in the backward pass instead of storing its activations. All three are applied by
`ladder.parallelize.parallelize`, the one place that spreads a model over processes.

Checkpoints (every `ckpt_every` steps, in out_dir/checkpoints/step_NNNNNN/) hold the full, unsharded
weights (safetensors) and optimizer state (keyed by parameter name), the scheduler, data position and RNG
state. So a run resumes under any world size and with or without FSDP, from the same files, and continues
on the same trajectory.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import shutil
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from .config import preset
from .data import IGNORE_INDEX, TokenBlocks, prepare_corpus
from .model import build_model
from .parallelize import init_process_group, parallelize
from .paths import display_path, read_safetensors
from .provenance import code_changed_since, git_commit, name_files, package_deps
# safetensors, torch.distributed.checkpoint / .fsdp and ladder.hf (which imports transformers) are imported inside the
# functions that use them: `python -m ladder.train` starts without them.


@dataclass
class TrainConfig:
    max_steps: int = 100
    batch_size: int = 8            # sequences per micro-batch per process
    grad_accum: int = 1            # micro-batches per optimizer step
    lr: float = 3e-4               # peak learning rate
    warmup_steps: int = 10
    min_lr_ratio: float = 0.1      # cosine decays to min_lr_ratio x lr at max_steps
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-10
    grad_clip: float = 1.0         # max global grad norm; 0 disables clipping
    eval_every: int = 50           # validation loss every N steps (and at the end); 0 = only at the end
    eval_batches: int = 8          # validation batches (a fixed set: the first ones, in order)
    ckpt_every: int = 0            # checkpoint every N steps (and at the end); 0 = only at the end
    keep_checkpoints: int = 2      # older checkpoints are deleted
    seed: int = 0                  # data order
    device: str = "auto"           # "auto" = cuda if available else cpu
    amp: str = "auto"              # "auto" = bf16 autocast on cuda, none on cpu; or "bf16" / "none"
    fsdp: bool = False             # shard weights/grads/optimizer over data-parallel ranks (FSDP2) instead of DDP
    activation_checkpointing: bool = False  # recompute attention/MLP activations in backward (saves memory)
    progress: bool = True
    progress_interval: float = 5.0  # seconds between progress-bar refreshes (keeps notebooks small)

    def tokens_per_step(self, seq_len: int, world_size: int = 1) -> int:
        return self.batch_size * self.grad_accum * seq_len * world_size

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Multiplier of the peak lr at optimizer step `step` (0-based): linear warm-up, cosine to min_lr_ratio."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay the matrices of attention/MLP (and an untied lm_head); not norms or the embedding."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():  # tied weights appear once, as embed_tokens.weight
        if not p.requires_grad:
            continue
        (no_decay if p.dim() < 2 or "embed_tokens" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def loss_fn(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX)


# --------------------------------------------------------------------------------------------- checkpoints
def _step(ckpt: Path) -> int:
    """The optimizer step a checkpoint folder (step_NNNNNN) was saved at."""
    return int(ckpt.name.removeprefix("step_"))


def _checkpoints(out_dir: Path) -> list[Path]:
    """The finished checkpoints, oldest first (not the step_NNNNNN.tmp folder of a save that was killed)."""
    done = [p for p in (out_dir / "checkpoints").glob("step_*") if re.fullmatch(r"step_\d+", p.name)]
    return sorted(done, key=_step)


def full_state(model, optimizer=None) -> tuple[dict, dict | None]:
    """Unsharded CPU copies of the model's (and optimizer's) state, keyed by parameter name.

    Collective under FSDP (every rank calls; rank 0 receives the tensors, other ranks empty dicts);
    a plain copy otherwise. One format for every way of training, so checkpoints move between them.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_state_dict
    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    if optimizer is None:
        return get_model_state_dict(model, options=opts), None
    return get_state_dict(model, optimizer, options=opts)


def save_checkpoint(out_dir: Path, model, optimizer, scheduler, step: int, state: dict, keep: int) -> Path:
    """Write out_dir/checkpoints/step_NNNNNN (all ranks call; rank 0 writes)."""
    from safetensors.torch import save_file
    weights, optim = full_state(model, optimizer)
    rank, world = _ddp_info()
    d = out_dir / "checkpoints" / f"step_{step:06d}"
    if rank == 0:
        if model.config.tie_embeddings:  # one tensor under two names: store it once
            weights.pop("lm_head.weight", None)
        tmp = d.with_name(d.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file({k: v.contiguous() for k, v in weights.items()}, str(tmp / "model.safetensors"))
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        torch.save({"optimizer": optim, "format": "full-by-name", "scheduler": scheduler.state_dict(),
                    "step": step, "rng": rng, **state}, tmp / "trainer_state.pt")
        shutil.rmtree(d, ignore_errors=True)
        tmp.rename(d)  # a run killed mid-save leaves only a .tmp folder, never a half checkpoint
        for old in _checkpoints(out_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old)
    if world > 1:
        dist.barrier()
    return d


def _checkpoint_weights(d: Path, model) -> dict:
    weights = read_safetensors(d / "model.safetensors")
    if model.config.tie_embeddings:  # stored once (save_checkpoint)
        weights["lm_head.weight"] = weights["embed_tokens.weight"]
    return weights


def _load_weights(d: Path, model):
    """The weights of checkpoint `d` into an unsharded `model` (no optimizer)."""
    model.load_state_dict(_checkpoint_weights(d, model))


def load_checkpoint(d: Path, model, optimizer, scheduler) -> dict:
    """Restore a checkpoint into a (possibly FSDP-sharded) model and its optimizer; every rank calls."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_state_dict
    weights = _checkpoint_weights(d, model)
    # mmap: under torchrun every rank reads the full optimizer state (64 GB for an 8B model); mapped, the
    # ranks share the page cache instead of each holding a copy
    st = torch.load(d / "trainer_state.pt", weights_only=True, mmap=True)
    options = StateDictOptions(full_state_dict=True)
    if st.get("format") == "full-by-name":
        set_state_dict(model, optimizer, model_state_dict=weights, optim_state_dict=st["optimizer"], options=options)
    else:  # written before FSDP support: optimizer state by parameter position (same model, unsharded)
        set_model_state_dict(model, weights, options=options)
        optimizer.load_state_dict(st["optimizer"])
    scheduler.load_state_dict(st["scheduler"])
    torch.set_rng_state(st["rng"]["torch"])
    if "cuda" in st["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["rng"]["cuda"])
    return st


def _truncate_metrics(path: Path, step: int):
    """Drop log lines written after the checkpoint we resume from (they will be written again)."""
    if path.exists():
        keep = [l for l in path.read_text().splitlines() if l.strip() and json.loads(l)["step"] <= step]
        path.write_text("".join(l + "\n" for l in keep))


# --------------------------------------------------------------------------------------------- loop
@torch.no_grad()
def evaluate_loss(model, blocks: TokenBlocks, batch_size: int, max_batches: int | None, device, autocast,
                  rank: int = 0, world_size: int = 1) -> float:
    """Mean next-token loss over the first `max_batches` batches of `blocks` (token-weighted).

    With `world_size` > 1 (data-parallel ranks, all calling) rank r evaluates batches r, r + W, ... and the
    sums are all-reduced. Every rank runs the same number of forward passes, because FSDP's forward is a
    collective: a rank with no batch left runs one more pass that adds nothing.
    """
    was_training = model.training
    model.eval()
    n = len(blocks) if max_batches is None else min(len(blocks), max_batches * batch_size)
    starts = list(range(0, n, batch_size))
    mine = starts[rank::world_size]
    sums = torch.zeros(2, dtype=torch.float64, device=device)  # loss sum, token count
    for k in range(math.ceil(len(starts) / world_size)):
        i = mine[k] if k < len(mine) else starts[0]  # any batch: a padding pass adds nothing
        x, y = blocks.inputs_targets(slice(i, min(i + batch_size, n)))
        x, y = x.to(device), y.to(device)
        with autocast:
            logits = model(x)
        if k < len(mine):
            mask = y != IGNORE_INDEX
            sums[0] += F.cross_entropy(logits.float()[mask], y[mask], reduction="sum")
            sums[1] += mask.sum()
    if world_size > 1:
        dist.all_reduce(sums)
    model.train(was_training)
    return (sums[0] / sums[1].clamp(min=1)).item()


def _ddp_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _started_at(out_dir: Path) -> str | None:
    """The git commit recorded when the run in out_dir started (None for runs from before it was recorded)."""
    try:
        return json.loads((out_dir / "train_config.json").read_text()).get("git_commit")
    except (OSError, ValueError, AttributeError):
        return None


def training_code_changed(commit: str | None) -> list[str] | None:
    """The files of the code that trains (this module and what it imports; a change elsewhere in ladder/ does
    not count) that changed since `commit`: a run's folder is keyed by its parameters, so a change to the
    package alone does not start a new run. None when that cannot be told."""
    return code_changed_since(commit, package_deps("import ladder.train")) if commit else None


# A finished run met again with changed training code is checked, not trusted: its first steps are retrained
# from the same initial weights and compared with its log. On CPU the losses come out identical (measured on
# chapter 3's runs at 1 and 2 threads); the tolerance leaves room for GPU kernels that are not deterministic.
REUSE_CHECK_STEPS = 8        # optimizer steps retrained
REUSE_CHECK_TOL = 1e-3       # nats: the largest step loss difference that still counts as the same run
REUSE_CHECK_LR_RTOL = 1e-9   # the logged learning rate of every step against this code's schedule


def reuse_check(model, train_blocks: TokenBlocks, cfg: TrainConfig, out_dir: str | os.PathLike,
                steps: int = REUSE_CHECK_STEPS) -> dict:
    """Does this code still train the run in out_dir as it was trained? `model` must hold the run's initial
    weights (built as the run was built); it is trained in place, in a temporary folder, for the first
    `steps` optimizer steps. Compared with the run's log: the loss of each of those steps, and the learning
    rate of every logged step against this code's schedule (which also covers the steps not retrained).
    A change that acts only later in training and not through the schedule is not caught; a run trained on
    another kind of device differs by that device's arithmetic too (retrain it there, or compare there).
    Returns {"steps", "max_loss_diff", "max_lr_rel_diff", "same"}."""
    logged = read_metrics(out_dir)
    k = min(steps, cfg.max_steps, len(logged))
    if k == 0:
        raise ValueError(f"{display_path(out_dir)}: no logged step to compare with (metrics.jsonl is empty)")
    # no validation set is passed, so nothing is evaluated; none of these changes the losses (tested)
    quiet = dataclasses.replace(cfg, ckpt_every=0, progress=False, fsdp=False, activation_checkpointing=False)
    with tempfile.TemporaryDirectory() as tmp:
        train(model, train_blocks, None, quiet, tmp, until=k)
        return compare_logs(read_metrics(tmp), logged, cfg)


def compare_logs(again: list[dict], logged: list[dict], cfg: TrainConfig) -> dict:
    """`reuse_check`'s rule: the retrained steps' losses (`again`) against the first ones of the run's log,
    and every logged learning rate against cfg's schedule."""
    loss_diff = max(abs(a["loss"] - b["loss"]) for a, b in zip(again, logged))
    def lr_rel_diff(r):
        expected = cfg.lr * lr_at(r["step"] - 1, cfg)
        return abs(r["lr"] / expected - 1) if expected else abs(r["lr"])
    lr_diff = max(map(lr_rel_diff, logged))
    return {"steps": len(again), "max_loss_diff": loss_diff, "max_lr_rel_diff": lr_diff,
            "same": loss_diff <= REUSE_CHECK_TOL and lr_diff <= REUSE_CHECK_LR_RTOL}


def _reuse(model, ckpt: Path, train_blocks: TokenBlocks, cfg: TrainConfig, out_dir: Path, world: int) -> dict:
    """A finished run met again (e.g. a notebook re-run): its measured summary, and its final weights loaded
    into `model`; nothing is retrained. When the training code changed since the run started, `reuse_check`
    runs first (from `model`'s initial weights; in one process only) and its result goes in the summary's
    "code_changed", which `reuse_report` reads."""
    summary = {**json.loads((out_dir / "summary.json").read_text()), "reused": True}
    started_at = _started_at(out_dir)
    changed = training_code_changed(started_at)
    if changed:
        summary["code_changed"] = {"run": display_path(out_dir), "trained_at": started_at, "files": changed,
                                   "check": reuse_check(model, train_blocks, cfg, out_dir) if world == 1 else None}
    _load_weights(ckpt, model)
    return summary


def reuse_report(summaries: list[dict]) -> str | None:
    """One paragraph on the reused runs among `summaries` (train's summaries): how many, whether the training
    code changed since they were trained, and what `reuse_check` found. None when no run was reused."""
    reused = [s for s in summaries if s.get("reused")]
    if not reused:
        return None
    changed = [s["code_changed"] for s in reused if s.get("code_changed")]
    head = f"{len(reused)} of {len(summaries)} runs reused from earlier executions with the same parameters"
    if not changed:
        return head + ": the code that trains has not changed since they were trained."
    commits = sorted({c["trained_at"][:10] for c in changed})
    files = sorted({f for c in changed for f in c["files"]})
    at = "an earlier commit" if len(commits) == 1 else "earlier commits"
    text = (f"{head}; {len(changed)} {'was' if len(changed) == 1 else 'were'} trained at {at} ({', '.join(commits)}) "
            f"and the code that trains has changed since ({name_files(files)}).")
    checked = [c for c in changed if c["check"]]
    same = [c for c in checked if c["check"]["same"]]
    if same:
        worst = max(c["check"]["max_loss_diff"] for c in same)
        text += (f" Retraining the first {min(c['check']['steps'] for c in same)} steps of "
                 f"{'each' if len(same) == len(changed) else f'{len(same)} of them'} with this code gives the logged "
                 f"losses {'exactly' if worst == 0 else f'within {worst:.1e} nats'} (the check allows "
                 f"{REUSE_CHECK_TOL:g}), and their logged learning rates follow this code's schedule.")
    for c in checked:
        if not c["check"]["same"]:
            text += (f" {c['run']} is NOT what this code trains: its first {c['check']['steps']} steps differ by up to "
                     f"{c['check']['max_loss_diff']:.3g} nats (learning rate: {c['check']['max_lr_rel_diff']:.1e} "
                     f"relative); delete that folder to retrain it.")
    if len(checked) < len(changed):
        text += f" {len(changed) - len(checked)} could not be checked (trained on several processes)."
    return text


def _start_or_resume(model, optimizer, scheduler, cfg: TrainConfig, out_dir: Path, ckpts: list[Path], world: int,
                     master: bool) -> tuple[int, int]:
    """Restore the newest checkpoint (if any) and its log; record the run's config and the commit it started
    from in out_dir/train_config.json. Returns (step, tokens seen)."""
    step, tokens_seen = 0, 0
    metrics_path = out_dir / "metrics.jsonl"
    if ckpts:
        st = load_checkpoint(ckpts[-1], model, optimizer, scheduler)
        step, tokens_seen = st["step"], st["tokens_seen"]
        if master:
            _truncate_metrics(metrics_path, step)
    elif master and metrics_path.exists():
        metrics_path.unlink()  # a fresh run: no stale log lines
    started_at = _started_at(out_dir) if ckpts else None
    changed = training_code_changed(started_at) if master else None
    if changed:
        print(f"note: resuming {display_path(out_dir)}, started at commit {started_at[:10]}; the code that trains has "
              f"changed since ({name_files(changed)}): delete that folder to train it with this code only", flush=True)
    if master:
        out_dir.mkdir(parents=True, exist_ok=True)
        # the code's commit when the run started: a run's folder is keyed by its parameters, not by the code
        (out_dir / "train_config.json").write_text(json.dumps({"train": cfg.to_dict(), "world_size": world,
                                                               "model": model.config.to_dict(),
                                                               "git_commit": started_at or git_commit()}, indent=2))
    return step, tokens_seen


def train(model, train_blocks: TokenBlocks, val_blocks: TokenBlocks | None, cfg: TrainConfig,
          out_dir: str | os.PathLike, until: int | None = None) -> dict:
    """Train `model` (a ladder.Transformer, any wiring) for cfg.max_steps optimizer steps.

    Resumes from the newest checkpoint in out_dir/checkpoints; a run that has finished is reused (`_reuse`:
    its summary with "reused", its final weights loaded, checked when the training code changed since).
    Writes out_dir/metrics.jsonl (one line per step: loss, lr, grad norm, tokens, tokens/s; plus val_loss at
    eval steps) and out_dir/summary.json. Returns the summary: final train/val loss, tokens seen, wall time,
    tokens/s. `until` stops after that many steps, the schedule still spanning cfg.max_steps (`reuse_check`).
    """
    out_dir = Path(out_dir)
    rank, world = _ddp_info()
    master = rank == 0
    device = torch.device(cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(device).train()
    ckpts = _checkpoints(out_dir)
    if ckpts and _step(ckpts[-1]) >= cfg.max_steps and (out_dir / "summary.json").exists():
        return _reuse(model, ckpts[-1], train_blocks, cfg, out_dir, world)  # already finished
    use_bf16 = cfg.amp == "bf16" or (cfg.amp == "auto" and device.type == "cuda")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext()
    # before the optimizer, which must hold FSDP's sharded parameters. `dp_model` is what the forward calls
    # (the DDP wrapper, or `model` itself); everything else (optimizer, evaluation, checkpoints) uses `model`.
    dp_model = parallelize(model, data_parallel="fsdp" if cfg.fsdp else ("ddp" if world > 1 else None),
                           activation_checkpointing=cfg.activation_checkpointing, bf16=use_bf16)

    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
                                  fused=device.type == "cuda")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_at(s, cfg))
    step, tokens_seen = _start_or_resume(model, optimizer, scheduler, cfg, out_dir, ckpts, world, master)
    metrics_path = out_dir / "metrics.jsonl"

    # global micro-batch index: `step * grad_accum * world` batches have been consumed by all ranks
    batches = train_blocks.batches(cfg.batch_size, cfg.seed, start=step * cfg.grad_accum * world,
                                   rank=rank, world_size=world)
    tokens_per_step = cfg.tokens_per_step(train_blocks.seq_len, world)

    def validate():
        return evaluate_loss(model, val_blocks, cfg.batch_size, cfg.eval_batches, device, autocast, rank, world)

    bar = tqdm(total=cfg.max_steps, initial=step, disable=not (cfg.progress and master), desc=model.config.wiring,
               mininterval=cfg.progress_interval, dynamic_ncols=True)
    log = open(metrics_path, "a") if master else None
    t_start, start_step, loss_val, val_loss = time.perf_counter(), step, float("nan"), None
    while step < min(until or cfg.max_steps, cfg.max_steps):
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        for micro in range(cfg.grad_accum):
            x, y = next(batches)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            last = micro == cfg.grad_accum - 1  # gradients are reduced over ranks once, after the last micro-batch
            if cfg.fsdp:
                model.set_requires_gradient_sync(last)
            with dp_model.no_sync() if (dp_model is not model and not last) else nullcontext():
                with autocast:
                    logits = dp_model(x)
                loss = loss_fn(logits, y) / cfg.grad_accum
                loss.backward()
            loss_sum += loss.detach()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
        if hasattr(grad_norm, "full_tensor"):  # a DTensor under FSDP
            grad_norm = grad_norm.full_tensor()
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        tokens_seen += tokens_per_step
        if world > 1:
            dist.all_reduce(loss_sum)  # SUM (gloo has no AVG)
            loss_sum /= world
        loss_val = loss_sum.item()
        dt = time.perf_counter() - t0
        rec = {"step": step, "loss": loss_val, "lr": lr, "grad_norm": float(grad_norm), "tokens": tokens_seen,
               "tokens_per_s": tokens_per_step / dt, "time_s": time.perf_counter() - t_start}
        if val_blocks is not None and (step == cfg.max_steps or (cfg.eval_every and step % cfg.eval_every == 0)):
            val_loss = validate()
            rec["val_loss"] = val_loss
        if master:
            log.write(json.dumps(rec) + "\n")
            log.flush()
            bar.update(1)
            bar.set_postfix(loss=f"{loss_val:.3f}", tok_s=f"{rec['tokens_per_s']:.0f}", refresh=False)
        if step == cfg.max_steps or (cfg.ckpt_every and step % cfg.ckpt_every == 0):
            save_checkpoint(out_dir, model, optimizer, scheduler, step, {"tokens_seen": tokens_seen},
                            cfg.keep_checkpoints)
    bar.close()
    if log:
        log.close()
    wall = time.perf_counter() - t_start
    if val_loss is None and val_blocks is not None:
        val_loss = validate()
    summary = {"wiring": model.config.wiring, "steps": step, "tokens": tokens_seen, "train_loss": loss_val,
               "val_loss": val_loss, "wall_s": wall,
               "tokens_per_s": (step - start_step) * tokens_per_step / wall if step > start_step else None,
               "params": model.config.num_params(), "params_non_embedding": model.config.num_params(False)}
    if master:
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def read_metrics(out_dir: str | os.PathLike) -> list[dict]:
    """The per-step records of a run's metrics.jsonl."""
    path = Path(out_dir) / "metrics.jsonl"
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


def save_hf(model, out_dir: str | os.PathLike, tokenizer=None, dtype: torch.dtype | None = None) -> Path:
    """Save a trained native model as a Hugging Face checkpoint (with its tokenizer, if given).

    standard -> a plain `LlamaForCausalLM` (loadable with transformers alone); other wirings ->
    `LadderLlamaForCausalLM` (import ladder.hf before `from_pretrained`). `dtype` casts on export
    (e.g. torch.bfloat16 to halve the size). Under data parallelism every rank calls it: FSDP shards are
    gathered to rank 0, and rank 0 alone writes.
    """
    from torch.distributed.fsdp import FSDPModule
    from .hf import to_hf
    out_dir = Path(out_dir)
    model = getattr(model, "module", model)  # unwrap DDP
    rank, _ = _ddp_info()
    if isinstance(model, FSDPModule):
        weights, _ = full_state(model)  # collective
        if rank != 0:
            return out_dir
        model = build_model(model.config, device="cpu", dtype=dtype or torch.float32, state_dict=weights)
    elif rank != 0 and model.comm.size == 1:  # a replica: rank 0 has the same weights
        return out_dir
    # the tokenizer's special tokens, so that `generate` stops at the real end of text
    special = {f"{k}_token_id": getattr(tokenizer, f"{k}_token_id", None) for k in ("bos", "eos", "pad")}
    hf = to_hf(model, **{k: v for k, v in special.items() if v is not None})
    if dtype is not None:
        hf = hf.to(dtype)
    hf.save_pretrained(str(out_dir))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out_dir))
    return out_dir


# --------------------------------------------------------------------------------------------- CLI
def main(argv=None):
    """`python -m ladder.train` (or under `torchrun --nproc-per-node N`): one wiring, one run."""
    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--preset", default="cpu-small")
    p.add_argument("--wiring", default="standard")
    p.add_argument("--out", required=True)
    p.add_argument("--data", nargs="*", default=None, help="local files/folders or HuggingFaceFW/fineweb-edu")
    p.add_argument("--max-docs", type=int, default=None)
    p.add_argument("--tokenizer", default=None, help="e.g. bigcode/starcoder; default: train a BPE")
    p.add_argument("--vocab-size", type=int, default=8192)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--tokens", type=float, default=1e6, help="token budget (sets max_steps)")
    p.add_argument("--init-seed", type=int, default=0)
    for f in ("batch_size", "grad_accum", "lr", "warmup_steps", "eval_every", "eval_batches", "ckpt_every", "seed"):
        t = type(getattr(TrainConfig, f))
        p.add_argument("--" + f.replace("_", "-"), type=t, default=getattr(TrainConfig, f))
    p.add_argument("--fsdp", action="store_true", help="shard the model over the torchrun ranks (FSDP2) instead of DDP")
    p.add_argument("--activation-checkpointing", action="store_true", help="recompute activations in backward")
    a = p.parse_args(argv)
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:  # under torchrun with more than one process
        init_process_group()
    rank, world = _ddp_info()
    out = Path(a.out)
    # every rank builds the same corpus deterministically; rank 0 first so the others read its cache
    if rank != 0:
        dist.barrier()
    tok, train_blocks, val_blocks, info = prepare_corpus(out / "data", sources=a.data, tokenizer=a.tokenizer,
                                                         vocab_size=a.vocab_size, seq_len=a.seq_len,
                                                         max_docs=a.max_docs)
    if rank == 0 and world > 1:
        dist.barrier()
    cfg = TrainConfig(**{f: getattr(a, f) for f in ("batch_size", "grad_accum", "lr", "warmup_steps", "eval_every",
                                                    "eval_batches", "ckpt_every", "seed", "fsdp",
                                                    "activation_checkpointing")})
    cfg.max_steps = max(1, int(a.tokens // cfg.tokens_per_step(a.seq_len, world)))
    device = f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"
    model_cfg = preset(a.preset, wiring=a.wiring, vocab_size=len(tok), max_seq_len=max(a.seq_len, 256))
    model = build_model(model_cfg, device=device, seed=a.init_seed)
    summary = train(model, train_blocks, val_blocks, cfg, out / a.wiring)
    save_hf(model, out / a.wiring / "hf", tok)
    if rank == 0:
        print(json.dumps(summary, indent=2))
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
