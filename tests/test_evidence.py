"""The evidence builders: one per kind of claims entry, each tested on what the rules depend on.

`speedup.measured_entry` (H1-H4), `speedup.hybrid_entry` (H8), `speedup.model_entries` (the performance
model), `pretrain.training_claim` (H5/H6), `adapt.recovery_entry` (H7). Synthetic inputs only (no
training, no benchmark): the point is which numbers go where — the direction of a gap, its comparator,
the label of the evidence."""
import math

import pytest

from ladder import adapt, claims
from ladder import pretrain
from ladder import speedup as sp
from ladder.claims import ClaimEntry

THR = {r["id"]: r["thresholds"] for r in claims.paper_claims()}
ROUNDS = [(100, 130, 150), (100, 120, 140), (100, 125, 145)]


# ---------------------------------------------------------------------------------------- measured speed
def test_measured_entry_is_a_claim_entry_with_its_rounds_and_intervals():
    e = sp.measured_entry(ROUNDS, "cpu-emulated-link", "x", "y", tp=2)
    assert isinstance(e, ClaimEntry) and e.evidence == "cpu-emulated-link" and e.quantity == "speedup"
    assert e.n == 3 and e.value == e.speedup == pytest.approx(1.25) and set(e.ci) == set(sp.FIELDS)
    assert e.recovered == pytest.approx(0.25 / 0.45) and e.upper_bound_speedup == pytest.approx(1.45)
    assert e.comm_share == pytest.approx(1 - 100 / 145) and e.extra == {"tp": 2} and e.how == "y"
    lo, hi = e.ci["speedup"]
    assert e.ours == f"1.25x (95% CI {lo:.2f}-{hi:.2f}, 3 rounds), 56% of the upper bound's gain: x"
    assert claims.judge("H1", e, THR["H1"])[0] == "consistent at small scale"


def test_measured_entry_leaves_the_number_of_rounds_to_the_rule():
    two = sp.measured_entry(ROUNDS[:2], "cpu-emulated-link", "x", "y")
    assert two.n == 2 and two.ci  # an interval, but on 2 rounds: the rule's min_rounds (3) says inconclusive
    assert claims.judge("H1", two, THR["H1"]) == ("inconclusive", "only 2 rounds: an interval needs ≥ 3")
    one = sp.measured_entry(ROUNDS[:1], "cpu-emulated-link", "x", "y")
    assert one.n == 1 and one.ci == {} and one.ours.startswith("1.30x (1 round, no interval), 60%")
    assert claims.judge("H1", one, THR["H1"])[0] == "inconclusive"


def test_measured_entry_of_the_communication_share():
    e = sp.measured_entry(ROUNDS, "multi-gpu", "x", "y", quantity="comm_share")
    assert e.quantity == "comm_share" and e.value == e.comm_share == pytest.approx(1 - 100 / 145)
    lo, hi = e.ci["comm_share"]
    assert lo < hi and e.ours == f"31% of standard's time is all-reduce (95% CI {lo:.0%}-{hi:.0%}, 3 rounds): x"
    assert claims.judge("H4", e, THR["H4"])[0] in ("reproduced", "inconclusive")
    with pytest.raises(ValueError, match=r"^measured_entry: quantity must be 'speedup' or 'comm_share', got 'recovered'$"):
        sp.measured_entry(ROUNDS, "multi-gpu", "x", "y", quantity="recovered")


def test_measured_entry_with_no_upper_bound_gain_has_no_recovered_share():
    e = sp.measured_entry([(100, 110, 100), (100, 110, 100), (100, 110, 100)], "cpu-emulated-link", "x", "y")
    assert e.recovered is None and "of the upper bound's gain" not in e.ours
    assert claims.judge("H1", e, THR["H1"])[0] == "inconclusive"


# ---------------------------------------------------------------------------------------- hybrid speed (H8)
def row(link, step_ms=18.4, speedup=1.19, ci=(1.08, 1.42), samples=9):
    return {"model": "stories260K", "link": link, "tp": 2, "ladder_layers": 3, "speedup": speedup,
            "speedup_ci": list(ci), "step_ms": step_ms, "samples": samples}


def test_hybrid_entry_labels_real_processes_as_real_processes_even_behind_an_emulated_link():
    plain = sp.hybrid_entry(row(sp.NO_LINK), ranks="processes", batch=1, what="hybrid vs source")
    slow = sp.hybrid_entry(row("pcie5-nop2p", step_ms=19.6), ranks="processes", batch=1, what="hybrid vs source")
    assert plain.evidence == slow.evidence == "cpu-real-processes"
    assert "2 real gloo processes on cpu" in plain.how and "emulated" not in plain.how
    # pcie5-nop2p at 2 ranks: 10 µs + 2 x 2.5 µs per all-reduce, added to gloo's own collective
    assert "plus the emulated link pcie5-nop2p on every all-reduce (at least 15 µs each" in slow.how
    assert slow.step_ms == 19.6 and slow.n == 9 and slow.ci == {"speedup": (1.08, 1.42)}
    assert slow.subject == "stories260K" and slow.extra == {"tp": 2, "batch": 1, "link": "pcie5-nop2p",
                                                            "ladder_layers": 3}
    assert slow.ours == ("1.19x tokens/s (95% CI 1.08-1.42, 9 runs), hybrid vs source, TP=2, link pcie5-nop2p; "
                         "decode step 19.6 ms")


def test_hybrid_entry_of_virtual_ranks_is_an_emulated_link():
    e = sp.hybrid_entry(row("custom:0.0004:2e8", step_ms=108.6), ranks="virtual", batch=1, what="w")
    assert e.evidence == "cpu-emulated-link" and "virtual ranks" in e.how
    assert sp.hybrid_entry(row("nvlink4"), ranks="virtual", batch=1, what="w", device="cuda").evidence \
        == "gpu1-emulated-link"
    assert sp.hybrid_entry(row(sp.NO_LINK), ranks="processes", batch=1, what="w", device="cuda:0").evidence \
        == "multi-gpu"
    with pytest.raises(ValueError, match="ranks must be"):
        sp.hybrid_entry(row(sp.NO_LINK), ranks="threads", batch=1, what="w")


def test_hybrid_entry_carries_the_step_time_the_rule_needs():
    fast = sp.hybrid_entry(row(sp.NO_LINK, step_ms=4.9), ranks="processes", batch=1, what="w")
    ok = sp.hybrid_entry(row(sp.NO_LINK, step_ms=5.0), ranks="processes", batch=1, what="w")
    assert claims.judge("H8", fast, THR["H8"])[0] == "inconclusive"
    assert claims.judge("H8", ok, THR["H8"])[0] == "consistent at small scale"


# ---------------------------------------------------------------------------------------- performance model
@pytest.fixture(scope="module")
def model_claims():
    mv = sp.model_vs_paper(fit_tp=8)
    return sp.model_entries(mv, sp.model_slow_links(mv["hw"], mv["fab"]))


def test_model_entries_in_sample_where_fitted(model_claims):
    ev = {cid: [e.evidence for e in es] for cid, es in model_claims.items()}
    # H1 and H4 are predicted at 70B, TP = 8, batch 1 on NVLink: the column the model was fitted on
    assert ev == {"H1": ["model-in-sample"], "H2": ["model-out-of-sample"], "H3": ["model-out-of-sample"],
                  "H4": ["model-in-sample"]}
    h4 = model_claims["H4"][0]
    assert h4["tp"] == 8 and h4["batch"] == 1 and h4["link"] == "nvlink4" and "fitted on" in h4.ours
    assert claims.judge("H4", h4, THR["H4"])[0] == "not run"
    assert all(isinstance(e, ClaimEntry) for es in model_claims.values() for e in es)


# ---------------------------------------------------------------------------------------- training (H5/H6)
def runs(std, lad, par=None, size="4L", order=None):
    out = [{"wiring": w, "seed": s, "size": size, "val_loss": x, "params": 2.5e6, "params_non_embedding": 1.7e6,
            "tokens": 2_457_600}
           for w, xs in (("standard", std), ("ladder", lad), ("parallel", par or {})) for s, x in xs.items()]
    return [out[i] for i in order] if order else out


def test_training_claim_gap_is_ladder_minus_standard_paired_by_seed():
    e = pretrain.training_claim(runs({0: 5.40, 1: 5.50, 2: 5.60}, {0: 5.42, 1: 5.53, 2: 5.61}), "4L", 7.0)
    assert e.evidence == "small-scale-training" and e.seeds == (0, 1, 2)
    assert e.standard == (5.40, 5.50, 5.60) and e.ladder == (5.42, 5.53, 5.61)
    assert e.value == pytest.approx(0.02) and e.unigram_entropy == 7.0
    assert e.params == 2.5e6 and e.tokens == 2_457_600
    assert "learned" not in e.extra  # the rule decides, with the margin in claims.csv
    # swapped wirings: the gap changes sign
    s = pretrain.training_claim(runs({0: 5.42, 1: 5.53, 2: 5.61}, {0: 5.40, 1: 5.50, 2: 5.60}), "4L", 7.0)
    assert s.value == pytest.approx(-0.02) and s.ladder == e.standard


def test_training_claim_pairs_by_seed_whatever_the_order_of_the_runs():
    std, lad = {0: 5.0, 1: 6.0, 2: 5.5}, {0: 5.01, 1: 6.01, 2: 5.51}
    e = pretrain.training_claim(runs(std, lad, order=[5, 0, 3, 2, 4, 1]), "4L", 7.5)
    assert e.seeds == (0, 1, 2) and [b - a for a, b in zip(e.standard, e.ladder)] == pytest.approx([0.01] * 3)
    # paired, a constant 0.01 gap has no spread: comparable within the 0.02-nat margin
    assert claims.judge("H5", e, THR["H5"])[0] == "consistent at small scale"


def test_training_claim_leaves_unpaired_seeds_out_of_the_pairs():
    e = pretrain.training_claim(runs({0: 5.4, 1: 5.5, 7: 5.3}, {0: 5.41, 1: 5.52}), "4L", 7.0)
    assert e.seeds == (0, 1) and e.standard == (5.4, 5.5)
    assert e.extra["unpaired"] == {"standard": {"7": 5.3}, "ladder": {}}
    assert claims.judge("H5", e, THR["H5"])[1] == "2 standard / 2 ladder seeds: the rule needs ≥ 3 per wiring"
    with pytest.raises(ValueError, match="no seed trained in both"):
        pretrain.training_claim(runs({0: 5.4}, {1: 5.4}), "4L", 7.0)
    with pytest.raises(ValueError, match="need standard and ladder runs"):
        pretrain.training_claim(runs({0: 5.4}, {}), "4L", 7.0)


def test_training_claim_text_and_learning():
    e = pretrain.training_claim(runs({0: 5.4, 1: 5.5, 2: 5.6}, {0: 5.42, 1: 5.52, 2: 5.62}, {0: 5.41}), "4L", 6.5)
    assert e.ours.startswith("4L model, 2,457,600 tokens, 3 seeds per wiring (paired): held-out loss ladder "
                             "5.420, 5.520, 5.620 vs standard 5.400, 5.500, 5.600 (mean gap +0.020 nats); "
                             "parallel 5.410; unigram entropy 6.50")
    # 1.21e9 parameters x 1e11 tokens against 2.5e6 x 2.46e6: ~10^7 (not 10^5)
    assert e.how.endswith("the paper's 1B / ~100B tokens is ~10^7x more compute (parameters x tokens)")
    # worst loss 5.62 > 6.5 - 1 nat: not learned by the CSV's margin
    assert "did not learn" in claims.judge("H5", e, THR["H5"])[1]


# ---------------------------------------------------------------------------------------- recovery (H7)
def result(control=True):
    """An adaptation result with four test sequences of 10 tokens each (summed losses per sequence)."""
    def r(variant, n, tokens, losses):
        return {"variant": variant, "ladder_layers": n, "retrain_tokens": tokens, "test_losses": losses,
                "test_tokens": [10] * 4, "test_ppl": math.exp(sum(losses) / 40)}
    rows = [r("source", 0, 0, [20.0, 21.0, 19.0, 20.0]),                      # loss 2.0
            r("Hybrid-3L, no retraining", 3, 0, [30.0, 31.0, 29.0, 30.0]),    # 3.0
            r("Hybrid-3L, retrained", 3, 100, [19.0, 20.0, 18.0, 19.0])]      # 1.9
    if control:
        rows.insert(1, r("source, retrained (control)", 0, 100, [18.0, 19.0, 17.0, 18.0]))  # 1.8
    return {"model": "stories260K", "n_layers": 5, "ladder_layers": [3], "recipe": {"lr": 1e-3, "train": "all"},
            "data": "text; more", "rows": rows, "params": 260_032}


def test_recovery_entry_measures_against_the_control_and_reports_the_original():
    e = adapt.recovery_entry(result())
    assert e.gap_to_control == pytest.approx(1.9 - 1.8) and e.value == e.gap_to_control
    assert e.drop == pytest.approx(3.0 - 1.8)            # the conversion's cost against the control
    assert e.gap_to_source == pytest.approx(1.9 - 2.0)   # beside it: against the original model
    assert set(e.ci) == {"gap_to_control", "drop", "gap_to_source"}
    assert e.ci["drop"][0] <= e.drop <= e.ci["drop"][1]
    assert e.recovered == pytest.approx((3.0 - 1.9) / (3.0 - 1.8)) and e.extra["recovered_towards"] == "control"
    assert e.n == 4 and e.params == 260_032 and e.subject == "stories260K"
    assert "gap to the control +0.100 nats" in e.ours and "gap to the original model -0.100 nats" in e.ours
    verdict, why = claims.judge("H7", e, THR["H7"])
    assert verdict == "not reproduced at small scale" and "gap to the original model -0.100" in why


def test_recovery_entry_without_control_measures_the_cost_against_the_source():
    e = adapt.recovery_entry(result(control=False))
    assert e.gap_to_control is None and "gap_to_control" not in e.ci
    assert e.drop == pytest.approx(3.0 - 2.0) and e.extra["recovered_towards"] == "source"
    assert claims.judge("H7", e, THR["H7"])[0] == "inconclusive"
    d = e.to_dict()
    assert "gap_to_control" not in d and d["ci"]["drop"] == list(e.ci["drop"])
