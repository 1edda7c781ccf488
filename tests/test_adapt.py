"""Llama adaptation (issue 5): chat data with response-only loss, token budgets, the convert -> retrain ->
export path on stories260K, and the quality-vs-tokens curve."""

import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ladder import adapt, retraining_data
from ladder import eval as evaluation
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
    ids, mask = retraining_data.chat_example(CONV, chat_tok)
    assert len(ids) == len(mask)
    full = chat_tok.apply_chat_template(CONV, tokenize=True)
    assert ids == list(full["input_ids"] if hasattr(full, "keys") else full)
    trained = chat_tok.decode([i for i, m in zip(ids, mask) if m])
    assert "cat" in trained and "tree" in trained
    assert "story" not in trained and "kind" not in trained and "Another" not in trained
    # the generation prompt ("[assistant]") is context, not a target
    assert "assistant" not in trained and "assistant" in chat_tok.decode(ids)


def test_chat_blocks_loss_only_on_responses(chat_tok):
    blocks = retraining_data.chat_blocks([CONV] * 5, chat_tok, seq_len=32)
    assert blocks.tokens.shape[1] == 33 and blocks.loss_mask.dtype == torch.bool
    x, y = blocks.inputs_targets()
    kept = y[y != IGNORE_INDEX]
    ids, mask = retraining_data.chat_example(CONV, chat_tok)
    assert len(kept) <= 5 * sum(mask) and len(kept) >= 5 * sum(mask) - blocks.tokens.shape[0]
    assert 0 < blocks.loss_mask.float().mean() < 0.6


def test_chat_blocks_from_a_dataset_on_two_processes_equal_the_list_path(chat_tok):
    import datasets
    rows = [{"conversations": [{"from": "human", "value": f"Tell me {i}."}, {"from": "gpt", "value": f"It is {i}."}]}
            for i in range(12)] + [{"messages": CONV}]
    from_list = retraining_data.chat_blocks([retraining_data.normalize_conversation(r) for r in rows], chat_tok, seq_len=16)
    from_dataset = retraining_data.chat_blocks(datasets.Dataset.from_list(rows[:-1]).add_item({"conversations": None,
                                                                                       "messages": CONV}),
                                     chat_tok, seq_len=16, num_proc=2)
    assert torch.equal(from_list.tokens, from_dataset.tokens)
    assert torch.equal(from_list.loss_mask, from_dataset.loss_mask)
    with pytest.raises(ValueError, match="no conversations"):
        retraining_data.chat_blocks([], chat_tok, seq_len=16)


def test_chat_data_errors(tok):
    with pytest.raises(ValueError, match="no chat template"):
        retraining_data.chat_example(CONV, tok)
    with pytest.raises(ValueError, match="unknown speaker 'robot'"):
        retraining_data.normalize_conversation({"conversations": [{"from": "robot", "value": "hi"}]})
    with pytest.raises(ValueError, match="neither 'conversations' nor 'messages'"):
        retraining_data.normalize_conversation({"text": "hi"})
    assert retraining_data.normalize_conversation({"conversations": [{"from": "human", "value": "a"},
                                                           {"from": "gpt", "value": "b"}]}) == \
        [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]


def test_steps_for_budget():
    assert adapt.steps_for_budget(3e9, batch_size=64, seq_len=4096, grad_accum=4) == 2861
    assert adapt.steps_for_budget(10, 8, 128) == 1
    with pytest.raises(ValueError, match="token_budget must be positive"):
        adapt.steps_for_budget(0, 8, 128)


def test_sample_texts_is_seeded(stories_dir, tok):
    model = load_pretrained(stories_dir)
    a = retraining_data.sample_texts(model, tok, 3, 20, batch_size=2, seed=1)
    b = retraining_data.sample_texts(model, tok, 3, 20, batch_size=2, seed=1)
    assert a == b and len(a) == 3 and all(isinstance(t, str) and t for t in a)
    assert retraining_data.sample_texts(model, tok, 3, 20, batch_size=2, seed=2) != a


@pytest.fixture(scope="module")
def adapted(stories_dir, tok, tmp_path_factory):
    out = tmp_path_factory.mktemp("adapt")
    source = load_pretrained(stories_dir)
    train = pack(retraining_data.sample_texts(source, tok, 16, 64, batch_size=16), tok, 32)
    val = pack(retraining_data.sample_texts(source, tok, 4, 64, batch_size=4, seed=99), tok, 32)
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
    assert logged[0]["ppl"] == pytest.approx(evaluation.perplexity(converted, val), rel=1e-6)
    final = load_pretrained(result["checkpoint"])
    assert logged[-1]["ppl"] == pytest.approx(evaluation.perplexity(final, val), rel=1e-5)
    assert logged[-1]["ppl"] < logged[0]["ppl"]  # retraining on the source's own text helps
    with pytest.raises(ValueError, match="needs val_blocks or start_ppl"):
        adapt.quality_curve(out, stories_dir, 3)


def test_evaluate_checkpoint_rewires_on_load(stories_dir, tok):
    val = pack([open(stories_dir / "config.json").read()] * 4, tok, 32)  # any text will do
    src = adapt.evaluate_checkpoint(stories_dir, {"test": val})
    conv = adapt.evaluate_checkpoint(stories_dir, {"test": val}, wiring="hybrid", ladder_layers=4)
    assert src["tasks"] == {} and src["sets"]["test"]["ppl"] != conv["sets"]["test"]["ppl"]
    s = src["sets"]["test"]
    assert len(s["losses"]) == len(s["tokens"]) == len(val)
    assert s["ppl"] == pytest.approx(math.exp(sum(s["losses"]) / sum(s["tokens"])))
    assert s["ppl"] == pytest.approx(evaluation.perplexity(load_pretrained(stories_dir), val), rel=1e-6)


def test_table_columns_keep_perplexity_as_it_is_and_accuracy_in_percent():
    cols = adapt._flatten({"tasks": {"wikitext": {"word_perplexity,none": 23.5}, "piqa": {"acc,none": 0.625},
                                     "other": {"word_perplexity,none": 40.0}, "empty": {}}})
    assert cols["wikitext"] == 23.5 and cols["other"] == 40.0  # a perplexity is not a share
    assert cols["piqa"] == pytest.approx(62.5) and cols["empty"] is None


def test_primary_metric():
    assert evaluation.primary_metric({"acc,none": 0.5, "acc_norm,none": 0.6, "acc_stderr,none": 0.1}) == 0.6
    assert evaluation.primary_metric({"exact_match,strict-match": 0.3}) == 0.3
    assert evaluation.primary_metric({"alias": "x", "n": 5}) is None
    assert evaluation.primary_metric({"acc": 0.5, "acc_norm": 0.6}, "mmlu") == 0.5


@pytest.mark.parametrize("trainable_layers", [None, 2])
def test_adapt_on_two_torchrun_processes_with_fsdp_equals_one_process(stories_dir, tok, tmp_path, trainable_layers):
    """adapt(nproc=2, fsdp=True): torchrun, sharded retraining, gathered export == one process with 2
    accumulated micro-batches (the gpu profile's path for Llama-3.1-8B, here on CPU over gloo); also with
    only the top layers trained (frozen parameters inside FSDP's units)."""
    source = load_pretrained(stories_dir)
    train = pack(retraining_data.sample_texts(source, tok, 16, 64, batch_size=16), tok, 32)
    val = pack(retraining_data.sample_texts(source, tok, 4, 64, batch_size=4, seed=99), tok, 32)
    kw = dict(token_budget=8 * 32 * 3, tokenizer=tok, batch_size=4, lr=1e-3, n_points=1, progress=False,
              trainable_layers=trainable_layers)
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
    """The paper-scale profile names lm-eval's own tasks (no local stand-ins); a typo would only fail on the GPU node.

    lm-eval itself decides what is a task, group or tag, but indexing all of its ~10k task files takes ~70 s: it
    indexes only the folders whose YAML files mention one of the names (a name that no file mentions is missing
    all the same)."""
    import re

    import lm_eval.tasks
    import yaml
    from lm_eval.tasks import TaskManager
    from ladder.pipeline import PROFILES_DIR
    tasks = yaml.safe_load((PROFILES_DIR / "gpu" / "04_llama_adaptation.yaml").read_text())["tasks"]
    names = [re.compile(rf"(?<![\w-]){re.escape(t)}(?![\w-])") for t in tasks]
    folders = {str(p.parent) for p in Path(lm_eval.tasks.__file__).parent.rglob("*.yaml")
               if any(n.search(p.read_text(errors="ignore")) for n in names)}
    known = TaskManager(include_defaults=False, include_path=sorted(folders)).all_tasks
    missing = [t for t in tasks if t not in known]
    assert tasks and not missing


def test_instruct_retraining_data_from_a_local_conversation_file(chat_tok, tmp_path):
    import json
    rows = [{"conversations": [{"from": "human", "value": f"Question {i}?"},
                               {"from": "gpt", "value": f"Answer number {i} is here."}]} for i in range(40)]
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = retraining_data.retraining_data("unused", chat_tok, kind="instruct", seq_len=32, corpus_tokens=512 * 30,
                                 eval_tokens=512 * 5, instruct_data=str(path))
    assert "30 " in data.note and "10 conversations before them (5 selection, 5 test)" in data.note
    assert data.train.loss_mask is not None and data.select.loss_mask is not None and data.real is None
    select, test = (chat_tok.decode(b.tokens.flatten()) for b in (data.select, data.test))
    assert "Answer number 4 " in select and "Answer number 5 " not in select  # first 5: selection
    assert "Answer number 5 " in test and "Answer number 9 " in test and "Answer number 10 " not in test
    train = chat_tok.decode(data.train.tokens.flatten())
    assert "Answer number 10 " in train and "Answer number 9 " not in train
    with pytest.raises(ValueError, match="too few"):
        retraining_data.retraining_data("unused", chat_tok, kind="instruct", seq_len=32, corpus_tokens=512 * 100,
                              eval_tokens=512 * 20, instruct_data=str(path))


def test_self_distilled_sets_share_no_sample(stories_dir, tok):
    data = retraining_data.retraining_data(stories_dir, tok, kind="self", seq_len=32, corpus_tokens=31 * 24, eval_tokens=31 * 8)
    rows = {name: {tuple(r) for r in getattr(data, name).tokens.tolist()} for name in ("train", "select", "test")}
    assert min(len(r) for r in rows.values()) >= 5
    assert not (rows["train"] & rows["select"]) and not (rows["train"] & rows["test"]) and not (rows["select"] & rows["test"])
    assert data.real is not None and "tinystories_sample" in data.note


def test_retraining_only_the_top_layers_leaves_the_rest_untouched(stories_dir, tok, tmp_path):
    source = load_pretrained(stories_dir)
    train = pack(retraining_data.sample_texts(source, tok, 16, 64, batch_size=16), tok, 32)
    model = load_pretrained(stories_dir, wiring="hybrid", ladder_layers=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    adapt.retrain(model, train, None, 4 * 32 * 3, tmp_path, batch_size=4, lr=1e-2, n_points=1, progress=False,
                  trainable_layers=2)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(("layers.3.", "layers.4.")) for k in changed)
    assert {k.split(".")[1] for k in changed} == {"3", "4"} and any("mlp" in k for k in changed)
    with pytest.raises(ValueError, match="trainable_layers=6: the model has 5 layers"):
        adapt.freeze_below(model, 6)


def test_recipes_are_the_grid_of_what_is_explored():
    assert adapt.recipes(1e-3) == [{"lr": 1e-3, "train": "all"}]
    grid = adapt.recipes(1e-3, {"lr": [1e-3, 3e-3], "train": ["all", "converted"]})
    assert len(grid) == 4 and {"lr": 3e-3, "train": "converted"} in grid
    assert adapt.recipes(5e-4, {"train": ["converted"]}) == [{"lr": 5e-4, "train": "converted"}]
    with pytest.raises(ValueError, match="unknown recipe keys \\['batch'\\]"):
        adapt.recipes(1e-3, {"batch": [8]})
    with pytest.raises(ValueError, match="train must be one of"):
        adapt.recipes(1e-3, {"train": ["lower"]})


def test_run_adaptation_chooses_on_the_selection_set_and_judges_on_the_test_set(tmp_path):
    from ladder import claims
    kw = dict(fractions=[0.5], retrain_tokens=16 * 32 * 3, corpus_tokens=16 * 31 * 3, eval_tokens=31 * 16,
              seq_len=32, batch_size=16, n_points=3, control=True)
    res = adapt.run_adaptation("stories260K", tmp_path, explore={"lr": [1e-3, 3e-2]}, **kw)
    assert [s["name"] for s in res["study"]] == ["lr 0.001, train all", "lr 0.03, train all"]
    best = min(res["study"], key=lambda s: s["select_loss"])
    assert res["recipe"] == best["recipe"]
    rows = {r["variant"]: r for r in res["rows"]}
    assert list(rows) == ["source", "source, retrained (control)", "Hybrid-3L, no retraining", "Hybrid-3L, retrained"]
    assert rows["source, retrained (control)"]["recipe"] == best["name"] == rows["Hybrid-3L, retrained"]["recipe"]
    # the chosen run is the one reported: its selection loss is the retrained row's
    assert math.log(rows["Hybrid-3L, retrained"]["ppl"]) == pytest.approx(best["select_loss"])
    assert res["curves"][3][0]["ppl"] == rows["Hybrid-3L, no retraining"]["ppl"] and len(best["curve"]) == 4
    # a cheaper search budget: every recipe for 2 steps, then the winner (and the control) for the full 3
    cheap = adapt.run_adaptation("stories260K", tmp_path, explore={"lr": [1e-3, 3e-2], "tokens": 16 * 32 * 2}, **kw)
    assert [s["tokens"] for s in cheap["study"]] == [16 * 32 * 2] * 2
    assert {r["retrain_tokens"] for r in cheap["rows"] if r["variant"] != "source"} - {0} == {16 * 32 * 3}
    assert len(cheap["curves"][3]) == 4  # the full run's curve, not the search run's
    # re-executed with the same parameters: every run is reused (nothing retrained), the numbers identical
    again = adapt.run_adaptation("stories260K", tmp_path, explore={"lr": [1e-3, 3e-2]}, **kw)
    assert all(s.get("reused") for s in again["train_summaries"].values())
    assert [r["test_ppl"] for r in again["rows"]] == pytest.approx([r["test_ppl"] for r in res["rows"]], rel=1e-6)
    entry = adapt.recovery_entry(res)
    n = len(rows["source"]["test_losses"])
    assert entry["n_sequences"] == n >= 10 and res["params"] == 260_032 == entry["params"]
    gap = (sum(rows["Hybrid-3L, retrained"]["test_losses"]) - sum(rows["source, retrained (control)"]["test_losses"])) \
        / sum(rows["source"]["test_tokens"])
    assert entry["gap_to_control"] == pytest.approx(gap)
    lo, hi = entry["ci"]["gap_to_control"]
    assert lo <= gap <= hi and hi - lo > 0
    assert entry["drop"] > 0.1  # converting 3 of 5 layers costs stories260K a lot
    verdict, why = claims.judge("H7", entry, {r["id"]: r["thresholds"] for r in claims.paper_claims()}["H7"])
    assert verdict in claims.VERDICTS and why



def test_killed_retraining_resumes_from_its_last_checkpoint(stories_dir, tok, tmp_path, monkeypatch):
    """retrain() checkpoints at every evaluation point (keeping only the newest), so a killed run resumes."""
    import ladder.train
    source = load_pretrained(stories_dir)
    train = pack(retraining_data.sample_texts(source, tok, 16, 64, batch_size=16), tok, 32)
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


def test_recovery_is_the_share_of_the_conversion_cost_in_nats():
    e = math.e
    rows = [{"variant": "source", "ladder_layers": 0, "retrain_tokens": 0, "test_ppl": e ** 2.0},
            {"variant": "source, retrained (control)", "ladder_layers": 0, "retrain_tokens": 9, "test_ppl": e ** 1.9},
            {"variant": "Hybrid-3L, no retraining", "ladder_layers": 3, "retrain_tokens": 0, "test_ppl": e ** 2.5},
            {"variant": "Hybrid-3L, retrained", "ladder_layers": 3, "retrain_tokens": 9, "test_ppl": e ** 2.1}]
    r = adapt.recovery(rows)[3]
    assert r["recovered"] == pytest.approx(0.4 / 0.5)          # towards the source (2.0 nats)
    assert r["recovered_vs_control"] == pytest.approx(0.4 / 0.6)  # towards the control (1.9 nats)
    assert r["control"] == pytest.approx(e ** 1.9)
