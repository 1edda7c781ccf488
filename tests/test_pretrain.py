"""ladder.pretrain: a run trained on 2 torchrun processes (FSDP2) equals the same run in one process, and
how a run executes does not change which run folder it is; the chapter's orchestration (the budget, the run
plan, training every run, the numbers the prose cites, the result file and the sample generations)."""
import dataclasses
import json
import math
import os
import re

import nbformat
import pandas as pd
import pytest
import torch
from transformers import AutoTokenizer

from ladder import claims as claim_rules
from ladder import pretrain
from ladder.config import ModelConfig, preset
from ladder.data import TokenBlocks
from ladder.model import build_model
from ladder.provenance import REPO_ROOT
from ladder.train import TrainConfig

SIZE = {"name": "2L-d32", "n_layers": 2, "dim": 32, "n_heads": 4, "n_kv_heads": 2, "ffn_dim": 64}


@pytest.fixture(scope="module")
def tok(stories_dir):
    return AutoTokenizer.from_pretrained(stories_dir)


def blocks(n, seed):
    g = torch.Generator().manual_seed(seed)
    return TokenBlocks(torch.randint(0, 512, (n, 17), generator=g))


def test_two_torchrun_processes_with_fsdp_equal_one_process(tok, tmp_path):
    train, val = blocks(32, 0), blocks(8, 1)
    cfg = TrainConfig(max_steps=3, batch_size=4, lr=3e-3, warmup_steps=1, eval_every=3, eval_batches=2,
                      progress=False)
    one = pretrain.train_run(SIZE, "ladder", 0, train, val, dataclasses.replace(cfg, grad_accum=2), tok,
                             tmp_path / "one", device="cpu")
    two = pretrain.train_run(SIZE, "ladder", 0, train, val,
                             dataclasses.replace(cfg, fsdp=True, activation_checkpointing=True), tok,
                             tmp_path / "two", device="cpu", nproc=2)
    assert two["steps"] == one["steps"] == 3 and two["tokens"] == one["tokens"] == 3 * 8 * 16
    assert two["val_loss"] == pytest.approx(one["val_loss"], rel=1e-5)
    assert two["model"].config.wiring == "ladder"
    x = train.tokens[:2, :-1]
    with torch.no_grad():
        torch.testing.assert_close(two["model"](x), one["model"](x), atol=1e-4, rtol=1e-4)


def test_run_folder_depends_on_what_is_computed_not_how(tok, tmp_path):
    train, val = blocks(16, 0), blocks(4, 1)
    cfg = TrainConfig(max_steps=1, batch_size=4, warmup_steps=1, progress=False)
    a = pretrain.train_run(SIZE, "standard", 0, train, val, cfg, tok, tmp_path, device="cpu")
    b = pretrain.train_run(SIZE, "standard", 0, train, val, dataclasses.replace(cfg, activation_checkpointing=True,
                           progress_interval=1.0), tok, tmp_path, device="cpu")
    c = pretrain.train_run(SIZE, "standard", 0, train, val, dataclasses.replace(cfg, lr=1e-3), tok, tmp_path,
                           device="cpu")
    assert b["run_dir"] == a["run_dir"] and b.get("reused")
    assert c["run_dir"] != a["run_dir"]


# ------------------------------------------------------------------------------ the chapter's orchestration
def test_train_config_spends_the_token_budget_in_whole_steps():
    cfg = pretrain.train_config(10_000, 64, nproc=2, warmup_frac=0.25, batch_size=8, grad_accum=2, lr=1e-3)
    # 8 sequences x 2 micro-batches x 64 tokens x 2 processes = 2,048 tokens a step: 4 whole steps
    assert (cfg.max_steps, cfg.warmup_steps, cfg.lr, cfg.progress) == (4, 1, 1e-3, False)
    assert pretrain.train_config(100, 64, batch_size=8).max_steps == 1  # at least one step
    assert pretrain.train_config(10_240, 64, batch_size=8, warmup_frac=0.08).warmup_steps == 2  # 20 steps


def test_run_plan_trains_every_seed_in_every_wiring_then_the_extra_standard_seeds():
    plan = pretrain.run_plan(["S"], ["standard", "ladder"], [0, 1], [1, 2])
    assert plan == [("S", "standard", 0), ("S", "ladder", 0), ("S", "standard", 1), ("S", "ladder", 1),
                    ("S", "standard", 2)]


def fake_runs(std, lad, par=None, size="4L", tokens=100_000, params=1_000_000):
    runs = []
    for wiring, losses in (("standard", std), ("ladder", lad), ("parallel", par or {})):
        for seed, loss in losses.items():
            runs.append({"wiring": wiring, "seed": seed, "size": size, "val_loss": loss, "tokens": tokens,
                         "params": params, "params_non_embedding": params // 2 + seed, "tokens_per_s": 1234.5 + seed})
    return runs


THRESHOLDS = {"H5": {"margin_nats": 0.02, "min_seeds": 3.0, "learn_margin_nats": 1.0, "min_params": 1e9,
                     "min_tokens": 1e10}}


def prose_glue_names() -> set[str]:
    nb = nbformat.read(REPO_ROOT / "notebooks" / "03_pretraining.ipynb", 4)
    return {m for c in nb.cells if c.cell_type == "markdown" for m in re.findall(r"\{glue:text\}`(\w+)", c.source)}


def test_chapter_values_gives_the_known_numbers_for_hand_made_runs():
    runs = fake_runs({0: 5.40, 1: 5.50}, {0: 5.45, 1: 5.53}, {0: 5.42})
    runs[0]["tokens_per_s"] = None  # e.g. a resumed run that trained no new step
    h5 = pretrain.training_claim(runs, "4L", 7.0)
    v = pretrain.chapter_values(runs, {"H5": h5}, {"H5": ("inconclusive", "too few seeds")}, THRESHOLDS, 7.0,
                                steps=20, tokens_per_step=512)
    assert v["h5_gap"] == pytest.approx(0.04)  # mean of the paired gaps 0.05 and 0.03
    # t interval of (0.05, 0.03): sd 0.01414, t(0.975, 1 df) 12.706 -> half width 0.127
    assert v["h5_gap_ci"] == "95% CI -0.087 to +0.167"
    assert v["h5_direction"] == "standard ahead of ladder for every seed"
    assert (v["h5_std_loss"], v["h5_ladder_loss"], v["h5_parallel_loss"]) == pytest.approx((5.45, 5.49, 5.42))
    assert v["h5_worst_loss"] == 5.53 and v["pretrain_ppl"] == pytest.approx(math.exp(5.45))
    assert (v["h5_verdict"], v["h5_reason"], v["h6_verdict"]) == ("inconclusive", "too few seeds", "not run")
    assert (v["h5_n_seeds"], v["h5_unigram"], v["h5_margin"], v["h5_learn_margin"]) == (2, 7.0, 0.02, 1.0)
    assert v["h5_min_seeds"] == 3 and isinstance(v["h5_min_seeds"], int)
    assert v["h5_min_scale"] == "1B parameters and 10B tokens"
    assert (v["pretrain_steps"], v["pretrain_tokens"]) == (20, 10_240)
    assert v["pretrain_params"] == 500_000  # the first standard run's non-embedding parameters
    assert math.isnan(v["pretrain_tokens_per_s"])
    assert v["pretrain_tokens_orders"] == pytest.approx(6.0)  # ~100B against 100k tokens
    assert v["pretrain_params_orders"] == pytest.approx(math.log10(preset("1B").num_params() / 1e6))
    # every number the chapter's prose cites comes from here (the figure is glued beside them)
    assert prose_glue_names() <= set(v)


def test_chapter_values_with_one_seed_and_mixed_directions():
    one = fake_runs({0: 5.5}, {0: 5.4})
    v = pretrain.chapter_values(one, {"H5": pretrain.training_claim(one, "4L", 7.0)},
                                {"H5": ("a", "b"), "H6": ("c", "d")}, THRESHOLDS, 7.0, 1, 1)
    assert (v["h5_gap_ci"], v["h5_direction"], v["h6_verdict"]) == ("no interval with one seed",
                                                                    "ladder ahead of standard for every seed", "c")
    assert math.isnan(v["h5_parallel_loss"])  # no parallel run: no mean, not a crash
    assert pretrain.direction([5.4, 5.5], [5.3, 5.6]) == "ahead for some seeds, behind for others"


def test_judge_claims_applies_the_paper_rules_and_adds_h6_for_a_3b_size():
    runs = fake_runs({0: 5.40, 1: 5.50, 2: 5.60}, {0: 5.41, 1: 5.50, 2: 5.61})
    claims, verdicts, thr = pretrain.judge_claims(runs, [{"name": "4L", "n_layers": 4, "dim": 8}], 7.0)
    assert set(claims) == set(verdicts) == {"H5"} and "FineWeb/C4 substitute" in claims["H5"].how
    assert verdicts["H5"] == claim_rules.judge("H5", claims["H5"], thr["H5"])
    table = pretrain.verdict_table(claims, verdicts)
    assert list(table.index) == ["H5"] and table.loc["H5", "verdict (ladder.claims)"] == verdicts["H5"][0]
    big = fake_runs({0: 5.4}, {0: 5.4}, size="3B") + fake_runs({0: 5.4}, {0: 5.4}, size="1B")
    claims, verdicts, _ = pretrain.judge_claims(big, ["1B", "3B"], 7.0, sources=["HuggingFaceFW/fineweb-edu"])
    assert set(verdicts) == {"H5", "H6"} and "FineWeb-edu" in claims["H6"].how


def test_summary_frame_keeps_the_summary_columns_and_marks_reused_runs():
    runs = [{**{k: 1 for k in pretrain.SUMMARY_COLUMNS}, "model": object(), "reused": True},
            {**{k: 2 for k in pretrain.SUMMARY_COLUMNS}}]
    df = pretrain.summary_frame(runs)
    assert list(df.columns) == [*pretrain.SUMMARY_COLUMNS, "reused"] and list(df.reused) == [True, False]
    assert set(pretrain.SUMMARY_LABELS) <= set(df.columns)


def all_strings(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield str(k)
            yield from all_strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from all_strings(v)
    elif isinstance(obj, str):
        yield obj


def test_the_result_writer_writes_repository_relative_paths_only(tmp_path):
    repo = tmp_path / "repo"
    runs = fake_runs({0: 5.4, 1: 5.5}, {0: 5.45, 1: 5.52})
    for r in runs:
        r["run_dir"] = str(repo / "runs" / f"{r['wiring']}-s{r['seed']}")
        r["hf_dir"] = str(repo / "runs" / f"{r['wiring']}-s{r['seed']}" / "hf")
        os.makedirs(r["hf_dir"])
        (repo / "runs" / f"{r['wiring']}-s{r['seed']}" / "hf" / "config.json").write_text(r["wiring"])
        r["model"] = object()  # not stored
    claims = {"H5": pretrain.training_claim(runs, "4L", 7.0)}
    table = pd.DataFrame({"model": ["Standard-4L (seed 0)"], "avg": [41.5], "heldout_ppl": [None]}).set_index("model")
    lines = []
    path = pretrain.write_chapter_result(repo / "data" / "results" / "smoke", runs, claims, {"docs": 3},
                                         TrainConfig(max_steps=2), table, 7.0, {"profile": "smoke"}, 1.5,
                                         repo_root=repo, log=lines.append)
    assert path == repo / "data" / "results" / "smoke" / "pretraining.json"
    rec = json.loads(path.read_text())
    assert [r["run_dir"] for r in rec["runs"]] == ["runs/standard-s0", "runs/standard-s1", "runs/ladder-s0",
                                                   "runs/ladder-s1"]
    assert rec["runs"][0]["hf_dir"] == "runs/standard-s0/hf" and "model" not in rec["runs"][0]
    assert not [s for s in all_strings(rec) if str(tmp_path) in s or os.path.isabs(s)]
    assert rec["claims"]["H5"][0]["value"] == pytest.approx(0.035) and rec["notebook_wall_s"] == 1.5
    assert rec["table"] == [{"model": "Standard-4L (seed 0)", "avg": 41.5, "heldout_ppl": None}]
    assert rec["provenance"]["params"] == {"profile": "smoke"} and rec["train_config"]["max_steps"] == 2
    # the first standard run's checkpoint, exported for chapter 4, named by its relative path
    ckpt = repo / "data" / "results" / "smoke" / "checkpoints" / "standard"
    assert (ckpt / "config.json").read_text() == "standard"
    assert lines and lines[0].startswith("standard checkpoint: data/results/smoke/checkpoints/standard ")
    # without the export nothing is copied; a run outside the repository is refused, not written absolute
    pretrain.write_chapter_result(repo / "other", runs, claims, {}, TrainConfig(), table, 7.0, {}, 0.0,
                                  export_standard=False, repo_root=repo, log=None)
    assert not (repo / "other" / "checkpoints").exists()
    with pytest.raises(ValueError):
        pretrain.write_chapter_result(tmp_path / "out", runs, claims, {}, TrainConfig(), table, 7.0, {}, 0.0,
                                      export_standard=False, repo_root=repo / "runs" / "standard-s0", log=None)


def test_result_params_are_parameters_of_the_notebook():
    nb = nbformat.read(REPO_ROOT / "notebooks" / "03_pretraining.ipynb", 4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    names = set(re.findall(r"^(\w+)\s*=", cell.source, flags=re.M))
    assert set(pretrain.RESULT_PARAMS) <= names


def test_train_all_trains_the_plan_and_plots_its_curves(tok, tmp_path):
    train, val = blocks(16, 0), blocks(4, 1)
    cfg = pretrain.train_config(2 * 4 * 16, 16, batch_size=4, eval_every=1, eval_batches=1)
    lines = []
    runs, summary = pretrain.train_all([SIZE], ["standard", "ladder"], [0], [1], train, val, cfg, tok, tmp_path,
                                       log=lines.append)
    assert lines == ["3 runs x 2 steps x 64 tokens = 128 tokens each"]
    assert [(r["wiring"], r["seed"]) for r in runs] == [("standard", 0), ("ladder", 0), ("standard", 1)]
    assert list(summary.wiring) == ["standard", "ladder", "standard"] and [r["tokens"] for r in runs] == [128] * 3
    fig = pretrain.plot_loss_curves(runs, tmp_path / "loss.png")
    assert (tmp_path / "loss.png").stat().st_size > 0 and fig._suptitle.get_text()
    for ax in fig.axes:
        assert ax.get_title() and "tokens" in ax.get_xlabel() and "(nats/token)" in ax.get_ylabel()
    import matplotlib.pyplot as plt
    plt.close(fig)
    lines.clear()  # the chapter re-executed: every run reused, and said once for all of them
    pretrain.train_all([SIZE], ["standard", "ladder"], [0], [1], train, val, cfg, tok, tmp_path, log=lines.append)
    assert len(lines) == 2 and lines[1].startswith("3 of 3 runs reused")


def test_sample_texts_fit_the_context_and_are_seeded(tok):
    cfg = ModelConfig(n_layers=2, dim=32, n_heads=4, n_kv_heads=2, ffn_dim=64, vocab_size=len(tok), max_seq_len=16)
    runs = [{"wiring": w, "model": build_model(cfg.replace(wiring=w), device="cpu", seed=0)}
            for w in ("standard", "ladder")]
    val = blocks(2, 3)
    a = pretrain.sample_texts(runs, val, tok)
    assert list(a) == ["prompt", "standard, greedy", "standard, sampled", "ladder, greedy", "ladder, sampled"]
    assert a["prompt"] == tok.decode(val.tokens[0, :5].tolist())  # a third of the 16-token context
    assert pretrain.sample_texts(runs, val, tok) == a


@pytest.mark.parametrize("local", [True, False])
def test_table_labels_name_every_results_column_with_its_unit(monkeypatch, local):
    monkeypatch.setattr(pretrain, "offline_default", lambda: local)
    run = {"wiring": "ladder", "size": "1B", "seed": 0, "heldout_ppl": 9.0,
           "scores": {"arc_challenge": {"acc": 0.25}, "lambada_openai": {"acc": 0.1}}}
    table = pretrain.results_table([run], pretrain.load_paper_table())
    labels = pretrain.table_labels()
    assert set(table.columns) - set(labels) == {"source"}
    assert labels["arc_challenge"] == "ARC-C (%)" and labels["heldout_ppl"] == "held-out ppl"
    sciq = "sciq = openbookqa (ours)" if local else "sciq"
    assert labels[sciq] == ("SciQ (%) = openbookqa (ours)" if local else "SciQ (%)")
