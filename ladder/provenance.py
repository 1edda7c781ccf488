"""Provenance for every stored result: code version, software, hardware, parameters, date."""
from __future__ import annotations

import ast
import datetime as _dt
import importlib.metadata as md
import json
import os
import platform
import re
import subprocess
import tempfile
from pathlib import Path

import torch

from .paths import display_path
from .root import CHECKOUT, PACKAGE_DIR, REPO_ROOT  # noqa: F401  (re-exported: where results go)


def git_commit() -> str:
    # a copy of the checkout without .git (a lent GPU machine): the commit it was copied from, passed in
    passed = os.environ.get("LADDER_COMMIT")
    if passed and (CHECKOUT is None or not (CHECKOUT / ".git").exists()):
        return passed
    if CHECKOUT is None:  # an installed package: its version is the best code identity there is
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


_MODULE_STRING = None


def _imported(source: str, here: str | None = None) -> set[str]:
    """ladder modules named by `source`: imports anywhere (inside functions too, relative ones resolved
    against `here`), and strings such as "ladder.adapt:adapt" or `-m ladder.bench` that start a module in
    another process (torchrun workers)."""
    global _MODULE_STRING
    # a whole string naming a module, as torchrun and `python -m` are given one: "ladder.adapt:adapt"
    _MODULE_STRING = _MODULE_STRING or re.compile(r"^ladder\.([A-Za-z_]\w*)(?::[A-Za-z_]\w*)?$")
    tree = ast.parse(source)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {x for a in node.names if a.name.startswith("ladder.") for x in (a.name.split(".")[1], "__init__")}
            if any(a.name == "ladder" for a in node.names):
                found.add("__init__")
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level == 1 and here is not None:  # from .x import y / from . import x
                found |= {mod.split(".")[0]} if mod else {a.name for a in node.names}
            elif mod == "ladder":  # from ladder import adapt, build_model
                found |= {a.name for a in node.names} | {"__init__"}
            elif mod.startswith("ladder."):
                found |= {mod.split(".")[1], "__init__"}
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            found |= set(_MODULE_STRING.findall(node.value.strip()))
    return found


def package_deps(source: str, package_dir: Path = PACKAGE_DIR) -> list[str]:
    """The package files a piece of code depends on: the ladder modules it imports, and theirs, transitively
    (lazy imports inside functions count), plus the package's data files (ladder/paper/, tasks/, the
    manifest), as repository paths ("ladder/model.py"). A notebook whose dependencies did not change since
    it ran need not re-run, whatever else changed in ladder/."""
    known = {p.stem for p in package_dir.glob("*.py")}
    todo, seen = [m for m in _imported(source) if m in known], set()
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo += [d for d in _imported((package_dir / f"{m}.py").read_text(), here=m) if d in known and d not in seen]
    name = package_dir.name
    files = {f"{name}/{m}.py" for m in seen}
    files |= {f"{name}/{p.relative_to(package_dir)}" for p in package_dir.rglob("*")
              if p.is_file() and p.suffix != ".py" and "__pycache__" not in p.parts}
    return sorted(files)


def notebook_deps(notebook: str | os.PathLike, package_dir: Path = PACKAGE_DIR) -> list[str]:
    """`package_deps` of a notebook's code cells."""
    nb = json.loads(Path(notebook).read_text())
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    # cells with IPython magics do not parse as Python as a whole: take them cell by cell, line by line
    lines = "\n".join(line for line in code.splitlines() if not line.lstrip().startswith(("%", "!")))
    return package_deps(lines, package_dir)


def name_files(files: list[str], most: int = 3) -> str:
    """"a.py, b.py, c.py and 2 more": a list of changed files, short enough for one log line."""
    return ", ".join(files[:most]) + (f" and {len(files) - most} more" if len(files) > most else "")


def cpu_model() -> str | None:
    """The CPU's marketing name ("AMD EPYC 7B13"), from /proc/cpuinfo; None where that file is missing."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
    except OSError:
        return None


def hardware_line(prov: dict) -> str:
    """The machine of a provenance record in words: "2 CPU cores (x86_64, AMD EPYC, AVX2), 23.4 GB RAM, no GPU"."""
    hw = prov.get("hardware", {})
    cpu = ", ".join(str(x) for x in (hw.get("machine", "?"), hw.get("cpu_model"), hw.get("cpu_capability")) if x)
    parts = [f"{hw.get('cpu_count', '?')} CPU cores ({cpu})"]
    if "memory_gb" in hw:
        parts.append(f"{hw['memory_gb']} GB RAM")
    parts.append(f"{hw['gpu_count']} x {hw['gpu']}" if hw.get("gpu") else "no GPU")
    return ", ".join(parts)


def hardware() -> dict:
    # cpu_capability: the widest vector kernels torch uses here ("AVX2", "AVX512", ...). It decides CPU speed
    # as much as the core count does: without AVX512-BF16, bf16 autocast is emulated, ~10x slower than fp32
    info = {"machine": platform.machine(), "processor": platform.processor() or platform.machine(),
            "cpu_model": cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
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
