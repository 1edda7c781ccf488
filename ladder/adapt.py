"""Llama adaptation: rewire a pretrained Llama's upper layers to ladder, retrain briefly, evaluate.

The paper's experiment (its Llama-3.1-8B-Instruct table): take the pretrained model, switch the last 16
(or 20) of its 32 layers to the ladder dataflow with the weights unchanged, evaluate (quality drops),
retrain on ~3B tokens of instruction data (BAAI/Infinity-Instruct), evaluate again (quality recovers).

    model = load_pretrained(src, wiring="hybrid", ladder_layers=N)   # ladder.hf: the native runtime
    summary = retrain(model, train_blocks, val_blocks, token_budget, out_dir)   # ladder.train.train
    ckpt = save_hf(model, out_dir / "hf", tokenizer)                 # a LadderLlamaForCausalLM checkpoint
    scores = evaluate_checkpoint(ckpt, val_blocks, tasks)            # perplexity + lm-eval

Retraining data:
  * on a connected GPU node, instruction data: `load_conversations()` streams Infinity-Instruct and
    `chat_blocks()` applies the tokenizer's chat template, with the loss only on assistant responses
    (`TokenBlocks.loss_mask`);
  * offline, plain text with the full loss: `text_blocks()` over held-out documents, or, for a model
    whose training corpus we do not have (stories260K: only a 1.9k-token TinyStories sample is on disk),
    `sample_texts()` draws a retraining corpus from the *source* model itself (self-distillation), while
    quality is measured on real text that was never trained on.

`quality_curve()` turns a run's checkpoints into quality vs retraining tokens.
"""
from __future__ import annotations

import math
import os
from contextlib import nullcontext
from pathlib import Path
from typing import Iterable, Sequence

import torch

from .data import TokenBlocks, pack
from .hf import config_from_hf, load_pretrained, resolve_checkpoint
from .model import build_model

INFINITY_INSTRUCT = "BAAI/Infinity-Instruct"
INFINITY_INSTRUCT_CONFIG = "0625"
# ShareGPT speaker names (Infinity-Instruct's "conversations") -> chat-template roles
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


# --------------------------------------------------------------------------------------------- data
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
                       split: str = "train", skip: int = 0) -> list[list[dict]]:
    """The first `n` conversations (after `skip`) of a chat dataset on the hub (streamed) or a local
    json/jsonl file, as lists of messages. Needs the hub for Infinity-Instruct."""
    import datasets
    if Path(dataset).exists():
        ds = datasets.load_dataset("json", data_files=str(dataset), split=split, streaming=True)
    else:
        ds = datasets.load_dataset(dataset, name=config, split=split, streaming=True)
    rows = ds.skip(skip).take(n)
    return [normalize_conversation(r) for r in rows]


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


def chat_blocks(conversations: Iterable[Sequence[dict]], tokenizer, seq_len: int) -> TokenBlocks:
    """Chat-templated conversations packed into blocks, the loss only on assistant responses.

    Conversations are concatenated and cut into blocks of seq_len + 1 tokens (like `pack`); the tail
    is padded with EOS and masked out.
    """
    stream, mask = [], []
    for conv in conversations:
        ids, m = chat_example(conv, tokenizer)
        stream += ids
        mask += m
    if not any(mask):
        raise ValueError("no assistant tokens in the conversations: nothing to train on")
    width = seq_len + 1
    n = math.ceil(len(stream) / width)
    pad = n * width - len(stream)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    tokens = torch.tensor(stream + [pad_id] * pad, dtype=torch.long).view(n, width)
    loss_mask = torch.tensor(mask + [False] * pad, dtype=torch.bool).view(n, width)
    return TokenBlocks(tokens, loss_mask)


@torch.inference_mode()
def sample_texts(model, tokenizer, n: int, max_new_tokens: int, *, batch_size: int = 32,
                 temperature: float = 1.0, top_k: int | None = None, seed: int = 0) -> list[str]:
    """`n` texts sampled from a native model, each started from BOS and cut at the first EOS.

    Used offline to build a retraining corpus from the source model (self-distillation).
    """
    from .generate import generate
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


# --------------------------------------------------------------------------------------------- retraining
def steps_for_budget(token_budget: float, batch_size: int, seq_len: int, grad_accum: int = 1) -> int:
    """Optimizer steps that consume `token_budget` training tokens (at least one)."""
    if token_budget <= 0:
        raise ValueError(f"token_budget must be positive, got {token_budget}")
    return max(1, round(token_budget / (batch_size * grad_accum * seq_len)))


def retrain(model, train_blocks: TokenBlocks, val_blocks: TokenBlocks | None, token_budget: float,
            out_dir: str | os.PathLike, *, batch_size: int = 8, grad_accum: int = 1, lr: float = 1e-4,
            warmup_frac: float = 0.05, n_points: int = 6, **train_kw) -> dict:
    """Supervised fine-tuning of a (converted) native model for `token_budget` tokens with ladder.train.

    Defaults follow the paper's fine-tuning recipe in spirit (AdamW, short warm-up, cosine decay); the
    learning rate is a parameter. `n_points` checkpoints and validation losses are spread evenly over
    the run, for `quality_curve`. Returns ladder.train.train's summary plus the TrainConfig used.
    """
    from .train import TrainConfig, train
    steps = steps_for_budget(token_budget, batch_size, train_blocks.seq_len, grad_accum)
    every = max(1, steps // max(1, n_points))
    cfg = TrainConfig(**{**dict(max_steps=steps, batch_size=batch_size, grad_accum=grad_accum, lr=lr,
                                warmup_steps=max(1, round(warmup_frac * steps)), eval_every=every,
                                eval_batches=10**9, ckpt_every=every, keep_checkpoints=0), **train_kw})
    summary = train(model, train_blocks, val_blocks, cfg, out_dir)
    return {**summary, "train_config": cfg.to_dict()}


def adapt(source, ladder_layers, train_blocks: TokenBlocks, val_blocks: TokenBlocks | None, token_budget: float,
          out_dir: str | os.PathLike, *, tokenizer=None, device: str = "cpu", dtype=torch.float32,
          export_dtype: torch.dtype | None = None, **retrain_kw) -> dict:
    """The whole path: HF Llama checkpoint -> native hybrid (last `ladder_layers` layers ladder) ->
    retraining -> a LadderLlamaForCausalLM checkpoint in out_dir/hf. Returns {"checkpoint", "summary"}."""
    from .train import save_hf
    model = load_pretrained(source, wiring="hybrid", ladder_layers=ladder_layers, device=device, dtype=dtype,
                            max_seq_len=max(train_blocks.seq_len, 256))
    summary = retrain(model, train_blocks, val_blocks, token_budget, out_dir, **retrain_kw)
    ckpt = save_hf(model, Path(out_dir) / "hf", tokenizer, dtype=export_dtype)
    return {"checkpoint": ckpt, "summary": summary}


# --------------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def perplexity(model, blocks: TokenBlocks, batch_size: int = 8) -> float:
    """exp(mean next-token loss) of a native model over `blocks` (masked targets excluded)."""
    try:
        from .eval import perplexity as _ppl  # helper TRAIN's, when present
        return float(_ppl(model, blocks, batch_size))
    except ImportError:
        from .train import evaluate_loss
        device = model.lm_head.weight.device
        return math.exp(evaluate_loss(model, blocks, batch_size, None, device, nullcontext()))


def lm_eval_scores(checkpoint, tasks: Sequence[str], limit: int | None = None, batch_size: int = 8) -> dict:
    """{task: {metric: value}} from lm-eval's Hugging Face wrapper on a saved checkpoint (ladder.eval)."""
    if not tasks:
        return {}
    from .eval import evaluate
    return evaluate(str(checkpoint), list(tasks), limit=limit, batch_size=batch_size)


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


def quality_curve(run_dir: str | os.PathLike, source, ladder_layers, val_blocks: TokenBlocks, *,
                  tasks: Sequence[str] = (), limit: int | None = None, tokenizer=None, batch_size: int = 8,
                  device: str = "cpu") -> list[dict]:
    """Quality vs retraining tokens: perplexity (and lm-eval scores when `tasks`) of the converted model
    before retraining (tokens = 0) and at every checkpoint of the retraining run in `run_dir`.

    Checkpoints are ladder.train's (out_dir/checkpoints/step_N: native weights + trainer state).
    """
    from safetensors.torch import load_model
    from .train import _checkpoints, save_hf
    run_dir = Path(run_dir)
    path = resolve_checkpoint(source)
    from transformers import AutoConfig
    config = config_from_hf(AutoConfig.from_pretrained(path), max_seq_len=max(val_blocks.seq_len, 256),
                            wiring="hybrid", ladder_layers=ladder_layers)
    points = [(0, 0, None)]
    for d in _checkpoints(run_dir):
        state = torch.load(d / "trainer_state.pt", weights_only=False, map_location="cpu")
        points.append((state["step"], state["tokens_seen"], d))
    curve = []
    for step, tokens, d in points:
        if d is None:
            model = load_pretrained(path, device=device, max_seq_len=config.max_seq_len, wiring="hybrid",
                                    ladder_layers=ladder_layers)
        else:
            model = build_model(config, device=device)
            load_model(model, str(d / "model.safetensors"), device=str(device))
        rec = {"step": step, "tokens": tokens, "ppl": perplexity(model.eval(), val_blocks, batch_size)}
        if tasks:
            hf_dir = save_hf(model, run_dir / "curve" / f"step_{step:06d}", tokenizer)
            rec["tasks"] = lm_eval_scores(hf_dir, tasks, limit, batch_size)
        curve.append(rec)
    return curve


def primary_metric(task_scores: dict) -> float | None:
    """The headline number of one lm-eval task result: acc_norm, else acc, else exact_match, else the
    first numeric metric (stderr excluded)."""
    for key in ("acc_norm", "acc", "exact_match", "prompt_level_strict_acc", "mc2"):
        for k, v in task_scores.items():
            if k.split(",")[0] == key and isinstance(v, (int, float)):
                return float(v)
    for k, v in task_scores.items():
        if "stderr" not in k and isinstance(v, (int, float)):
            return float(v)
    return None
