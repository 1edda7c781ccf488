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
