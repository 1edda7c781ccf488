"""The verdict rules of ladder/claims.py: a case on each side of every threshold, the refusal of stored
verdicts, evidence handling, and the committed claims table regenerated from the committed result files."""
import json

import pytest

from ladder import claims
from ladder.paths import paper_file
from ladder.provenance import REPO_ROOT, write_result

THR = {r["id"]: r["thresholds"] for r in claims.paper_claims()}


def v(cid, **entry):
    return claims.judge(cid, entry, THR[cid])[0]


def speed(evidence="cpu-emulated-link", s=1.3, ci=(1.2, 1.4), rec=0.7, rec_ci=None, **kw):
    e = {"evidence": evidence, "speedup": s, "ci": {"speedup": list(ci)}, "recovered": rec, **kw}
    if rec_ci:
        e["ci"]["recovered"] = list(rec_ci)
    return e


# ------------------------------------------------------------------------------------------ H1-H3
@pytest.mark.parametrize("cid", ["H1", "H2", "H3"])
def test_speed_rule_multi_gpu_each_side_of_three_quarters_of_the_paper_gain(cid):
    target = 1 + 0.75 * THR[cid]["paper_gain"]
    assert v(cid, **speed("multi-gpu", ci=(target + 0.001, target + 0.1))) == "reproduced"
    assert v(cid, **speed("multi-gpu", ci=(target - 0.1, target - 0.001))) == "not reproduced"
    assert v(cid, **speed("multi-gpu", ci=(target - 0.01, target + 0.01))) == "inconclusive"


def test_speed_rule_emulated_needs_a_speedup_and_half_the_upper_bound_gain():
    assert v("H1", **speed(ci=(1.01, 1.4), rec=0.51)) == "consistent at small scale"
    assert v("H1", **speed(ci=(1.01, 1.4), rec=0.49)) == "not reproduced"
    assert v("H1", **speed(ci=(1.01, 1.4), rec=0.6, rec_ci=(0.45, 0.7))) == "inconclusive"
    assert v("H1", **speed(ci=(1.01, 1.4), rec=0.6, rec_ci=(0.50, 0.7))) == "consistent at small scale"
    assert v("H1", **speed(ci=(0.99, 1.4))) == "inconclusive"          # CI includes 1
    assert v("H1", **speed(s=0.95, ci=(0.9, 1.0))) == "not reproduced"  # no speed-up at all
    assert v("H1", **speed(ci=(1.1, 1.4), rec=None)) == "inconclusive"  # no upper bound to compare


def test_real_processes_recovering_a_few_percent_is_not_reproduced():
    assert v("H1", **speed("cpu-real-processes", s=1.02, ci=(1.01, 1.03), rec=0.05, rec_ci=(0.03, 0.07))) \
        == "not reproduced"


def test_speed_without_ci_is_inconclusive_and_model_values_never_decide():
    e = speed()
    del e["ci"]
    assert v("H1", **e) == "inconclusive"
    assert v("H1", **speed("model-out-of-sample", ci=(1.5, 1.6))) == "inconclusive"
    assert v("H1", **speed("model-in-sample", ci=(1.5, 1.6))) == "not run"


# --------------------------------------------------------------------------------------------- H4
def test_comm_share_band():
    lo, hi = THR["H4"]["paper"] - THR["H4"]["tol"], THR["H4"]["paper"] + THR["H4"]["tol"]
    e = lambda a, b, ev="multi-gpu": {"evidence": ev, "comm_share": (a + b) / 2, "ci": {"comm_share": [a, b]}}
    assert v("H4", **e(lo + 0.001, hi - 0.001)) == "reproduced"
    assert v("H4", **e(lo - 0.01, lo + 0.01)) == "inconclusive"
    assert v("H4", **e(lo - 0.05, lo - 0.001)) == "not reproduced"
    assert v("H4", **e(hi + 0.001, hi + 0.05)) == "not reproduced"
    assert v("H4", **e(lo + 0.01, hi - 0.01, "cpu-emulated-link")) == "inconclusive"


# ------------------------------------------------------------------------------------------ H5, H6
def train(std, lad, learned=True, params=2.5e6, tokens=1.2e6):
    return {"evidence": "small-scale-training", "standard": std, "ladder": lad, "learned": learned,
            "params": params, "tokens": tokens}


def test_h5_comparable_within_tolerance_worse_beyond_it_better_is_not_comparable():
    tol = THR["H5"]["tol_nats"]  # seed spread 0 -> tolerance = tol_nats
    assert v("H5", **train([5.0, 5.0], [5.0 + tol - 0.001] * 2)) == "consistent at small scale"
    assert v("H5", **train([5.0, 5.0], [5.0 + tol + 0.001] * 2)) == "not reproduced"
    assert v("H5", **train([5.0, 5.0], [5.0 - tol - 0.001] * 2)) == "inconclusive"
    assert v("H5", **train([5.0, 5.0], [5.0 - tol + 0.001] * 2)) == "consistent at small scale"


def test_h5_tolerance_grows_with_the_seed_spread():
    # spread 0.1 -> tolerance 0.2: a gap of 0.15 is within noise, 0.25 is not
    assert v("H5", **train([5.0, 5.1], [5.15, 5.2])) == "consistent at small scale"
    assert v("H5", **train([5.0, 5.1], [5.25, 5.35])) == "not reproduced"


def test_h5_needs_learning_two_seeds_and_scale_for_reproduced():
    assert v("H5", **train([5.0, 5.0], [5.0, 5.0], learned=False)) == "inconclusive"
    assert v("H5", **train([5.0], [5.0])) == "inconclusive"
    assert v("H5", **train([3.0, 3.0], [3.0, 3.0], params=1.2e9, tokens=1e11)) == "reproduced"
    assert v("H5", **train([3.0, 3.0], [3.0, 3.0], params=1.2e9, tokens=1e9)) == "consistent at small scale"


def test_h6_slightly_worse():
    tol = THR["H6"]["tol_nats"]
    assert v("H6", **train([3.0, 3.0], [3.0 + tol + 0.001] * 2, params=3.5e9, tokens=1e11)) == "reproduced"
    assert v("H6", **train([3.0, 3.0], [3.0 + tol + 0.001] * 2)) == "consistent at small scale"
    assert v("H6", **train([3.0, 3.0], [3.0 + tol - 0.001] * 2)) == "inconclusive"
    assert v("H6", **train([3.0, 3.0], [3.0 - tol - 0.001] * 2)) == "not reproduced"


# --------------------------------------------------------------------------------------------- H7
def recov(lo, hi, drop=0.5, params=260e3):
    return {"evidence": "small-scale-training", "gap_to_control": (lo + hi) / 2, "drop": drop,
            "ci": {"gap_to_control": [lo, hi]}, "recovered": 0.4, "params": params}


def test_h7_full_recovery_is_within_tolerance_of_the_control():
    tol = THR["H7"]["tol_nats"]
    assert v("H7", **recov(-0.01, tol - 0.001)) == "consistent at small scale"
    assert v("H7", **recov(-0.01, tol - 0.001, params=8e9)) == "reproduced"
    assert v("H7", **recov(tol + 0.001, 0.3)) == "not reproduced"
    assert v("H7", **recov(tol - 0.001, 0.3)) == "inconclusive"
    assert v("H7", **recov(-0.01, 0.0, drop=2 * tol)) == "inconclusive"      # nothing to recover
    assert v("H7", **recov(-0.01, 0.0, drop=2 * tol + 0.001)) == "consistent at small scale"
    e = recov(0.2, 0.3)
    del e["ci"]
    assert v("H7", **e) == "inconclusive"


# --------------------------------------------------------------------------------------------- H8
def test_h8_needs_a_decode_step_long_enough_to_time():
    m = THR["H8"]["min_step_ms"]
    ok = dict(evidence="cpu-emulated-link", speedup=1.2, ci={"speedup": [1.1, 1.3]})
    assert v("H8", **ok, step_ms=m + 0.1) == "consistent at small scale"
    assert v("H8", **ok, step_ms=m - 0.1) == "inconclusive"
    assert v("H8", **ok) == "inconclusive"
    assert v("H8", evidence="cpu-emulated-link", speedup=1.0, ci={"speedup": [0.9, 1.0]}, step_ms=m + 1) \
        == "not reproduced"
    assert v("H8", evidence="cpu-emulated-link", speedup=1.05, ci={"speedup": [0.98, 1.1]}, step_ms=m + 1) \
        == "inconclusive"
    target = 1 + 0.75 * THR["H8"]["paper_gain"]
    assert v("H8", evidence="multi-gpu", speedup=1.2, ci={"speedup": [target + 0.001, 1.3]}) == "reproduced"
    assert v("H8", evidence="multi-gpu", speedup=1.1, ci={"speedup": [1.0, target - 0.001]}) == "not reproduced"


# ------------------------------------------------------------------------------------- the table
def test_stored_verdict_is_refused_naming_the_file(tmp_path):
    write_result(tmp_path / "cpu" / "speedup.json", {"claims": {"H1": {
        "evidence": "cpu-emulated-link", "speedup": 1.3, "verdict": "consistent at small scale"}}})
    with pytest.raises(claims.ResultFormatError, match=r"speedup\.json.*stores a verdict"):
        claims.claims_table("cpu", results_root=tmp_path)


def test_unknown_evidence_and_missing_fields_are_clear_errors(tmp_path):
    write_result(tmp_path / "cpu" / "a.json", {"claims": {"H1": {"speedup": 1.3}}})
    with pytest.raises(claims.ResultFormatError, match="a.json: claim H1 has evidence None"):
        claims.claims_table("cpu", results_root=tmp_path)
    write_result(tmp_path / "cpu" / "a.json", {"claims": {"H4": {"evidence": "multi-gpu"}}})
    with pytest.raises(claims.ResultFormatError, match="a.json: claim H4: entry lacks comm_share"):
        claims.claims_table("cpu", results_root=tmp_path)


def test_bad_thresholds_are_clear_errors():
    assert claims.parse_thresholds("a=0.5; b=1e9") == {"a": 0.5, "b": 1e9}
    with pytest.raises(ValueError, match="'a0.5' is not name=number"):
        claims.parse_thresholds("a0.5")


def test_disagreeing_measurements_both_show(tmp_path):
    write_result(tmp_path / "cpu" / "speedup.json", {"claims": {"H1": [
        {**speed("cpu-emulated-link", ci=(1.2, 1.4), rec=0.8), "ours": "emulated"},
        {**speed("cpu-real-processes", s=1.02, ci=(1.01, 1.03), rec=0.05), "ours": "real"},
        {**speed("model-in-sample", s=1.27, ci=(1.27, 1.27), rec=0.9), "ours": "model"}]}})
    rows = {r["id"]: r for r in claims.claims_table("cpu", results_root=tmp_path)}
    h1 = rows["H1"]
    assert h1["verdict"] == "not reproduced / consistent at small scale"  # strongest evidence first
    assert h1["evidence"] == ["cpu-real-processes", "cpu-emulated-link", "model-in-sample"]
    md = claims.to_markdown(list(rows.values()), "cpu")
    assert "{bdg-info-line}`CPU, real processes`" in md and "{bdg-danger}`not reproduced` (CPU, real processes)" in md
    assert rows["H2"]["verdict"] == "not run" and md.count("\n* - **H") == 8


def test_entries_of_one_evidence_on_different_models_are_told_apart(tmp_path):
    step = THR["H8"]["min_step_ms"] + 1
    write_result(tmp_path / "cpu" / "adaptation.json", {"claims": {"H8": [
        {"evidence": "cpu-emulated-link", "speedup": 1.0, "ci": {"speedup": [0.9, 1.1]}, "step_ms": step,
         "subject": "stories260K"},
        {"evidence": "cpu-emulated-link", "speedup": 1.2, "ci": {"speedup": [1.1, 1.3]}, "step_ms": step,
         "subject": "32L d1024"},
        {"evidence": "cpu-emulated-link", "speedup": 1.0, "ci": {"speedup": [0.95, 1.05]}, "step_ms": step,
         "subject": "stories260K"}]}})
    rows = {r["id"]: r for r in claims.claims_table("cpu", results_root=tmp_path)}
    md = claims.to_markdown(list(rows.values()), "cpu")
    assert "`inconclusive` (CPU, emulated interconnect, stories260K)" in md
    assert "`consistent at small scale` (CPU, emulated interconnect, 32L d1024)" in md
    assert md.count("(CPU, emulated interconnect, stories260K)") == 1  # same verdict, evidence, subject: once


def test_a_row_of_in_sample_model_values_only_is_not_run(tmp_path):
    write_result(tmp_path / "cpu" / "s.json", {"claims": {"H4": {"evidence": "model-in-sample", "comm_share": 0.3}}})
    assert claims.claims_table("cpu", results_root=tmp_path)[3]["verdict"] == "not run"


def test_committed_claims_table_is_regenerated_from_the_committed_results():
    committed = (REPO_ROOT / "book" / "_generated" / "claims.md").read_text()
    assert claims.to_markdown(claims.claims_table("cpu"), "cpu") == committed


def test_paper_claims_csv_has_a_rule_and_noise_for_every_claim():
    rows = claims.paper_claims(paper_file("claims.csv"))
    assert [r["id"] for r in rows] == [f"H{i}" for i in range(1, 9)]
    for r in rows:
        assert r["quantity"] and r["rule"] and r["noise"] and r["thresholds"], r["id"]
        assert r["id"] in claims.RULES


def test_recovery_without_a_control_is_inconclusive():
    verdict, why = claims.judge("H7", {"evidence": "small-scale-training", "drop": 0.5, "gap_to_control": None},
                                claims.parse_thresholds("tol_nats=0.05; min_params=1e9"))
    assert verdict == "inconclusive" and "control" in why
