"""The performance model: orderings that must hold, monotonic in link cost, and the paper's batch table."""
import csv
from pathlib import Path

import pytest

from ladder import perfmodel as pm
from ladder.config import preset
from ladder.link import custom

PAPER = Path(__file__).resolve().parents[1] / "data" / "paper"


def read(name):
    with open(PAPER / name) as f:
        return list(csv.DictReader(f))


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


def test_calibration_uses_only_the_tp8_column(calibrated):
    grid = read("speed_grid.csv")
    changed = [dict(g, standard=str(float(g["standard"]) * 3)) if g["tp"] != "8" else g for g in grid]
    assert pm.calibrate(changed)[2]["gpu_efficiency"] == calibrated[2]["gpu_efficiency"]


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
