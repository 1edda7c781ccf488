"""The book: claims table from result files, the smoke profile end to end, and a real browser.

The end-to-end test runs `python -m ladder.pipeline --profile smoke --force` into a copy of book/ in a
temporary folder (so the committed cpu-profile executed notebooks are left alone), then opens the built
index page in headless Chromium. Without Chromium it is skipped locally and fails in CI (CI=true).
"""
from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser

import pytest

from ladder import claims
from ladder.provenance import REPO_ROOT, write_result

CLAIM_IDS = [f"H{i}" for i in range(1, 9)]
EXPECTED_NOTEBOOKS = ["01_architecture", "02_speedup", "03_pretraining", "04_llama_adaptation"]


# --------------------------------------------------------------------------------------------- claims table
def test_paper_claims_cover_h1_to_h8_with_sources():
    rows = claims.paper_claims()
    assert [r["id"] for r in rows] == CLAIM_IDS
    assert all(r["paper_value"].strip() and r["source"].strip() for r in rows)


def test_claims_table_from_partial_results(tmp_path):
    write_result(tmp_path / "cpu" / "speedup.json", {"claims": {
        "H1": {"evidence": "cpu-emulated-link", "value": 1.27, "speedup": 1.27, "recovered": 0.7, "n": 5,
               "link_ratio": 0.43, "replay_error": 0.02,  # a regime-set link that agrees with the replay
               "ci": {"speedup": [1.2, 1.34], "recovered": [0.6, 0.8]}, "ours": "1.27x (cpu-bench, TP=2, emulated NVLink)",
               "how": "measured on CPU, emulated link"},
        "H4": {"evidence": "model-out-of-sample", "comm_share": 0.35, "ours": "35%", "how": "performance model"}}})
    write_result(tmp_path / "cpu" / "other.json", {"no_claims_here": 1})
    rows = {r["id"]: r for r in claims.claims_table("cpu", results_root=tmp_path)}
    assert list(rows) == CLAIM_IDS
    assert rows["H1"]["ours"].startswith("1.27x") and rows["H1"]["verdict"] == "consistent at small scale"
    assert rows["H1"]["date"] != "—" and rows["H1"]["files"]
    assert rows["H4"]["verdict"] == "inconclusive"  # a model prediction never decides
    assert all(rows[c]["verdict"] == "not run" and rows[c]["ours"] == "—" for c in ("H2", "H3", "H5", "H8"))
    md = claims.to_markdown(list(rows.values()), "cpu")
    assert md.count("\n* - **H") == 8 and ":name: claims-table" in md
    assert "1.27x (cpu-bench, TP=2, emulated NVLink)" in md


def test_claims_table_with_no_results_at_all(tmp_path):
    rows = claims.claims_table("gpu", results_root=tmp_path)
    assert [r["verdict"] for r in rows] == ["not run"] * 8


def test_bad_claims_are_clear_errors(tmp_path):
    write_result(tmp_path / "cpu" / "a.json", {"claims": {"H1": {"ours": "x", "verdict": "kind of"}}})
    with pytest.raises(ValueError, match=r"a\.json: claim H1 stores a verdict \('kind of'\)"):
        claims.claims_table("cpu", results_root=tmp_path)
    write_result(tmp_path / "cpu" / "a.json", {"claims": {"H9": {"ours": "x", "evidence": "multi-gpu"}}})
    with pytest.raises(ValueError, match="unknown claim id 'H9'"):
        claims.claims_table("cpu", results_root=tmp_path)
    (tmp_path / "cpu" / "a.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        claims.claims_table("cpu", results_root=tmp_path)


def test_markdown_cells_escape_markup():
    assert claims._md("a*b_c `d` $e$ |f|") == r"a\*b\_c \`d\` \$e\$ \|f\|"


# --------------------------------------------------------------------------------------------- smoke end to end
def _offline_env():
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.setdefault("LADDER_DATA", str(REPO_ROOT.parent / "shared" / "data"))
    return env


def _git_status():
    return subprocess.run(["git", "status", "--porcelain"], cwd=REPO_ROOT, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def smoke_status():
    """Run the whole smoke profile as `make reproduce PROFILE=smoke` does (papermill + book build, no
    --book-dir): it executes into and builds _output/smoke/book. Returns (git status before, after)."""
    before = _git_status()
    r = subprocess.run([sys.executable, "-m", "ladder.pipeline", "--profile", "smoke", "--force"], cwd=REPO_ROOT,
                       env=_offline_env(), capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, f"smoke pipeline failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return before, _git_status(), r.stdout


@pytest.fixture(scope="module")
def smoke_book(smoke_status):
    return REPO_ROOT / "_output" / "smoke" / "book"


def test_smoke_profile_leaves_the_committed_book_alone(smoke_status):
    before, after, stdout = smoke_status
    assert after == before, "make reproduce PROFILE=smoke changed tracked/untracked files:\n" + after
    assert "writing to _output/smoke/book" in stdout and "elapsed" in stdout


def test_pages_keep_no_progress_bars(smoke_book):
    for nb in (smoke_book / "notebooks").glob("[0-9][0-9]_*.ipynb"):
        assert "it/s]" not in nb.read_text(), nb.name


def test_pages_and_results_hold_no_absolute_path_of_this_machine(smoke_book):
    """Published pages and result files name paths as a reader would (repository-relative, <data>/...)."""
    files = [*(smoke_book / "notebooks").glob("[0-9][0-9]_*.ipynb"), *(REPO_ROOT / "data" / "results" / "smoke").glob("*.json")]
    assert files
    for f in files:
        assert str(REPO_ROOT) not in f.read_text(), f"{f.name} names {REPO_ROOT}"


def test_smoke_profile_executes_every_notebook(smoke_book):
    present = sorted(p.stem for p in (REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    missing = [s for s in EXPECTED_NOTEBOOKS if s not in present]
    assert not missing, f"notebooks missing from notebooks/: {missing}"
    for stem in present:
        assert (smoke_book / "notebooks" / f"{stem}.ipynb").is_file(), stem
        stamp = json.loads((smoke_book / "notebooks" / f"{stem}.stamp.json").read_text())
        assert stamp["profile"] == "smoke"
        assert (smoke_book / "_build" / "html" / "notebooks" / f"{stem}.html").is_file(), stem


BAD_WARNINGS = re.compile(r"glue|reference target not found|undefined label|unknown document|"
                          r"nonexisting document|image file not readable|Unknown target|failed to reach|"
                          r"not found in|could not find", re.I)


def test_build_has_no_glue_or_reference_warnings(smoke_book):
    log = (smoke_book / "_build" / "build.log").read_text()
    warnings = [line for line in log.splitlines() if "WARNING" in line or "ERROR" in line]
    bad = [w for w in warnings if BAD_WARNINGS.search(w)]
    assert not bad, "build warnings about glue keys or references:\n" + "\n".join(bad)


def test_claims_table_has_a_row_per_claim(smoke_book):
    rows = _claims_rows((smoke_book / "_build" / "html" / "index.html").read_text())
    assert [r[0].split()[0] for r in rows] == CLAIM_IDS


def test_math_is_served_locally(smoke_book):
    html = (smoke_book / "_build" / "html" / "notebooks" / "01_architecture.html").read_text()
    src = re.search(r'<script[^>]*src="([^"]*tex-chtml\.js)[^"]*"', html).group(1)
    assert "://" not in src  # no CDN
    assert (smoke_book / "_build" / "html" / "mathjax" / "tex-chtml.js").is_file()


# --------------------------------------------------------------------------------------------- browser
class _TableRows(HTMLParser):
    """Text of each body row of <table id="claims-table">."""

    def __init__(self):
        super().__init__()
        self.depth, self.rows, self.row, self.cell, self.in_body = 0, [], None, None, False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table" and (a.get("id") == "claims-table" or self.depth):
            self.depth += 1
        elif self.depth and tag == "tbody":
            self.in_body = True
        elif self.depth and self.in_body and tag == "tr":
            self.row = []
        elif self.row is not None and tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag):
        if tag == "table" and self.depth:
            self.depth -= 1
        elif tag in ("td", "th") and self.cell is not None:
            self.row.append(" ".join("".join(self.cell).split()))
            self.cell = None
        elif tag == "tr" and self.row is not None:
            self.rows.append(self.row)
            self.row = None
        elif tag == "tbody":
            self.in_body = False

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


def _claims_rows(html: str) -> list[list[str]]:
    p = _TableRows()
    p.feed(html)
    return p.rows


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        exe = shutil.which(name)
        if exe:
            return exe
    return None


def test_browser_renders_the_claims_table(smoke_book, tmp_path):
    exe = _chromium()
    if exe is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("chromium is not installed, and CI=true: install it (apt-get install -y chromium)")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    index = smoke_book / "_build" / "html" / "index.html"
    flags = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--window-size=1280,1600", "--virtual-time-budget=5000"]
    shot = tmp_path / "index.png"
    r = subprocess.run(flags + [f"--user-data-dir={tmp_path / 'profile1'}", f"--screenshot={shot}",
                                index.as_uri()], capture_output=True, text=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10_000, f"no screenshot: {r.stderr[-2000:]}"
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = subprocess.run(flags + [f"--user-data-dir={tmp_path / 'profile2'}", "--dump-dom", index.as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = _claims_rows(r.stdout)
    assert [row[0].split()[0] for row in rows] == CLAIM_IDS, rows
    assert all(any(row[-1].startswith(v) for v in claims.VERDICTS) for row in rows), rows
    # the math typeset in the browser from the local MathJax copy (chapter 1 has display equations)
    r = subprocess.run(flags + [f"--user-data-dir={tmp_path / 'profile3'}", "--dump-dom",
                                (smoke_book / "_build" / "html" / "notebooks" / "01_architecture.html").as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert "mjx-container" in r.stdout, "MathJax did not typeset the chapter's equations"


# Measures every table of the page against the box it sits in (a notebook cell, else the article) once the
# body is parsed and again when the page has loaded, and writes the result into the DOM, where --dump-dom
# reads it.
_TABLE_WIDTHS_JS = """<script>
function measureTables() {
  var out = [];
  document.querySelectorAll("article table").forEach(function (t) {
    var box = t.closest(".cell") || t.closest("article");
    var head = (t.querySelector("th") || {}).textContent || "";
    var row = t.querySelector("tbody tr"), cells = [];
    if (row) row.querySelectorAll("td").forEach(function (td) {
      cells.push([td.textContent.trim().slice(0, 30), getComputedStyle(td).textAlign]);
    });
    out.push({table: Math.round(t.getBoundingClientRect().width), box: Math.round(box.getBoundingClientRect().width),
              head: head.trim().slice(0, 30), cells: cells, styled: t.id.indexOf("T_") === 0});
  });
  var pre = document.getElementById("table-widths") || document.body.appendChild(document.createElement("pre"));
  pre.id = "table-widths"; pre.textContent = JSON.stringify(out);
}
measureTables();  /* the scripts run at the end of the body, after the stylesheets; again once all has loaded */
window.addEventListener("load", measureTables);
</script>"""


def table_widths(exe: str, page, tmp_path, width: int = 1280) -> list[dict]:
    """{"table", "box", "head", "cells"} of every table on a built page, laid out by chromium at `width` pixels
    ("cells": [text, computed text-align] of its first body row; "styled": made by pandas' Styler)."""
    probe = page.with_name(f"_widths_{page.name}")  # beside the page, so its relative links still resolve
    probe.write_text(page.read_text().replace("</body>", _TABLE_WIDTHS_JS + "</body>"))
    try:
        r = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                            f"--user-data-dir={tmp_path / ('profile_' + page.stem)}", f"--window-size={width},1600",
                            "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
                           capture_output=True, text=True, timeout=120)
    finally:
        probe.unlink()
    m = re.search(r'<pre id="table-widths"[^>]*>(.*?)</pre>', r.stdout, re.S)  # the theme adds a tabindex
    assert m, f"no measurement from {page.name}: {r.stderr[-1500:]}"
    return json.loads(html.unescape(m.group(1)))


def test_chapter_tables_fit_their_box_in_a_1280_pixel_window(smoke_book, tmp_path):
    """A reader at a common laptop width sees every column of every chapter table without scrolling sideways
    (ladder.tables.styled's layout; the widest tables' cells are tagged full-width)."""
    exe = _chromium()
    if exe is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    measured = 0
    for page in sorted((smoke_book / "_build" / "html" / "notebooks").glob("[0-9][0-9]_*.html")):
        widths = table_widths(exe, page, tmp_path)
        measured += len(widths)
        wide = [w for w in widths if w["table"] > w["box"] + 1]
        assert not wide, f"{page.name}: tables wider than their box at 1280 px: {wide}"
    assert measured >= 10  # the chapters' tables were found and measured


def test_chapter_tables_align_numbers_right_and_words_left(smoke_book, tmp_path):
    """What the browser shows, not only the CSS written: a wiring's name reads from the left, a number lines up
    on the right (ladder.tables.styled; a cell's own rule would lose to the table's)."""
    exe = _chromium()
    if exe is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    seen = {"word": set(), "number": set()}
    for page in sorted((smoke_book / "_build" / "html" / "notebooks").glob("[0-9][0-9]_*.html")):
        for w in [w for w in table_widths(exe, page, tmp_path) if w["styled"]]:
            for text, align in w["cells"]:
                if text in ("standard", "parallel", "ladder"):
                    seen["word"].add(align)
                elif re.fullmatch(r"-?[\d,]+(\.\d+)?", text):
                    seen["number"].add(align)
    assert seen == {"word": {"left"}, "number": {"right"}}, seen


# --------------------------------------------------------------------------------------------- workflows
@pytest.mark.parametrize("name", ["book.yml", "gpu.yml"])
def test_workflows_parse_and_have_required_keys(name):
    """GitHub Actions syntax, as far as it can be checked offline (no actionlint here)."""
    import yaml
    wf = yaml.safe_load((REPO_ROOT / ".github" / "workflows" / name).read_text())
    on = wf.get("on", wf.get(True))  # YAML 1.1 reads a bare `on` key as True
    assert wf.get("name") and on and wf.get("jobs"), name
    for job_id, job in wf["jobs"].items():
        assert job.get("runs-on") and job.get("steps"), job_id
        for step in job["steps"]:
            assert ("uses" in step) != ("run" in step), f"{job_id}: a step needs exactly one of uses/run: {step}"
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w./-]+@v\d+", step["uses"]), step["uses"]
        for need in [job.get("needs")] if isinstance(job.get("needs"), str) else job.get("needs", []):
            assert need in wf["jobs"], f"{job_id} needs unknown job {need}"
    text = (REPO_ROOT / ".github" / "workflows" / name).read_text()
    assert "\t" not in text
    if name == "book.yml":
        assert "--book-only" in text and "actions/deploy-pages" in text and wf["permissions"]["pages"] == "write"
    else:
        assert "self-hosted" in wf["jobs"]["reproduce"]["runs-on"] and "make reproduce PROFILE=gpu" in text
        assert "actions/upload-artifact" in text and "data/results/gpu/" in text
