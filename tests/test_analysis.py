"""ladder.analysis: the dataflow traced from the wiring code, the TP check, the stale-input measurement."""
from __future__ import annotations

import pytest
import torch

from ladder import analysis
from ladder.config import preset
from ladder.model import build_model


def _by_module(wiring, n_layers=3, **kw):
    return {r["module"]: r for r in analysis.trace_wiring(wiring, n_layers, **kw)}


def test_standard_modules_see_everything_and_block():
    recs = _by_module("standard")
    assert all(not r["missing"] and r["all_reduce"] == "blocking" for r in recs.values())
    assert recs["attn2"]["reads"] == ["emb", "attn0", "mlp0", "attn1", "mlp1"]


def test_ladder_modules_miss_exactly_the_previous_output_and_overlap():
    recs = _by_module("ladder")
    assert recs["attn0"]["missing"] == []  # nothing before it
    assert recs["mlp0"]["missing"] == ["attn0"]
    assert recs["attn1"]["missing"] == ["mlp0"] and recs["mlp2"]["missing"] == ["attn2"]
    # every all-reduce runs behind another module's compute except the last one
    assert [r["all_reduce"] for r in recs.values()] == ["overlapped"] * 5 + ["blocking"]


def test_parallel_shares_one_all_reduce_per_layer():
    recs = _by_module("parallel", 2)
    assert recs["mlp0"]["missing"] == ["attn0"] and recs["mlp0"]["shares_all_reduce_with"] == ["attn0"]
    assert recs["attn1"]["missing"] == []


def test_hybrid_is_standard_below_and_ladder_above():
    recs = _by_module("hybrid", 3, ladder_layers=1)
    assert not recs["attn1"]["missing"] and recs["attn1"]["all_reduce"] == "blocking"
    assert recs["attn2"]["missing"] == ["mlp1"] and recs["attn2"]["all_reduce"] == "overlapped"


def test_upper_bound_has_no_collectives_and_unknown_wiring_is_refused():
    assert {r["all_reduce"] for r in analysis.trace_wiring("upper_bound")} == {"none"}
    with pytest.raises(ValueError, match="unknown wiring 'ladderish'"):
        analysis.trace_wiring("ladderish")


def test_dataflow_table_has_a_column_per_wiring():
    df = analysis.dataflow_table(2)
    assert list(df.columns) == list(analysis.WIRINGS) and list(df.index) == ["attn0", "mlp0", "attn1", "mlp1"]
    assert df.loc["attn1", "ladder"].startswith("misses mlp0")


def test_stale_input_stats_on_a_standard_model():
    torch.manual_seed(0)
    model = build_model(preset("tiny"))
    stats = analysis.stale_input_stats(model, torch.randint(0, 256, (2, 16)))
    assert len(stats) == 2 * model.config.n_layers
    assert stats.loc[0, "stream_cos"] == pytest.approx(1.0)  # layer 0's attention has no predecessor
    assert (stats.update_ratio > 0).all() and (stats.stream_cos.between(-1, 1.0001)).all()
    assert (stats.stream_cos.iloc[1:] < 1).all()  # later modules really read a different stream


def test_stale_summary_leaves_out_only_layer_0s_attention_and_the_plot_has_a_panel_per_measure():
    import matplotlib
    matplotlib.use("Agg")
    import pandas as pd
    stale = pd.DataFrame({"layer": [0, 0, 1, 1], "module": ["attention", "mlp", "attention", "mlp"],
                          "update_ratio": [1.0, 2.0, 3.0, 4.0], "stream_cos": [1.0, 0.5, 0.9, 0.7],
                          "output_cos": [1.0, 0.6, 0.8, 0.4]})
    assert analysis.stale_summary(stale) == {"mean_update_ratio": 2.5, "min_stream_cos": 0.5,
                                             "mean_stream_cos": pytest.approx(0.7), "mean_output_cos": 0.6}
    fig = analysis.plot_stale(stale, "title")
    assert [ax.get_title() for ax in fig.axes] == list(analysis.STALE_LABELS.values())
    assert fig._suptitle.get_text() == "title"


def test_tp_equivalence_matches_one_device():
    config = preset("tiny", max_seq_len=16)
    weights = build_model(config).state_dict()
    tokens = torch.randint(0, config.vocab_size, (1, 6), generator=torch.Generator().manual_seed(0))
    df = analysis.tp_equivalence(config, weights, tokens, 4, tp=2, wirings=("standard", "ladder", "upper_bound"))
    d = df.set_index("wiring")
    assert d.loc["standard", "max_abs_diff"] < 1e-4 and d.loc["ladder", "max_abs_diff"] < 1e-4
    assert d.loc["upper_bound", "max_abs_diff"] > 1e-3  # not a valid model at TP > 1
    assert d.loc["ladder", "all_reduces_per_layer_step"] == 2 and d.loc["upper_bound", "all_reduces"] == 0
