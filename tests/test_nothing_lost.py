"""Nothing lost, nothing run that was not asked for (issue 22, item 9): a result file is replaced whole (a
failed write leaves the previous one), and resuming a run loads its trainer_state.pt with weights_only=True
(a run folder copied from someone else holds tensors, numbers and strings; anything else is refused)."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import pytest
import torch

from ladder import build_model
from ladder.provenance import REPO_ROOT, write_result
from ladder.train import TrainConfig, train
from test_train import blocks, tiny


class Payload:
    """Stands for an object a hostile trainer_state.pt could carry (its unpickling could run code)."""
    ran = False

    def __reduce__(self):
        return (Payload._run, ())

    @staticmethod
    def _run():
        Payload.ran = True
        return "ran"


def _killed_run(tmp_path):
    cfg = TrainConfig(max_steps=4, batch_size=4, lr=3e-3, warmup_steps=1, ckpt_every=2, keep_checkpoints=5,
                      progress=False, device="cpu")
    data = blocks(n=16)
    run = tmp_path / "run"
    train(build_model(tiny("ladder"), seed=0), data, None, cfg, run)
    # as if killed after step 2: its last checkpoint goes, so the next call resumes from step 2
    import shutil
    shutil.rmtree(run / "checkpoints" / "step_000004")
    (run / "summary.json").unlink(missing_ok=True)
    return run, data, cfg


def test_resume_loads_trainer_state_with_weights_only(tmp_path, monkeypatch):
    run, data, cfg = _killed_run(tmp_path)
    seen = []
    real = torch.load

    def spy(f, *a, **kw):
        seen.append((str(f), kw.get("weights_only")))
        return real(f, *a, **kw)
    monkeypatch.setattr(torch, "load", spy)
    train(build_model(tiny("ladder"), seed=1), data, None, cfg, run)
    states = [w for f, w in seen if f.endswith("trainer_state.pt")]
    assert states == [True]


def test_a_trainer_state_holding_an_object_is_refused(tmp_path):
    run, data, cfg = _killed_run(tmp_path)
    state = run / "checkpoints" / "step_000002" / "trainer_state.pt"
    st = torch.load(state, weights_only=True)
    torch.save({**st, "note": Payload()}, state)
    with pytest.raises(pickle.UnpicklingError):
        train(build_model(tiny("ladder"), seed=1), data, None, cfg, run)
    assert not Payload.ran


_WRITE_UNDER_LIMIT = """
import resource, signal, sys
from ladder.provenance import write_result
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)           # a full disk: writes past the limit fail (EFBIG)
resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))
try:
    write_result(sys.argv[1], {"experiment": "new", "rows": ["x" * 100] * 1000})
except OSError as e:
    print("write failed:", e.errno)
"""


def test_a_failed_result_write_leaves_the_previous_file_intact(tmp_path):
    path = write_result(tmp_path / "architecture.json", {"experiment": "old"})
    before = path.read_bytes()
    r = subprocess.run([sys.executable, "-c", _WRITE_UNDER_LIMIT, str(path)], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, timeout=120)
    assert "write failed" in r.stdout, r.stdout + r.stderr
    assert path.read_bytes() == before  # the last good result, whole
    assert json.loads(path.read_text())["experiment"] == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["architecture.json"]  # no temporary file left behind


def test_a_copy_without_git_takes_the_commit_it_was_given(monkeypatch, tmp_path):
    """On a lent GPU machine the working tree arrives without .git: LADDER_COMMIT names the commit."""
    from ladder import provenance
    monkeypatch.setenv("LADDER_COMMIT", "abc123")
    monkeypatch.setattr(provenance, "CHECKOUT", tmp_path)  # a checkout-like folder with no .git
    assert provenance.git_commit() == "abc123"
    monkeypatch.setattr(provenance, "CHECKOUT", None)
    assert provenance.git_commit() == "abc123"
    monkeypatch.delenv("LADDER_COMMIT")
    assert provenance.git_commit() != "abc123"


def test_result_files_hold_no_absolute_paths_of_this_machine(tmp_path):
    """Result files are published: a path under the working directory or the data folder is written as a
    reader's path (repository-relative or <data>/...), in the payload and in the recorded parameters."""
    import json

    from ladder.paths import data_root
    from ladder.provenance import REPO_ROOT, write_result
    run = REPO_ROOT / "runs" / "cpu" / "x" / "hf"
    out = write_result(tmp_path / "r.json", {"path": str(run), "nested": [{"p": run}], "hub": "org/model",
                                             "data": str(data_root() / "models" / "m"), "text": "a/b"},
                       params={"checkpoint": str(run)})
    rec = json.loads(out.read_text())
    assert rec["path"] == "runs/cpu/x/hf" and rec["nested"] == [{"p": "runs/cpu/x/hf"}]
    assert rec["hub"] == "org/model" and rec["text"] == "a/b" and rec["data"] == "<data>/models/m"
    assert str(REPO_ROOT) not in out.read_text()
