"""The claims table: each headline claim of the paper beside what this reproduction measured, and the
verdict — computed here and nowhere else.

Paper values, the quantity each claim is judged on, its decision rule, the noise it is judged against and
the rule's thresholds come from ladder/paper/claims.csv (written before the numbers). Our measurements come
from the `claims` block of every result file data/results/<profile>/*.json (ladder.provenance.write_result):

    "claims": {"H1": [{"evidence": "cpu-emulated-link", "quantity": "speedup", "value": 1.27,
                       "speedup": 1.27, "upper_bound_speedup": 1.40, "recovered": 0.68,
                       "ci": {"speedup": [1.21, 1.33], "recovered": [0.55, 0.80]},
                       "ours": "1.27x (...)", "how": "measured on CPU, emulated link"}]}

An entry holds measured quantities only; a stored `verdict` is refused (it would bypass the rules). An
optional "subject" names what was measured (a model, a shape) when one claim has several entries. Each
entry gets a verdict from its claim's rule (`judge`); a row shows every distinct verdict with the evidence
it rests on, so an emulated-link and a real-process measurement that disagree are both visible.
Performance-model values never decide: in-sample ones are left out of the verdict, out-of-sample ones
give at most "inconclusive". A claim no result file addresses is "not run".
`python -m ladder.claims --profile cpu` prints the table; the book pipeline writes book/_generated/claims.md.
"""
from __future__ import annotations

import argparse
import csv
import json
import re
from pathlib import Path
from statistics import mean

from .paths import paper_file
from .provenance import REPO_ROOT

PAPER_CLAIMS = paper_file("claims.csv")
RESULTS_ROOT = REPO_ROOT / "data" / "results"
VERDICTS = ("reproduced", "consistent at small scale", "inconclusive", "not reproduced", "not run")
BADGES = {"reproduced": "bdg-success", "consistent at small scale": "bdg-info", "inconclusive": "bdg-warning",
          "not reproduced": "bdg-danger", "not run": "bdg-secondary"}
# strongest first; the label and badge shown in the Evidence column
EVIDENCE = {
    "multi-gpu": ("multi-GPU measurement", "bdg-success-line"),
    "gpu1-emulated-link": ("one GPU, emulated interconnect", "bdg-primary-line"),
    "cpu-real-processes": ("CPU, real processes", "bdg-info-line"),
    "cpu-emulated-link": ("CPU, emulated interconnect", "bdg-info-line"),
    "small-scale-training": ("small-scale training", "bdg-info-line"),
    "model-out-of-sample": ("performance model, out of sample", "bdg-warning-line"),
    "model-in-sample": ("performance model, in sample", "bdg-secondary-line"),
}
MODEL_EVIDENCE = ("model-in-sample", "model-out-of-sample")


class ResultFormatError(ValueError):
    """A result file's claims block does not follow the format above."""


# ------------------------------------------------------------------------------------------ paper side
def paper_claims(path: Path = PAPER_CLAIMS) -> list[dict]:
    """Rows of ladder/paper/claims.csv: id, claim, paper_value, source, quantity, rule, noise, thresholds
    (parsed to a dict of floats)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"paper claims file {path} not found")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    need = {"id", "claim", "paper_value", "source", "quantity", "rule", "noise", "thresholds"}
    if rows and not need <= set(rows[0]):
        raise ValueError(f"{path} must have columns {sorted(need)}, has {sorted(rows[0])}")
    for r in rows:
        r["thresholds"] = parse_thresholds(r["thresholds"], f"{path} row {r['id']}")
    return rows


def parse_thresholds(text: str, where: str = "thresholds") -> dict[str, float]:
    """'a=0.29; b=1e9' -> {'a': 0.29, 'b': 1e9}."""
    out = {}
    for part in filter(None, (p.strip() for p in (text or "").split(";"))):
        key, sep, val = part.partition("=")
        try:
            out[key.strip()] = float(val)
        except ValueError:
            sep = ""
        if not sep:
            raise ValueError(f"{where}: threshold {part!r} is not name=number")
    return out


# -------------------------------------------------------------------------------------------- the rules
def _ci(entry: dict, field: str):
    """The entry's 95% CI of `field` as (lo, hi), or None when it has none."""
    ci = (entry.get("ci") or {}).get(field)
    if ci is None:
        return None
    lo, hi = float(ci[0]), float(ci[1])
    if lo > hi:
        raise ResultFormatError(f"ci of {field} is [{lo}, {hi}]: low above high")
    return lo, hi


def _need(entry: dict, *fields):
    missing = [f for f in fields if entry.get(f) is None]
    if missing:
        raise ResultFormatError(f"entry lacks {', '.join(missing)} (evidence {entry.get('evidence')!r})")


def _multi_gpu_speed(entry, t):
    """A real multi-GPU speed-up against the paper's: at least three quarters of its gain, with confidence."""
    return _interval_vs(*_ci(entry, "speedup"), 1 + 0.75 * t["paper_gain"], "speed-up", ".3f", "reproduced")


def _interval_vs(lo, hi, target, name, fmt, verdict_above, suffix=""):
    """`verdict_above` when the whole CI is at or above `target`, "not reproduced" when it is below,
    "inconclusive" when it straddles it."""
    if lo >= target:
        return verdict_above, f"{name} CI low {lo:{fmt}} ≥ {target:{fmt}}{suffix}"
    if hi < target:
        return "not reproduced", f"{name} CI high {hi:{fmt}} < {target:{fmt}}{suffix}"
    return "inconclusive", f"{name} CI [{lo:{fmt}}, {hi:{fmt}}] straddles {target:{fmt}}"


def rule_speed(entry: dict, t: dict):
    """H1-H3: the paper's number on real GPUs; on emulated links and CPUs, the mechanism (a speed-up that
    keeps a good share of the no-communication upper bound's gain)."""
    _need(entry, "speedup")
    if _ci(entry, "speedup") is None:
        return "inconclusive", "no confidence interval (needs repeated rounds)"
    if entry["evidence"] == "multi-gpu":
        return _multi_gpu_speed(entry, t)
    lo, hi = _ci(entry, "speedup")
    if hi <= 1:
        return "not reproduced", f"no speed-up: CI high {hi:.3f} ≤ 1"
    if lo <= 1:
        return "inconclusive", f"speed-up CI [{lo:.3f}, {hi:.3f}] includes 1"
    if entry.get("recovered") is None:
        return "inconclusive", "no upper bound measured to judge the recovered share"
    rlo, rhi = _ci(entry, "recovered") or (entry["recovered"], entry["recovered"])
    return _interval_vs(rlo, rhi, t["min_recovered"], "recovered", ".0%", "consistent at small scale",
                        " of the upper bound's gain")


def rule_comm_share(entry: dict, t: dict):
    """H4: the share of latency spent communicating, only measurable on the real interconnect."""
    _need(entry, "comm_share")
    if entry["evidence"] != "multi-gpu":
        return "inconclusive", "the share is set by the emulated link's parameters, not measured"
    ci = _ci(entry, "comm_share")
    if ci is None:
        return "inconclusive", "no confidence interval (needs repeated rounds)"
    lo, hi, a, b = *ci, t["paper"] - t["tol"], t["paper"] + t["tol"]
    if a <= lo and hi <= b:
        return "reproduced", f"CI [{lo:.2f}, {hi:.2f}] inside [{a:.2f}, {b:.2f}]"
    if hi < a or lo > b:
        return "not reproduced", f"CI [{lo:.2f}, {hi:.2f}] outside [{a:.2f}, {b:.2f}]"
    return "inconclusive", f"CI [{lo:.2f}, {hi:.2f}] overlaps the edge of [{a:.2f}, {b:.2f}]"


def _training_gap(entry: dict, t: dict):
    """(gap, tol, at_scale) for H5/H6, or a (verdict, reason) when the runs cannot decide."""
    _need(entry, "standard", "ladder", "learned")
    std, lad = [float(x) for x in entry["standard"]], [float(x) for x in entry["ladder"]]
    if not entry["learned"]:
        return "inconclusive", "the models did not learn (held-out loss not ≥ 1 nat below the unigram entropy)"
    if len(std) < 2 or len(lad) < 2:
        return "inconclusive", "needs ≥ 2 seeds per wiring for a seed spread"
    gap = mean(lad) - mean(std)
    spread = max(max(std) - min(std), max(lad) - min(lad))
    tol = max(t["noise_mult"] * spread, t["tol_nats"])
    at_scale = entry.get("params", 0) >= t["min_params"] and entry.get("tokens", 0) >= t["min_tokens"]
    return gap, tol, at_scale


def rule_comparable(entry: dict, t: dict):
    """H5: ladder comparable to standard (within noise, or within tol_nats when the noise is smaller)."""
    got = _training_gap(entry, t)
    if isinstance(got[0], str):
        return got
    gap, tol, at_scale = got
    if gap > tol:
        return "not reproduced", f"ladder worse by {gap:.3f} nats > tolerance {tol:.3f}"
    if gap < -tol:
        return "inconclusive", (f"ladder better by {-gap:.3f} nats > tolerance {tol:.3f}: an early-training "
                                "difference, not the paper's 'comparable'")
    return ("reproduced" if at_scale else "consistent at small scale"), f"|gap| {abs(gap):.3f} ≤ tolerance {tol:.3f} nats"


def rule_slightly_worse(entry: dict, t: dict):
    """H6: ladder worse than standard beyond the noise."""
    got = _training_gap(entry, t)
    if isinstance(got[0], str):
        return got
    gap, tol, at_scale = got
    if gap > tol:
        return ("reproduced" if at_scale else "consistent at small scale"), f"ladder worse by {gap:.3f} > {tol:.3f} nats"
    if gap < -tol:
        return "not reproduced", f"ladder better by {-gap:.3f} > {tol:.3f} nats"
    return "inconclusive", f"|gap| {abs(gap):.3f} ≤ tolerance {tol:.3f} nats: not resolved"


def rule_recovery(entry: dict, t: dict):
    """H7: full recovery = the retrained hybrid within tol_nats of the source retrained on the same data."""
    _need(entry, "drop")
    if entry.get("gap_to_control") is None:  # a run without the control (e.g. the smoke profile)
        return "inconclusive", "no control retrained on the same data to compare with"
    ci = _ci(entry, "gap_to_control")
    if ci is None:
        return "inconclusive", "no confidence interval for the gap to the control"
    tol = t["tol_nats"]
    if entry["drop"] <= 2 * tol:
        return "inconclusive", f"the conversion cost only {entry['drop']:.3f} nats: nothing to recover"
    lo, hi = ci
    if hi <= tol:
        return ("reproduced" if entry.get("params", 0) >= t["min_params"] else "consistent at small scale",
                f"gap to control CI high {hi:+.3f} ≤ {tol} nats")
    if lo > tol:
        rec = entry.get("recovered")
        return "not reproduced", (f"gap to control CI low {lo:+.3f} > {tol} nats"
                                  + (f" ({rec:.0%} of the drop recovered)" if rec is not None else ""))
    return "inconclusive", f"gap to control CI [{lo:+.3f}, {hi:+.3f}] straddles {tol} nats"


def rule_hybrid_speed(entry: dict, t: dict):
    """H8: a hybrid speed-up; off real GPUs only on a model whose decode step is long enough to time."""
    _need(entry, "speedup")
    if _ci(entry, "speedup") is None:
        return "inconclusive", "no confidence interval (needs repeated runs)"
    if entry["evidence"] == "multi-gpu":
        return _multi_gpu_speed(entry, t)
    step = entry.get("step_ms")
    if step is None or step < t["min_step_ms"]:
        return "inconclusive", f"decode step {step} ms is below {t['min_step_ms']:g} ms: timer noise"
    lo, hi = _ci(entry, "speedup")
    if lo > 1:
        return "consistent at small scale", f"speed-up CI low {lo:.3f} > 1"
    if hi <= 1:
        return "not reproduced", f"speed-up CI high {hi:.3f} ≤ 1"
    return "inconclusive", f"speed-up CI [{lo:.3f}, {hi:.3f}] includes 1"


RULES = {"H1": rule_speed, "H2": rule_speed, "H3": rule_speed, "H4": rule_comm_share,
         "H5": rule_comparable, "H6": rule_slightly_worse, "H7": rule_recovery, "H8": rule_hybrid_speed}


def judge(cid: str, entry: dict, thresholds: dict) -> tuple[str, str]:
    """(verdict, reason) for one entry of claim `cid` under its rule and thresholds."""
    if entry["evidence"] == "model-in-sample":
        return "not run", "a performance-model value fitted on the compared data does not count"
    if entry["evidence"] == "model-out-of-sample":
        return "inconclusive", "a performance-model prediction, not a measurement"
    return RULES[cid](entry, thresholds)


# ------------------------------------------------------------------------------------------ our side
def _entries(path: Path, cid, raw) -> list[dict]:
    entries = [raw] if isinstance(raw, dict) else raw
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ResultFormatError(f"{path}: claim {cid} must be an entry or a list of entries")
    for e in entries:
        if "verdict" in e:
            raise ResultFormatError(
                f"{path}: claim {cid} stores a verdict ({e['verdict']!r}); result files hold measurements only "
                "and ladder.claims computes verdicts — re-run the notebook that writes this file")
        if e.get("evidence") not in EVIDENCE:
            raise ResultFormatError(f"{path}: claim {cid} has evidence {e.get('evidence')!r}; "
                                    f"expected one of {list(EVIDENCE)}")
    return entries


def result_claims(profile: str, results_root: Path = RESULTS_ROOT, known_ids=None) -> dict[str, list[dict]]:
    """Claim id -> entries from data/results/<profile>/*.json, each with its file, date and hardware."""
    folder = Path(results_root) / profile
    out: dict[str, list[dict]] = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ResultFormatError(f"result file {path} is not valid JSON: {e}") from None
        claims = record.get("claims") if isinstance(record, dict) else None
        if not claims:
            continue
        if not isinstance(claims, dict):
            raise ResultFormatError(f"{path}: 'claims' must map claim ids to entries, got {type(claims).__name__}")
        prov = record.get("provenance", {})
        for cid, raw in claims.items():
            if known_ids is not None and cid not in known_ids:
                raise ResultFormatError(f"{path}: unknown claim id {cid!r} (known: {sorted(known_ids)})")
            for e in _entries(path, cid, raw):
                out.setdefault(cid, []).append({**e, "file": _rel(path), "date": str(prov.get("date", ""))[:10],
                                                "hardware": prov.get("hardware", {})})
    return out


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _ours(entry: dict) -> str:
    if entry.get("ours"):
        return str(entry["ours"])
    return "" if entry.get("value") is None else str(entry["value"])


def claims_table(profile: str, paper_path: Path = PAPER_CLAIMS, results_root: Path = RESULTS_ROOT) -> list[dict]:
    """One row per paper claim: id, claim, paper, ours, how, evidence, verdict, judged (per-entry verdict,
    evidence and reason), profile, date, files. Entries are ordered strongest evidence first."""
    paper = paper_claims(paper_path)
    found = result_claims(profile, results_root, known_ids={r["id"] for r in paper})
    order = list(EVIDENCE)
    rows = []
    for p in paper:
        base = {"id": p["id"], "claim": p["claim"], "paper": p["paper_value"], "source": p["source"],
                "rule": p["rule"], "profile": profile}
        entries = sorted(found.get(p["id"], []), key=lambda e: order.index(e["evidence"]))
        if not entries:
            rows.append({**base, "ours": "—", "how": f"no result in data/results/{profile}/", "evidence": [],
                         "date": "—", "verdict": "not run", "judged": [], "files": []})
            continue
        judged = []
        for e in entries:
            try:
                v, why = judge(p["id"], e, p["thresholds"])
            except ResultFormatError as err:
                raise ResultFormatError(f"{e['file']}: claim {p['id']}: {err}") from None
            judged.append({"verdict": v, "evidence": e["evidence"], "reason": why, "subject": e.get("subject")})
        deciding = [j for j in judged if j["evidence"] != "model-in-sample"] or judged
        rows.append({**base, "ours": "; ".join(_ours(e) for e in entries),
                     "how": "; ".join(dict.fromkeys(str(e.get("how", "")) for e in entries if e.get("how"))),
                     "evidence": list(dict.fromkeys(e["evidence"] for e in entries)),
                     "date": max(e["date"] for e in entries) or "—",
                     "verdict": " / ".join(dict.fromkeys(j["verdict"] for j in deciding)), "judged": judged,
                     "files": list(dict.fromkeys(str(e["file"]) for e in entries))})
    return rows


_ESCAPE = re.compile(r"([\\`*_{}\[\]<>$|#])")


def _md(text) -> str:
    """Plain text for a table cell: one line, MyST markup characters escaped."""
    return _ESCAPE.sub(r"\\\1", " ".join(str(text).split())) or "—"


def _verdict_cell(row: dict) -> str:
    if not row["judged"]:
        return f"{{{BADGES['not run']}}}`not run`"
    # entries are told apart by their evidence and, where one evidence covers several models, their subject
    several = len({(j["evidence"], j.get("subject")) for j in row["judged"]}) > 1
    seen, parts = set(), []
    for j in row["judged"]:
        key = (j["verdict"], j["evidence"], j.get("subject"))
        if key in seen:
            continue
        seen.add(key)
        label = ", ".join(x for x in (EVIDENCE[j["evidence"]][0], j.get("subject")) if x)
        on = f" {_md('(' + label + ')')}" if several else ""
        parts.append(f"{{{BADGES[j['verdict']]}}}`{j['verdict']}`{on}: {_md(j['reason'])}")
    return " <br> ".join(parts)


def to_markdown(rows: list[dict], profile: str) -> str:
    """A MyST list-table (id `claims-table`) of the rows, with a note on where they came from."""
    lines = [
        f"<!-- Generated by ladder.claims from ladder/paper/claims.csv and data/results/{profile}/*.json. "
        "Do not edit: re-run the pipeline. -->",
        "```{list-table} Headline claims: the paper's value and ours "
        f"(profile **{profile}**; generated from the result files; verdicts by the rules in ladder/paper/claims.csv)",
        ":header-rows: 1", ":name: claims-table", ":class: claims-table",
        ":widths: 18 13 24 13 10 7 15", "",
        "* - Claim", "  - Paper", "  - Ours", "  - How ours was obtained", "  - Evidence", "  - Profile, date",
        "  - Verdict"]
    for r in rows:
        evidence = " ".join(f"{{{EVIDENCE[e][1]}}}`{EVIDENCE[e][0]}`" for e in r["evidence"]) or "—"
        lines += [f"* - **{r['id']}** {_md(r['claim'])}", f"  - {_md(r['paper'])}", f"  - {_md(r['ours'])}",
                  f"  - {_md(r['how'])}", f"  - {evidence}", f"  - {_md(r['profile'])}, {_md(r['date'])}",
                  f"  - {_verdict_cell(r)}"]
    lines += ["```", ""]
    counts = {v: sum(v in r["verdict"].split(" / ") for r in rows) for v in VERDICTS}
    lines.append("Verdicts: " + ", ".join(f"{n} {v}" for v, n in counts.items() if n) + ". "
                 "Sources of the paper's values and of the decision rules: `ladder/paper/claims.csv`; ours: "
                 + (", ".join(f"`{f}`" for f in sorted({f for r in rows for f in r["files"]})) or "none yet")
                 + ".")
    return "\n".join(lines) + "\n"


def write_claims_page(profile: str, path: Path, paper_path: Path = PAPER_CLAIMS,
                      results_root: Path = RESULTS_ROOT) -> Path:
    """Write the markdown table included by the book's opening page."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_markdown(claims_table(profile, paper_path, results_root), profile))
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ladder.claims", description="Print the claims table.")
    ap.add_argument("--profile", default="cpu")
    args = ap.parse_args(argv)
    for r in claims_table(args.profile):
        print(f"{r['id']:3} {r['verdict']:26} paper: {r['paper']} | ours: {r['ours']} ({r['how']})")
        for j in r["judged"]:
            on = j["evidence"] + (f", {j['subject']}" if j.get("subject") else "")
            print(f"      [{on}] {j['verdict']}: {j['reason']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
