"""Where a run writes (issue 22, item 1): only ladder.pipeline names the repository as the output root; a
notebook run any other way (plain papermill, Jupyter, Colab) writes below _output/<profile>/manual, and
chapter 4 reads the checkpoint its own chapter 3 exported."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ladder import paths
from ladder.provenance import CHECKOUT


@pytest.fixture
def manual(monkeypatch, tmp_path):
    """A hand run: no LADDER_OUTPUT / LADDER_BOOK_DIR, the working directory a temporary folder."""
    monkeypatch.delenv("LADDER_OUTPUT", raising=False)
    monkeypatch.delenv("LADDER_BOOK_DIR", raising=False)
    monkeypatch.setattr(paths, "REPO_ROOT", tmp_path)
    monkeypatch.setitem(paths._current, "profile", None)
    return tmp_path


def test_a_hand_run_writes_below_output_profile_manual(manual, capsys):
    res = paths.results_dir("smoke")
    assert res == manual / "_output" / "smoke" / "manual" / "data" / "results" / "smoke" and res.is_dir()
    assert "not run by ladder.pipeline" in capsys.readouterr().err  # said once, where the outputs go
    # figures follow the profile the notebook named first (results_dir, runs_dir or output_root)
    assert paths.figures_dir() == manual / "_output" / "smoke" / "manual" / "book" / "figures"
    assert paths.runs_dir("smoke") == manual / "_output" / "smoke" / "manual" / "runs"


def test_the_pipeline_names_the_repository_so_the_cpu_book_keeps_its_paths(monkeypatch, tmp_path):
    monkeypatch.setenv("LADDER_OUTPUT", str(tmp_path))
    monkeypatch.setenv("LADDER_BOOK_DIR", str(tmp_path / "book"))
    assert paths.results_dir("cpu") == tmp_path / "data" / "results" / "cpu"
    assert paths.runs_dir("cpu") / "03_pretraining" / "cpu" == tmp_path / "runs" / "03_pretraining" / "cpu"
    assert paths.figures_dir() == tmp_path / "book" / "figures"


def test_chapter_4_reads_the_checkpoint_its_own_chapter_3_exported(manual, monkeypatch):
    from ladder.adapt import resolve_model
    rel = "data/results/cpu/checkpoints/standard"
    committed = manual / rel  # the repository's copy (what the pipeline's cpu run exported)
    committed.mkdir(parents=True)
    (committed / "config.json").write_text("{}")
    paths.output_root("cpu")
    assert resolve_model(rel) is None  # a hand run whose chapter 3 has not exported it: not the committed one
    mine = manual / "_output" / "cpu" / "manual" / rel
    mine.mkdir(parents=True)
    (mine / "config.json").write_text("{}")
    assert resolve_model(rel) == mine
    monkeypatch.setenv("LADDER_OUTPUT", str(manual))  # the pipeline: the repository's copy
    assert resolve_model(rel) == committed


def _throwaway_clone(src: Path, dest: Path) -> Path:
    """A git repository holding this checkout's working tree (tracked and untracked files, as they are now,
    uncommitted edits included), committed, with the same .gitignore."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=src,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for f in filter(None, files):
        if (src / f).is_file() and not (src / f).is_symlink():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / f, dest / f)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "clone"]):
        subprocess.run(git + cmd, cwd=dest, check=True, capture_output=True)
    return dest


@pytest.mark.slow
def test_plain_papermill_in_a_clone_leaves_git_status_clean(tmp_path, data_dir):
    if CHECKOUT is None:
        pytest.skip("needs the source checkout")
    clone = _throwaway_clone(CHECKOUT, tmp_path / "clone")
    env = {k: v for k, v in os.environ.items() if k not in ("LADDER_OUTPUT", "LADDER_BOOK_DIR", "LADDER_WORKDIR",
                                                           "LADDER_DATA_LOG", "IPYTHONDIR")}
    env.update(PYTHONPATH=str(clone), LADDER_DATA=str(data_dir))
    # as issue 22 did it: papermill from the repository's root, the smoke yaml, the output notebook elsewhere
    r = subprocess.run([sys.executable, "-m", "papermill", "notebooks/01_architecture.ipynb",
                        str(tmp_path / "out.ipynb"), "-f", "profiles/smoke/01_architecture.yaml", "--no-progress-bar"],
                       cwd=clone, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    status = subprocess.run(["git", "status", "--porcelain", "--ignored=no"], cwd=clone, capture_output=True,
                            text=True).stdout
    assert status == ""
    out = clone / "_output" / "smoke" / "manual"
    assert json.loads((out / "data" / "results" / "smoke" / "architecture.json").read_text())["experiment"]
    assert (out / "book" / "figures" / "wirings.png").is_file()
    committed = clone / "data" / "results" / "cpu" / "architecture.json"
    assert committed.read_bytes() == (CHECKOUT / "data" / "results" / "cpu" / "architecture.json").read_bytes()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_a_venv_that_is_a_symlink_is_ignored_like_a_folder(tmp_path):
    """A `.venv` linked to a shared environment must be ignored too: once `git add -A` committed such a link,
    and checking that commit out elsewhere replaced the real environment by the link."""
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    shutil.copy(paths.REPO_ROOT / ".gitignore", tmp_path / ".gitignore")
    (tmp_path / "env").mkdir()
    (tmp_path / ".venv").symlink_to(tmp_path / "env")
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "x").write_text("")
    for path in (".venv", "runs/x"):
        assert subprocess.run(["git", "check-ignore", "-q", path], cwd=tmp_path).returncode == 0, path
