"""Evaluation: lm-eval on saved Hugging Face checkpoints, and perplexity of a native model.

`evaluate(checkpoint_dir, tasks)` runs `lm_eval.simple_evaluate` with lm-eval's own `hf` model on a
checkpoint saved by `ladder.train.save_hf` (a plain LlamaForCausalLM or a LadderLlamaForCausalLM; the
latter loads because `ladder.hf` is imported here, which registers it with the Auto classes).

Task names are the paper's (lm-eval's built-in names). They map to the YAMLs in ladder/tasks/ over the data
folder's eval/ copies (`local=True`) whenever the data folder has them, online or offline, so every run of
the cpu/smoke profiles (make, plain papermill, Colab) scores the same examples as the book; and always when
HF_DATASETS_OFFLINE/HF_HUB_OFFLINE is set. lm-eval's own (hub) tasks are used when the data folder has no
copies and the hub may be reached, in a gpu-profile notebook (the paper's tasks, e.g. MMLU, have no local
copy), or with LADDER_EVAL_TASKS=hub. SciQ has no local copy: it maps to OpenBookQA, and results say so
(`SUBSTITUTES`).
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from .data import IGNORE_INDEX, TokenBlocks
from .paths import _current, data_root, is_hub_id
# transformers, lm_eval and ladder.hf (which imports transformers) are imported inside the functions that use them:
# importing ladder.eval (as ladder.pretrain does) does not load them.

TASK_DIR = Path(__file__).parent / "tasks"

# paper / lm-eval name -> offline task in ladder/tasks
LOCAL_TASKS = {
    "arc_challenge": "ladder_arc_challenge",
    "arc_easy": "ladder_arc_easy",
    "hellaswag": "ladder_hellaswag",
    "piqa": "ladder_piqa",
    "sciq": "ladder_openbookqa",   # SciQ is not available offline (see SUBSTITUTES)
    "openbookqa": "ladder_openbookqa",
    "winogrande": "ladder_winogrande",
    "lambada_openai": "ladder_lambada",
    "wikitext": "ladder_wikitext",
}
SUBSTITUTES = {"sciq": "openbookqa"}  # offline, the first is measured with the second's data
PAPER_TASKS = ["arc_challenge", "arc_easy", "hellaswag", "piqa", "sciq", "winogrande", "wikitext"]
# every benchmark as the papers' tables name it (the book's table labels)
TASK_LABELS = {"arc_challenge": "ARC-C", "arc_easy": "ARC-E", "hellaswag": "HellaSwag", "piqa": "PIQA", "sciq": "SciQ",
               "winogrande": "WinoGrande", "openbookqa": "OBQA", "lambada_openai": "LAMBADA", "wikitext": "WikiText",
               "mmlu": "MMLU", "truthfulqa_mc2": "TruthfulQA", "gsm8k": "GSM8K", "ifeval": "IFEval"}
# The one task -> metric table (lm-eval metric names) for every table in the book. ARC-Challenge, HellaSwag
# and OpenBookQA are read as length-normalised accuracy, as the Open LLM Leaderboard (v1) built on lm-eval
# reports them (their answers differ in length, so raw log-likelihood favours short ones); the rest as lm-eval's
# accuracy / exact match / word perplexity. Tasks not listed fall back to "acc".
TASK_METRIC = {"arc_challenge": "acc_norm", "hellaswag": "acc_norm", "openbookqa": "acc_norm",
               "sciq": "acc_norm",  # measured offline on OpenBookQA (SUBSTITUTES), so read the same way
               "arc_easy": "acc", "piqa": "acc", "winogrande": "acc", "lambada_openai": "acc",
               "wikitext": "word_perplexity", "mmlu": "acc", "truthfulqa_mc2": "acc", "gsm8k": "exact_match",
               "ifeval": "prompt_level_strict_acc"}


def hub_offline() -> bool:
    """HF_DATASETS_OFFLINE / HF_HUB_OFFLINE set: the hub is not to be reached."""
    return any(os.environ.get(v, "0") not in ("", "0") for v in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"))


def local_default() -> bool:
    """Whether evaluate() runs the local task copies by default (see the module's docstring); also the
    rule for the other local-or-hub choices (retraining text, the pretraining table's SciQ label), so a run
    online with the data folder reads exactly what the book's runs read."""
    if hub_offline():
        return True
    choice = os.environ.get("LADDER_EVAL_TASKS", "").lower()
    if choice in ("local", "hub"):
        return choice == "local"
    if str(_current["profile"] or "").startswith("gpu"):
        return False
    return (data_root() / "eval" / "llm_foundry_icl").is_dir()  # a mistyped LADDER_DATA is an error here


offline_default = local_default  # the former name (ladder.pretrain and ladder.retraining_data call it)


def local_task_names() -> list[str]:
    """The offline task names defined by the YAMLs in ladder/tasks."""
    return sorted(p.stem for p in TASK_DIR.glob("ladder_*.yaml"))


def resolve_task(name: str, local: bool) -> str:
    """The lm-eval task that measures `name` (a paper/lm-eval name or a local task name)."""
    if name in local_task_names():
        return name
    if not local:
        return name
    if name not in LOCAL_TASKS:
        raise ValueError(f"task {name!r} has no offline version; offline tasks: {sorted(LOCAL_TASKS)} "
                         f"(or {local_task_names()})")
    return LOCAL_TASKS[name]


@contextlib.contextmanager
def _quiet(enabled: bool):
    """Silence transformers' warnings and lm-eval's per-batch progress bars during an evaluation (a
    rolling-perplexity task draws one bar per batch of windows, thousands of lines in a notebook).
    lm-eval's own logging goes through simple_evaluate's `verbosity`."""
    import transformers
    from lm_eval.models import huggingface as lm_hf
    old_level, old_tqdm = transformers.logging.get_verbosity(), lm_hf.tqdm
    lm_logger = logging.getLogger("lm_eval")
    old_lm_level = lm_logger.level
    if enabled:
        transformers.logging.set_verbosity_error()
        lm_logger.setLevel(logging.ERROR)
        lm_hf.tqdm = lambda *a, **k: old_tqdm(*a, **{**k, "disable": True})
    try:
        yield
    finally:
        transformers.logging.set_verbosity(old_level)
        lm_logger.setLevel(old_lm_level)
        lm_hf.tqdm = old_tqdm


@contextlib.contextmanager
def _explain_length_errors(path: Path):
    """lm-eval asserts (without a message) that every answer fits the model's context; say so."""
    try:
        yield
    except AssertionError as e:
        n = json.loads((path / "config.json").read_text()).get("max_position_embeddings")
        raise ValueError(f"lm-eval failed on {path}: most likely an answer is longer than the model's context "
                         f"(max_position_embeddings={n}); train/export with a longer max_seq_len "
                         f"(PIQA answers need ~400 tokens with a 4k BPE)") from e


def evaluate(checkpoint_dir: str | os.PathLike, tasks: list[str] | None = None, limit: int | float | None = None,
             batch_size: int = 8, *, device: str | None = None, dtype: str = "float32", local: bool | None = None,
             num_fewshot: int | None = None, seed: int = 0, progress: bool = False) -> dict[str, dict[str, float]]:
    """Zero-shot lm-eval scores of a saved checkpoint: {task: {metric: value}}.

    `tasks`: paper / lm-eval names (default the paper's: ARC-C, ARC-E, HellaSwag, PIQA, SciQ,
    WinoGrande, WikiText) or local names. `limit`: examples per task (int) or fraction (float), for
    quick runs. Each entry also holds "task" (the lm-eval task actually run), "n" (examples) and, for
    an offline substitute, "substitute". `progress=False` silences lm-eval's logging.
    """
    import lm_eval
    from lm_eval.tasks import TaskManager
    from . import hf  # noqa: F401  registers LadderLlamaForCausalLM with the Auto classes

    path = Path(checkpoint_dir)
    if not (path / "config.json").is_file():
        if not is_hub_id(str(checkpoint_dir)):
            raise FileNotFoundError(f"{path} is not a saved checkpoint (no config.json); save one with "
                                    "ladder.train.save_hf")
        path = hf.resolve_checkpoint(checkpoint_dir)  # a hub id: lm-eval gets the downloaded folder
    local = local_default() if local is None else local
    tasks = list(tasks or PAPER_TASKS)
    run = {t: resolve_task(t, local) for t in tasks}
    tm = TaskManager(include_path=str(TASK_DIR), include_defaults=not local)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    with _quiet(not progress), _explain_length_errors(path):
        res = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={path},dtype={dtype}",
                                      tasks=sorted(set(run.values())), task_manager=tm, limit=limit,
                                      batch_size=batch_size, device=device, num_fewshot=num_fewshot,
                                      bootstrap_iters=0, log_samples=False, random_seed=seed,
                                      numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed,
                                      verbosity="INFO" if progress else "ERROR")
    out = {}
    for t, lt in run.items():
        metrics = {k.split(",")[0]: v for k, v in res["results"][lt].items()
                   if "," in k and "_stderr" not in k and isinstance(v, (int, float))}
        entry = {**metrics, "task": lt, "n": res.get("n-samples", {}).get(lt, {}).get("effective")}
        if local and t in SUBSTITUTES:
            entry["substitute"] = SUBSTITUTES[t]
        out[t] = entry
    return out


def headline(scores: dict[str, dict]) -> dict[str, float]:
    """One number per task as the paper reports it: accuracy in %, WikiText word perplexity."""
    out = {}
    for t, m in scores.items():
        metric = TASK_METRIC.get(t, "acc")
        v = m.get(metric)
        out[t] = v if v is None or metric.endswith("perplexity") else 100 * v
    return out


@torch.no_grad()
def block_losses(model, blocks: TokenBlocks, batch_size: int = 8,
                 max_blocks: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token loss and scored-token count of every held-out block (float64, one entry per block),
    from a native Transformer: the units of a bootstrap over sequences (ladder.stats.paired_gap)."""
    model.eval()
    device = next(model.parameters()).device
    n = len(blocks) if max_blocks is None else min(len(blocks), max_blocks)
    losses, counts = [], []
    for i in range(0, n, batch_size):
        x, y = blocks.inputs_targets(slice(i, min(i + batch_size, n)))
        logits = model(x.to(device)).float()
        y = y.to(device)
        nll = F.cross_entropy(logits.transpose(1, 2), y, ignore_index=IGNORE_INDEX, reduction="none")
        losses.append(nll.double().sum(1).cpu())
        counts.append((y != IGNORE_INDEX).sum(1).double().cpu())
    if not losses:
        raise ValueError("no held-out blocks to score")
    return torch.cat(losses), torch.cat(counts)


def perplexity(model, blocks: TokenBlocks, batch_size: int = 8, max_blocks: int | None = None) -> float:
    """exp(mean next-token loss) of a native Transformer over packed held-out blocks."""
    losses, counts = block_losses(model, blocks, batch_size, max_blocks)
    if counts.sum() == 0:
        raise ValueError("no target tokens to score")
    return math.exp(float(losses.sum() / counts.sum()))


def lm_eval_scores(checkpoint, tasks: Sequence[str], limit: int | None = None, batch_size: int = 8) -> dict:
    """{task: {metric: value}} from lm-eval's Hugging Face wrapper on a saved checkpoint (ladder.eval)."""
    if not tasks:
        return {}
    # lm-eval draws several progress bars per call; keep them out of notebooks (errors still raise)
    with contextlib.redirect_stderr(io.StringIO()):
        return evaluate(str(checkpoint), list(tasks), limit=limit, batch_size=batch_size)


def _primary(task_scores: dict, task: str | None) -> tuple[str, float] | None:
    prefer = [TASK_METRIC[task]] if task in TASK_METRIC else []
    for key in prefer + ["acc_norm", "acc", "exact_match", "prompt_level_strict_acc", "word_perplexity"]:
        for k, v in task_scores.items():
            if k.split(",")[0] == key and isinstance(v, (int, float)):
                return key, float(v)
    return None


def primary_metric(task_scores: dict, task: str | None = None) -> float | None:
    """The headline number of one lm-eval task result: the task's TASK_METRIC, else acc_norm, acc,
    exact_match, ... (metric names with or without lm-eval's ",filter" suffix)."""
    found = _primary(task_scores, task)
    return None if found is None else found[1]


def headline_value(task_scores: dict, task: str | None = None) -> float | None:
    """`primary_metric` as the paper reports it: an accuracy in %, a perplexity as it is."""
    found = _primary(task_scores, task)
    if found is None:
        return None
    key, v = found
    return v if key.endswith("perplexity") else 100 * v
