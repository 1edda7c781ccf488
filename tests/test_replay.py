"""The replay of module times through the wiring's timeline (ladder.replay): hand-computable cases."""
import pandas as pd
import pytest
import torch

from ladder import replay
from ladder.config import ModelConfig
from ladder.link import get as get_link

CFG = ModelConfig(n_layers=2, dim=64, n_heads=4, n_kv_heads=2, ffn_dim=128, vocab_size=128, max_seq_len=64)
UNIT = {"attn": 1.0, "mlp": 1.0, "head": 0.0}


def test_replay_by_hand_when_the_link_is_shorter_than_a_module():
    # two layers, every module 1 s, one all-reduce 0.5 s:
    # standard waits on all four: 4 x (1 + 0.5) = 6; ladder hides all but the last MLP's: 4 + 0.5;
    # parallel: two modules then one blocking all-reduce per layer: 2 x (2 + 0.5); upper bound: 4
    p = replay.replay(CFG, UNIT, 0.5)
    assert p.allreduce_s == 0.5
    assert p.step_s == pytest.approx({"standard": 6.0, "parallel": 5.0, "ladder": 4.5, "upper_bound": 4.0})
    assert p.speedup == pytest.approx(6 / 4.5) and p.upper_bound_speedup == pytest.approx(1.5)
    assert p.recovered == pytest.approx(0.75)  # 1 - 1 / (2 L): only the last all-reduce is exposed
    assert p.comm_share == pytest.approx(2 / 6)


def test_replay_when_the_link_is_longer_than_a_module():
    # a = 2 c: the one communication stream is the bottleneck, ladder cannot hide it all
    p = replay.replay(CFG, UNIT, 2.0)
    assert p.step_s["standard"] == pytest.approx(4 * 3.0)
    # attn0 [0,1], its AR [1,3]; mlp0 [1,2], its AR [3,5]; attn1 waits AR(attn0): [3,4], AR [5,7];
    # mlp1 waits AR(mlp0): [5,6], AR [7,9]; the head waits both: 9
    assert p.step_s["ladder"] == pytest.approx(9.0)
    assert p.recovered == pytest.approx((12 - 9) / (12 - 4))


def test_zero_link_and_bad_ratio():
    p = replay.replay(CFG, UNIT, 0.0)
    assert p.speedup == 1.0 and p.comm_share == 0.0 and p.recovered != p.recovered  # NaN: no gain to recover
    with pytest.raises(ValueError, match="a/c"):
        replay.replay(CFG, UNIT, -0.1)


def test_curves_sweep_and_unit_compute():
    assert replay.unit_compute({"attn": 1.0, "mlp": 3.0, "head": 9.0}) == 2.0
    df = replay.curves(CFG, UNIT, [0.25, 0.5, 2.0])
    assert list(df["a/c"]) == [0.25, 0.5, 2.0]
    assert df["ladder speed-up"].iloc[1] == pytest.approx(6 / 4.5)
    assert df["communication share"].is_monotonic_increasing


def test_link_for_realises_the_ratio_on_the_emulated_link():
    costs = {"attn": 2e-3, "mlp": 1e-3, "head": 5e-3}
    link = get_link(replay.link_for(0.4, costs))
    # one decode all-reduce of a float32 activation at batch 1 over 2 ranks costs a = 0.4 c
    assert link.allreduce_time(CFG.dim * 4, 2) == pytest.approx(0.4 * 1.5e-3, rel=1e-6)


def test_regimes_place_published_latencies_and_the_papers_grid_on_the_axis():
    grid = pd.DataFrame([{"tp": 8, "batch": 1, "standard": 77.39, "upper_bound": 110.59},
                         {"tp": 8, "batch": 4, "standard": 258.56, "upper_bound": 355.80}])
    rs = replay.regimes(paper_grid=grid, paper_slow_speedup=1.6)
    assert len(rs) == len(replay.PUBLISHED) + 2 and all(r["source"] and r["short"] for r in rs)
    assert rs[-1]["a/c"] == pytest.approx(0.6)
    paper = rs[-2]
    s = 1 - 77.39 / 110.59
    assert paper["a/c"] == pytest.approx(s / (1 - s))
    nv = rs[0]
    c = replay.unit_compute(replay.gpu_module_costs(nv["shape"], nv["tp"]))
    assert nv["a/c"] == pytest.approx(nv["allreduce_us"] * 1e-6 / c)
    # a slower link is further along the axis for the same shape
    by_name = {r["name"]: r["a/c"] for r in rs}
    assert by_name["2 nodes x 8 H100, TCPXO"] > by_name["2 nodes x 8 GPUs, InfiniBand NDR"]


def test_module_times_measures_each_module():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t = replay.module_times(CFG, tp=2, batch=1, context=16, reps=5, warmup=1)
    finally:
        torch.set_num_threads(threads)
    assert t["attn"] > 0 and t["mlp"] > 0 and t["head"] > 0 and t["reps"] == 5
    assert t["clock"] == "thread CPU time"
    with pytest.raises(ValueError, match="quantile"):
        replay.module_times(CFG, quantile=1.5)


@pytest.mark.parametrize("back_to_back", [False, True])
def test_module_times_times_every_module_in_the_decode_steps_order(monkeypatch, back_to_back):
    """Each pass goes over the model as a decode step does (attention then MLP of layer 0, 1, ..., then the
    head), so a module is timed where the step finds its weights, not after itself over and over; every
    call of a pass is a sample of its kind."""
    calls, built = [], []

    def build(*a, **kw):
        model = build_model(*a, **kw)
        for i, b in enumerate(model.layers):
            b.self_attn.register_forward_hook(lambda *_, i=i: calls.append(f"attn{i}"))
            b.mlp.register_forward_hook(lambda *_, i=i: calls.append(f"mlp{i}"))
        model.lm_head.register_forward_hook(lambda *_: calls.append("head"))
        built.append(model)
        return model
    build_model = replay.build_model
    monkeypatch.setattr(replay, "build_model", build)
    cfg = CFG.replace(n_layers=3)
    got = replay.module_times(cfg, context=16, reps=4, warmup=1, quantile=0.0, back_to_back=back_to_back)
    def one_pass(twice):
        return [c for i in range(3) for c in [f"attn{i}"] * twice + [f"mlp{i}"] * twice] + ["head"] * twice
    # one warm-up pass, then 4 measured (back to back: each module called twice in a row, the second hot)
    assert len(built) == 1 and calls == one_pass(1) + one_pass(2 if back_to_back else 1) * 4
    assert got["reps"] == 4 and got["back_to_back"] is back_to_back and got["quantile"] == 0.0


def test_two_batch_replay_needs_and_uses_half_batch_costs():
    with pytest.raises(ValueError, match="half_costs"):
        replay.replay(CFG, UNIT, 0.5, wirings=("standard", "ladder", "upper_bound", "two_batch"))
    half = {"attn": 0.75, "mlp": 0.75, "head": 99.0}  # the head of half_costs is not used
    p = replay.replay(CFG, UNIT, 0.5, wirings=("standard", "ladder", "upper_bound", "two_batch"), half_costs=half)
    # 8 half-modules of 0.75 s back to back (each all-reduce of 0.5 s fits behind the next module); the last
    # half's last MLP all-reduce is exposed: 8 x 0.75 + 0.5
    assert p.step_s["two_batch"] == pytest.approx(6.5)


def test_plot_curves_draws_replay_regimes_and_measurements():
    import matplotlib
    matplotlib.use("Agg")
    df = replay.curves(CFG, UNIT, [0.1, 0.5, 1.0])
    m = pd.DataFrame([{"a/c": 0.5, "speed-up": 1.3, "lo": 1.2, "hi": 1.4, "label": "x"}])
    ax = replay.plot_curves(df, [{"name": "r", "a/c": 0.3}], m, title="t")
    assert len(ax.lines) >= 3 and ax.get_title() == "t"


def test_decode_rounds_pair_samples_by_round():
    recs = [{"wiring": w, "new_tokens": 5, "samples_decode_s": s} for w, s in
            (("standard", [4.0, 8.0]), ("ladder", [2.0, 4.0]), ("upper_bound", [1.0, 2.0]), ("parallel", [9.0, 9.0]))]
    assert replay.decode_rounds(recs) == [(1.0, 2.0, 4.0), (0.5, 1.0, 2.0)]  # 4 decode steps per generation
    assert replay.decode_rounds(recs[:2]) == []


def test_validate_measures_and_replays_each_ratio():
    shape = ModelConfig(n_layers=2, dim=64, n_heads=4, n_kv_heads=4, ffn_dim=128, vocab_size=128, max_seq_len=64)
    out = replay.validate(shape, {"slow": 2.0, "fast": 0.5, "free": 0.0}, prompt_len=4, new_tokens=4, samples=3,
                          warmup=0, reps=5)
    assert [r["name"] for r in out["rows"]] == ["slow", "fast", "free"]
    assert set(out["links"]) == {"slow", "fast", "free"}
    assert len(out["records"]) == 7  # standard and ladder per ratio, one upper bound
    free = out["rows"].pop()  # a link that costs nothing: nothing to hide, so no hidden share
    assert free["hidden"] != free["hidden"] and all(x != x for x in free["hidden_ci"])
    for row in out["rows"]:
        assert row["rounds"] == 3 and row["speedup_ci"][0] <= row["speedup"] <= row["speedup_ci"][1]
        assert row["replay_error"] == pytest.approx(row["speedup"] / row["replay_speedup"] - 1)
        assert row["standard_wait_late_us"] >= 0  # the link reports what its waits really cost
        assert row["clock"] == "virtual" and 0 <= row["hidden_ci"][0] <= row["hidden"] <= row["hidden_ci"][1] <= 1
    std = next(r for r in out["records"] if r["wiring"] == "standard")
    assert std["link_waits"] > 0 and std["link_modelled_s"] > 0
    # the link realises a = ratio x c of the costs measured in the same call
    assert out["rows"][0]["allreduce_ms"] == pytest.approx(2.0 * replay.unit_compute(out["costs"]) * 1e3)


def test_rivals_measure_and_replay_every_method():
    shape = ModelConfig(n_layers=2, dim=64, n_heads=4, n_kv_heads=4, ffn_dim=128, vocab_size=128, max_seq_len=64)
    out = replay.rivals(shape, 1.0, batch=2, prompt_len=4, new_tokens=4, samples=3, warmup=0, reps=5)
    rows = {r["method"]: r for r in out["rows"]}
    assert list(rows) == list(replay.RIVALS)
    assert rows["standard"]["speedup"] == 1.0 and rows["standard"]["replay_speedup"] == 1.0
    assert rows["faster all-reduce"]["a/c"] == 0.5
    # the half-batch modules are timed two calls in a row, as two-batch overlap runs them; the others one at a time
    assert out["half_costs"]["back_to_back"] is True and out["costs"]["back_to_back"] is False
    # the replay: a faster link helps standard; nothing beats the upper bound
    assert rows["faster all-reduce"]["replay_speedup"] > 1.0
    assert max(r["replay_speedup"] for r in rows.values()) == rows["upper bound"]["replay_speedup"]
    with pytest.raises(ValueError, match="at least 2"):
        replay.rivals(shape, 1.0, batch=1)


def test_validation_table_reads_as_text_with_its_own_precision():
    row = {"name": "paper, NVLink", "a/c": 0.43, "allreduce_ms": 0.342, "speedup": 1.44, "speedup_ci": [1.37, 1.5],
           "replay_speedup": 1.4, "recovered": 0.97, "recovered_ci": [0.78, 2.25], "replay_recovered": 0.98,
           "replay_error": 0.026}
    t = replay.validation_table([row]).iloc[0].to_dict()
    assert t["a/c"] == "0.43" and t["all-reduce (ms)"] == "0.342" and t["speed-up, replay"] == "1.40"
    assert t["speed-up, measured (95% CI)"] == "1.44 (1.37–1.50)" and t["replay error"] == "+2.6%"
    assert t["recovered, from step times (95% CI)"] == "97% (78%–225%)" and t["recovered, replay"] == "98.0%"
    assert t["link wait hidden (95% CI)"] == "–"  # no virtual-clock waits in this row
    t = replay.validation_table([{**row, "hidden": 0.9851, "hidden_ci": [0.9849, 0.9852]}]).iloc[0].to_dict()
    assert t["link wait hidden (95% CI)"] == "98.5% (98.5%–98.5%)"  # under two points wide: one decimal
    t = replay.validation_table([{**row, "hidden": 0.75, "hidden_ci": [0.68, 0.84]}]).iloc[0].to_dict()
    assert t["link wait hidden (95% CI)"] == "75% (68%–84%)"


def test_regimes_close_on_the_axis_share_one_label():
    import matplotlib
    matplotlib.use("Agg")
    import pandas as pd
    curve = pd.DataFrame({"a/c": [0.0, 1.0, 2.0], "upper bound speed-up": [1, 2, 3], "ladder speed-up": [1, 2, 1.5]})
    regs = [{"a/c": 0.32, "short": "A", "name": "a"}, {"a/c": 0.321, "short": "B", "name": "b"},
            {"a/c": 0.6, "short": "C", "name": "c"}]
    ax = replay.plot_curves(curve, regs)
    assert sorted(t.get_text() for t in ax.texts) == ["A / B", "C"]


def test_hidden_share_pairs_the_link_waits_by_round():
    recs = [{"wiring": "standard", "samples_decode_wait_s": [4.0, 8.0]},
            {"wiring": "ladder", "samples_decode_wait_s": [1.0, 4.0]}, {"wiring": "upper_bound"}]
    rounds = replay.wait_rounds(recs)
    assert rounds == [(4.0, 1.0), (8.0, 4.0)]
    share, ci = replay.hidden_share(rounds)
    assert share == pytest.approx((0.75 + 0.5) / 2) and ci[0] <= share <= ci[1]
    assert replay.wait_rounds([recs[0]]) == [] and replay.wait_rounds([{**recs[0], "samples_decode_wait_s": []}, recs[1]]) == []
    # records of another regime are left out, and a record matching is not enough without its wiring
    other = [{**r, "ratio_name": "slow"} for r in recs[:2]]
    mine = [{**r, "ratio_name": "fast", "samples_decode_wait_s": [2.0]} for r in recs[:2]]
    assert replay.wait_rounds(other + mine, ratio_name="fast") == [(2.0, 2.0)]
    assert replay.wait_rounds([{"wiring": "upper_bound", "ratio_name": "fast", "samples_decode_wait_s": [1.0]}],
                              ratio_name="fast") == []
    with pytest.raises(ValueError, match=r"^standard waited no time on the link: there is nothing to hide "
                                         r"\(is a link emulated\?\)$"):
        replay.hidden_share([(0.0, 0.0)])
    with pytest.raises(ValueError, match=r"^hidden_share needs at least one \(standard, ladder\) round$"):
        replay.hidden_share([])


def test_hybrid_measures_the_decode_step_on_the_virtual_clock_and_replays_it():
    shape = ModelConfig(n_layers=4, dim=64, n_heads=4, n_kv_heads=4, ffn_dim=128, vocab_size=128, max_seq_len=64)
    out = replay.hybrid(shape, 2, 0.5, prompt_len=4, new_tokens=4, samples=3, warmup=0, reps=5)
    row = out["row"]
    assert [(r["wiring"], r["ladder_layers"], r["clock"]) for r in out["records"]] == [
        ("standard", 0, "virtual"), ("hybrid", 2, "virtual")]
    assert row["link"] == replay.link_for(0.5, out["costs"]) and row["a/c"] == 0.5 and row["samples"] == 3
    assert row["speedup_ci"][0] <= row["speedup"] <= row["speedup_ci"][1]
    assert row["replay_error"] == pytest.approx(row["speedup"] / row["replay_speedup"] - 1)
    assert row["replay_speedup"] > 1 and 0 < row["hidden"] <= 1  # the ladder layers hide some of the link wait


def test_regime_ratio_names_a_regime_or_says_which_exist():
    from ladder import perfmodel as pm
    from ladder.paths import paper_table
    hw = pm.HARDWARE["H100-SXM"]
    regs = {r["short"]: r["a/c"] for r in replay.regimes(hw, paper_table("speed_grid.csv"), 1.6)}
    assert replay.regime_ratio("paper, NVLink", hw) == regs["paper, NVLink"]
    with pytest.raises(ValueError, match="unknown regime 'moon'; choose one of"):
        replay.regime_ratio("moon", hw)
