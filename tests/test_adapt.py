"""Llama adaptation (issue 5): chat data with response-only loss, token budgets, the convert -> retrain ->
export path on stories260K, and the quality-vs-tokens curve."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ladder import adapt
from ladder.data import IGNORE_INDEX, pack
from ladder.hf import LadderLlamaForCausalLM, load_pretrained

# A minimal Llama-3-like template: header, content, end-of-turn marker
TEMPLATE = ("{% for m in messages %}<s>[{{ m['role'] }}] {{ m['content'] }} </s>{% endfor %}"
            "{% if add_generation_prompt %}<s>[assistant]{% endif %}")
CONV = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Tell a story."},
        {"role": "assistant", "content": "Once upon a time there was a cat."},
        {"role": "user", "content": "Another one."}, {"role": "assistant", "content": "Lily saw a big tree."}]


@pytest.fixture(scope="module")
def tok(stories_dir):
    return AutoTokenizer.from_pretrained(stories_dir)


@pytest.fixture(scope="module")
def chat_tok(stories_dir):
    t = AutoTokenizer.from_pretrained(stories_dir)
    t.chat_template = TEMPLATE
    return t


def test_chat_example_masks_exactly_the_assistant_responses(chat_tok):
    ids, mask = adapt.chat_example(CONV, chat_tok)
    assert len(ids) == len(mask)
    full = chat_tok.apply_chat_template(CONV, tokenize=True)
    assert ids == list(full["input_ids"] if hasattr(full, "keys") else full)
    trained = chat_tok.decode([i for i, m in zip(ids, mask) if m])
    assert "cat" in trained and "tree" in trained
    assert "story" not in trained and "kind" not in trained and "Another" not in trained
    # the generation prompt ("[assistant]") is context, not a target
    assert "assistant" not in trained and "assistant" in chat_tok.decode(ids)


def test_chat_blocks_loss_only_on_responses(chat_tok):
    blocks = adapt.chat_blocks([CONV] * 5, chat_tok, seq_len=32)
    assert blocks.tokens.shape[1] == 33 and blocks.loss_mask.dtype == torch.bool
    x, y = blocks.inputs_targets()
    kept = y[y != IGNORE_INDEX]
    ids, mask = adapt.chat_example(CONV, chat_tok)
    assert len(kept) <= 5 * sum(mask) and len(kept) >= 5 * sum(mask) - blocks.tokens.shape[0]
    assert 0 < blocks.loss_mask.float().mean() < 0.6


def test_chat_blocks_from_a_dataset_on_two_processes_equal_the_list_path(chat_tok):
    import datasets
    rows = [{"conversations": [{"from": "human", "value": f"Tell me {i}."}, {"from": "gpt", "value": f"It is {i}."}]}
            for i in range(12)] + [{"messages": CONV}]
    from_list = adapt.chat_blocks([adapt.normalize_conversation(r) for r in rows], chat_tok, seq_len=16)
    from_dataset = adapt.chat_blocks(datasets.Dataset.from_list(rows[:-1]).add_item({"conversations": None,
                                                                                       "messages": CONV}),
                                     chat_tok, seq_len=16, num_proc=2)
    assert torch.equal(from_list.tokens, from_dataset.tokens)
    assert torch.equal(from_list.loss_mask, from_dataset.loss_mask)
    with pytest.raises(ValueError, match="no conversations"):
        adapt.chat_blocks([], chat_tok, seq_len=16)


def test_chat_data_errors(tok):
    with pytest.raises(ValueError, match="no chat template"):
        adapt.chat_example(CONV, tok)
    with pytest.raises(ValueError, match="unknown speaker 'robot'"):
        adapt.normalize_conversation({"conversations": [{"from": "robot", "value": "hi"}]})
    with pytest.raises(ValueError, match="neither 'conversations' nor 'messages'"):
        adapt.normalize_conversation({"text": "hi"})
    assert adapt.normalize_conversation({"conversations": [{"from": "human", "value": "a"},
                                                           {"from": "gpt", "value": "b"}]}) == \
        [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]


def test_steps_for_budget():
    assert adapt.steps_for_budget(3e9, batch_size=64, seq_len=4096, grad_accum=4) == 2861
    assert adapt.steps_for_budget(10, 8, 128) == 1
    with pytest.raises(ValueError, match="token_budget must be positive"):
        adapt.steps_for_budget(0, 8, 128)


def test_sample_texts_is_seeded(stories_dir, tok):
    model = load_pretrained(stories_dir)
    a = adapt.sample_texts(model, tok, 3, 20, batch_size=2, seed=1)
    b = adapt.sample_texts(model, tok, 3, 20, batch_size=2, seed=1)
    assert a == b and len(a) == 3 and all(isinstance(t, str) and t for t in a)
    assert adapt.sample_texts(model, tok, 3, 20, batch_size=2, seed=2) != a


@pytest.fixture(scope="module")
def adapted(stories_dir, tok, tmp_path_factory):
    out = tmp_path_factory.mktemp("adapt")
    source = load_pretrained(stories_dir)
    train = pack(adapt.sample_texts(source, tok, 16, 64, batch_size=16), tok, 32)
    val = pack(adapt.sample_texts(source, tok, 4, 64, batch_size=4, seed=99), tok, 32)
    result = adapt.adapt(stories_dir, 3, train, val, token_budget=4 * 32 * 6, out_dir=out, tokenizer=tok,
                         batch_size=4, lr=1e-3, n_points=3, keep_checkpoints=True, progress=False)
    return result, train, val, out


def test_adapt_exports_a_ladder_checkpoint_that_matches_the_native_model(adapted, stories_dir):
    result, train, val, out = adapted
    assert result["summary"]["steps"] == 6 and result["summary"]["tokens"] == 6 * 4 * 32
    hf = AutoModelForCausalLM.from_pretrained(result["checkpoint"])
    assert type(hf) is LadderLlamaForCausalLM and hf.config.ladder_layers == 3
    native = load_pretrained(result["checkpoint"])
    source = load_pretrained(stories_dir, wiring="hybrid", ladder_layers=3)
    x = train.tokens[:2, :-1]
    with torch.no_grad():
        torch.testing.assert_close(hf(x).logits, native(x), rtol=1e-5, atol=1e-5)
        assert (native(x) - source(x)).abs().max() > 1e-3  # retraining changed the weights
    assert (result["checkpoint"] / "tokenizer.json").exists()


def test_quality_curve_starts_at_the_converted_model(adapted, stories_dir):
    result, train, val, out = adapted
    logged = adapt.quality_curve(out, stories_dir, 3, val)  # from the validation losses train logged
    reloaded = adapt.quality_curve(out, stories_dir, 3, val, from_checkpoints=True)  # from kept checkpoints
    for curve in (logged, reloaded):
        assert [p["step"] for p in curve] == [0, 2, 4, 6]
        assert [p["tokens"] for p in curve] == [0, 256, 512, 768]
    for a, b in zip(logged, reloaded):
        assert a["ppl"] == pytest.approx(b["ppl"], rel=1e-5)
    converted = load_pretrained(stories_dir, wiring="hybrid", ladder_layers=3)
    assert logged[0]["ppl"] == pytest.approx(adapt.perplexity(converted, val), rel=1e-6)
    final = load_pretrained(result["checkpoint"])
    assert logged[-1]["ppl"] == pytest.approx(adapt.perplexity(final, val), rel=1e-5)
    assert logged[-1]["ppl"] < logged[0]["ppl"]  # retraining on the source's own text helps
    with pytest.raises(ValueError, match="needs val_blocks or start_ppl"):
        adapt.quality_curve(out, stories_dir, 3)


def test_evaluate_checkpoint_rewires_on_load(stories_dir, tok):
    val = pack([open(stories_dir / "config.json").read()] * 4, tok, 32)  # any text will do
    src = adapt.evaluate_checkpoint(stories_dir, val)
    conv = adapt.evaluate_checkpoint(stories_dir, val, wiring="hybrid", ladder_layers=4)
    assert src["tasks"] == {} and src["ppl"] != conv["ppl"]


def test_primary_metric():
    assert adapt.primary_metric({"acc,none": 0.5, "acc_norm,none": 0.6, "acc_stderr,none": 0.1}) == 0.6
    assert adapt.primary_metric({"exact_match,strict-match": 0.3}) == 0.3
    assert adapt.primary_metric({"alias": "x", "n": 5}) is None
    assert adapt.primary_metric({"acc": 0.5, "acc_norm": 0.6}, "mmlu") == 0.5


def test_adapt_on_two_torchrun_processes_with_fsdp_equals_one_process(stories_dir, tok, tmp_path):
    """adapt(nproc=2, fsdp=True): torchrun, sharded retraining, gathered export == one process with 2
    accumulated micro-batches (the gpu profile's path for Llama-3.1-8B, here on CPU over gloo)."""
    source = load_pretrained(stories_dir)
    train = pack(adapt.sample_texts(source, tok, 16, 64, batch_size=16), tok, 32)
    val = pack(adapt.sample_texts(source, tok, 4, 64, batch_size=4, seed=99), tok, 32)
    kw = dict(token_budget=8 * 32 * 3, tokenizer=tok, batch_size=4, lr=1e-3, n_points=1, progress=False)
    two = adapt.adapt(stories_dir, 3, train, val, out_dir=tmp_path / "two", nproc=2, fsdp=True,
                      activation_checkpointing=True, **kw)
    one = adapt.adapt(stories_dir, 3, train, val, out_dir=tmp_path / "one", grad_accum=2, **kw)
    assert two["summary"]["steps"] == one["summary"]["steps"] == 3
    assert two["summary"]["tokens"] == one["summary"]["tokens"] == 3 * 8 * 32
    assert two["summary"]["val_loss"] == pytest.approx(one["summary"]["val_loss"], rel=1e-5)
    assert (two["checkpoint"] / "tokenizer.json").exists()
    x = train.tokens[:2, :-1]
    with torch.no_grad():
        torch.testing.assert_close(load_pretrained(two["checkpoint"])(x), load_pretrained(one["checkpoint"])(x),
                                   rtol=1e-4, atol=1e-4)


def test_failed_distributed_retraining_reports_its_error(stories_dir, tok, tmp_path):
    train = pack(["Once upon a time. " * 40], tok, 32)
    with pytest.raises(RuntimeError, match=r"adapt on 2 processes failed \(exit code 1\): ValueError: only 6 blocks: fewer than one batch of 64"):
        adapt.adapt(stories_dir, 3, train, None, 1000, tmp_path, nproc=2, batch_size=64, progress=False)


def test_gpu_profile_tasks_are_lm_eval_builtins():
    """The paper-scale profile names lm-eval's own tasks (no local stand-ins); a typo would only fail on the GPU node."""
    import yaml
    from lm_eval.tasks import TaskManager
    from ladder.pipeline import PROFILES_DIR
    tasks = yaml.safe_load((PROFILES_DIR / "gpu" / "04_llama_adaptation.yaml").read_text())["tasks"]
    missing = [t for t in tasks if t not in TaskManager().all_tasks]
    assert tasks and not missing


def test_instruct_retraining_data_from_a_local_conversation_file(chat_tok, tmp_path):
    import json
    rows = [{"conversations": [{"from": "human", "value": f"Question {i}?"},
                               {"from": "gpt", "value": f"Answer number {i} is here."}]} for i in range(40)]
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    train, val, note = adapt.retraining_data("unused", chat_tok, kind="instruct", seq_len=32, corpus_tokens=512 * 30,
                                             eval_tokens=512 * 5, instruct_data=str(path))
    assert "30 " in note and "5 conversations before them" in note
    assert train.loss_mask is not None and val.loss_mask is not None
    val_text = chat_tok.decode(val.tokens.flatten())
    assert "Answer number 4 " in val_text and "Answer number 5 " not in val_text  # first 5 held out
    assert "Answer number 5 " in chat_tok.decode(train.tokens.flatten())
    with pytest.raises(ValueError, match="too few"):
        adapt.retraining_data("unused", chat_tok, kind="instruct", seq_len=32, corpus_tokens=512 * 100,
                              eval_tokens=512 * 40, instruct_data=str(path))



def test_killed_retraining_resumes_from_its_last_checkpoint(stories_dir, tok, tmp_path, monkeypatch):
    """retrain() checkpoints at every evaluation point (keeping only the newest), so a killed run resumes."""
    import ladder.train
    source = load_pretrained(stories_dir)
    train = pack(adapt.sample_texts(source, tok, 16, 64, batch_size=16), tok, 32)
    kw = dict(token_budget=4 * 32 * 6, batch_size=4, lr=1e-3, n_points=2, progress=False)
    hybrid = lambda: load_pretrained(stories_dir, wiring="hybrid", ladder_layers=3)
    whole = hybrid()
    adapt.retrain(whole, train, None, out_dir=tmp_path / "whole", **kw)
    assert [p.name for p in (tmp_path / "whole" / "checkpoints").iterdir()] == ["step_000006"]

    save = ladder.train.save_checkpoint
    def save_then_die(out_dir, model, optimizer, scheduler, step, *args):
        if step > 3:
            raise KeyboardInterrupt("killed")
        return save(out_dir, model, optimizer, scheduler, step, *args)
    monkeypatch.setattr(ladder.train, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        adapt.retrain(hybrid(), train, None, out_dir=tmp_path / "killed", **kw)
    monkeypatch.setattr(ladder.train, "save_checkpoint", save)
    assert [p.name for p in (tmp_path / "killed" / "checkpoints").iterdir()] == ["step_000003"]
    resumed = hybrid()
    summary = adapt.retrain(resumed, train, None, out_dir=tmp_path / "killed", **kw)
    assert summary["steps"] == 6
    for k, v in whole.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, atol=1e-6, rtol=1e-5)
