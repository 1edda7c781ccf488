"""Chapter 4 reads as a report: its code cells (all lines, comments and blanks included) stay within 100
lines; the experiment's orchestration lives in ladder/adapt.py, where it is tested."""
import json

from ladder.provenance import REPO_ROOT

NOTEBOOK = REPO_ROOT / "notebooks" / "04_llama_adaptation.ipynb"
MAX_CODE_LINES = 100


def code_lines(path) -> int:
    cells = json.loads(path.read_text())["cells"]
    return sum(len("".join(c["source"]).splitlines()) for c in cells if c["cell_type"] == "code")


def test_code_lines_are_counted_over_every_code_cell(tmp_path):
    nb = {"cells": [{"cell_type": "code", "source": ["a = 1\n", "\n", "# note\n", "b = 2"]},
                    {"cell_type": "markdown", "source": ["text\n", "more"]},
                    {"cell_type": "code", "source": "c = 3\nd = 4\n"}]}
    (tmp_path / "x.ipynb").write_text(json.dumps(nb))
    assert code_lines(tmp_path / "x.ipynb") == 6


def test_notebook_04_holds_at_most_100_code_lines():
    n = code_lines(NOTEBOOK)
    assert n <= MAX_CODE_LINES, f"{NOTEBOOK.name}: {n} code lines (at most {MAX_CODE_LINES}): move code to ladder/adapt.py"


def test_notebook_04_hides_only_plumbing_and_keeps_its_parameters_cell():
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    tags = [c.get("metadata", {}).get("tags", []) for c in cells if c["cell_type"] == "code"]
    assert sum("parameters" in t for t in tags) == 1
    hidden = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"
              and "remove-input" in c.get("metadata", {}).get("tags", [])]
    assert hidden and all("run_models" not in s and "measure_hybrid_speed" not in s for s in hidden)
