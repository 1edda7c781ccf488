"""The chapters read as reports: each listed notebook's code cells hold at most MAX_CODE_LINES lines (every
line of every code cell, comments and blanks included). Orchestration lives in tested functions of the
package (e.g. ladder/pretrain.py for chapter 3); a notebook keeps its parameters, the calls a reader should
see, figures and tables."""
from __future__ import annotations

import nbformat
import pytest

from ladder.provenance import REPO_ROOT

MAX_CODE_LINES = 100


def code_lines(stem: str) -> int:
    nb = nbformat.read(REPO_ROOT / "notebooks" / f"{stem}.ipynb", as_version=4)
    return sum(len(c.source.splitlines()) for c in nb.cells if c.cell_type == "code")


@pytest.mark.parametrize("stem", ["01_architecture", "02_speedup", "03_pretraining"])
def test_notebook_code_fits_a_report(stem):
    n = code_lines(stem)
    assert n <= MAX_CODE_LINES, (f"notebooks/{stem}.ipynb has {n} code lines (at most {MAX_CODE_LINES}): "
                                 "move plumbing into tested package functions")


SHOWN_LINE_CHARS = 80  # what the book's code box shows at a 1280-pixel window without scrolling sideways


@pytest.mark.parametrize("stem", ["01_architecture", "02_speedup", "03_pretraining", "04_llama_adaptation"])
def test_code_shown_on_the_page_fits_the_code_box(stem):
    """Every line of a code cell the page shows (or folds) fits the code box; cells removed from the page
    (remove-cell / remove-input) and the parameters cell (shown as a table) may be wider."""
    nb = nbformat.read(REPO_ROOT / "notebooks" / f"{stem}.ipynb", as_version=4)
    wide = [(i, line) for i, c in enumerate(nb.cells) if c.cell_type == "code"
            and not {"remove-cell", "remove-input", "parameters"} & set(c.metadata.get("tags", []))
            for line in c.source.splitlines() if len(line) > SHOWN_LINE_CHARS]
    assert not wide, f"notebooks/{stem}.ipynb: lines over {SHOWN_LINE_CHARS} characters on the page: {wide}"
