"""Llama adaptation (issue 5): chat data with response-only loss, token budgets, the convert -> retrain ->
export path on stories260K, and the quality-vs-tokens curve."""

import json
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
    assert torch.equal(from_list.doc, from_dataset.doc)
    lengths = [len(retraining_data.chat_example(retraining_data.normalize_conversation(r), chat_tok)[0]) for r in rows]
    owner = [d for d, n in enumerate(lengths) for _ in range(n)]
    assert from_list.doc.tolist() == [owner[i * 17] for i in range(len(from_list))]  # the conversation it starts in
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
    assert s["docs"] == val.doc.tolist() and len(set(s["docs"])) == 4  # each block's document, for the bootstrap
    assert adapt._flatten(src)["test_docs"] == s["docs"]


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
    assert data.test.doc is not None and data.test.doc.max() == 4  # the 5 test conversations
    with pytest.raises(ValueError, match="too few"):
        retraining_data.retraining_data("unused", chat_tok, kind="instruct", seq_len=32, corpus_tokens=512 * 100,
                              eval_tokens=512 * 20, instruct_data=str(path))
    # a cache saved before blocks knew their documents is rebuilt, to the same tokens
    kw = dict(kind="instruct", seq_len=32, corpus_tokens=512 * 30, eval_tokens=512 * 5, instruct_data=str(path),
              cache_dir=tmp_path / "cache")
    retraining_data.retraining_data("unused", chat_tok, **kw)
    old = torch.load(tmp_path / "cache" / "test.pt", weights_only=True)  # one set without documents is enough
    torch.save({"tokens": old["tokens"], "loss_mask": old["loss_mask"]}, tmp_path / "cache" / "test.pt")
    assert retraining_data._load_data(tmp_path / "cache").test.doc is None
    rebuilt = retraining_data.retraining_data("unused", chat_tok, **kw)
    assert torch.equal(rebuilt.test.doc, data.test.doc) and torch.equal(rebuilt.test.tokens, data.test.tokens)
    assert retraining_data._load_data(tmp_path / "cache").test.doc is not None


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
    assert res["reuse"] is None and again["reuse"].startswith("3 of 3 runs reused")  # 2 recipes + the control
    assert [r["test_ppl"] for r in again["rows"]] == pytest.approx([r["test_ppl"] for r in res["rows"]], rel=1e-6)
    # the converted checkpoints' tokenizer: the source's, without a flag of how this machine loaded it
    saved = [json.loads(p.read_text()) for p in tmp_path.rglob("hybrid*_converted/tokenizer_config.json")]
    assert saved and all(not {"is_local", "local_files_only"} & set(c) for c in saved)
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


# ------------------------------------------------------------------------------- the chapter's functions
# Hand-made results in run_adaptation's shape (no training): four test sequences of 10 tokens; losses per
# token 2.0 (source), 1.8 (control), 3.0 (converted), 1.9 (retrained); the selection-set "ppl" beside them.
def _row(variant, n, tokens, losses, select_loss, real=None, **more):
    return {"model": "stories260K", "variant": variant, "ladder_layers": n, "retrain_tokens": tokens,
            "test_losses": losses, "test_tokens": [10] * 4, "test_ppl": math.exp(sum(losses) / 40),
            "ppl": math.exp(select_loss), "real_ppl": real, **more}


def chapter_result(control=True, model="stories260K", searched=True):
    rows = [_row("source", 0, 0, [20.0, 21.0, 19.0, 20.0], 2.0, real=7.0, arc_challenge=25.0),
            _row("Hybrid-3L, no retraining", 3, 0, [30.0, 31.0, 29.0, 30.0], 3.0, real=30.0, arc_challenge=20.0),
            _row("Hybrid-3L, retrained", 3, 100, [19.0, 20.0, 18.0, 19.0], 2.2, real=9.0, arc_challenge=30.0)]
    if control:
        rows.insert(1, _row("source, retrained (control)", 0, 100, [18.0, 19.0, 17.0, 18.0], 1.9, real=8.0,
                            arc_challenge=None))
    for r in rows:
        r["model"] = model
    best, other = {"lr": 1e-3, "train": "all"}, {"lr": 1e-3, "train": "converted"}
    study = [{"recipe": best, "name": adapt.recipe_name(best), "tokens": 100, "select_loss": 2.2,
              "curve": [{"tokens": 0, "ppl": math.exp(3.0)}, {"tokens": 100, "ppl": math.exp(2.2)}]}]
    if searched:
        study.append({"recipe": other, "name": adapt.recipe_name(other), "tokens": 100, "select_loss": 2.6,
                      "curve": [{"tokens": 0, "ppl": math.exp(3.0)}, {"tokens": 100, "ppl": math.exp(2.6)}]})
    return {"model": model, "path": "/nowhere", "n_layers": 5, "params": 260_032, "ladder_layers": [3],
            "data": "text; more", "rows": rows, "recipe": best, "study": study,
            "curves": {3: [{"tokens": 0, "ppl": math.exp(3.0)}, {"tokens": 2000, "ppl": math.exp(2.2)}]},
            "checkpoints": {"source": "/nowhere", "hybrid3": "/ckpt/h3"}, "train_summaries": {3: {"tokens": 100}}}


def _speed_row(model, link, n, speedup, step_ms=12.0, lo=None, hi=None):
    return {"model": model, "link": link, "tp": 2, "ladder_layers": n, "standard_tokens_per_s": 100.0,
            "hybrid_tokens_per_s": 100.0 * speedup, "speedup": speedup,
            "speedup_ci": [lo or speedup - 0.05, hi or speedup + 0.05], "step_ms": step_ms, "samples": 5}


def test_per_model_takes_a_models_own_value_or_the_first():
    assert adapt.per_model(3, "a") == 3 and adapt.per_model([1, 2], "a") == [1, 2]
    assert adapt.per_model({"a": 1, "b": 2}, "b") == 2
    assert adapt.per_model({"a": 1, "b": 2}, "c") == 1


def test_run_models_passes_each_model_its_own_parameters_and_skips_missing_ones(monkeypatch, capsys):
    calls = []

    def fake(name, work, **kw):
        calls.append((name, work, kw))
        return None if name == "missing" else {"model": name, "n_layers": 5, "ladder_layers": [3], "data": "d"}
    monkeypatch.setattr(adapt, "run_adaptation", fake)
    res = adapt.run_models(["a", "missing", "b"], "w", explore={"b": {"lr": [1]}}, nproc=2, lr={"a": 0.1, "b": 0.2},
                           retrain_tokens={"b": 7, "a": 9}, control=True, corpus_tokens=5, tasks=["x"], seq_len=8)
    assert [r["model"] for r in res] == ["a", "b"] and all(r["seconds"] >= 0 for r in res)
    a, missing, b = (kw for _, _, kw in calls)
    assert [c[:2] for c in calls] == [("a", "w"), ("missing", "w"), ("b", "w")]
    assert (a["lr"], a["retrain_tokens"], a["explore"], b["lr"], b["retrain_tokens"], b["explore"]) == \
        (0.1, 9, None, 0.2, 7, {"lr": [1]})
    assert missing["lr"] == 0.1  # a model not named gets the first value
    assert a["tasks"] == ["x"] and a["seq_len"] == 8 and a["corpus_tokens"] == 5 and a["control"] is True
    assert a["nproc"] == 2 and a["progress"] is True
    assert "a: 5 layers, converted [3]" in capsys.readouterr().out
    monkeypatch.setattr(adapt, "run_adaptation", lambda name, work, **kw: None)
    with pytest.raises(RuntimeError, match=r"none of the models \['x'\] could be loaded"):
        adapt.run_models(["x"], "w")


def test_setup_chapter_resolves_the_device_and_sets_threads():
    before = torch.get_num_threads()
    try:
        assert adapt.setup_chapter(1, "cpu") == "cpu" and torch.get_num_threads() == 1
        assert adapt.setup_chapter(1, "auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    finally:
        torch.set_num_threads(before)


def test_adaptation_table_has_one_row_per_variant_with_short_labels_and_the_papers_row():
    table = adapt.adaptation_table([chapter_result()])
    assert list(table.index) == [("stories260K", v) for v in ("source", "source, retrained (control)",
                                                              "Hybrid-3L, no retraining", "Hybrid-3L, retrained")]
    assert list(table.columns) == [("paper's row", ""), ("perplexity", "test"), ("perplexity", "real text"),
                                   ("ARC-C (%)", "ours"), ("ARC-C (%)", "paper"), ("avg (%)", "ours"),
                                   ("avg (%)", "paper")]
    src = table.loc[("stories260K", "source")]
    assert src[("paper's row", "")] == "Llama-3.1-8B-Instruct" and src[("avg (%)", "paper")] == pytest.approx(56.11)
    assert src[("perplexity", "test")] == pytest.approx(math.exp(2.0)) and src[("perplexity", "real text")] == 7.0
    assert table.loc[("stories260K", "Hybrid-3L, retrained"), ("paper's row", "")] == "Hybrid-16L, retrained"
    assert pd_isna(table.loc[("stories260K", "source, retrained (control)"), ("paper's row", "")])
    # the joined labels of comparison_table are unchanged
    joined = adapt.comparison_table(chapter_result()["rows"])
    assert joined.index[0] == "stories260K: source  [paper: Llama-3.1-8B-Instruct]"


def test_recovery_table_gives_the_share_recovered_in_percent():
    t = adapt.recovery_table([chapter_result(), chapter_result(control=False, model="b")])
    assert list(t["model"]) == ["stories260K", "b"] and list(t["converted layers"]) == ["last 3 of 5"] * 2
    assert t["recovered vs source (%)"][0] == pytest.approx(100 * 1.1 / 1.0)
    assert t["recovered vs control (%)"][0] == pytest.approx(100 * 1.1 / 1.2)
    assert t["control ppl"][0] == pytest.approx(math.exp(1.8)) and pd_isna(t["recovered vs control (%)"][1])


def pd_isna(v):
    import pandas as pd
    return pd.isna(v)


def test_recovery_curve_and_its_figure():
    res = [chapter_result(), chapter_result(control=False, model="b")]
    curve = adapt.recovery_curve(res)
    assert list(curve["k tokens"]) == [0, 2, 0, 2] and set(curve["converted"]) == {"upper half"}
    assert curve["ppl"][1] == pytest.approx(math.exp(2.2)) and curve["layers"][0] == "last 3 of 5"
    fig = adapt.plot_recovery(res)
    a, b = fig.axes[:2]
    assert [line.get_label() for line in a.get_legend().get_lines()] == ["source", "source, retrained"]
    assert [line.get_label() for line in b.get_legend().get_lines()] == ["source"]  # no control, no dashed line
    assert a.get_ylabel() == "selection-set perplexity" and "last 3 of 5" in a.get_title()


def test_recipe_study_compares_recipes_on_the_selection_set():
    res = [chapter_result(), chapter_result(model="b", searched=False)]
    (study,) = adapt.recipe_study(res)  # "b" tried one recipe: nothing to compare
    t = study["table"]
    assert list(t["recipe"]) == ["lr 0.001, train all", "lr 0.001, train converted"]
    assert list(t["chosen"]) == ["✓", ""]
    # converted 3.0 nats on the selection set, control 1.9: the chosen recipe's 2.2 recovers 0.8 of 1.1
    assert t["recovered (%)"][0] == pytest.approx(100 * 0.8 / 1.1)
    assert t["recovered (%)"][1] == pytest.approx(100 * 0.4 / 1.1)
    assert "last 3 of 5 converted, 100 retraining tokens" in study["caption"]
    assert "against the source, retrained (control)" in study["caption"]
    assert "against the source (" in adapt.recipe_study([chapter_result(control=False)])[0]["caption"]
    pts = adapt.recipe_curves(res)
    assert len(pts) == 4 and set(pts["model"]) == {"stories260K"} and pts["loss"].iloc[-1] == pytest.approx(2.6)
    assert adapt.plot_recipes(res).axes[0].get_ylabel() == "selection-set loss (nats)"
    assert adapt.plot_recipes([chapter_result(searched=False)]) is None


def test_gpu_speed_commands_name_every_checkpoint():
    cmds = adapt.gpu_speed_commands([chapter_result()])
    assert len(cmds) == 2 and cmds[0].endswith("--checkpoint /nowhere --wiring standard --out speed.jsonl")
    assert "--checkpoint /ckpt/h3 --wiring hybrid --ladder-layers 3" in cmds[1]
    assert all(c.startswith("torchrun --nproc-per-node 8 -m ladder.bench") for c in cmds)


def test_measure_hybrid_speed_runs_the_configurations_and_labels_the_h8_entries(stories_dir, monkeypatch):
    """bench.run_local faked: a hybrid is 1.2x its source on every link; the virtual shape 1.5x."""
    from ladder import bench
    seen = []

    def fake_run_local(cfgs, progress=True, interleave=False, **kw):
        seen.append((cfgs, interleave))
        gain = 1.5 if cfgs[0].ranks == "virtual" else 1.2
        return [{"wiring": c.wiring, "link": {"name": c.link} if c.link else None, "tp": c.tp,
                 "ladder_layers": c.ladder_layers, "n_layers": c.model_config().n_layers, "dim": c.model_config().dim,
                 "tokens_per_s": 100.0 * (gain if c.wiring == "hybrid" else 1.0), "decode_s_per_token": 0.01,
                 "samples_tokens_per_s": [100.0 * (gain if c.wiring == "hybrid" else 1.0)] * 3,
                 "samples_decode_s": [0.03 / (gain if c.wiring == "hybrid" else 1.0)] * 3,  # 3 decode steps
                 "samples_decode_wait_s": [0.0 if c.wiring == "hybrid" else 0.01] * 3} for c in cfgs]
    monkeypatch.setattr(bench, "run_local", fake_run_local)
    from ladder import replay
    monkeypatch.setattr(replay, "regime_ratio", lambda name: {"paper, NVLink": 0.43}[name])
    first = {**chapter_result(), "path": str(stories_dir), "ladder_layers": [3, 4],
             "checkpoints": {"hybrid3": str(stories_dir), "hybrid4": str(stories_dir)}}
    other = {**chapter_result(model="other"), "path": str(stories_dir), "checkpoints": {"hybrid3": str(stories_dir)}}
    virtual = {"preset": "tiny", "overrides": {"n_layers": 4}, "ladder_layers": 2, "regime": "paper, NVLink"}
    rows, entries = adapt.measure_hybrid_speed([first, other], tp=2, links=["none", "pcie5-nop2p"], samples=3,
                                               prompt_len=8, new_tokens=4, virtual=virtual)
    assert all(inter for _, inter in seen) and len(seen) == 3
    assert [(c.wiring, c.ladder_layers, c.link) for c in seen[0][0]] == [
        ("standard", 0, None), ("hybrid", 3, None), ("hybrid", 4, None),
        ("standard", 0, "pcie5-nop2p"), ("hybrid", 3, "pcie5-nop2p"), ("hybrid", 4, "pcie5-nop2p")]
    assert [(r["model"], r["link"], r["ladder_layers"]) for r in rows] == [
        ("stories260K", "none (measured gloo)", 3), ("stories260K", "none (measured gloo)", 4),
        ("stories260K", "pcie5-nop2p", 3), ("stories260K", "pcie5-nop2p", 4), ("other", "none (measured gloo)", 3),
        ("other", "pcie5-nop2p", 3), ("tiny 4L d64 (virtual ranks, paper, NVLink)", rows[-1]["link"], 2)]
    assert [r["speedup"] for r in rows] == pytest.approx([1.2] * 6 + [1.5])
    # the virtual shape: its link set to the regime's a/c of module times measured here, on the virtual clock
    v_cfgs = seen[-1][0]
    assert [(c.wiring, c.ranks, c.clock, c.link) for c in v_cfgs] == [
        ("standard", "virtual", "virtual", rows[-1]["link"]), ("hybrid", "virtual", "virtual", rows[-1]["link"])]
    assert rows[-1]["link"].startswith("custom:") and rows[-1]["a/c"] == 0.43 and rows[-1]["hidden"] == 1.0
    assert rows[-1]["hidden_ci"] == [1.0, 1.0]  # replay.hidden_share: every round hid all of standard's wait
    assert list(adapt.speed_table(rows)["link"])[-2:] == ["pcie5-nop2p", "a/c = 0.43 (virtual clock)"]
    assert rows[-1]["measure"] == "decode step" and rows[-1]["replay_error"] == pytest.approx(1.5 / rows[-1]["replay_speedup"] - 1)
    # H8: the first model at its smallest converted depth on every link (real processes) and the virtual shape
    # (emulated link); not its larger depth, not "other"
    assert [(e.subject, e.evidence, e["link"], e["ladder_layers"]) for e in entries] == [
        ("stories260K", "cpu-real-processes", "none (measured gloo)", 3),
        ("stories260K", "cpu-real-processes", "pcie5-nop2p", 3),
        ("tiny 4L d64 (virtual ranks, paper, NVLink)", "cpu-emulated-link", rows[-1]["link"], 2)]
    assert "stories260K hybrid with 3 converted layers vs its source" in entries[0].ours
    assert "tiny 4L d64 (virtual ranks, paper, NVLink): hybrid with 2 ladder layers vs standard" in entries[2].ours
    assert entries[2].speedup == pytest.approx(1.5) and entries[0].step_ms == pytest.approx(10.0)
    assert entries[2].link_ratio == 0.43 and entries[2].replay_error == pytest.approx(rows[-1]["replay_error"])
    assert entries[0].link_ratio is None  # real processes: no regime
    with pytest.raises(ValueError, match="needs a 'regime'"):
        adapt.measure_hybrid_speed([first], links=["none"], virtual={"preset": "tiny", "ladder_layers": 2, "link": "x"})
    rows, entries = adapt.measure_hybrid_speed([first], links=["pcie5-nop2p"], samples=3)  # no virtual shape
    assert len(rows) == 2 and len(entries) == 1


def test_measure_hybrid_speed_on_a_gpu_prints_the_commands(capsys, monkeypatch):
    from ladder import bench
    monkeypatch.setattr(bench, "run_local", lambda *a, **k: pytest.fail("nothing runs off the CPU"))
    assert adapt.measure_hybrid_speed([chapter_result()], device="cuda") == ([], [])
    out = capsys.readouterr().out
    assert "--checkpoint /ckpt/h3 --wiring hybrid" in out and "run the printed commands on the GPU node" in out


def test_speed_table_and_chart():
    rows = [_speed_row("stories260K", "none (measured gloo)", 3, 0.9, lo=0.8, hi=1.1),
            _speed_row("stories260K", "pcie5-nop2p", 3, 1.1), _speed_row("tiny (virtual ranks)", "pcie5-nop2p", 2, 1.3)]
    t = adapt.speed_table(rows)
    assert list(t.columns) == ["model", "link", "converted layers", "source (tokens/s)", "hybrid (tokens/s)",
                               "speed-up (×)", "ratio of", "95% CI (×)", "replay (×)", "decode step (ms)", "runs"]
    assert list(t["ratio of"]) == ["tokens/s"] * 3 and list(t["replay (×)"]) == ["–"] * 3
    t1 = adapt.speed_table([{**rows[0], "measure": "decode step", "replay_speedup": 1.234}])
    assert t1["ratio of"][0] == "decode step" and t1["replay (×)"][0] == "1.23"
    assert t["95% CI (×)"][0] == "0.80–1.10" and t["hybrid (tokens/s)"][1] == pytest.approx(110.0)
    fig = adapt.plot_speed(rows, tp=2)
    ax = fig.axes[0]
    colours = [tuple(p.get_facecolor()) for p in ax.patches]
    assert len(colours) == 3 and len(set(colours)) == 3  # each (model, link) its own colour
    assert "TP = 2" in ax.get_xlabel() and "95% CI" in ax.get_title()
    assert [t.get_text() for t in ax.get_yticklabels()][0] == "stories260K\nnone (measured gloo), 3 converted"
    same = adapt.plot_speed(rows[:1] * 2, tp=2).axes[0].patches
    assert same[0].get_facecolor() == same[1].get_facecolor()


def test_chapter_claims_values_and_lines():
    from ladder import claims as rules
    thr = {r["id"]: r["thresholds"] for r in rules.paper_claims()}
    res = [chapter_result(), chapter_result(model="b")]
    h8 = [sp_entry("stories260K", 1.1, 12.0, "processes"), sp_entry("stories260K", 1.2, 14.0, "processes"),
          sp_entry("tiny (virtual ranks)", 1.3, 90.0, "virtual")]
    claims = adapt.chapter_claims(res, h8)
    assert [e.subject for e in claims["H7"]] == ["stories260K", "b"] and claims["H8"] == h8
    assert "H8" not in adapt.chapter_claims(res, [])
    v = adapt.chapter_values(res, claims)
    assert v["adapt_model"] == "stories260K" and (v["adapt_n_layers"], v["adapt_half"], v["adapt_large"]) == (5, 3, 3)
    assert v["adapt_ppl_source"] == pytest.approx(math.exp(2.0)) and v["adapt_ppl_control"] == pytest.approx(math.exp(1.8))
    assert v["adapt_ppl_converted"] == pytest.approx(math.exp(3.0)) and v["adapt_ppl_retrained"] == pytest.approx(math.exp(1.9))
    assert v["adapt_recovered"] == pytest.approx(100 * 1.1 / 1.2) == v["adapt_recovered_large"]
    assert v["adapt_reference"] == "control" and v["adapt_tokens"] == 100 and v["adapt_recipes_tried"] == 2
    assert v["adapt_recipe"] == "lr 0.001, train all" and v["adapt_drop"] == pytest.approx(1.2)
    assert (v["adapt_real_source"], v["adapt_real_control"], v["adapt_real_retrained"]) == (7.0, 8.0, 9.0)
    assert v["h7_gap_source"] == pytest.approx(-0.1) and v["h7_gap_control"] == pytest.approx(0.1)
    assert (v["h7_verdict"], v["h7_reason"]) == rules.judge("H7", claims["H7"][0], thr["H7"])
    assert v["adapt_step_ms"] == "12.0 to 14.0 ms" and v["adapt_speedup"] == pytest.approx(1.3)
    lines = adapt.claim_lines(claims).splitlines()
    assert len(lines) == 5 and lines[0].startswith(f"H7 {v['h7_verdict']} ") and " | stories260K, last 3" in lines[0]
    assert lines[2].startswith("H8 ") and lines[2].endswith(h8[0].ours)
    # without a control or a speed measurement: NaN, "(not measured)", no speed-up
    alone = adapt.chapter_values([chapter_result(control=False)], adapt.chapter_claims([chapter_result(control=False)]))
    assert math.isnan(alone["adapt_ppl_control"]) and math.isnan(alone["h7_gap_control"])
    assert math.isnan(alone["adapt_real_control"]) and alone["adapt_reference"] == "source"
    assert alone["adapt_recovered"] == pytest.approx(100 * 1.1 / 1.0)
    assert alone["adapt_step_ms"] == "(not measured)" and "adapt_speedup" not in alone
    only_real = adapt.chapter_values(res, adapt.chapter_claims(res, h8[:2]))
    assert only_real["adapt_speedup"] == pytest.approx(1.1)  # no emulated-link entry: the first


def sp_entry(model, speedup, step_ms, ranks):
    from ladder import speedup as sp
    return sp.hybrid_entry(_speed_row(model, "pcie5-nop2p", 3, speedup, step_ms), ranks=ranks, batch=1, what="x")


def test_every_glued_name_of_the_chapter_text_is_a_chapter_value():
    import json
    import re
    from ladder.provenance import REPO_ROOT
    cells = json.loads((REPO_ROOT / "notebooks" / "04_llama_adaptation.ipynb").read_text())["cells"]
    text = "".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    cited = set(re.findall(r"\{glue:text\}`([a-z0-9_]+)", text))
    res = [chapter_result()]
    values = adapt.chapter_values(res, adapt.chapter_claims(res, [sp_entry("stories260K", 1.1, 12.0, "processes")]))
    assert cited and cited <= set(values), sorted(cited - set(values))


def test_write_chapter_result_records_claims_recovery_speed_and_parameters(tmp_path):
    import json
    res = [chapter_result()]
    speed = [_speed_row("stories260K", "pcie5-nop2p", 3, 1.1)]
    claims = adapt.chapter_claims(res, [sp_entry("stories260K", 1.1, 12.0, "processes")])
    out = adapt.write_chapter_result(tmp_path / "r" / "adaptation.json", res, claims, speed, {"models": ["x"]}, 12.5)
    d = json.loads(out.read_text())
    assert d["experiment"] == "llama_adaptation" and d["seconds"] == 12.5 and d["speed"] == speed
    assert set(d["claims"]) == {"H7", "H8"} and d["claims"]["H7"][0]["subject"] == "stories260K"
    assert d["recovery"]["stories260K"]["3"]["recovered_vs_control"] == pytest.approx(1.1 / 1.2)
    assert d["results"][0]["rows"][0]["variant"] == "source" and d["provenance"]["params"]["models"] == ["x"]
    assert "H8" not in json.loads(adapt.write_chapter_result(tmp_path / "a.json", res, adapt.chapter_claims(res), [],
                                                             {}, 1.0).read_text())["claims"]


def test_run_folder_keys_the_process_count_only_above_one():
    from ladder.paths import run_key
    parts = ("stories260K", "self", 16384, 8192, 128, 0, 8, 1, 4, None)
    one = adapt.run_folder(*parts)
    assert one == f"stories260K-{run_key(*parts)}"  # the key one-process runs always had: finished runs reused
    assert adapt.run_folder(*parts, nproc=1) == one
    two = adapt.run_folder(*parts, nproc=2)
    assert two != one and two.startswith("stories260K-") and two != adapt.run_folder(*parts, nproc=4)


def test_run_folder_keys_the_held_out_version_only_above_one():
    from ladder.paths import run_key
    parts = ("stories260K", "self", 16384, 8192, 128, 0, 8, 1, 4, None)
    one = adapt.run_folder(*parts)
    assert adapt.run_folder(*parts, held_out_version=1) == one == f"stories260K-{run_key(*parts)}"
    two = adapt.run_folder(*parts, held_out_version=2)
    assert two != one and two != adapt.run_folder(*parts, nproc=2, held_out_version=2)
    # the kinds' versions: text's held-out sets were rebuilt (v2); the others keep the folders they had
    assert retraining_data.HELD_OUT_VERSION == {"self": 1, "text": 2, "instruct": 1}


def test_resolve_kind(stories_dir, tok, monkeypatch):
    assert retraining_data.resolve_kind(stories_dir, tok, "text") == "text"
    assert retraining_data.resolve_kind(stories_dir, tok) == "self"  # stories260K: sampled from itself
    monkeypatch.setattr(retraining_data, "offline_default", lambda: True)
    assert retraining_data.resolve_kind("elsewhere/model", tok) == "text"
    with pytest.raises(ValueError, match="unknown retraining data kind 'chat'"):
        retraining_data.resolve_kind(stories_dir, tok, "chat")


class DigitTokenizer:
    """Whitespace-separated integers are the token ids: a document's tokens say which document and position
    they are (id = 1000 * document + position), so where every token of a set came from can be checked."""
    eos_token_id = 999_999

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[int(w) for w in t.split()] for t in texts]}


def _digit_docs(lengths):
    return [" ".join(str(1000 * i + j) for j in range(n)) for i, n in enumerate(lengths)]


@pytest.mark.parametrize("lengths", [[300, 7, 40, 250, 90, 90, 12, 500, 64, 33],  # long and short mixed
                                     [200] * 6, [64, 65, 66, 63],
                                     [40] * 4, [3] * 160])  # cap = 40: cut at the end; cap = 1: first tokens
def test_held_out_sets_spread_over_every_document(lengths):
    tok, seq_len, n_tokens = DigitTokenizer(), 15, 75  # 5 blocks of seq_len + 1 = 16 tokens per set
    (select, test), cap = retraining_data.held_out_sets(_digit_docs(lengths), tok, seq_len, n_tokens)
    halves = [list(range(0, len(lengths), 2)), list(range(1, len(lengths), 2))]

    def given(docs, c):  # brute force: what each document gives at most c tokens (EOS only when it ends)
        return [[1000 * i + j for j in range(lengths[i])] + [tok.eos_token_id] if lengths[i] + 1 <= c
                else [1000 * i + j for j in range(c)] for i in docs]
    def fits(c):
        return all(sum(map(len, given(h, c))) >= 5 * 16 for h in halves)
    assert fits(cap) and not fits(cap - 1)  # the smallest cap that fills both sets
    for blocks, docs in zip((select, test), halves):
        assert blocks.tokens.shape == (5, 16)
        stream = [t for piece in given(docs, cap) for t in piece]
        assert blocks.tokens.flatten().tolist() == stream[:80]  # the documents' starts, in order, nothing else
        starts = [sum(map(len, given(docs, cap)[:k])) for k in range(len(docs))]
        owner = [max(k for k, s0 in enumerate(starts) if s0 <= 16 * b) for b in range(5)]
        assert blocks.doc.tolist() == owner


def test_held_out_sets_use_every_document_when_a_few_are_long():
    # whole documents in order would fill a 5-block set from the first long one; spread, all six give tokens
    tok = DigitTokenizer()
    (select, test), cap = retraining_data.held_out_sets(_digit_docs([400] * 12), tok, 15, 75)
    assert cap == 14 and [sorted({t // 1000 for t in b.tokens.flatten().tolist()}) for b in (select, test)] == \
        [[0, 2, 4, 6, 8, 10], [1, 3, 5, 7, 9, 11]]
    assert tok.eos_token_id not in select.tokens  # every document was cut, none ended


def test_held_out_sets_say_when_the_text_is_too_short():
    with pytest.raises(ValueError, match="too little held-out text for two evaluation sets of 5 x 16 tokens"):
        retraining_data.held_out_sets(_digit_docs([40, 40, 40]), DigitTokenizer(), 15, 75)
    with pytest.raises(ValueError, match="give 79 tokens to the smaller set"):  # one token short
        retraining_data.held_out_sets(_digit_docs([79, 78]), DigitTokenizer(), 15, 75)
    (select, test), cap = retraining_data.held_out_sets(_digit_docs([79, 79]), DigitTokenizer(), 15, 75)
    assert cap == 80 and select.tokens.flatten()[-1] == test.tokens.flatten()[-1] == DigitTokenizer.eos_token_id


def test_a_run_folder_belongs_to_the_weights_it_was_trained_from(tmp_path):
    # chapter 4's run folders are keyed by the model's name; chapter 3 re-exports its checkpoint under the same
    # name when it retrains: the runs of the old weights must not be reused for the new ones
    from ladder.adapt import claim_run_folder, weights_digest
    src = tmp_path / "ckpt"
    src.mkdir()
    (src / "config.json").write_text("{}")
    (src / "model.safetensors").write_bytes(b"old weights")
    out, logs = tmp_path / "runs" / "model-abc", []
    assert claim_run_folder(out, src, log=logs.append) == out and logs == []
    recorded = json.loads((out / "source.json").read_text())["weights_sha256"]
    assert recorded == weights_digest(src)
    (out / "hybrid2-run").mkdir()
    claim_run_folder(out, src, log=logs.append)  # same weights: the runs stay
    assert (out / "hybrid2-run").is_dir() and logs == []
    (src / "config.json").write_text('{"x": 1}')  # not a weight file: still the same model
    claim_run_folder(out, src, log=logs.append)
    assert (out / "hybrid2-run").is_dir() and logs == []
    (src / "model.safetensors").write_bytes(b"new weights")
    claim_run_folder(out, src, log=logs.append)
    stale = tmp_path / "runs" / f"model-abc-replaced-{recorded[:10]}"
    assert (stale / "hybrid2-run").is_dir() and not (out / "hybrid2-run").exists()  # set aside, not deleted
    assert json.loads((out / "source.json").read_text())["weights_sha256"] == weights_digest(src) != recorded
    assert len(logs) == 1 and "changed" in logs[0] and stale.name in logs[0]
    # a folder from before sources were recorded is adopted
    old = tmp_path / "runs" / "model-old"
    (old / "source-run").mkdir(parents=True)
    claim_run_folder(old, src, log=logs.append)
    assert (old / "source-run").is_dir() and (old / "source.json").is_file() and len(logs) == 1
    (src / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no weight file"):
        claim_run_folder(old, src)
