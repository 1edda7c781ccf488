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
    # a CPU emulated link counts only when set to a regime and agreeing with the replay: fields the rule reads
    assert claims.judge("H1", e, THR["H1"])[0] == "inconclusive"
    e = sp.measured_entry(ROUNDS, "cpu-emulated-link", "x", "y", tp=2, link_ratio=0.43, replay_error=0.05)
    assert e.link_ratio == 0.43 and e.replay_error == 0.05 and e.extra == {"tp": 2}
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


def test_link_label_names_a_regime_set_link_by_its_ratio():
    assert sp.link_label({"link": "pcie5-nop2p"}) == "pcie5-nop2p"
    assert sp.link_label({"link": "custom:0.000359:1e12", "a/c": 0.4321}) == "a/c = 0.43 (virtual clock)"


def test_hybrid_entry_carries_the_step_time_the_rule_needs():
    regime = {"a/c": 0.43, "replay_speedup": 1.19, "replay_error": 0.0, "measure": "decode step"}
    fast = sp.hybrid_entry({**row("custom:1e-3:1e12", step_ms=4.9), **regime}, ranks="virtual", batch=1, what="w")
    ok = sp.hybrid_entry({**row("custom:1e-3:1e12", step_ms=5.0), **regime}, ranks="virtual", batch=1, what="w")
    assert claims.judge("H8", fast, THR["H8"])[0] == "inconclusive"
    assert claims.judge("H8", ok, THR["H8"])[0] == "consistent at small scale"
    assert ok.link_ratio == 0.43 and ok.replay_error == 0.0 and "1.19x decode step" in ok.ours
    assert "the replay predicts 1.19x" in ok.ours and "virtual clock" in ok.how
    # a reader sees the link's a/c, not its spec; the spec stays in "how"
    assert "link a/c = 0.43 (virtual clock)" in ok.ours and "custom:" not in ok.ours and "custom:1e-3:1e12" in ok.how
    # real processes cannot test the premise, whatever their step or speed-up
    real = sp.hybrid_entry(row(sp.NO_LINK, step_ms=5.0), ranks="processes", batch=1, what="w")
    assert claims.judge("H8", real, THR["H8"])[0] == "not applicable here" and real.link_ratio is None


# ---------------------------------------------------------------------------------------- performance model
@pytest.fixture(scope="module")
def model_claims(model_vs_paper):
    mv = model_vs_paper
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


# ------------------------------------------------------------------------ every field of every builder, pinned
def test_training_claim_stores_exactly_this():
    e = pretrain.training_claim(runs({0: 5.4, 1: 5.5, 2: 5.6}, {0: 5.42, 1: 5.52, 2: 5.65}, {0: 5.41, 1: 5.45}), "4L", 6.9)
    d = e.to_dict()
    spread = d.pop("seed_spread")
    assert spread == pytest.approx({"standard": 0.2, "ladder": 0.23, "parallel": 0.04})
    assert d.pop("value") == pytest.approx(0.03)
    assert d == {
        "evidence": "small-scale-training", "quantity": "val_loss gap ladder - standard (nats)",
        "ours": "4L model, 2,457,600 tokens, 3 seeds per wiring (paired): held-out loss ladder 5.420, 5.520, 5.650 vs "
                "standard 5.400, 5.500, 5.600 (mean gap +0.030 nats); parallel 5.410, 5.450; unigram entropy 6.90",
        "how": "trained from scratch on a FineWeb/C4 substitute, 2.5M parameters: the paper's 1B / ~100B tokens is "
               "~10^7x more compute (parameters x tokens)",
        "seeds": [0, 1, 2], "standard": [5.4, 5.5, 5.6], "ladder": [5.42, 5.52, 5.65], "unigram_entropy": 6.9,
        "params": 2500000.0, "tokens": 2457600.0, "metric": "val_loss", "parallel": [5.41, 5.45],
        "params_non_embedding": 1700000.0}
    one = pretrain.training_claim(runs({0: 5.4, 1: 5.3}, {0: 5.42}), "4L", 6.9, data="FineWeb-edu", paper_size="3B")
    assert one.ours == ("4L model, 2,457,600 tokens, 1 seed per wiring (paired): held-out loss ladder 5.420 vs standard "
                        "5.400 (mean gap +0.020 nats); unigram entropy 6.90")
    assert one.how.startswith("trained from scratch on FineWeb-edu, 2.5M parameters: the paper's 3B / ~100B tokens")
    assert one.extra["seed_spread"] == {"standard": pytest.approx(0.1), "ladder": None}
    assert one.extra["parallel"] == [] and "parallel" not in one.extra["seed_spread"]
    two = pretrain.training_claim(runs({0: 5.4, 1: 5.3}, {0: 5.42, 1: 5.33}), "4L", 6.9)
    assert "2 seeds per wiring" in two.ours and two.extra["seed_spread"] == pytest.approx({"standard": 0.1, "ladder": 0.09})
    with pytest.raises(ValueError, match=r"^need standard and ladder runs at size '4L'$"):
        pretrain.training_claim(runs({0: 5.4}, {}), "4L", 7.0)
    with pytest.raises(ValueError, match=r"^no seed trained in both standard \(\[0\]\) and ladder \(\[1\]\) at size '4L'$"):
        pretrain.training_claim(runs({0: 5.4}, {1: 5.4}), "4L", 7.0)


def varied(control=True, deeper=True):
    """An adaptation result whose per-sequence gaps vary (intervals of non-zero width), with two depths."""
    def r(variant, n, tokens, losses):
        return {"variant": variant, "ladder_layers": n, "retrain_tokens": tokens, "test_losses": losses,
                "test_tokens": [10] * 4, "test_ppl": math.exp(sum(losses) / 40)}
    rows = [r("source", 0, 0, [20.0, 21.0, 19.0, 20.0]),
            r("Hybrid-3L, no retraining", 3, 0, [30.0, 33.0, 29.0, 31.0]),
            r("Hybrid-3L, retrained", 3, 1000, [19.0, 21.5, 18.0, 19.4])]
    if deeper:
        rows += [r("Hybrid-4L, no retraining", 4, 0, [40.0, 41.0, 39.0, 40.0]),
                 r("Hybrid-4L, retrained", 4, 1000, [20.0, 22.0, 19.0, 21.0])]
    if control:
        rows.insert(1, r("source, retrained (control)", 0, 1000, [18.0, 19.0, 17.5, 18.0]))
    return {"model": "stories260K", "n_layers": 5, "ladder_layers": [3, 4] if deeper else [3],
            "recipe": {"lr": 1e-3, "train": "all"}, "data": "sampled text; more", "rows": rows, "params": 260_032}


def test_recovery_entry_stores_exactly_this():
    from ladder.stats import paired_gap
    res = varied()
    rows = {x["variant"]: x for x in res["rows"]}
    tok = rows["source"]["test_tokens"]
    gap = paired_gap(rows["Hybrid-3L, retrained"]["test_losses"], rows["source, retrained (control)"]["test_losses"], tok)
    drop = paired_gap(rows["Hybrid-3L, no retraining"]["test_losses"], rows["source, retrained (control)"]["test_losses"], tok)
    src = paired_gap(rows["Hybrid-3L, retrained"]["test_losses"], rows["source"]["test_losses"], tok)
    assert gap["ci"][0] < gap["ci"][1] and src["ci"][0] < src["ci"][1]  # intervals of non-zero width
    d = adapt.recovery_entry(res).to_dict()
    ret = 77.9 / 40
    assert d.pop("recovered") == pytest.approx((3.075 - ret) / (3.075 - 1.8125))
    assert d.pop("test_loss") == pytest.approx({"source": 2.0, "converted": 3.075, "retrained": ret, "control": 1.8125})
    assert d == {
        "evidence": "small-scale-training", "quantity": "gap_to_control (nats, test set)", "value": gap["gap"],
        "ours": ("stories260K, last 3 of 5 layers converted, lr 0.001, train all, sampled text: test loss 2.000 (source) "
                 f"-> 3.075 converted -> {ret:.3f} after 1,000 retraining tokens; 89% of the conversion's cost recovered "
                 f"(against the control); gap to the control {gap['gap']:+.3f} nats (95% CI {gap['ci'][0]:+.3f} to "
                 f"{gap['ci'][1]:+.3f}, 4 test sequences); gap to the original model {src['gap']:+.3f} nats (95% CI "
                 f"{src['ci'][0]:+.3f} to {src['ci'][1]:+.3f}); last 4: 89%"),
        "how": "loss on a held-out test set, paired bootstrap over its sequences; recipe chosen on a separate selection set",
        "subject": "stories260K", "n": 4,
        "ci": {"drop": drop["ci"], "gap_to_source": src["ci"], "gap_to_control": gap["ci"]},
        "params": 260032.0, "drop": drop["gap"], "gap_to_control": gap["gap"], "gap_to_source": src["gap"],
        "n_sequences": 4, "n_documents": None, "recovered_towards": "control", "ladder_layers": 3, "n_layers": 5,
        "recipe": {"lr": 0.001, "train": "all"}, "retrain_tokens": 1000}
    alone = varied(control=False, deeper=False)
    del alone["params"]
    e = adapt.recovery_entry(alone)
    assert e.params == 0 and e.extra["recovered_towards"] == "source" and e.extra["test_loss"]["control"] is None
    assert "(against the source); no control retrained on the same data; gap to the original model" in e.ours
    assert "last 4" not in e.ours and e.ours.endswith(")")


def test_recovery_entry_resamples_the_test_documents_when_known():
    """Test blocks that know their documents: the intervals resample documents (here 2, of 2 sequences each),
    and the entry says so."""
    from ladder.stats import paired_gap
    res = varied()
    for row in res["rows"]:
        row["test_docs"] = [0, 0, 1, 1]
    rows = {x["variant"]: x for x in res["rows"]}
    tok = rows["source"]["test_tokens"]
    gap = paired_gap(rows["Hybrid-3L, retrained"]["test_losses"], rows["source, retrained (control)"]["test_losses"], tok,
                     clusters=[0, 0, 1, 1])
    e = adapt.recovery_entry(res)
    assert e.n == 2 and e.extra["n_documents"] == 2 and e.extra["n_sequences"] == 4
    assert list(e.interval("gap_to_control")) == gap["ci"]
    assert gap["ci"] != paired_gap(rows["Hybrid-3L, retrained"]["test_losses"],
                                   rows["source, retrained (control)"]["test_losses"], tok)["ci"]
    assert f"{gap['ci'][1]:+.3f}, 4 test sequences from 2 documents); gap to the original" in e.ours
    assert e.how == ("loss on a held-out test set, paired bootstrap over its documents (a document's sequences "
                     "resampled together); recipe chosen on a separate selection set")


def test_hybrid_entry_stores_exactly_this():
    assert sp.hybrid_entry(row("pcie5-nop2p", step_ms=19.6), ranks="processes", batch=1, what="w").to_dict() == {
        "evidence": "cpu-real-processes", "quantity": "speedup", "value": 1.19,
        "ours": "1.19x tokens/s (95% CI 1.08-1.42, 9 runs), w, TP=2, link pcie5-nop2p; decode step 19.6 ms",
        "how": "2 real gloo processes on cpu, ladder.bench, plus the emulated link pcie5-nop2p on every all-reduce "
               "(at least 15 µs each, on top of the real collective)",
        "subject": "stories260K", "n": 9, "ci": {"speedup": [1.08, 1.42]}, "speedup": 1.19, "step_ms": 19.6,
        "tp": 2, "batch": 1, "link": "pcie5-nop2p", "ladder_layers": 3}
    v = sp.hybrid_entry(row("custom:0.0004:2e8"), ranks="virtual", batch=4, what="w")
    assert v.how == ("one rank's shard on cpu, peers emulated (virtual ranks), random weights, ladder.bench, emulated "
                     "link custom:0.0004:2e8") and v.extra["batch"] == 4
    assert sp.hybrid_entry(row(sp.NO_LINK), ranks="processes", batch=1, what="w", device="cuda").how \
        == "2 real NCCL processes on cuda, ladder.bench"
    for link in (None, "none"):
        assert "emulated" not in sp.hybrid_entry(row(link), ranks="processes", batch=1, what="w").how
    with pytest.raises(ValueError, match=r"^hybrid_entry: ranks must be 'processes' or 'virtual', got 'x'$"):
        sp.hybrid_entry(row(sp.NO_LINK), ranks="x", batch=1, what="w")


def test_model_entries_values_and_texts(model_claims, model_vs_paper):
    import pandas as pd

    import ladder.perfmodel as pm
    mv = model_vs_paper
    h1, h2, h3, h4 = (model_claims[c][0] for c in ("H1", "H2", "H3", "H4"))
    assert h1.value == h1.speedup == pytest.approx(float(mv["batch"][mv["batch"].batch == 1].model_speedup.iloc[0]))
    assert h1.upper_bound_speedup == pytest.approx(pm.speedup("llama3-70B", mv["hw"], mv["fab"], 8, 1, wiring="upper_bound"))
    assert h4.value == h4.comm_share == pytest.approx(
        pm.predict("llama3-70B", mv["hw"], 8, 1, wiring="standard", link=mv["fab"]).comm_share)
    how = "performance model (roofline + alpha-beta link), calibrated on the paper's 70B TP=8 NVLink column"
    assert {e.how for e in (h1, h2, h3, h4)} == {how}
    assert [e.quantity for e in (h1, h2, h3, h4)] == ["speedup", "speedup", "speedup", "comm_share"]
    assert h1.ours == f"model {h1.value:.3f}x (fitted on this column)"
    assert h2.ours == f"model, P2P off: up to {h2.value:.2f}x over batch 1-64"
    assert h3.ours == f"model, 405B TP=16 two nodes: >= {h3.value:.2f}x over batch 1-64"
    assert h4.ours == (f"model: {h4.value:.0%} of standard's time is all-reduce, at the point it was fitted on "
                       f"(paper grid implies {sp.paper_comm_share():.0%})")
    at_fit = {"shape": "llama3-70B", "tp": 8, "batch": 1, "link": "nvlink4"}
    assert h1.extra == at_fit and h4.extra == at_fit
    assert h3.extra == {"shape": "llama3.1-405B", "tp": 16, "link": "net400g"}
    # H2 is the largest fitted-link-factor speed-up with P2P off, H3 the smallest fitted one over two nodes: a
    # table where every other row (the spec rate, the other settings) would give another answer
    rows = [("70B P2P off", "fitted", 1, 1.4), ("70B P2P off", "fitted", 4, 1.5), ("70B P2P off", "spec", 4, 1.9),
            ("405B 2 nodes", "fitted", 1, 1.35), ("405B 2 nodes", "fitted", 4, 1.32), ("405B 2 nodes", "spec", 1, 1.1),
            ("70B NVLink", "fitted", 1, 1.6), ("70B NVLink", "fitted", 4, 1.05)]
    slow = pd.DataFrame([{"setting": a, "link factor": b, "batch": c, "ladder_speedup": d} for a, b, c, d in rows])
    got = sp.model_entries(mv, slow)
    assert got["H2"][0].value == 1.5 and got["H3"][0].value == 1.32
    assert got["H2"][0].extra == {"shape": "llama3-70B", "tp": 8, "link": "pcie5-nop2p", "batch": 4}
