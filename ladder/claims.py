"""The claims table: each headline claim of the paper beside what this reproduction measured.

Paper values come from ladder/paper/claims.csv (one row per claim H1-H8, with its source). Ours come from
the `claims` block of every result file data/results/<profile>/*.json that an experiment notebook wrote
through ladder.provenance.write_result:

    "claims": {"H1": {"value": 1.27, "ours": "1.27x (...)", "how": "measured on CPU, emulated link",
                      "verdict": "consistent at small scale"}}

A claim that no result file addresses is listed as "not run". Nothing in the table is typed by hand:
`python -m ladder.claims --profile cpu` prints it, and the book pipeline writes it to
book/_generated/claims.md, which the book's opening page includes.
"""
from __future__ import annotations

import argparse
import csv
import json
import re
from pathlib import Path

from .paths import paper_file
from .provenance import REPO_ROOT

PAPER_CLAIMS = paper_file("claims.csv")
RESULTS_ROOT = REPO_ROOT / "data" / "results"
VERDICTS = ("reproduced", "consistent at small scale", "not reproduced", "not run")
BADGES = {"reproduced": "bdg-success", "consistent at small scale": "bdg-info", "not reproduced": "bdg-danger",
          "not run": "bdg-secondary"}


def paper_claims(path: Path = PAPER_CLAIMS) -> list[dict]:
    """Rows of ladder/paper/claims.csv: id, claim, paper_value, source."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"paper claims file {path} not found")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    need = {"id", "claim", "paper_value", "source"}
    if rows and not need <= set(rows[0]):
        raise ValueError(f"{path} must have columns {sorted(need)}, has {sorted(rows[0])}")
    return rows


def result_claims(profile: str, results_root: Path = RESULTS_ROOT, known_ids=None) -> dict[str, list[dict]]:
    """Claim id -> entries from data/results/<profile>/*.json, each with its file, date and hardware."""
    folder = Path(results_root) / profile
    out: dict[str, list[dict]] = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"result file {path} is not valid JSON: {e}") from None
        claims = record.get("claims") if isinstance(record, dict) else None
        if not claims:
            continue
        if not isinstance(claims, dict):
            raise ValueError(f"{path}: 'claims' must map claim ids to entries, got {type(claims).__name__}")
        prov = record.get("provenance", {})
        for cid, entry in claims.items():
            if known_ids is not None and cid not in known_ids:
                raise ValueError(f"{path}: unknown claim id {cid!r} (known: {sorted(known_ids)})")
            if not isinstance(entry, dict):
                raise ValueError(f"{path}: claim {cid} must be a mapping with ours/how/verdict")
            verdict = entry.get("verdict", "not run")
            if verdict not in VERDICTS:
                raise ValueError(f"{path}: claim {cid} has verdict {verdict!r}; expected one of {VERDICTS}")
            out.setdefault(cid, []).append({
                **entry, "verdict": verdict, "file": _rel(path),
                "date": str(prov.get("date", ""))[:10], "hardware": prov.get("hardware", {})})
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
    """One row per paper claim: id, claim, paper, ours, how, profile, date, verdict, files.

    When several result files address one claim their entries are joined, in file order.
    """
    paper = paper_claims(paper_path)
    found = result_claims(profile, results_root, known_ids={r["id"] for r in paper})
    rows = []
    for p in paper:
        entries = found.get(p["id"], [])
        if not entries:
            rows.append({"id": p["id"], "claim": p["claim"], "paper": p["paper_value"], "source": p["source"],
                         "ours": "—", "how": f"no result in data/results/{profile}/", "profile": profile,
                         "date": "—", "verdict": "not run", "files": []})
            continue
        verdicts = list(dict.fromkeys(e["verdict"] for e in entries))
        rows.append({"id": p["id"], "claim": p["claim"], "paper": p["paper_value"], "source": p["source"],
                     "ours": "; ".join(_ours(e) for e in entries),
                     "how": "; ".join(dict.fromkeys(str(e.get("how", "")) for e in entries if e.get("how"))),
                     "profile": profile, "date": max(e["date"] for e in entries) or "—",
                     "verdict": " / ".join(verdicts), "files": [str(e["file"]) for e in entries]})
    return rows


_ESCAPE = re.compile(r"([\\`*_{}\[\]<>$|#])")


def _md(text) -> str:
    """Plain text for a table cell: one line, MyST markup characters escaped."""
    return _ESCAPE.sub(r"\\\1", " ".join(str(text).split())) or "—"


def to_markdown(rows: list[dict], profile: str) -> str:
    """A MyST list-table (id `claims-table`) of the rows, with a note on where they came from."""
    lines = [
        f"<!-- Generated by ladder.claims from ladder/paper/claims.csv and data/results/{profile}/*.json. "
        "Do not edit: re-run the pipeline. -->",
        "```{list-table} Headline claims: the paper's value and ours "
        f"(profile **{profile}**; generated from the result files)",
        ":header-rows: 1", ":name: claims-table", ":class: claims-table",
        ":widths: 22 16 28 16 8 10", "",
        "* - Claim", "  - Paper", "  - Ours", "  - How ours was obtained", "  - Profile, date", "  - Verdict"]
    for r in rows:
        verdicts = " ".join(f"{{{BADGES[v]}}}`{v}`" for v in r["verdict"].split(" / "))
        lines += [f"* - **{r['id']}** {_md(r['claim'])}", f"  - {_md(r['paper'])}", f"  - {_md(r['ours'])}",
                  f"  - {_md(r['how'])}", f"  - {_md(r['profile'])}, {_md(r['date'])}", f"  - {verdicts}"]
    lines += ["```", ""]
    counts = {v: sum(v in r["verdict"].split(" / ") for r in rows) for v in VERDICTS}
    lines.append("Verdicts: " + ", ".join(f"{n} {v}" for v, n in counts.items() if n) + ". "
                 "Sources of the paper's values: `ladder/paper/claims.csv`; ours: "
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
