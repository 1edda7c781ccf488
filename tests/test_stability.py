"""ladder.stability: the rule that decides whether a chapter's verdicts hold still across re-runs."""
import json

import pytest

from ladder import stability as st
from ladder import speedup as sp
from ladder.claims import block


def test_the_rule_is_pinned():
    assert st.MIN_RUNS == 3 and st.MAX_RECOVERY_SPREAD == 0.10


def runs(*recovered, verdicts=None):
    verdicts = verdicts or ["consistent at small scale"] * len(recovered)
    return [{"H1": {"verdict": v, "recovered": r}} for v, r in zip(verdicts, recovered)]


@pytest.mark.parametrize("recovered,verdict", [
    ((0.80, 0.85, 0.90), "stable"),          # spread 10 points: at the limit
    ((0.80, 0.85, 0.9001), "unstable"),      # just past it
    ((0.86, 0.86, 0.86), "stable"),
    ((0.50, 0.95, 0.90), "unstable")])
def test_recovered_spread_boundary(recovered, verdict):
    assert st.judge_stability(runs(*recovered))["verdict"] == verdict


def test_a_changed_verdict_is_unstable_even_with_the_same_recovery():
    got = st.judge_stability(runs(0.8, 0.8, 0.8, verdicts=["consistent at small scale", "inconclusive",
                                                            "consistent at small scale"]))
    assert got["verdict"] == "unstable" and "H1's verdict changed" in got["reason"]
    assert got["per_claim"]["H1"]["same_verdict"] is False


def test_fewer_runs_than_the_rule_needs_are_inconclusive():
    assert st.judge_stability(runs(0.8, 0.8))["verdict"] == "inconclusive"
    assert st.judge_stability(runs(0.8, 0.8), min_runs=2)["verdict"] == "stable"


def test_a_claim_missing_from_one_run_counts_as_a_changed_verdict():
    r = runs(0.8, 0.8, 0.8)
    r[1] = {}
    got = st.judge_stability(r)
    assert got["verdict"] == "unstable" and got["per_claim"]["H1"]["verdicts"][1] == "missing"
    assert got["per_claim"]["H1"]["spread"] is None  # no spread from an incomplete set


def test_claim_outcomes_reads_verdict_and_recovered_share_from_a_result_file(tmp_path):
    rounds = [(1.0, 1.40, 1.5), (1.0, 1.42, 1.5), (1.0, 1.38, 1.52), (1.0, 1.41, 1.49), (1.0, 1.40, 1.5)]
    e = sp.measured_entry(rounds, "cpu-emulated-link", "a shape", "CPU", link_ratio=0.43, replay_error=0.02)
    folder = tmp_path / "cpu"
    folder.mkdir()
    (folder / "speedup.json").write_text(json.dumps({"claims": block({"H1": [e]}), "provenance": {}}))
    got = st.claim_outcomes("cpu", tmp_path)
    assert set(got) == {"H1"}
    assert got["H1"]["recovered"] == pytest.approx(e.recovered) and got["H1"]["evidence"] == "cpu-emulated-link"
    assert got["H1"]["verdict"] == "consistent at small scale"


def test_the_book_paragraph_says_what_was_found_or_that_nothing_was_recorded(tmp_path):
    from ladder.claims import stability_markdown
    assert "No repeated run is recorded" in stability_markdown("cpu", tmp_path)
    from ladder.provenance import write_result
    res = st.judge_stability(runs(0.80, 0.84, 0.86))
    write_result(tmp_path / "cpu" / "stability_02_speedup.json",
                 {"chapter": "02_speedup", "runs": [{}, {}, {}], **res,
                  "rule": {"min_runs": st.MIN_RUNS, "max_recovery_spread": st.MAX_RECOVERY_SPREAD}}, {"runs": 3})
    text = stability_markdown("cpu", tmp_path)
    assert "executed 3 times in a row" in text and "**stable**" in text and "H1: consistent at small scale, recovered 80%–86%" in text
    assert "within 10 points, at least 3 runs" in text


def _record(folder, per_claim, n_runs=3):
    from ladder.provenance import write_result
    write_result(folder / "cpu" / "stability_02_speedup.json",
                 {"chapter": "02_speedup", "runs": [{}] * n_runs, "verdict": "x", "reason": "x", "per_claim": per_claim,
                  "rule": {"min_runs": st.MIN_RUNS, "max_recovery_spread": st.MAX_RECOVERY_SPREAD}}, {})


def _rows():
    return [{"id": "H1", "verdict": "consistent at small scale", "headline": {"verdict": "consistent at small scale",
                                                                             "reason": "recovered CI low 75%"}},
            {"id": "H2", "verdict": "consistent at small scale", "headline": {"verdict": "consistent at small scale",
                                                                             "reason": "r"}},
            {"id": "H4", "verdict": "not run", "headline": {"verdict": "not run", "reason": "in sample"}}]


def test_a_verdict_that_flipped_on_re_runs_reads_inconclusive_in_the_book(tmp_path):
    flipped = {"verdicts": ["consistent at small scale", "inconclusive", "consistent at small scale"],
               "same_verdict": False}
    _record(tmp_path, {"H1": flipped, "H2": {"verdicts": ["consistent at small scale"] * 3, "same_verdict": True},
                       "H4": {"verdicts": ["not run", "inconclusive", "not run"], "same_verdict": False}})
    rows = {r["id"]: r for r in st.hold_still(_rows(), "cpu", tmp_path)}
    assert rows["H1"]["verdict"] == rows["H1"]["headline"]["verdict"] == "inconclusive"
    assert "flipped when chapter 02_speedup was re-run 3 times" in rows["H1"]["headline"]["reason"]
    assert "the committed run alone read consistent at small scale" in rows["H1"]["headline"]["reason"]
    assert rows["H2"]["verdict"] == "consistent at small scale"  # held still
    assert rows["H4"]["verdict"] == "not run"  # nothing to demote


def test_too_few_re_runs_or_none_change_nothing(tmp_path):
    assert st.hold_still(_rows(), "cpu", tmp_path) == _rows()  # no record
    _record(tmp_path, {"H1": {"verdicts": ["a", "b"], "same_verdict": False}}, n_runs=st.MIN_RUNS - 1)
    assert st.hold_still(_rows(), "cpu", tmp_path) == _rows()


def test_a_re_run_keeps_what_it_measured(tmp_path):
    import json
    assert st._measured(tmp_path) == {}
    (tmp_path / "speedup.json").write_text(json.dumps({
        "module_costs": {"attn": 0.0008, "mlp": 0.0009, "reps": 200, "note": "x"},
        "validation": [{"name": "paper, NVLink", "a/c": 0.43, "speedup": 1.4, "speedup_ci": [1.3, 1.5],
                        "replay_speedup": 1.38, "replay_error": 0.014, "recovered": 0.9, "recovered_ci": [0.7, 1.1],
                        "link": "custom:x"}]}))
    m = st._measured(tmp_path)
    assert m["module_compute_ms"] == {"attn": pytest.approx(0.8), "mlp": pytest.approx(0.9)}
    assert m["regimes"][0]["replay_error"] == 0.014 and "link" not in m["regimes"][0]


def test_rerun_runs_the_chapter_as_a_user_would_and_collects_each_run(tmp_path, monkeypatch):
    """`rerun` executes `python -m ladder.pipeline` once per run into its own folders, reads each run's
    outcomes and measurements from there, and stops at a failed run."""
    import subprocess
    import sys
    rounds = [(1.0, 1.40, 1.5), (1.0, 1.42, 1.5), (1.0, 1.38, 1.52), (1.0, 1.41, 1.49)]
    e = sp.measured_entry(rounds, "cpu-emulated-link", "a shape", "CPU", link_ratio=0.43, replay_error=0.0)
    calls = []

    def fake_run(cmd):
        calls.append(cmd)
        out = tmp_path / "root" / f"run{len(calls)}" / "data" / "results" / "cpu"
        out.mkdir(parents=True)
        (out / "speedup.json").write_text(json.dumps({"claims": block({"H1": [e]}), "provenance": {},
                                                      "module_costs": {"attn": 0.001}, "validation": []}))
        return subprocess.CompletedProcess(cmd, 0)
    monkeypatch.setattr(subprocess, "run", fake_run)
    logged = []
    runs = st.rerun("02_speedup", "cpu", 2, tmp_path / "root", log=logged.append)
    assert len(runs) == 2 and len(logged) == 2 and "run 2/2: H1 consistent at small scale" in logged[1]
    assert calls[0][:3] == [sys.executable, "-m", "ladder.pipeline"]
    assert calls[1][calls[1].index("--output-root") + 1] == str(tmp_path / "root" / "run2")
    assert calls[0][calls[0].index("--book-dir") + 1] == str(tmp_path / "root" / "run1" / "book")
    assert {"--force", "--no-book"} <= set(calls[0]) and calls[0][calls[0].index("--only") + 1] == "02_speedup"
    assert runs[0]["outcomes"]["H1"]["verdict"] == "consistent at small scale" and runs[0]["seconds"] >= 0
    assert runs[1]["measured"]["module_compute_ms"] == {"attn": pytest.approx(1.0)}
    monkeypatch.setattr(subprocess, "run", lambda cmd: subprocess.CompletedProcess(cmd, 1))
    with pytest.raises(RuntimeError, match="run 1 of 02_speedup failed"):
        st.rerun("02_speedup", "cpu", 2, tmp_path / "other")


def test_the_reasons_speak_of_points_of_the_share():
    assert st.judge_stability(runs(0.80, 0.85, 0.86))["reason"] == ("every verdict the same in 3 runs, every recovered "
                                                                    "share within 10 points")
    assert st.judge_stability(runs(0.50, 0.95, 0.90))["reason"] == "H1's recovered share spread 45 points > 10"


def test_the_book_paragraph_word_for_word(tmp_path):
    """The whole paragraph, so that every phrase of it is pinned (make mutate found only substrings checked)."""
    import json
    import os
    from ladder.claims import stability_markdown
    from ladder.provenance import hardware_line
    assert stability_markdown("gpu", tmp_path) == (
        "**Does it hold still?** No repeated run is recorded for the gpu profile (`python -m ladder.stability "
        "--profile gpu` re-runs a chapter and records it).\n")
    _record(tmp_path, {"H1": {"verdicts": ["consistent at small scale"] * 3, "recovered": [0.985, 0.99, None]},
                       "H2": {"verdicts": ["inconclusive", "not run", "inconclusive"], "recovered": [0.5, 0.9, 0.7]},
                       "H4": {"verdicts": ["not run"] * 3, "recovered": [None] * 3}})
    prov = json.loads((tmp_path / "cpu" / "stability_02_speedup.json").read_text())["provenance"]
    assert hardware_line(prov).startswith(f"{os.cpu_count()} CPU cores (")  # the machine that ran it is named
    assert stability_markdown("cpu", tmp_path) == (
        f"**Does it hold still?** Chapter `02_speedup` was executed 3 times in a row on {prov['date'][:10]} (commit "
        f"`{prov['git_commit'][:10]}`) on {hardware_line(prov)}: **x** (x). Per claim, its verdicts over the runs and the range of the share "
        "of the upper bound's gain recovered: H1: consistent at small scale, recovered 98.5%–99.0%; "
        "H2: inconclusive / not run, recovered 50%–90%; H4: not run. The rule (every verdict the same, recovered "
        "within 10 points, at least 3 runs) is `ladder/stability.py`.\n")
    record = json.loads((tmp_path / "cpu" / "stability_02_speedup.json").read_text())
    del record["rule"]
    (tmp_path / "cpu" / "stability_02_speedup.json").write_text(json.dumps(record))
    assert "The rule (not recorded in the result file) is" in stability_markdown("cpu", tmp_path)


def test_the_paragraph_gives_each_claims_speed_up_over_the_runs(tmp_path):
    """The re-runs' measured speed-ups beside the recovered share, and why they matter (the table's interval is
    one run's); no speed-up in any run leaves both out (the word-for-word test above)."""
    import json
    from ladder.claims import stability_markdown
    _record(tmp_path, {"H1": {"verdicts": ["consistent at small scale"] * 3, "recovered": [0.985, 0.985, 0.985]},
                       "H2": {"verdicts": ["consistent at small scale"] * 3, "recovered": [0.98, 0.98, 0.98]},
                       "H4": {"verdicts": ["not run"] * 3, "recovered": [None] * 3}})
    path = tmp_path / "cpu" / "stability_02_speedup.json"
    record = json.loads(path.read_text())
    record["runs"] = [{"outcomes": {"H1": {"speedup": 1.4525}, "H2": {"speedup": 1.5}, "H4": {"speedup": None}}},
                      {"outcomes": {"H1": {"speedup": 1.3625}, "H2": {"speedup": None}}},
                      {"outcomes": {"H1": {"speedup": 1.44}}}]
    path.write_text(json.dumps(record))
    text = stability_markdown("cpu", tmp_path)
    assert ("Per claim, its verdicts over the runs and the range of the share of the upper bound's gain recovered "
            "and of the measured speed-up: H1: consistent at small scale, recovered 98.5%–98.5%, speed-up "
            "1.36x–1.45x; H2: consistent at small scale, recovered 98.0%–98.0%, speed-up 1.50x–1.50x; "
            "H4: not run. The claims table's 95% intervals resample the rounds of one run, so they leave out the "
            "speed-up's drift between runs (the stability rule judges verdicts and recovered shares only). The rule "
            "(every verdict the same, recovered within 10 points, at least 3 runs) is `ladder/stability.py`.\n") in text


def test_a_bare_record_and_two_records(tmp_path):
    import json
    from ladder.claims import stability_markdown
    (tmp_path / "cpu").mkdir()
    bare = {"chapter": "01_architecture", "runs": [{}, {}], "verdict": "v", "reason": "r"}
    (tmp_path / "cpu" / "stability_01_architecture.json").write_text(json.dumps(bare))
    one = stability_markdown("cpu", tmp_path)
    assert one.startswith("**Does it hold still?** Chapter `01_architecture` was executed 2 times in a row on  "
                          "(commit ``): **v** (r). Per claim, its verdicts over the runs and the range of the share of "
                          "the upper bound's gain recovered: . The rule (not recorded in the result file)")
    _record(tmp_path, {"H1": {"verdicts": ["inconclusive"] * 3, "recovered": [0.0, 0.02, 0.01]}})  # exactly 2 points
    both = stability_markdown("cpu", tmp_path)
    assert both.startswith(one + "\n**Does it hold still?** Chapter `02_speedup`")
    assert "H1: inconclusive, recovered 0%–2%. The rule" in both  # whole percent at exactly 2 points
