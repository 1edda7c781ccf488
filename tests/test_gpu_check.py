"""scripts/gpu_check.sh, the prepared GPU session, checked on CPU (issue 18, items 4, 5 and 8).

1. With fake `python`/`timeout` commands that only log what they are asked to run: the step order (the
   70B-rank tests first, then the other GPU tests, the peer comparison, the chapter), each step's limit and
   the per-test timeout, PYTHONUNBUFFERED and the commit passed in, and python3 or python, whichever exists.
2. A real dry run (DRY_RUN=1: GPU tests skip, the peer comparison on the tiny preset on CPU): every step
   writes its JSON record with provenance under $OUT.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[1]
SCRIPT = REPO / "scripts" / "gpu_check.sh"
FAKE = """#!/bin/bash
echo "$(basename "$0") PYTHONUNBUFFERED=${PYTHONUNBUFFERED:-} LADDER_COMMIT=${LADDER_COMMIT:-} $*" >> "$FAKE_LOG"
exit 0
"""
FAKE_TIMEOUT = """#!/bin/bash
args=("$@"); kill_after=""
if [ "$1" = -k ]; then kill_after=$2; shift 2; fi
echo "timeout limit=$1 kill_after=$kill_after" >> "$FAKE_LOG"
shift
exec "$@"
"""


def _fake_bin(tmp_path, pythons):
    """A PATH holding the real tools the script uses, a logging `timeout` and the given fake pythons."""
    b = tmp_path / "bin"
    b.mkdir()
    for tool in ("bash", "env", "tee", "mkdir", "ls", "tr", "cp", "dirname", "cat", "tail", "basename"):
        real = shutil.which(tool)
        if real:
            (b / tool).symlink_to(real)
    for name, text in [("timeout", FAKE_TIMEOUT)] + [(p, FAKE) for p in pythons]:
        (b / name).write_text(text)
        (b / name).chmod(0o755)
    return b


def _run_fake(tmp_path, pythons, steps="1 2 3"):
    log = tmp_path / "log.txt"
    env = {"PATH": str(_fake_bin(tmp_path, pythons)), "OUT": str(tmp_path / "out"), "STEPS": steps,
           "FAKE_LOG": str(log), "LADDER_COMMIT": "cafe123", "HOME": str(tmp_path)}
    proc = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return log.read_text().splitlines()


def test_steps_run_in_order_with_their_limits(tmp_path):
    lines = _run_fake(tmp_path, ["python3", "python"])
    runs = [ln for ln in lines if ln.startswith(("timeout", "python"))]
    cmds = [ln for ln in runs if "gpu_record.py" not in ln and (" -m pytest" in ln or "bench_vs_transformers" in ln or "ladder.pipeline" in ln)]
    assert ["pytest" if " -m pytest" in c else "peer" if "bench_vs" in c else "chapter" for c in cmds] == \
        ["pytest", "peer", "chapter"]
    pytest_cmd = cmds[0]
    # the 70B-rank and roofline tests first, each test under pytest-timeout
    assert pytest_cmd.index("tests/gpu/test_rank70b.py") < pytest_cmd.index("tests/gpu/test_gpu.py")
    assert "--timeout 180" in pytest_cmd
    limits = [int(ln.split("limit=")[1].split()[0]) for ln in lines if ln.startswith("timeout")]
    assert len(limits) == 3 and limits[0] <= 300 and limits[2] <= 420
    # every python the steps run is python3, unbuffered, and knows the commit
    assert all(c.startswith("python3 PYTHONUNBUFFERED=1 LADDER_COMMIT=cafe123 ") for c in cmds)
    assert "--profile gpu1" in cmds[2]
    # each step is recorded (scripts/gpu_record.py), after it ran
    records = [i for i, ln in enumerate(lines) if "scripts/gpu_record.py" in ln]
    assert len(records) == 3 and all(lines.index(c) < r for c, r in zip(runs[1::2], records))


@pytest.mark.parametrize("only", ["python3", "python"])
def test_python3_or_python_whichever_exists(tmp_path, only):
    lines = _run_fake(tmp_path, [only], steps="2")
    assert any(ln.startswith(f"{only} ") and "bench_vs_transformers" in ln for ln in lines)


def test_a_dry_run_leaves_a_json_record_per_step(tmp_path):
    """DRY_RUN=1 on CPU: step 1's GPU tests all skip, step 2 compares on the tiny preset; both JSONs carry
    provenance with the commit passed in, the exit code and the step's own results."""
    out = tmp_path / "out"
    env = {**os.environ, "DRY_RUN": "1", "STEPS": "1 2", "OUT": str(out), "PYTHON": sys.executable,
           "LADDER_COMMIT": "feed42", "HOME": str(tmp_path)}
    proc = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    s1 = json.loads((out / "step1_gpu_tests.json").read_text())
    s2 = json.loads((out / "step2_peer.json").read_text())
    assert s1["exit_code"] == 5 and s2["exit_code"] == 0  # 5: pytest collected nothing (every module skips)
    for s in (s1, s2):  # git's commit where there is a .git, else the one passed in
        assert s["provenance"]["git_commit"].removesuffix("-dirty") in ("feed42", _git_head())
        assert s["device"] and s["torch"] and "date" in s["provenance"]
    assert s1["result"]["tests"] and all(t["outcome"] == "skipped" for t in s1["result"]["tests"].values())
    assert s2["result"]["greedy_tokens_identical"] is True
    assert (out / "step1_gpu_tests.log").exists() and (out / "device.txt").exists()


def _git_head():
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    except OSError:
        return None
