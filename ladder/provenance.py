"""Provenance for every stored result: code version, software, hardware, parameters, date."""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def _checkout() -> Path | None:
    """The source checkout this package is imported from (an editable install or PYTHONPATH), or None
    when it is an installed wheel (site-packages has no pyproject.toml or notebooks/ beside it)."""
    root = PACKAGE_DIR.parent
    return root if (root / "pyproject.toml").is_file() and (root / "notebooks").is_dir() else None


CHECKOUT = _checkout()
# The working directory the user owns: results (data/results/), runs (runs/) and the book go below it.
# $LADDER_WORKDIR, else the checkout, else the current directory (an installed wheel must never write into
# site-packages). Notebooks write `REPO_ROOT / "runs" / ...`, so this is the one root they all share.
REPO_ROOT = Path(os.environ.get("LADDER_WORKDIR") or CHECKOUT or Path.cwd()).expanduser().resolve()


def git_commit() -> str:
    # a copy of the checkout without .git (a lent GPU machine): the commit it was copied from, passed in
    passed = os.environ.get("LADDER_COMMIT")
    if passed and (CHECKOUT is None or not (CHECKOUT / ".git").exists()):
        return passed
    if CHECKOUT is None:  # an installed package: its version is the best code identity there is
        import importlib.metadata as md
        try:
            return f"ladder-residual=={md.version('ladder-residual')}"
        except md.PackageNotFoundError:
            return "unknown"
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=CHECKOUT, capture_output=True, text=True, timeout=10)
        commit = out.stdout.strip() or "unknown"
        # "-dirty" means the *code* differs from the commit; the outputs a pipeline run rewrites (executed
        # notebooks, figures, result files) do not count
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)book", ":(exclude)data/results"], cwd=CHECKOUT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def code_changed_since(commit: str, paths=("ladder",), checkout: Path | None = CHECKOUT) -> list[str] | None:
    """Files under `paths` (the package code) that differ between `commit` (a provenance `git_commit`; a
    "-dirty" suffix is dropped) and the working tree, uncommitted edits included. None when that cannot be
    told: no checkout (an installed wheel), a commit git does not know (a shallow clone), or no git."""
    commit = commit.removesuffix("-dirty")
    if checkout is None or not commit or commit == "unknown" or commit.startswith("ladder-residual=="):
        return None
    try:
        out = subprocess.run(["git", "diff", "--name-only", commit, "--", *paths], cwd=checkout,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.split() if out.returncode == 0 else None


def name_files(files: list[str], most: int = 3) -> str:
    """"a.py, b.py, c.py and 2 more": a list of changed files, short enough for one log line."""
    return ", ".join(files[:most]) + (f" and {len(files) - most} more" if len(files) > most else "")


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


def _portable(obj):
    """`obj` with every absolute path under the working directory or the data folder written as a reader's
    path (`ladder.paths.display_path`: repository-relative, or `<data>/...`): result files are published,
    and no machine's folders belong in them (the provenance block names the host)."""
    from .paths import display_path  # paths imports this module: imported when first needed
    if isinstance(obj, dict):
        return {k: _portable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_portable(v) for v in obj]
    if isinstance(obj, os.PathLike) or (isinstance(obj, str) and os.path.isabs(obj) and "\n" not in obj):
        return display_path(obj)
    return obj


def write_result(path: str | os.PathLike, payload: dict, params: dict | None = None) -> Path:
    """Write `payload` as JSON with a `provenance` block (creating folders). The record is written to a
    temporary file beside `path` and renamed over it, so a run killed (or a value that cannot be stored)
    mid-write leaves the previous result intact, never a truncated one."""
    import tempfile
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {**_portable(payload), "provenance": provenance(_portable(params) if params else params)}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(record, f, indent=2, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
