"""The performance model: orderings that must hold, monotonic in link cost, and the paper's batch table."""
import math

import pytest

from ladder import perfmodel as pm
from ladder.trace import trace_log
from ladder.config import preset
from ladder.link import custom
from ladder.paths import paper_table


def read(name):
    return paper_table(name).astype(str).to_dict("records")


@pytest.fixture(scope="module")
def calibrated():
    return pm.calibrate(read("speed_grid.csv"))


@pytest.mark.parametrize("batch", [1, 16])
@pytest.mark.parametrize("link", ["nvlink4", "pcie5-nop2p"])
def test_upper_bound_ge_ladder_ge_standard(batch, link):
    tps = {w: pm.predict("llama3-70B", "H100-SXM", 8, batch, wiring=w, link=link).tokens_per_s
           for w in ("standard", "parallel", "ladder", "upper_bound")}
    assert tps["upper_bound"] >= tps["ladder"] >= tps["standard"]
    assert tps["upper_bound"] >= tps["parallel"] >= tps["standard"]


def test_monotonic_in_link_cost():
    prev = None
    for alpha in (1e-6, 1e-5, 1e-4, 1e-3):
        link = custom(alpha, 100e9)
        std = pm.predict("llama3-8B", "H100-SXM", 4, 4, 128, 32, wiring="standard", link=link).tokens_per_s
        lad = pm.predict("llama3-8B", "H100-SXM", 4, 4, 128, 32, wiring="ladder", link=link).tokens_per_s
        ub = pm.predict("llama3-8B", "H100-SXM", 4, 4, 128, 32, wiring="upper_bound", link=link).tokens_per_s
        if prev:
            assert std < prev[0] and lad <= prev[1] and ub == pytest.approx(prev[2])
        assert ub >= lad >= std
        prev = (std, lad, ub)


def test_timeline_orders_and_overlaps():
    cfg = preset("tiny")
    costs = {"attn": 1.0, "mlp": 1.0, "head": 0.5}
    std, _ = pm.timeline(cfg.replace(wiring="standard"), costs, 0.5)
    lad, events = pm.timeline(cfg.replace(wiring="ladder"), costs, 0.5)
    ub, _ = pm.timeline(cfg.replace(wiring="upper_bound"), costs, 0.5)
    assert std == pytest.approx(8 * 1.5 + 0.5)           # every all-reduce in series
    assert ub == pytest.approx(8 + 0.5)                  # none
    assert lad == pytest.approx(8 + 0.5 + 0.5)           # all hidden but the last one
    assert {e[0] for e in events} == {"compute", "comm"}


def test_batch_table_ladder_speedups_within_005(calibrated):
    hw, fab, info = calibrated
    assert 0 < info["gpu_efficiency"] <= 1 and 0 < info["link_efficiency"] <= 1
    for row in read("speed_batch.csv"):
        got = pm.speedup("llama3-70B", hw, fab, 8, int(row["batch"]))
        assert got == pytest.approx(float(row["speedup"]), abs=0.05), row["batch"]


def test_out_of_sample_rows_are_predicted_as_well_as_the_fitted_ones(calibrated):
    """The fit sees only TP = 8; the TP = 2 and 4 rows (24 numbers) are out of sample. Their mean error
    is reported in the book beside the in-sample one; here it must stay within 10% (7.2% since the
    per-kernel latency is fitted too, 8.5% before; 4.9% in sample) and no single row may be off by more than 20%."""
    hw, fab, info = calibrated
    rows = pm.compare(pm.grid_rows(paper_table("speed_grid.csv")), hw, fab)
    out = [abs(r["error"]) for r in rows if r["tp"] != 8]
    assert len(out) == 24
    assert sum(out) / len(out) <= 0.10
    assert max(out) <= 0.20
    assert info["in_sample_mean_abs_error"] <= 0.10


def test_calibration_uses_only_the_tp8_column(calibrated):
    grid = read("speed_grid.csv")
    changed = [dict(g, standard=str(float(g["standard"]) * 3)) if g["tp"] != "8" else g for g in grid]
    got = pm.calibrate(changed)[2]
    assert {k: got[k] for k in ("gpu_efficiency", "link_efficiency", "launch_us")} == \
        {k: calibrated[2][k] for k in ("gpu_efficiency", "link_efficiency", "launch_us")}


def test_the_per_kernel_latency_is_fitted_from_its_grid(calibrated):
    hw, fab, info = calibrated
    assert hw.launch_s in pm.LAUNCH_GRID_S and info["launch_us"] == pytest.approx(hw.launch_s * 1e6)
    rows = [r for r in pm.grid_rows(paper_table("speed_grid.csv")) if r["tp"] == 8]
    # the fitted point is no worse on its column than the datasheet-style default it replaced (1.5 us, refitted)
    he, le = info["gpu_efficiency"], info["link_efficiency"]
    def loss(h, f):
        return sum((math.log(pm.compare([r], h, f)[0]["predicted"]) - math.log(r["tokens_per_s"])) ** 2 for r in rows)
    assert loss(hw, fab) <= loss(*pm.with_efficiency(he, le, launch_s=1.5e-6))


@pytest.mark.parametrize("ladder_layers", [1, 2, 3])
def test_hybrid_boundary_waits_for_the_last_standard_mlp(ladder_layers):
    """The code's standard layer blocks on its MLP all-reduce, so at the boundary nothing is hidden:
    standard layers pay every all-reduce, the ladder layers hide all but their last one."""
    cfg = preset("tiny").replace(wiring="hybrid", ladder_layers=ladder_layers)
    t, _ = pm.timeline(cfg, {"attn": 1.0, "mlp": 1.0, "head": 0.5}, 0.5)
    n_std = cfg.n_layers - ladder_layers
    assert t == pytest.approx(n_std * 3.0 + ladder_layers * 2.0 + 0.5 + 0.5)


CASES = [("standard", 0), ("parallel", 0), ("ladder", 0), ("upper_bound", 0),
         ("hybrid", 1), ("hybrid", 2), ("hybrid", 3)]


@pytest.mark.parametrize("wiring, ladder_layers", CASES)
def test_timeline_follows_the_traced_dataflow(wiring, ladder_layers):
    """Every module starts exactly when the previous module and every all-reduce the code waited on
    before it are done; every module that the code lets run while an all-reduce is in flight overlaps it."""
    cfg = preset("tiny").replace(wiring=wiring, ladder_layers=ladder_layers)
    ar = 0.7
    _, events = pm.timeline(cfg, {"attn": 1.0, "mlp": 1.0, "head": 0.5}, ar)
    comp = [e for e in events if e[0] == "compute"]
    comm = [e for e in events if e[0] == "comm"]
    log = trace_log(cfg.layer_wirings()) + [("compute", "head", None)]
    started, waited, i_comp, prev_end = [], [], 0, 0.0
    for ev in log:
        if ev[0] == "start":
            started.append(ev[1])
        elif ev[0] == "wait":
            waited.append(comm[[id(h) for h in started].index(id(ev[1]))][3])
        else:
            _, _, s, e = comp[i_comp]
            assert s == pytest.approx(max([prev_end] + waited)), (wiring, ev[1])
            waited, prev_end, i_comp = [], e, i_comp + 1
    assert i_comp == len(comp) and len(comm) == len(started)
    n_ar = {"standard": 2, "ladder": 2, "hybrid": 2, "parallel": 1, "upper_bound": 0}[wiring] * cfg.n_layers
    assert len(comm) == n_ar


def test_predict_measured_from_parts():
    cfg = preset("tiny")
    kw = dict(compute_prefill_s=0.1, compute_step_s=0.01, ar_prefill_s=0.002, ar_decode_s=0.001, batch=1,
              new_tokens=10)
    std = pm.predict_measured(cfg, "standard", **kw)
    lad = pm.predict_measured(cfg, "ladder", **kw)
    ub = pm.predict_measured(cfg, "upper_bound", **kw)
    assert std["decode_s_per_token"] == pytest.approx(0.01 + 8 * 0.001)
    assert ub["decode_s_per_token"] == pytest.approx(0.01)
    assert ub["tokens_per_s"] > lad["tokens_per_s"] > std["tokens_per_s"]


def test_bad_input_names_the_problem():
    with pytest.raises(ValueError, match="batch"):
        pm.predict("llama3-70B", batch=0)
    with pytest.raises(ValueError, match="divisible"):
        pm.predict("llama3-70B", tp=3)
    with pytest.raises(ValueError, match="no rows"):
        pm.calibrate(read("speed_grid.csv"), tp=2 * 1000)


def test_two_batch_overlap_pays_a_second_weight_read_at_small_batch():
    """The exact rival: each half re-reads the weights, so at a memory-bound decode it loses to standard
    even with a free link; with a costly link and a batch large enough to be compute bound it wins."""
    free = custom(0.0, 1e18)
    std = pm.predict("llama3-70B", "H100-SXM", 8, 2, wiring="standard", link=free)
    tbo = pm.predict("llama3-70B", "H100-SXM", 8, 2, wiring="two_batch", link=free)
    # decode step: every layer's weights read twice (the head, run once on the whole batch, is the same)
    head = pm.module_costs(preset("llama3-70B"), 8, 2, 1, 1536, pm.HARDWARE["H100-SXM"])["head"]
    assert tbo.decode_step_s - head > 1.9 * (std.decode_step_s - head)
    slow = "pcie5-nop2p"
    big = {w: pm.predict("llama3-70B", "H100-SXM", 8, 256, wiring=w, link=slow).tokens_per_s
           for w in ("standard", "two_batch")}
    assert big["two_batch"] > big["standard"]
    with pytest.raises(ValueError, match="batch >= 2"):
        pm.predict("llama3-70B", "H100-SXM", 8, 1, wiring="two_batch")
