"""ladder.speedup: the recovery estimators and their paired-round bootstrap intervals."""
import pytest

from ladder import speedup as sp


def test_ratios_from_medians():
    r = sp.ratios([100, 110, 90], [130, 120, 140], [150, 160, 140])
    assert r["speedup"] == pytest.approx(1.3)
    assert r["upper_bound_speedup"] == pytest.approx(1.5)
    assert r["recovered"] == pytest.approx(0.3 / 0.5)
    assert r["comm_share"] == pytest.approx(1 - 100 / 150)


def test_bootstrap_interval_contains_the_estimate_and_shrinks_with_agreement():
    noisy = [(100, 130, 150), (80, 120, 140), (120, 125, 160), (100, 140, 150), (90, 110, 130)]
    ci = sp.paired_bootstrap(noisy, n_boot=500)
    est = sp.ratios(*map(list, zip(*noisy)))
    for k in sp.FIELDS:
        assert ci[k][0] <= est[k] <= ci[k][1], k
    assert ci["speedup"][1] - ci["speedup"][0] > 0.05
    same = [(100, 130, 150)] * 5  # identical rounds: no uncertainty
    tight = sp.paired_bootstrap(same, n_boot=200)
    assert tight["speedup"] == pytest.approx([1.3, 1.3])


def test_bootstrap_keeps_rounds_paired():
    """A load drift that slows every wiring of a round alike must not widen the speedup's interval."""
    drift = [(100 * f, 130 * f, 150 * f) for f in (0.5, 0.8, 1.0, 1.3, 2.0)]
    ci = sp.paired_bootstrap(drift, n_boot=300)
    assert ci["speedup"] == pytest.approx([1.3, 1.3])
    assert ci["recovered"] == pytest.approx([0.6, 0.6])


def test_rounds_of_picks_matching_records():
    recs = [{"wiring": "standard", "link_name": "fast", "tp": 2, "samples_tokens_per_s": [1, 2]},
            {"wiring": "ladder", "link_name": "fast", "tp": 2, "samples_tokens_per_s": [3, 4]},
            {"wiring": "ladder", "link_name": "slow", "tp": 2, "samples_tokens_per_s": [9, 9]},
            {"wiring": "upper_bound", "link_name": "fast", "tp": 2, "samples_tokens_per_s": [5, 6]}]
    assert sp.rounds_of(recs, link_name="slow", tp=2) == []  # no standard on the slow link
    assert sp.rounds_of(recs, link_name="fast", tp=2) == [(1, 3, 5), (2, 4, 6)]


def test_measured_entry_follows_contract_2():
    e = sp.measured_entry([(100, 130, 150), (100, 120, 140)], "cpu-emulated-link", "x", "y", tp=2)
    assert e["evidence"] == "cpu-emulated-link" and e["quantity"] == "speedup" and e["n"] == 2
    assert e["value"] == e["speedup"] and set(e["ci"]) == set(sp.FIELDS) and "verdict" not in e


def test_paper_numbers_come_from_the_tables():
    assert sp.paper_recovered() == pytest.approx((101.22 / 77.39 - 1) / (110.59 / 77.39 - 1))
    assert sp.paper_comm_share() == pytest.approx(1 - 77.39 / 110.59)
    with pytest.raises(ValueError, match="tp=3"):
        sp.paper_row(3, 1)


def test_bad_input_names_the_problem():
    with pytest.raises(ValueError, match="round"):
        sp.paired_bootstrap([])
    with pytest.raises(ValueError, match="standard, ladder"):
        sp.paired_bootstrap([(1, 2)])
