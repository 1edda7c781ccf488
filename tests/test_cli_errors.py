"""Errors a person can act on: one line naming the problem and the fix, no traceback (--debug keeps it)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from ladder.hf import load_hf_state_dict
from ladder.paths import read_safetensors


@pytest.mark.parametrize("args, says", [
    (["--preset", "nope"], "unknown preset 'nope'"),
    (["--preset", "tiny", "--tp", "3", "--virtual"], "not divisible by the tensor-parallel size 3"),
    (["--checkpoint", "/nonexistent/ckpt"], "checkpoint '/nonexistent/ckpt' not found"),
])
def test_bench_cli_errors_are_one_line(args, says):
    r = subprocess.run([sys.executable, "-m", "ladder.bench", *args], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1
    assert r.stderr.startswith("error: ") and says in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0
    r = subprocess.run([sys.executable, "-m", "ladder.bench", *args, "--debug"], capture_output=True, text=True,
                       timeout=300)
    assert "Traceback" in r.stderr


def test_corrupt_safetensors_is_named(tmp_path):
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")
    with pytest.raises(ValueError, match=rf"{bad} cannot be read as safetensors"):
        read_safetensors(bad)
    with pytest.raises(ValueError, match="model.safetensors cannot be read as safetensors"):
        load_hf_state_dict(tmp_path)
