"""The papermill pipeline: profile errors, skipping finished work, failing notebooks named by cell."""
from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import nbformat
import pytest
import torch
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from ladder import pipeline
from ladder.pipeline import NotebookFailed, PipelineError


def _notebook(path, *cells, params="x = 0\nlog = ''"):
    """A throwaway notebook: a title, a `parameters` cell, then `cells` (code)."""
    p = new_code_cell(params)
    p.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[new_markdown_cell("# Tiny"), p, *(new_code_cell(c) for c in cells)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def _profile(root, profile, stem, text):
    p = root / profile / f"{stem}.yaml"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


# --------------------------------------------------------------------------------------------- profiles
def test_unknown_profile_is_a_clear_error(tmp_path):
    with pytest.raises(PipelineError, match="unknown profile 'fast'.*smoke"):
        pipeline.load_parameters("fast", "01_x", tmp_path)
    with pytest.raises(PipelineError, match="unknown profile 'fast'"):
        pipeline.run("fast", no_book=True, notebooks_dir=tmp_path, profiles_dir=tmp_path, book_dir=tmp_path)


def test_missing_profile_file_names_the_file(tmp_path):
    _notebook(tmp_path / "nb" / "01_tiny.ipynb", "print(x)")
    with pytest.raises(PipelineError, match=r"missing parameter file .*smoke/01_tiny\.yaml"):
        pipeline.run("smoke", no_book=True, notebooks_dir=tmp_path / "nb", profiles_dir=tmp_path / "profiles",
                     book_dir=tmp_path / "book")


def test_profile_file_must_be_a_mapping(tmp_path):
    _profile(tmp_path, "cpu", "01_tiny", "- 1\n- 2\n")
    with pytest.raises(PipelineError, match="flat mapping"):
        pipeline.load_parameters("cpu", "01_tiny", tmp_path)


def test_profile_names_must_be_notebook_parameters(tmp_path):
    nb = _notebook(tmp_path / "nb" / "01_tiny.ipynb")
    _profile(tmp_path, "cpu", "01_tiny", "x: 1\nlgo: 'a'\n")
    with pytest.raises(PipelineError, match=r"\['lgo'\] not parameters of .*'lgo': did you mean 'log'\?"):
        pipeline.load_parameters("cpu", "01_tiny", tmp_path, nb)


@pytest.mark.parametrize("profile", pipeline.PROFILES)
def test_every_profile_of_the_repository_sets_only_declared_parameters(profile):
    for nb in pipeline.discover():
        if pipeline.PROFILE_SPECS[profile].partial and not (pipeline.PROFILES_DIR / profile / f"{nb.stem}.yaml").is_file():
            continue
        params = pipeline.load_parameters(profile, nb.stem, notebook=nb)
        assert len(params) > 1


def test_parameters_carry_the_profile(tmp_path):
    _profile(tmp_path, "gpu", "01_tiny", "x: 3\n")
    assert pipeline.load_parameters("gpu", "01_tiny", tmp_path) == {"x": 3, "profile": "gpu"}


def test_discover_orders_notebooks_and_rejects_unknown_only(tmp_path):
    for name in ("02_b", "01_a", "notes", "10_c"):
        _notebook(tmp_path / f"{name}.ipynb")
    assert [p.stem for p in pipeline.discover(tmp_path)] == ["01_a", "02_b", "10_c"]
    assert [p.stem for p in pipeline.discover(tmp_path, ["02_b.ipynb"])] == ["02_b"]
    with pytest.raises(PipelineError, match="no notebook named \\['03_zz'\\]"):
        pipeline.discover(tmp_path, ["03_zz"])


def test_book_only_and_no_book_exclude_each_other(tmp_path):
    with pytest.raises(PipelineError, match="exclude each other"):
        pipeline.run("smoke", book_only=True, no_book=True, book_dir=tmp_path)


# --------------------------------------------------------------------------------------------- skipping
def test_work_hash_depends_on_notebook_parameters_and_profile(tmp_path):
    nb = _notebook(tmp_path / "01_a.ipynb", "print(x)")
    h = pipeline.work_hash(nb, {"x": 1}, "cpu")
    assert h == pipeline.work_hash(nb, {"x": 1}, "cpu")
    assert h != pipeline.work_hash(nb, {"x": 2}, "cpu")
    assert h != pipeline.work_hash(nb, {"x": 1}, "smoke")
    _notebook(nb, "print(x + 1)")
    assert h != pipeline.work_hash(nb, {"x": 1}, "cpu")


def test_skips_unchanged_work_and_reruns_when_asked_or_changed(tmp_path):
    runs = tmp_path / "runs.txt"
    nb = _notebook(tmp_path / "nb" / "01_tiny.ipynb",
                   f"open({str(runs)!r}, 'a').write(f'{{x}}\\n')")
    profiles, book = tmp_path / "profiles", tmp_path / "book"
    _profile(profiles, "smoke", "01_tiny", "x: 1\n")
    kw = dict(book_dir=book, profiles_dir=profiles, log=lambda *a: None)

    executed = pipeline.execute(nb, "smoke", **kw)
    assert executed == book / "notebooks" / "01_tiny.ipynb" and executed.is_file()
    stamp = json.loads(pipeline.stamp_path(executed).read_text())
    assert stamp["profile"] == "smoke" and stamp["parameters"] == {"x": 1, "profile": "smoke"}
    assert pipeline.execute(nb, "smoke", **kw) is None  # nothing changed: skipped
    assert pipeline.execute(nb, "smoke", force=True, **kw) == executed  # --force
    _profile(profiles, "smoke", "01_tiny", "x: 2\n")
    assert pipeline.execute(nb, "smoke", **kw) == executed  # parameters changed
    assert runs.read_text().split() == ["1", "1", "2"]

    # the executed copy says when and where it ran, after the title cell
    cells = nbformat.read(executed, as_version=4).cells
    assert cells[0].source.startswith("# Tiny")
    assert "provenance" in cells[1].metadata["tags"] and "**smoke** profile" in cells[1].source
    assert "colab.research.google.com" in cells[1].source and "mybinder.org" in cells[1].source


def test_failing_notebook_names_notebook_cell_and_error(tmp_path):
    nb = _notebook(tmp_path / "nb" / "01_bad.ipynb", "y = x + 1", "raise ValueError(f'boom {y}')", "print('never')")
    profiles, book = tmp_path / "profiles", tmp_path / "book"
    _profile(profiles, "smoke", "01_bad", "x: 41\n")
    good = book / "notebooks" / "01_bad.ipynb"
    good.parent.mkdir(parents=True)
    good.write_text("previous good copy")
    with pytest.raises(NotebookFailed) as info:
        pipeline.run("smoke", no_book=True, notebooks_dir=nb.parent, profiles_dir=profiles, book_dir=book,
                     log=lambda *a: None)
    err = info.value
    assert err.ename == "ValueError" and "boom 42" in err.evalue
    assert "raise ValueError" in err.source
    msg = str(err)
    # title, parameters, "y = x + 1", then the raise: the 4th of 5 cells of the source notebook
    assert err.cell_number == 4
    assert "01_bad.ipynb" in msg and "cell 4 of 5" in msg and "ValueError: boom 42" in msg
    assert err.partial.is_file()  # the partly executed copy is kept for inspection ...
    assert good.read_text() == "previous good copy"  # ... and does not replace the last good one


def test_cli_reports_errors_without_traceback(tmp_path, capsys):
    assert pipeline.main(["--profile", "nope", "--no-book", "--book-dir", str(tmp_path)]) == 1
    assert "unknown profile 'nope'" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------- book parts
def test_toc_lists_only_present_chapters(tmp_path):
    (tmp_path / "notebooks").mkdir()
    for stem in ("03_c", "01_a"):
        (tmp_path / "notebooks" / f"{stem}.ipynb").write_text("{}")
    (tmp_path / "methods.md").write_text("# M")
    toc = pipeline.yaml.safe_load(pipeline.write_toc(tmp_path).read_text())
    assert toc["root"] == "index"
    assert [c["file"] for c in toc["parts"][0]["chapters"]] == ["notebooks/01_a", "notebooks/03_c"]
    assert [c["file"] for c in toc["parts"][1]["chapters"]] == ["methods"]


def test_mathjax_without_npm_warns_and_falls_back(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "MATHJAX_CACHE", tmp_path / "cache")
    monkeypatch.setattr(pipeline.shutil, "which", lambda name: None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert pipeline.ensure_mathjax(tmp_path / "book", log=lambda *a: None) is False
    assert any("npm" in str(w.message) for w in caught)
    assert "cdn.jsdelivr.net/npm/mathjax@3" in (tmp_path / "book" / "_extra" / "mathjax" / "tex-chtml.js").read_text()


def test_wrong_typed_profile_value_is_named_before_anything_runs(tmp_path):
    nb = _notebook(tmp_path / "nb" / "01_tiny.ipynb", "print(x)", params="x = 0\nrate = 0.5\nlog = ''")
    _profile(tmp_path, "cpu", "01_tiny", "x: two\n")
    with pytest.raises(PipelineError, match=r"x: 'two' is a str, but the notebook's parameter is a int"):
        pipeline.load_parameters("cpu", "01_tiny", tmp_path, nb)
    _profile(tmp_path, "cpu", "01_tiny", "x: 3\nrate: 1\n")  # an int where a float is declared is fine
    assert pipeline.load_parameters("cpu", "01_tiny", tmp_path, nb)["rate"] == 1


def test_gpu_profiles_check_for_their_gpus_up_front(monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pipeline.gpus_needed({"a": {"tp": 2}, "b": {"grid": [[2, 1], [8, 4]]}}) == 8
    with pytest.raises(PipelineError, match=r"profile gpu needs 8 CUDA GPU\(s\).*found no CUDA GPU"):
        pipeline.check_gpus("gpu", {"b": {"grid": [[8, 4]]}})
    with pytest.raises(PipelineError, match=r"profile gpu1 needs 1 CUDA GPU"):
        pipeline.check_gpus("gpu1", {})
    pipeline.check_gpus("cpu", {"b": {"tp": 8}})  # no check off the gpu profiles


def test_only_the_published_profile_writes_book():
    assert pipeline.output_book_dir("cpu") == pipeline.BOOK_DIR
    for p in ("smoke", "gpu", "gpu1"):
        d = pipeline.output_book_dir(p)
        assert d == pipeline.REPO_ROOT / "_output" / p / "book"


def test_a_new_profile_is_one_record_and_its_parameter_files(tmp_path, monkeypatch):
    monkeypatch.setitem(pipeline.PROFILE_SPECS, "laptop", pipeline.Profile("laptop", partial=True))
    _notebook(tmp_path / "nb" / "01_a.ipynb", "y = x * 2")
    _notebook(tmp_path / "nb" / "02_b.ipynb", "print(x)")
    logs = []
    pipeline.run("laptop", no_book=True, notebooks_dir=tmp_path / "nb", book_dir=tmp_path / "book", log=logs.append,
                 profiles_dir=_profile(tmp_path / "profiles", "laptop", "01_a", "x: 3\n").parents[1])
    assert (tmp_path / "book" / "notebooks" / "01_a.ipynb").is_file()
    assert not (tmp_path / "book" / "notebooks" / "02_b.ipynb").exists()  # partial: no parameter file, skipped
    assert any("covers 1 of 2 chapters" in m for m in logs)
    monkeypatch.delitem(pipeline.PROFILE_SPECS, "laptop")
    with pytest.raises(PipelineError, match="unknown profile 'laptop'"):
        pipeline.run("laptop", no_book=True, notebooks_dir=tmp_path / "nb", book_dir=tmp_path / "book")


def test_profile_records():
    specs = pipeline.PROFILE_SPECS
    assert pipeline.PUBLISHED == "cpu" and [p for p in specs if specs[p].published] == ["cpu"]
    assert [p for p in specs if not specs[p].offline] == ["gpu"]  # the only profile that reaches the hub
    assert specs["gpu1"].gpus == 1 and specs["gpu"].gpus == 0 and specs["cpu"].gpus is None


def test_partial_profile_runs_what_exists_and_says_what_is_skipped(tmp_path):
    _notebook(tmp_path / "nb" / "01_a.ipynb", "print(x)")
    _notebook(tmp_path / "nb" / "02_b.ipynb", "print(x)")
    logs = []
    with pytest.raises(PipelineError, match="gpu1 needs 1 CUDA"):  # no GPU here; the skip is said first
        pipeline.run("gpu1", no_book=True, notebooks_dir=tmp_path / "nb", profiles_dir=_profile(
            tmp_path / "profiles", "gpu1", "02_b", "x: 1\n").parents[1], book_dir=tmp_path / "book", log=logs.append)
    assert any("covers 1 of 2 chapters" in m and "01_a" in m for m in logs)


def test_repository_url_is_set_once_and_everything_agrees():
    import yaml
    url = pipeline.repo_url()
    assert url.startswith("https://github.com/")
    for nb in pipeline.discover():
        install = next(c for c in nbformat.read(nb, as_version=4).cells if "%pip install" in c.source)
        assert f'"git+{url}"' in install.source, nb.name
    cfg = yaml.safe_load((pipeline.BOOK_DIR / "_config.yml").read_text())
    assert cfg["repository"]["url"] == url
    cell = pipeline.provenance_cell("01_x", "cpu", {}, {"date": "2026-01-01T00:00", "hardware": {}}, 1.0)
    assert f"github/{url.split('github.com/')[1]}/blob/" in cell


def test_cli_debug_keeps_the_traceback(tmp_path, capsys):
    with pytest.raises(PipelineError):
        pipeline.main(["--profile", "fast", "--debug"])


def test_progress_bars_go_to_the_terminal_not_into_cells(tmp_path, capfd, monkeypatch):
    # ipykernel relays fd 2 into cells except under pytest (it checks PYTEST_CURRENT_TEST): run the kernel as
    # a real pipeline run does, or this test passes where real pages fill with bars
    monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)
    nb = _notebook(tmp_path / "nb" / "01_tiny.ipynb",
                   "from tqdm.auto import tqdm\nfor _ in tqdm(range(3)): pass",
                   # slow enough for ipykernel's fd watcher to relay whatever reaches fd 2 into the cell
                   "import time, tqdm as t\nfor _ in t.tqdm(range(3), desc='lm-eval style'): time.sleep(0.2)\n"
                   "time.sleep(0.5)\nprint('done')",
                   "import subprocess, sys\nprint(subprocess.run([sys.executable, '-c', 'import tqdm; "
                   "[0 for _ in tqdm.tqdm(range(5), disable=False)]'], capture_output=True, text=True).stderr)")
    _profile(tmp_path / "profiles", "smoke", "01_tiny", "x: 1\n")
    logs = []
    out = pipeline.execute(nb, "smoke", tmp_path / "book", profiles_dir=tmp_path / "profiles", log=logs.append)
    text = json.dumps(nbformat.read(out, as_version=4)["cells"])
    assert "it/s" not in text and "3/3" not in text and "done" in text
    assert "3/3" in capfd.readouterr().err  # the bars went to the kernel's stderr: this terminal
    assert [m for m in logs if re.search(r"01_tiny: cell 5/5, \d+ s elapsed", m)], logs
    assert "5/5" not in text  # a child process's bar, relayed into the cell, is not drawn at all


def test_parameters_are_shown_once_as_a_table(tmp_path):
    nb = _notebook(tmp_path / "nb" / "01_tiny.ipynb", "print(x)")
    _profile(tmp_path / "profiles", "smoke", "01_tiny", "x: 7\nlog: 'a b'\n")
    out = pipeline.execute(nb, "smoke", tmp_path / "book", profiles_dir=tmp_path / "profiles", log=lambda m: None)
    cells = nbformat.read(out, as_version=4).cells
    shown = [c for c in cells if "remove-cell" not in c.metadata.get("tags", [])]
    assert not [c for c in shown if {"parameters", "injected-parameters"} & set(c.metadata.get("tags", []))]
    prov = next(c for c in cells if "provenance" in c.metadata.get("tags", []))
    assert "| `x` | `7` |" in prov.source and '| `log` | `"a b"` |' in prov.source
    # folded under its source file and count, inside the provenance note; none at all says so
    assert ":::{dropdown} Parameters (`profiles/smoke/01_tiny.yaml`): 2\n| parameter | value |" in prov.source
    assert prov.source.index(":::{dropdown}") < prov.source.index("|---|") < prov.source.rindex(":::\n```")
    none = pipeline.provenance_cell("01_x", "cpu", {"profile": "cpu"}, {"date": "2026-01-01T00:00", "hardware": {}}, 1.0)
    assert "Parameters (`profiles/cpu/01_x.yaml`): none." in none and "dropdown" not in none


def test_code_changed_since_names_the_package_files_edited_after_a_commit(tmp_path):
    import subprocess
    from ladder.provenance import code_changed_since
    git = lambda *a: subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *a], cwd=tmp_path,
                                    check=True, capture_output=True, text=True).stdout.strip()
    git("init", "-q")
    (tmp_path / "ladder").mkdir()
    (tmp_path / "ladder" / "model.py").write_text("x = 1\n")
    (tmp_path / "notes.md").write_text("a\n")
    git("add", "-A")
    git("commit", "-qm", "first")
    commit = git("rev-parse", "HEAD")
    assert code_changed_since(commit, checkout=tmp_path) == []
    (tmp_path / "notes.md").write_text("b\n")  # outside the package: not code
    assert code_changed_since(commit + "-dirty", checkout=tmp_path) == []
    (tmp_path / "ladder" / "model.py").write_text("x = 2\n")  # uncommitted edits count
    assert code_changed_since(commit, checkout=tmp_path) == ["ladder/model.py"]
    assert code_changed_since("0" * 40, checkout=tmp_path) is None  # a commit git does not know
    assert code_changed_since("unknown", checkout=tmp_path) is None
    assert code_changed_since(commit, checkout=None) is None  # an installed wheel


def test_skipped_notebook_says_when_the_package_changed_since_it_ran(tmp_path, monkeypatch):
    nb = _notebook(tmp_path / "nb" / "01_tiny.ipynb", "y = x")
    profiles, book = tmp_path / "profiles", tmp_path / "book"
    _profile(profiles, "smoke", "01_tiny", "x: 1\n")
    lines = []
    kw = dict(book_dir=book, profiles_dir=profiles, log=lines.append)
    executed = pipeline.execute(nb, "smoke", **kw)
    ran_at = json.loads(pipeline.stamp_path(executed).read_text())["provenance"]["git_commit"]
    asked = []
    monkeypatch.setattr(pipeline, "code_changed_since", lambda c, paths: asked.append(c) or [])
    lines.clear()
    assert pipeline.execute(nb, "smoke", **kw) is None
    assert asked == [ran_at] and not any("changed" in s for s in lines)
    monkeypatch.setattr(pipeline, "code_changed_since", lambda c, paths: [f"ladder/m{i}.py" for i in range(5)])
    lines.clear()
    assert pipeline.execute(nb, "smoke", **kw) is None  # still skipped: a note, not a re-run
    note = [s for s in lines if "changed" in s]
    assert len(note) == 1 and "ladder/m0.py, ladder/m1.py, ladder/m2.py and 2 more" in note[0]
    assert "--force" in note[0]


def _package(root, modules: dict):
    (root / "ladder").mkdir(parents=True, exist_ok=True)
    for name, text in modules.items():
        (root / "ladder" / f"{name}.py").write_text(text)
    return root / "ladder"


def test_package_deps_follow_imports_transitively_and_only_those(tmp_path):
    from ladder.provenance import notebook_deps, package_deps
    pkg = _package(tmp_path, {
        "__init__": "from .config import C\n",
        "config": "C = 1\n",
        "model": "from .config import C\n\ndef f():\n    from . import stats  # lazy: still a dependency\n",
        "stats": "x = 'ladder.model is mentioned in prose only'\n",
        "train": "import os\n",
        "runner": "ENTRY = 'ladder.train:main'  # started in another process\n",
        "unrelated": "from .config import C\n"})
    (pkg / "paper").mkdir()
    (pkg / "paper" / "claims.csv").write_text("a\n")
    base = ["ladder/__init__.py", "ladder/config.py", "ladder/paper/claims.csv"]
    assert package_deps("from ladder.model import f", pkg) == sorted(base + ["ladder/model.py", "ladder/stats.py"])
    assert package_deps("import ladder.runner", pkg) == sorted(base + ["ladder/runner.py", "ladder/train.py"])
    assert package_deps("import os", pkg) == ["ladder/paper/claims.csv"]
    nb = _notebook(tmp_path / "nb.ipynb", "%matplotlib inline\nfrom ladder import config")
    assert notebook_deps(nb, pkg) == base


def test_a_skipped_notebook_is_stale_only_when_a_module_it_imports_changed(tmp_path):
    import subprocess
    git = lambda *a: subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *a], cwd=tmp_path,
                                    check=True, capture_output=True, text=True).stdout.strip()
    from ladder import provenance
    pkg = _package(tmp_path, {"__init__": "", "config": "C = 1\n", "adapt": "A = 1\n"})
    git("init", "-q"), git("add", "-A"), git("commit", "-qm", "first")
    commit = git("rev-parse", "HEAD")
    deps = provenance.package_deps("from ladder.config import C", pkg)
    (pkg / "adapt.py").write_text("A = 1  # a comment\n")
    assert provenance.code_changed_since(commit, deps, checkout=tmp_path) == []
    (pkg / "config.py").write_text("C = 2\n")
    assert provenance.code_changed_since(commit, deps, checkout=tmp_path) == ["ladder/config.py"]


def test_every_notebook_installs_itself_on_colab_but_the_page_does_not_show_it():
    """The install cell runs in Colab and Binder; a reader of the built book never needs it."""
    for path in sorted((pipeline.REPO_ROOT / "notebooks").glob("*.ipynb")):
        cell = nbformat.read(path, as_version=4).cells[1]
        assert "%pip install" in cell.source and "import ladder" in cell.source, path.name
        assert "remove-cell" in cell.metadata.get("tags", []), path.name


def test_every_module_a_notebook_imports_comes_with_the_package():
    """Colab and Binder install the package and nothing else (each notebook's install cell): every module a
    notebook imports must be the standard library's, ladder's, or come from a dependency in pyproject.toml
    (or one of theirs), else the notebook stops at its imports there."""
    import ast
    import sys
    import tomllib
    from importlib.metadata import PackageNotFoundError, packages_distributions, requires

    def dist_name(req):
        return re.split(r"[<>=!~ ;\[(]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")

    pyproject = tomllib.loads((pipeline.REPO_ROOT / "pyproject.toml").read_text())
    closure, todo = set(), [dist_name(d) for d in pyproject["project"]["dependencies"]]
    while todo:
        name = todo.pop()
        if name in closure:
            continue
        closure.add(name)
        try:
            todo += [dist_name(r) for r in requires(name) or [] if "extra ==" not in r]
        except PackageNotFoundError:
            pass
    owners = packages_distributions()
    missing = []
    for nb in sorted((pipeline.REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        for cell in nbformat.read(nb, as_version=4).cells:
            if cell.cell_type != "code":
                continue
            code = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
            for node in ast.walk(ast.parse(code)):
                mods = ([a.name for a in node.names] if isinstance(node, ast.Import)
                        else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
                for top in {m.split(".")[0] for m in mods}:
                    dists = {dist_name(d) for d in owners.get(top, [])}
                    if top not in sys.stdlib_module_names and top != "ladder" and not dists & closure:
                        missing.append(f"{nb.name}: {top} (from {sorted(dists) or 'no installed distribution'})")
    assert not missing, "imported by a notebook but not a dependency of the package:\n" + "\n".join(missing)


# --------------------------------------------------------------------------------------------- issue 22
def test_malformed_profile_yaml_is_one_line_naming_file_and_line(tmp_path):
    nb = _notebook(tmp_path / "nb" / "01_tiny.ipynb", "print(x)")
    _profile(tmp_path / "profiles", "smoke", "01_tiny", "# a comment\nx: 1\nsamples: [1\n")
    with pytest.raises(PipelineError) as info:
        pipeline.load_parameters("smoke", "01_tiny", tmp_path / "profiles", nb)
    msg = str(info.value)
    assert re.search(r"01_tiny\.yaml:[34]: not valid YAML", msg) and "\n" not in msg, msg
    assert "<unicode string>" not in msg


def test_a_profile_file_naming_another_profile_is_refused(tmp_path):
    nb = _notebook(tmp_path / "nb" / "01_tiny.ipynb", "print(x)", params="x = 0\nprofile = 'cpu'")
    _profile(tmp_path / "profiles", "smoke", "01_tiny", "profile: cpu\nx: 1\n")
    with pytest.raises(PipelineError, match="profile: 'cpu', but the file is in profiles/smoke/"):
        pipeline.load_parameters("smoke", "01_tiny", tmp_path / "profiles", nb)


def test_progress_and_failure_number_cells_alike_and_the_error_is_one_line(tmp_path):
    nb = _notebook(tmp_path / "nb" / "01_bad.ipynb", "y = x + 1",
                   "# a long cell\nz = 1\nw = 2\nraise ValueError(f'boom {y}\\nsecond line')\nprint('never')")
    _profile(tmp_path / "profiles", "smoke", "01_bad", "x: 41\n")
    logs = []
    with pytest.raises(NotebookFailed) as info:
        pipeline.execute(nb, "smoke", tmp_path / "book", profiles_dir=tmp_path / "profiles", log=logs.append)
    msg = str(info.value)
    last = [m for m in logs if "01_bad: cell" in m][-1]
    assert "cell 4/4," in last and "failed in cell 4 of 4" in msg  # the same numbering
    assert "\n" not in msg and "z = 1" not in msg and "(`# a long cell`)" in msg
    assert "ValueError: boom 42 (+1 more lines)" in msg and "partly executed copy" in msg


def test_the_kernel_tcp_warning_and_bar_floods_stay_out_of_the_log(tmp_path, capfd, monkeypatch):
    monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)
    monkeypatch.setenv("LADDER_TQDM_INTERVAL", "30")
    nb = _notebook(tmp_path / "nb" / "01_tiny.ipynb",
                   "import time, tqdm\nfor _ in tqdm.tqdm(range(40), desc='many'): time.sleep(0.02)")
    _profile(tmp_path / "profiles", "smoke", "01_tiny", "x: 1\n")
    pipeline.execute(nb, "smoke", tmp_path / "book", profiles_dir=tmp_path / "profiles", log=lambda *a: None)
    err = capfd.readouterr().err
    assert "without encryption" not in err
    draws = [d for d in err.replace("\r", "\n").splitlines() if d.startswith("many:")]
    assert 1 <= len(draws) <= 3 and "40/40" in draws[-1], draws  # start and end, not one per 0.1 s


def test_a_refused_gpu_run_leaves_no_book_stub(tmp_path, monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    book = tmp_path / "_output" / "gpu" / "book"
    with pytest.raises(PipelineError, match="needs"):
        pipeline.run("gpu", no_book=True, book_dir=book, log=lambda *a: None)
    assert not book.exists()


def test_a_successful_run_tidies_the_kernel_folder_of_failed(tmp_path):
    nb = _notebook(tmp_path / "nb" / "01_tiny.ipynb", "print(x)")
    _profile(tmp_path / "profiles", "smoke", "01_tiny", "x: 1\n")
    book = tmp_path / "book"
    (book / "_failed" / "ipython").mkdir(parents=True)  # left by an earlier failed run
    pipeline.run("smoke", no_book=True, notebooks_dir=nb.parent, profiles_dir=tmp_path / "profiles",
                 book_dir=book, log=lambda *a: None)
    assert not (book / "_failed").exists()


def test_the_up_to_date_check_covers_the_manifest_hashes_of_the_data_read(tmp_path, monkeypatch):
    from ladder import paths
    rel = "text/tinystories_sample/tinystories_sample.txt"
    nb = _notebook(tmp_path / "nb" / "01_tiny.ipynb",
                   f"from ladder.paths import data_path\nprint(len(data_path(*{rel!r}.split('/')).read_text()))")
    _profile(tmp_path / "profiles", "smoke", "01_tiny", "x: 1\n")
    kw = dict(book_dir=tmp_path / "book", profiles_dir=tmp_path / "profiles", log=lambda *a: None)
    executed = pipeline.execute(nb, "smoke", **kw)
    stamp = json.loads(pipeline.stamp_path(executed).read_text())
    entry = paths._manifest_by_path()[rel]
    assert stamp["data"] == {rel: entry.sha256}
    assert pipeline.execute(nb, "smoke", **kw) is None  # same data: skipped
    import dataclasses
    changed = {**paths._manifest_by_path(), rel: dataclasses.replace(entry, sha256="0" * 64)}
    monkeypatch.setattr(paths, "_MANIFEST", changed)  # a new version of the file in the manifest
    assert pipeline.execute(nb, "smoke", **kw) == executed


def test_the_books_claims_page_links_only_executed_chapters_and_holds_still(tmp_path):
    from ladder import claims
    from ladder.stability import hold_still
    book = tmp_path / "book"
    (book / "notebooks").mkdir(parents=True)
    (book / "notebooks" / "02_speedup.ipynb").write_text("{}")
    want = claims.to_markdown(hold_still(claims.claims_table("cpu"), "cpu"), "cpu", chapters={"notebooks/02_speedup"})
    assert pipeline.claims_page("cpu", book) == want
    assert "{doc}`chapter 3" not in pipeline.claims_page("cpu", book)


def test_output_root_is_where_a_run_writes(tmp_path):
    out = tmp_path / "elsewhere"
    nb = _notebook(tmp_path / "nb" / "01_a.ipynb",
                   "import os, pathlib\npathlib.Path(os.environ['LADDER_OUTPUT'], 'here.txt').write_text(str(x))")
    profiles = _profile(tmp_path / "profiles", "smoke", "01_a", "x: 5\n").parents[1]
    out.mkdir()
    pipeline.run("smoke", no_book=True, notebooks_dir=nb.parent, profiles_dir=profiles, book_dir=tmp_path / "book",
                 output_root=out, log=lambda m: None)
    assert (out / "here.txt").read_text() == "5"


# --------------------------------------------------------------------------------------------- bf16 on a CPU
def test_bf16_note_times_nothing_unless_a_notebook_trains_in_bf16_without_a_gpu(monkeypatch):
    def never():
        raise AssertionError("timed bf16 for a notebook that does not train in it")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pipeline.bf16_note({"amp": "none"}, never) is None and pipeline.bf16_note({"x": 1}, never) is None
    assert pipeline.bf16_note({"amp": "auto"}, never) is None  # "auto" is bf16 on GPUs only
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pipeline.bf16_note({"amp": "bf16"}, never) is None


def test_bf16_note_warns_past_its_threshold_and_names_the_remedy(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pipeline.BF16_SLOW == 2.0
    assert pipeline.bf16_note({"amp": "bf16"}, lambda: 2.0) is None
    assert pipeline.bf16_note({"amp": "bf16"}, lambda: 2.0001) is not None
    note = pipeline.bf16_note({"amp": "bf16"}, lambda: 9.7)
    assert "9.7x slower than fp32" in note and "`amp: none`" in note


def test_cpu_bf16_slowdown_is_a_measured_ratio():
    r = pipeline.cpu_bf16_slowdown(pairs=3)
    assert isinstance(r, float) and 0 < r < 1000


def test_execute_warns_before_a_notebook_trains_in_bf16_on_a_slow_cpu(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(pipeline, "cpu_bf16_slowdown", lambda: 9.7)
    nb = _notebook(tmp_path / "nb" / "01_tiny.ipynb", "print(amp)", params='amp = "none"')
    _profile(tmp_path / "profiles", "smoke", "01_tiny", "amp: bf16\n")
    logs = []
    pipeline.execute(nb, "smoke", tmp_path / "book", profiles_dir=tmp_path / "profiles", log=logs.append)
    assert [m for m in logs if m.startswith("[pipeline] 01_tiny: warning: amp: bf16") and "9.7x" in m], logs


def test_the_hardware_record_names_the_cpu_and_its_vector_kernels(monkeypatch):
    import torch
    from ladder import provenance
    hw = provenance.hardware()
    assert hw["cpu_capability"] == torch.backends.cpu.get_cpu_capability() and hw["cpu_capability"]
    assert hw["cpu_model"] == provenance.cpu_model()
    if Path("/proc/cpuinfo").is_file():
        assert hw["cpu_model"] and "model name" not in hw["cpu_model"] and ":" not in hw["cpu_model"]
    monkeypatch.setattr("builtins.open", lambda *a, **k: (_ for _ in ()).throw(FileNotFoundError(a[0])))
    assert provenance.cpu_model() is None  # a system without /proc/cpuinfo: no name, no error
    line = provenance.hardware_line({"hardware": {"cpu_count": 2, "machine": "x86_64", "cpu_model": "AMD EPYC",
                                                 "cpu_capability": "AVX2", "memory_gb": 23.4}})
    assert line == "2 CPU cores (x86_64, AMD EPYC, AVX2), 23.4 GB RAM, no GPU"
    # a record from before the CPU was named reads as it did
    assert provenance.hardware_line({"hardware": {"cpu_count": 2, "machine": "x86_64"}}) == \
        "2 CPU cores (x86_64), no GPU"


def test_the_laptop_profiles_train_in_fp32():
    # bf16 autocast is emulated on CPUs without AVX512-BF16 (most laptops), ~10x slower than fp32: the profiles
    # meant for any CPU must not ask for it ("auto" is bf16 on GPUs only)
    for profile in ("smoke", "cpu"):
        for nb in pipeline.discover():
            params = pipeline.load_parameters(profile, nb.stem, notebook=nb)
            assert params.get("amp", "auto") in ("none", "auto"), (profile, nb.stem, params.get("amp"))
