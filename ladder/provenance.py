"""Provenance for every stored result: code version, software, hardware, parameters, date."""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        commit = out.stdout.strip() or "unknown"
        # "-dirty" means the *code* differs from the commit; the outputs a pipeline run rewrites (executed
        # notebooks, figures, result files) do not count
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)book", ":(exclude)data/results"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def hardware() -> dict:
    import torch
    info = {"machine": platform.machine(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        info["memory_gb"] = round(mem / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
    return info


def versions() -> dict:
    import importlib.metadata as md
    out = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "datasets", "lm-eval", "tokenizers"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def provenance(params: dict | None = None, **extra) -> dict:
    """A record to store beside any result."""
    return {"git_commit": git_commit(), "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "versions": versions(), "hardware": hardware(), "platform": platform.platform(),
            "params": params or {}, **extra}


def write_result(path: str | os.PathLike, payload: dict, params: dict | None = None) -> Path:
    """Write `payload` as JSON with a `provenance` block (creating folders)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {**payload, "provenance": provenance(params)}
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    return path
