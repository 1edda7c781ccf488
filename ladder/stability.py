"""Does a chapter's evidence hold still? Re-execute it several times in a row and compare the verdicts.

A verdict that flips when the same chapter is re-run on the same machine decides nothing. `python -m
ladder.stability --profile cpu --only 02_speedup --runs 3` executes the chapter `runs` times, each into its
own folder under _output/<profile>/stability/ (the committed book and results are never touched), judges
every claim the chapter measures with the rules of ladder/paper/claims.csv after each run, and applies the
rule below; the outcome goes to data/results/<profile>/stability_<chapter>.json with its provenance.

The rule (fixed before any run, pinned in tests/test_stability.py):
  stable        every claim's headline verdict is the same in every run, and each claim's share of the upper
                bound's gain that ladder recovered (its deciding entry) spreads over at most MAX_RECOVERY_SPREAD
                (10 percentage points) across the runs;
  unstable      a verdict differs between runs, or a recovered share spreads further;
  inconclusive  fewer than MIN_RUNS runs.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from .claims import EVIDENCE, RESULTS_ROOT, claims_table, result_claims
from .paths import display_path
from .provenance import REPO_ROOT, write_result

MIN_RUNS = 3
MAX_RECOVERY_SPREAD = 0.10  # fraction of the upper bound's gain, i.e. 10 percentage points


def claim_outcomes(profile: str, results_root: Path) -> dict[str, dict]:
    """Per claim measured in `results_root`/<profile>: its headline verdict and the deciding entry's recovered
    share (None when the entry has none)."""
    measured = result_claims(profile, results_root)  # read once: the headline names an entry of these
    out = {}
    for row in claims_table(profile, results_root=results_root):
        if not row["judged"]:
            continue
        head = row["headline"]
        entry = None
        if head.get("entry") is not None:
            items = sorted(measured[row["id"]], key=lambda x: _rank(x["entry"].evidence))
            entry = items[head["entry"]]["entry"]
        out[row["id"]] = {"verdict": row["verdict"], "evidence": head.get("evidence"),
                          "recovered": None if entry is None else entry.recovered,
                          "speedup": None if entry is None else entry.speedup}
    return out


def _rank(evidence: str) -> int:
    return list(EVIDENCE).index(evidence)


def judge_stability(runs: list[dict[str, dict]], min_runs: int = MIN_RUNS,
                    max_spread: float = MAX_RECOVERY_SPREAD) -> dict:
    """The rule of this module's docstring over `runs` (each `claim_outcomes`). Returns {"verdict", "reason",
    "per_claim": {id: {"verdicts", "recovered", "spread", "same_verdict"}}} ("per_claim", not "claims": a
    result file's "claims" block holds claim entries, which ladder.claims judges)."""
    ids = sorted({cid for r in runs for cid in r})
    claims, problems = {}, []
    for cid in ids:
        verdicts = [r.get(cid, {}).get("verdict", "missing") for r in runs]
        rec = [r.get(cid, {}).get("recovered") for r in runs]
        known = [x for x in rec if x is not None and x == x]
        spread = max(known) - min(known) if len(known) == len(runs) and known else None
        same = len(set(verdicts)) == 1
        claims[cid] = {"verdicts": verdicts, "recovered": rec, "spread": spread, "same_verdict": same}
        if not same:
            problems.append(f"{cid}'s verdict changed ({', '.join(verdicts)})")
        if spread is not None and spread > max_spread:
            problems.append(f"{cid}'s recovered share spread {spread * 100:.0f} points > {max_spread * 100:.0f}")
    if len(runs) < min_runs:
        return {"verdict": "inconclusive", "reason": f"{len(runs)} runs; the rule needs {min_runs}", "per_claim": claims}
    if problems:
        return {"verdict": "unstable", "reason": "; ".join(problems), "per_claim": claims}
    return {"verdict": "stable", "reason": f"every verdict the same in {len(runs)} runs, every recovered share "
                                           f"within {max_spread * 100:.0f} points", "per_claim": claims}


def hold_still(rows: list[dict], profile: str, results_root: Path | None = None) -> list[dict]:
    """The book's claims table under one more rule: a verdict that flips when its chapter is re-run on the
    same machine decides nothing. A claim whose headline verdict was not the same in every run of a
    recorded stability check (<results_root>/<profile>/stability_*.json with at least its rule's runs)
    reads "inconclusive", with the verdicts of the re-runs as its reason; its entries and their own verdicts
    stay as they are (the details block lists them). Rows of `ladder.claims.claims_table`, changed in place."""
    folder = Path(results_root if results_root is not None else RESULTS_ROOT) / profile
    for f in sorted(folder.glob("stability_*.json")):
        record = json.loads(f.read_text())
        if len(record.get("runs", [])) < record.get("rule", {}).get("min_runs", MIN_RUNS):
            continue
        for row in rows:
            c = record.get("per_claim", {}).get(row["id"])
            if c is None or c["same_verdict"] or row["verdict"] == "not run":
                continue
            reason = (f"its verdict flipped when chapter {record['chapter']} was re-run {len(record['runs'])} times "
                      f"in a row ({' / '.join(c['verdicts'])}; {display_path(f)}), and a result that flips "
                      f"decides nothing; the committed run alone read {row['verdict']}")
            row["verdict"] = "inconclusive"
            row["headline"] = {**(row.get("headline") or {}), "verdict": "inconclusive", "reason": reason}
    return rows


def _measured(folder: Path) -> dict:
    """What a re-run measured that explains its verdicts, kept with the record: chapter 2's module compute
    (the c of a/c) and, per regime, the measured and replayed speed-ups and the replay's error."""
    path = folder / "speedup.json"
    if not path.is_file():
        return {}
    r = json.loads(path.read_text())
    costs = r.get("module_costs") or {}
    return {"module_compute_ms": {k: 1e3 * costs[k] for k in ("attn", "mlp", "head") if k in costs},
            "regimes": [{k: row.get(k) for k in ("name", "a/c", "speedup", "speedup_ci", "replay_speedup",
                                                  "replay_error", "recovered", "recovered_ci", "hidden", "hidden_ci")}
                        for row in r.get("validation", [])]}


def rerun(stem: str, profile: str, n: int, root: Path, log=print) -> list[dict]:
    """Execute chapter `stem` `n` times, run i into root/run<i> (its own book folder and output root) as a user
    would, through `python -m ladder.pipeline`, and return each run's `claim_outcomes` with its wall time."""
    outcomes = []
    for i in range(n):
        run_root = root / f"run{i + 1}"
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", "ladder.pipeline", "--profile", profile, "--only", stem, "--force", "--no-book",
               "--book-dir", str(run_root / "book"), "--output-root", str(run_root)]
        if subprocess.run(cmd).returncode:
            raise RuntimeError(f"run {i + 1} of {stem} failed: {' '.join(cmd)}")
        got = claim_outcomes(profile, run_root / "data" / "results")
        log(f"[stability] run {i + 1}/{n}: " + ", ".join(f"{k} {v['verdict']}" for k, v in got.items()))
        outcomes.append({"seconds": time.perf_counter() - t0, "outcomes": got,
                         "measured": _measured(run_root / "data" / "results" / profile)})
    return outcomes


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ladder.stability", description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--only", default="02_speedup", help="the chapter to re-run (a notebook stem)")
    ap.add_argument("--runs", type=int, default=MIN_RUNS)
    a = ap.parse_args(argv)
    if a.runs < 1:
        ap.error("--runs must be at least 1")
    root = REPO_ROOT / "_output" / a.profile / "stability" / a.only
    runs = rerun(a.only, a.profile, a.runs, root)
    result = judge_stability([r["outcomes"] for r in runs])
    path = REPO_ROOT / "data" / "results" / a.profile / f"stability_{a.only}.json"
    write_result(path, {"chapter": a.only, "rule": {"min_runs": MIN_RUNS, "max_recovery_spread": MAX_RECOVERY_SPREAD},
                        "runs": runs, **result}, {"profile": a.profile, "only": a.only, "runs": a.runs})
    print(f"[stability] {a.only}: {result['verdict']} ({result['reason']}) -> {path.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
