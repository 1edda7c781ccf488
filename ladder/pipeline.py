"""Run every notebook with a profile's parameters, then build the book.

    python -m ladder.pipeline --profile smoke|cpu|gpu [--only STEM ...] [--force] [--book-only] [--no-book]
                              [--book-dir DIR] [--log-output]

1. papermill executes each `notebooks/NN_*.ipynb` (kernel `python3`, working directory `notebooks/`, the
   same as opening the notebook in Jupyter) with the parameters in `profiles/<profile>/<stem>.yaml` plus
   `profile=<profile>`, into `book/notebooks/<stem>.ipynb`. A failing notebook stops the run with the
   notebook, cell and error named; its partly executed copy is kept in `book/_failed/`.
2. Finished work is skipped: a stamp `book/notebooks/<stem>.stamp.json` beside each executed copy holds
   the hash of the notebook, its parameters and the profile; when it matches, the notebook is not run
   again (unless --force). The hash leaves out the package code (an edit to ladder/ would re-run hours of
   training); a skipped notebook whose ladder/ changed since it ran says so, with the files.
3. The book is built with Jupyter Book 1.x (`execute_notebooks: off`, so the stored outputs render):
   the claims table (`book/_generated/claims.md`, from data/results/<profile>/*.json) and the table of
   contents (`book/_toc.yml`, one chapter per executed notebook present) are generated first, and
   MathJax is installed from npm so the HTML needs no CDN.

`--book-dir` puts the executed copies and the build in another copy of book/ (the smoke test uses one, so
the committed cpu-profile notebooks are left alone); notebooks find it in $LADDER_BOOK_DIR.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import difflib
import hashlib
import importlib.metadata as md
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from .claims import book_chapters, claims_table, stability_markdown, to_markdown
from .paths import CorruptDataError, DataFolderError, _manifest_by_path, display_path
from .provenance import (CHECKOUT, REPO_ROOT, code_changed_since, hardware_line, name_files, notebook_deps,
                         provenance)
from .stability import hold_still
# nbformat and papermill are imported inside the functions that use them: `python -m ladder.pipeline` starts without
# them.



@dataclass(frozen=True)
class Profile:
    """Everything the pipeline needs to know about a profile besides its parameter files
    (profiles/<name>/<stem>.yaml). Adding a profile is one record here and its folder of parameter files
    (the Makefile's OFFLINE default mirrors `offline`)."""
    name: str
    # reads the data folder (LADDER_DATA) only, never the Hugging Face hub
    offline: bool = True
    # the committed book: only it writes book/; every other profile executes into and builds its own copy,
    # _output/<profile>/book (git-ignored), so trying a profile never touches the book
    published: bool = False
    # may cover only some chapters: a notebook without a parameter file is skipped, and said so
    partial: bool = False
    # CUDA devices it needs: None for none, 0 for as many as its parameters ask (TP degrees, process counts)
    gpus: int | None = None


PROFILE_SPECS: dict[str, Profile] = {p.name: p for p in (
    Profile("smoke"),
    Profile("cpu", published=True),
    Profile("gpu", offline=False, gpus=0),
    Profile("gpu1", partial=True, gpus=1),
)}
PROFILES = tuple(PROFILE_SPECS)
PUBLISHED = next(p.name for p in PROFILE_SPECS.values() if p.published)
BRANCH = "main"
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
PROFILES_DIR = REPO_ROOT / "profiles"
BOOK_DIR = REPO_ROOT / "book"
MATHJAX_CACHE = REPO_ROOT / ".cache" / "mathjax"
# Pages of the book besides the chapters (book/<name>.md), in reading order after the chapters.
EXTRA_PAGES = ("methods", "gpu", "cite")


class PipelineError(RuntimeError):
    """A problem the user must fix (bad profile, missing parameter file, failing notebook, failed build)."""


class NotebookFailed(PipelineError):
    """A cell raised. `cell_number` is 1-based in the source notebook (papermill's injected-parameters
    cell does not count); `cell_index` is papermill's 0-based index in the executed copy."""

    def __init__(self, notebook: Path, cell_index: int, exec_count, source: str, ename: str, evalue: str,
                 partial: Path | None):
        self.notebook, self.cell_index, self.exec_count = notebook, cell_index, exec_count
        self.source, self.ename, self.evalue, self.partial = source, ename, evalue, partial
        self.cell_number, n_cells = _source_cell_number(partial, cell_index)
        # one line: the cell's first line (the progress log numbers cells the same way), the error's first line
        first = next((line.strip() for line in source.splitlines() if line.strip()), "")
        first = first if len(first) <= 60 else first[:57] + "..."
        lines = str(evalue).strip().splitlines() or [""]
        error = lines[0] + (f" (+{len(lines) - 1} more lines)" if len(lines) > 1 else "")
        where = f"cell {self.cell_number} of {n_cells}" if n_cells else f"cell {cell_index}"
        msg = f"notebook {_rel(notebook)} failed in {where} (`{first}`): {ename}: {error}"
        if partial is not None:
            msg += f"; partly executed copy: {_rel(partial)}"
        super().__init__(msg)


def _source_cell_number(executed: Path | None, cell_index: int) -> tuple[int, int | None]:
    """(1-based number of the failing cell in the source notebook, number of source cells)."""
    try:
        import nbformat
        cells = nbformat.read(executed, as_version=4).cells
    except Exception:  # the partial copy is only a convenience for the message
        return cell_index + 1, None
    def tagged(tag):
        return [i for i, c in enumerate(cells) if tag in c.get("metadata", {}).get("tags", [])]
    injected = tagged("injected-parameters")
    # papermill adds error-marker cells to a failed copy after the fact; they are not source cells
    added = injected + tagged("papermill-error-cell-tag")
    shift = sum(1 for i in injected if i < cell_index)
    return cell_index - shift + 1, len(cells) - len(added)


def repo_url() -> str:
    """The repository's URL, set once in pyproject.toml ([project.urls] Repository): the badges use it."""
    if CHECKOUT is not None:
        m = re.search(r'^Repository = "([^"]+)"', (CHECKOUT / "pyproject.toml").read_text(), re.M)
        if not m:
            raise PipelineError("pyproject.toml: [project.urls] has no Repository = \"https://github.com/...\" line")
        return m.group(1)
    urls = dict(u.split(", ", 1) for u in md.metadata("ladder-residual").get_all("Project-URL") or [])
    return urls["Repository"]


def output_book_dir(profile: str) -> Path:
    """book/ for the published profile, else _output/<profile>/book."""
    return BOOK_DIR if profile == PUBLISHED else REPO_ROOT / "_output" / profile / "book"


def _copy_book_sources(book_dir: Path) -> None:
    """The book's pages, configuration and figures (not its executed notebooks or build) into `book_dir`."""
    shutil.copytree(BOOK_DIR, book_dir, dirs_exist_ok=True, ignore=shutil.ignore_patterns(
        "_build", "notebooks", "_failed", "_extra", "_generated"))


def _literal_type(default: str):
    try:
        v = ast.literal_eval(default)
    except (ValueError, SyntaxError):
        return None
    return None if v is None else type(v)


def check_types(params: dict, declared: dict, path: Path) -> None:
    """Each profile value must have the type of the notebook's default (an int where a float is declared
    is fine; a None default accepts anything, and None is accepted everywhere; a scalar default also accepts a {key: scalar} mapping, the
    notebooks' per-model form, e.g. `lr: {"stories260K": 0.001}`)."""
    def ok(value, want) -> bool:
        if isinstance(value, bool) != (want is bool):
            return False
        return isinstance(value, want) or (want is float and isinstance(value, int))
    for name, value in params.items():
        want = _literal_type(declared[name]["default"])
        if want is None or value is None or ok(value, want):  # None: "not set" (e.g. no eval limit)
            continue
        if want in (int, float, str, bool) and isinstance(value, dict) and all(ok(v, want) for v in value.values()):
            continue
        raise PipelineError(f"{_rel(path)}: {name}: {value!r} is a {type(value).__name__}, but the notebook's "
                            f"parameter is a {want.__name__} (default {declared[name]['default']}); fix the value")


def _rel(p: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(p)


# --------------------------------------------------------------------------------------------- discovery
def discover(notebooks_dir: Path = NOTEBOOKS_DIR, only=None) -> list[Path]:
    """The notebooks to run: `NN_*.ipynb` in order, optionally restricted to the stems in `only`."""
    found = sorted(p for p in Path(notebooks_dir).glob("[0-9][0-9]_*.ipynb"))
    if only:
        stems = {p.stem for p in found}
        unknown = [s for s in only if s.removesuffix(".ipynb") not in stems]
        if unknown:
            raise PipelineError(f"--only: no notebook named {unknown} in {_rel(notebooks_dir)} "
                                f"(have: {sorted(stems)})")
        keep = {s.removesuffix(".ipynb") for s in only}
        found = [p for p in found if p.stem in keep]
    return found


def load_parameters(profile: str, stem: str, profiles_dir: Path = PROFILES_DIR, notebook: Path | None = None) -> dict:
    """The papermill parameters for one notebook: profiles/<profile>/<stem>.yaml plus `profile`.

    With `notebook`, every name must be a parameter its `parameters` cell declares (papermill would
    only warn, and the run would silently use the default)."""
    if profile not in PROFILE_SPECS:
        raise PipelineError(f"unknown profile {profile!r}; expected one of {tuple(PROFILE_SPECS)}")
    path = Path(profiles_dir) / profile / f"{stem}.yaml"
    if not path.is_file():
        raise PipelineError(f"missing parameter file {_rel(path)} for notebook {stem} in profile {profile!r} "
                            f"(each notebook needs one per profile: a flat YAML mapping of its parameters)")
    try:
        params = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        where = f"{_rel(path)}:{mark.line + 1}" if mark is not None else _rel(path)
        what = " ".join(str(getattr(e, "problem", None) or e).split())
        raise PipelineError(f"{where}: not valid YAML ({what}); fix that line") from None
    if not isinstance(params, dict):
        raise PipelineError(f"{_rel(path)} must be a flat mapping of parameter names to values, "
                            f"not {type(params).__name__}")
    if params.get("profile", profile) != profile:
        raise PipelineError(f"{_rel(path)}: profile: {params['profile']!r}, but the file is in profiles/{profile}/; "
                            f"set it to {profile!r}")
    if notebook is not None:
        import papermill as pm
        inspected = pm.inspect_notebook(str(notebook))
        declared = set(inspected)
        unknown = sorted(set(params) - declared)
        if unknown:
            hints = {u: difflib.get_close_matches(u, declared, n=1) for u in unknown}
            hint = "; ".join(f"{u!r}: did you mean {m[0]!r}?" for u, m in hints.items() if m)
            raise PipelineError(f"{_rel(path)}: {unknown} not parameters of {_rel(Path(notebook))} "
                                f"(its parameters cell declares {sorted(declared)})" + (f". {hint}" if hint else ""))
        check_types(params, inspected, path)
    return {**params, "profile": profile}


# --------------------------------------------------------------------------------------------- skipping
def work_hash(notebook: Path, params: dict, profile: str) -> str:
    """What a finished run depends on: the notebook's bytes, its parameters and the profile."""
    h = hashlib.sha256()
    h.update(Path(notebook).read_bytes())
    h.update(json.dumps(params, sort_keys=True, default=str).encode())
    h.update(profile.encode())
    return h.hexdigest()


def stamp_path(executed: Path) -> Path:
    return executed.with_name(executed.stem + ".stamp.json")


def data_read(log: Path) -> dict:
    """{manifest path: sha256} of the data files a run read (ladder.paths.verify_data's log lines)."""
    try:
        lines = Path(log).read_text().splitlines()
    except OSError:
        return {}
    return dict(sorted(tuple(line.split(" ", 1)) for line in lines if " " in line))


def data_changed(recorded: dict) -> list[str]:
    """The data files among `recorded` ({path: sha256}) whose manifest entry has changed or gone."""
    now = _manifest_by_path()
    return sorted(p for p, h in recorded.items() if p not in now or now[p].sha256 != h)


def is_up_to_date(executed: Path, digest: str) -> bool:
    """True when the executed copy exists, its stamp records the same work hash, and the data it read
    (the manifest's sha256 of each file, recorded in the stamp) is still what the manifest lists."""
    stamp = stamp_path(executed)
    if not (executed.is_file() and stamp.is_file()):
        return False
    try:
        st = json.loads(stamp.read_text())
    except (json.JSONDecodeError, OSError):
        return False
    return st.get("hash") == digest and not data_changed(st.get("data") or {})


def code_changed_note(executed: Path, notebook: Path | None = None) -> str | None:
    """The stamp's hash covers the notebook and its parameters, not the package: say when the package files
    the notebook depends on (`provenance.notebook_deps`: the modules it imports, transitively; all of
    ladder/ when `notebook` is not given) changed since the executed copy ran, or None."""
    try:
        commit = json.loads(stamp_path(executed).read_text())["provenance"]["git_commit"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return None
    changed = code_changed_since(commit, notebook_deps(notebook) if notebook is not None else ("ladder",))
    if not changed:
        return None
    return (f"the package code changed since it ran at {commit[:10]} ({name_files(changed)}); if that matters "
            f"to this notebook's outputs, --force re-runs it")


# --------------------------------------------------------------------------------------------- executing
def provenance_cell(stem: str, profile: str, params: dict, prov: dict, seconds: float) -> str:
    """Markdown for the top of an executed chapter: launch badges and when/what produced it."""
    nb = f"notebooks/{stem}.ipynb"
    repo = repo_url().split("github.com/")[1]
    colab = f"https://colab.research.google.com/github/{repo}/blob/{BRANCH}/{nb}"
    binder = f"https://mybinder.org/v2/gh/{repo}/{BRANCH}?labpath={nb}"
    shown = {k: v for k, v in params.items() if k != "profile"}
    rows = "".join(f"| `{k}` | `{json.dumps(v, default=str)}` |\n" for k, v in shown.items())
    source = f"Parameters (`profiles/{profile}/{stem}.yaml`)"
    # folded: a reader comes for the results; the parameters are one click away
    params_md = (f"\n\n:::{{dropdown}} {source}: {len(shown)}\n| parameter | value |\n|---|---|\n{rows}:::"
                 if shown else f"\n{source}: none.")
    v = prov.get("versions", {})
    return (
        f"[![Open in Colab](../_static/colab-badge.svg)]({colab}) "
        f"[![Launch Binder](../_static/binder-badge.svg)]({binder})\n\n"
        "```{admonition} How this page was produced\n:class: note\n"
        f"Executed with the **{profile}** profile on {prov['date'][:16].replace('T', ' ')} UTC in "
        f"{seconds:.0f} s, on {hardware_line(prov)}; Python {v.get('python', '?')}, torch {v.get('torch', '?')}, "
        f"git commit `{prov.get('git_commit', 'unknown')[:12]}`.\n"
        f"Re-run: `python -m ladder.pipeline --profile {profile} --only {stem}`.{params_md}\n```\n")


def _insert_provenance(executed: Path, text: str) -> None:
    import nbformat
    nb = nbformat.read(executed, as_version=4)
    nb.cells = [c for c in nb.cells if "provenance" not in c.get("metadata", {}).get("tags", [])]
    # the parameters are shown once, as the table above: the source defaults and papermill's injected cell
    # stay in the file (a reader re-running it needs them) but are removed from the page
    for c in nb.cells:
        tags = c.get("metadata", {}).get("tags", [])
        if ("parameters" in tags or "injected-parameters" in tags) and "remove-cell" not in tags:
            c.metadata["tags"] = [*tags, "remove-cell"]
    # papermill records where it read and wrote the notebook: as reader's paths, not this machine's folders
    pm_meta = nb.metadata.get("papermill", {})
    for key in ("input_path", "output_path"):
        if pm_meta.get(key):
            pm_meta[key] = display_path(pm_meta[key])
    cell = nbformat.v4.new_markdown_cell(text)
    cell.metadata["tags"] = ["provenance"]
    # after the title cell, so the page keeps its heading as title
    first = nb.cells[0] if nb.cells else None
    at = 1 if first is not None and first.cell_type == "markdown" and first.source.lstrip().startswith("#") else 0
    nb.cells.insert(at, cell)
    nbformat.write(nb, executed)


# IPython startup file for the notebooks' kernels (given through IPYTHONDIR): every tqdm bar, ours and those of
# lm-eval, datasets and transformers, is drawn on the kernel's own stderr, i.e. this terminal, never into a
# cell's output, so the executed pages keep no progress bars (the tqdm.auto widget bar is replaced too).
KERNEL_STARTUP = """\
import os as _os, sys as _sys
try:
    import tqdm as _tqdm, tqdm.auto as _auto, tqdm.std as _std, tqdm.autonotebook as _autonb
except ImportError:
    pass
else:
    # ipykernel's fd watcher relays everything written to fd 1/2 into the cell, sys.__stderr__ included;
    # sys.stderr.fileno() is its copy of the terminal's original stderr, which it does not watch. Without
    # the watcher (ipykernel turns it off under pytest) fileno() is unsupported and fd 2 is the terminal.
    try:
        _term = open(_os.dup(_sys.stderr.fileno()), "w", buffering=1)
    except (AttributeError, OSError, ValueError):
        _term = _sys.__stderr__
    _init = _std.tqdm.__init__
    try:
        _log = not _term.isatty()
    except (AttributeError, ValueError):
        _log = True
    # redirected to a log (not a terminal): one line per bar update every LADDER_TQDM_INTERVAL seconds at most
    _every = float(_os.environ.get("LADDER_TQDM_INTERVAL", "30"))
    def _to_terminal(self, *args, **kwargs):
        if kwargs.get("file") in (None, _sys.stdout, _sys.stderr, _sys.__stdout__, _sys.__stderr__):
            kwargs["file"] = _term
            if _log:
                kwargs["mininterval"] = max(kwargs.get("mininterval") or 0.1, _every)
                kwargs["maxinterval"] = max(kwargs.get("maxinterval") or 10, _every)
        _init(self, *args, **kwargs)
    _std.tqdm.__init__ = _to_terminal
    _auto.tqdm = _autonb.tqdm = _tqdm.tqdm = _std.tqdm
# processes the kernel starts (torchrun ranks) have their output relayed into the cell: no bars there
# (CHILD_SITECUSTOMIZE below reads this in each new interpreter; this kernel is already running)
_os.environ["LADDER_NO_BARS"] = "1"
"""
# sitecustomize.py for the processes a notebook's kernel starts (on PYTHONPATH): with LADDER_NO_BARS set
# (by the startup above, so never in the kernel itself) every tqdm bar is disabled, even one created with
# an explicit `disable=False`.
CHILD_SITECUSTOMIZE = """\
import os
if os.environ.get("LADDER_NO_BARS") == "1":
    try:
        import tqdm.std as _std
    except ImportError:
        pass
    else:
        _init = _std.tqdm.__init__
        def _no_bar(self, *args, **kwargs):
            kwargs["disable"] = True
            _init(self, *args, **kwargs)
        _std.tqdm.__init__ = _no_bar
"""


# ipykernel's own configuration (read from the same IPYTHONDIR): the kernel papermill starts listens on
# 127.0.0.1 over TCP, and ipykernel 7 warns about that once per notebook; nothing else it logs is hidden.
KERNEL_CONFIG = """\
import logging


class _NoTcpWarning(logging.Filter):
    def filter(self, record):
        return "without encryption" not in record.getMessage()


logging.getLogger("IPKernelApp").addFilter(_NoTcpWarning())
"""


def kernel_ipython_dir(book_dir: Path) -> Path:
    d = Path(book_dir) / "_failed" / "ipython"
    startup = d / "profile_default" / "startup" / "00-ladder-progress-to-terminal.py"
    startup.parent.mkdir(parents=True, exist_ok=True)
    startup.write_text(KERNEL_STARTUP)
    (d / "profile_default" / "ipython_kernel_config.py").write_text(KERNEL_CONFIG)
    (d / "site").mkdir(exist_ok=True)
    (d / "site" / "sitecustomize.py").write_text(CHILD_SITECUSTOMIZE)
    return d


def _expected_seconds(executed: Path):
    try:
        return json.loads(stamp_path(executed).read_text()).get("seconds")
    except (OSError, json.JSONDecodeError):
        return None


def cell_progress(stem: str, n_cells: int, expected, log=print, clock=time.perf_counter):
    """An nbclient on_cell_start hook: '[02_speedup] cell 5/26, 73 s elapsed (last run: 410 s)'. Cells are
    numbered as in the source notebook (n_cells of them), as a failure names them: papermill's injected
    parameters cell is not counted."""
    t0 = clock()
    last = f" (last run: {expected:.0f} s)" if expected else ""
    injected = []

    def on_cell_start(cell, cell_index):
        if "injected-parameters" in cell.get("metadata", {}).get("tags", []):
            injected.append(cell_index)
            return
        if cell.cell_type == "code":
            number = cell_index + 1 - sum(1 for i in injected if i < cell_index)
            log(f"[pipeline] {stem}: cell {number}/{n_cells}, {clock() - t0:.0f} s elapsed{last}")
    return on_cell_start


# bf16 autocast on a CPU without native bf16 (AVX2 only, as in most laptops) is emulated. On the project's
# AVX2 machine (2026-12-07) a training step of chapter 3's model took 9.2 s with it against 0.85 s in fp32,
# and a bf16 matrix product of the same model ran 9.7x slower than fp32: the product's ratio tells the step's.
# On CPUs with AVX512-BF16 bf16 is the faster one. A profile keeps the precision it was run with (runs are
# keyed by it, and the committed results depend on it): the pipeline only says so before a notebook trains.
BF16_SLOW = 2.0  # warn when a bf16 product is more than this many times slower than fp32 on this CPU


def cpu_bf16_slowdown(pairs: int = 9) -> float:
    """How many times longer a bf16 matrix product (chapter 3's shape: 2,048 tokens x 192 -> 512; ~4 ms in
    fp32 on one core) takes than the same in fp32 on this CPU: the median over `pairs` interleaved pairs."""
    a, w = torch.randn(2048, 192), torch.randn(192, 512)
    a16, w16 = a.bfloat16(), w.bfloat16()
    a @ w, a16 @ w16  # first calls: allocation and kernel selection
    ratios = []
    for _ in range(pairs):
        t0 = time.perf_counter()
        a @ w
        t1 = time.perf_counter()
        a16 @ w16
        ratios.append((time.perf_counter() - t1) / max(t1 - t0, 1e-9))
    return statistics.median(ratios)


def bf16_note(params: dict, slowdown=None) -> str | None:
    """A warning for a notebook about to train with bf16 autocast (`amp: bf16`) where there is no CUDA GPU
    and this CPU runs bf16 more than BF16_SLOW times slower than fp32; None otherwise (then nothing is timed
    unless the notebook asks for bf16 on a CPU)."""
    if params.get("amp") != "bf16" or torch.cuda.is_available():
        return None
    factor = (slowdown or cpu_bf16_slowdown)()
    if factor <= BF16_SLOW:
        return None
    return (f"amp: bf16 on a CPU without native bf16 ({torch.backends.cpu.get_cpu_capability()}): a bf16 matrix "
            f"product runs {factor:.1f}x slower than fp32 here, and training slows about as much. To train in "
            "fp32 instead, as the cpu profile does, set `amp: none` in the parameter file (runs are keyed by "
            "their precision: new runs)")


def execute(notebook: Path, profile: str, book_dir: Path = BOOK_DIR, force: bool = False,
            profiles_dir: Path = PROFILES_DIR, kernel: str = "python3", log=print,
            log_output: bool = False, output_root: Path = REPO_ROOT) -> Path | None:
    """Execute one notebook into <book_dir>/notebooks/<stem>.ipynb; None when skipped as up to date. The
    notebook writes its results and training runs below `output_root` (the repository; ladder.stability's
    repeated runs each pass a folder of their own)."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    notebook = Path(notebook).resolve()
    stem = notebook.stem
    params = load_parameters(profile, stem, profiles_dir, notebook)
    executed = Path(book_dir) / "notebooks" / f"{stem}.ipynb"
    digest = work_hash(notebook, params, profile)
    if not force and is_up_to_date(executed, digest):
        log(f"[pipeline] {stem}: up to date (profile {profile}), skipped; --force to re-run")
        stale = code_changed_note(executed, notebook)
        if stale:
            log(f"[pipeline] {stem}: note: {stale}")
        return None
    executed.parent.mkdir(parents=True, exist_ok=True)
    failed_dir = Path(book_dir) / "_failed"
    tmp = failed_dir / f"{stem}.ipynb"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    log(f"[pipeline] {stem}: running with profile {profile} ...")
    slow = bf16_note(params)
    if slow:
        log(f"[pipeline] {stem}: warning: {slow}")
    t0 = time.perf_counter()
    # the kernel inherits this environment: make the repository's `ladder` importable from notebooks/
    # even when the package is not pip-installed
    # (and tell notebooks which book folder they are writing for: LADDER_BOOK_DIR, for book/figures/)
    # (LADDER_OUTPUT: the folder results, runs and figures go below, the repository itself; a notebook run
    # any other way writes to _output/<profile>/manual instead, see ladder.paths.output_root)
    # (LADDER_DATA_LOG: the data files it reads and their manifest hashes, for the stamp)
    env_before = {k: os.environ.get(k) for k in ("PYTHONPATH", "LADDER_BOOK_DIR", "IPYTHONDIR", "LADDER_OUTPUT",
                                                   "LADDER_DATA_LOG")}
    ipython_dir = kernel_ipython_dir(book_dir).resolve()
    data_log = (failed_dir / f"{stem}.data.log").resolve()
    data_log.unlink(missing_ok=True)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), str(ipython_dir / "site"), env_before["PYTHONPATH"]) if p)
    os.environ["LADDER_BOOK_DIR"] = str(Path(book_dir).resolve())
    os.environ["IPYTHONDIR"] = str(ipython_dir)
    os.environ["LADDER_OUTPUT"] = str(Path(output_root).resolve())
    os.environ["LADDER_DATA_LOG"] = str(data_log)
    import nbformat
    n_cells = len(nbformat.read(notebook, as_version=4).cells)  # source cells, as a failure counts them
    try:
        pm.execute_notebook(str(notebook), str(tmp), parameters=params, kernel_name=kernel,
                            cwd=str(notebook.parent), progress_bar=False, log_output=log_output,
                            on_cell_start=cell_progress(stem, n_cells, _expected_seconds(executed), log))
    except PapermillExecutionError as e:
        raise NotebookFailed(notebook, e.cell_index, e.exec_count, e.source, e.ename, e.evalue, tmp) from None
    finally:
        for k, v in env_before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    seconds = time.perf_counter() - t0
    prov = provenance(params)
    _insert_provenance(tmp, provenance_cell(stem, profile, params, prov, seconds))
    shutil.move(str(tmp), executed)  # only a successful run replaces the executed copy
    data = data_read(data_log)
    data_log.unlink(missing_ok=True)
    stamp_path(executed).write_text(json.dumps(
        {"notebook": f"notebooks/{stem}.ipynb", "profile": profile, "hash": digest, "parameters": params,
         "data": data, "seconds": round(seconds, 1), "provenance": prov}, indent=2, default=str) + "\n")
    log(f"[pipeline] {stem}: done in {seconds:.0f} s -> {_rel(executed)}")
    return executed


# --------------------------------------------------------------------------------------------- book
def ensure_mathjax(book_dir: Path = BOOK_DIR, log=print) -> bool:
    """MathJax 3 from npm into <book>/_extra/mathjax (served via html_extra_path), so math renders
    offline. Without npm: a warning, and a stub that loads MathJax from its CDN instead."""
    dest = Path(book_dir) / "_extra" / "mathjax"
    if (dest / "tex-chtml.js").is_file() and (dest / "output").is_dir():
        return True
    es5 = MATHJAX_CACHE / "node_modules" / "mathjax" / "es5"
    if not (es5 / "tex-chtml.js").is_file():
        npm = shutil.which("npm")
        if npm:
            MATHJAX_CACHE.mkdir(parents=True, exist_ok=True)
            r = subprocess.run([npm, "install", "--prefix", str(MATHJAX_CACHE), "--no-save", "--no-audit",
                                "--no-fund", "--loglevel=error", "mathjax@3"], capture_output=True, text=True,
                               timeout=600)
            if r.returncode:
                log(f"[pipeline] npm install mathjax@3 failed: {r.stderr.strip()[-500:]}")
    if dest.exists():
        shutil.rmtree(dest)
    if (es5 / "tex-chtml.js").is_file():
        shutil.copytree(es5, dest)
        return True
    warnings.warn("npm or mathjax@3 unavailable: the book's math will load MathJax from a CDN "
                  "(install npm and re-run for an offline book)", stacklevel=2)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "tex-chtml.js").write_text(
        "// placeholder written by ladder.pipeline: npm was unavailable, so load MathJax from its CDN\n"
        "(function () { var s = document.createElement('script');\n"
        "  s.src = 'https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-chtml.js'; s.async = true;\n"
        "  document.head.appendChild(s); })();\n")
    return False


def write_toc(book_dir: Path = BOOK_DIR) -> Path:
    """<book>/_toc.yml: the intro, one chapter per executed notebook present, then the extra pages."""
    book_dir = Path(book_dir)
    chapters = sorted(p.stem for p in (book_dir / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    pages = [p for p in EXTRA_PAGES if (book_dir / f"{p}.md").is_file()]
    toc = {"format": "jb-book", "root": "index", "parts": [
        {"caption": "Experiments", "chapters": [{"file": f"notebooks/{c}"} for c in chapters]},
        {"caption": "About this reproduction", "chapters": [{"file": p} for p in pages]}]}
    toc["parts"] = [p for p in toc["parts"] if p["chapters"]]
    path = book_dir / "_toc.yml"
    path.write_text("# Generated by ladder.pipeline (write_toc): one chapter per executed notebook in "
                    "book/notebooks/.\n" + yaml.safe_dump(toc, sort_keys=False))
    return path


def claims_page(profile: str, book_dir: Path = BOOK_DIR) -> str:
    """The book's claims table (ladder.claims) after `ladder.stability.hold_still`, linking only the chapters
    executed into <book_dir>/notebooks."""
    return to_markdown(hold_still(claims_table(profile), profile), profile, book_chapters(book_dir))


def jupyter_book_exe() -> str:
    """The `jupyter-book` script of this interpreter's environment (`python -m jupyter_book` does not work)."""
    exe = Path(sys.executable).parent / "jupyter-book"
    if exe.is_file():
        return str(exe)
    found = shutil.which("jupyter-book")
    if not found:
        raise PipelineError("the jupyter-book script was not found next to this Python nor on PATH: "
                            "pip install 'jupyter-book==1.0.4.post1'")
    return found


def build_book(profile: str, book_dir: Path = BOOK_DIR, log=print) -> Path:
    """Generate the claims table and toc, then `jupyter-book build`; returns the HTML folder.

    The build log is written to <book>/_build/build.log; warnings are printed.
    """
    book_dir = Path(book_dir)
    # the claims page applies one rule more than ladder.claims: a verdict that flips on re-runs decides nothing
    (book_dir / "_generated").mkdir(parents=True, exist_ok=True)
    (book_dir / "_generated" / "claims.md").write_text(claims_page(profile, book_dir))
    (book_dir / "_generated" / "stability.md").write_text(stability_markdown(profile))
    write_toc(book_dir)
    for executed in sorted((book_dir / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        if not stamp_path(executed).is_file():
            log(f"[pipeline] warning: {_rel(executed)} was not executed by this pipeline, so its page does not "
                f"say when and on what hardware it ran: python -m ladder.pipeline --profile {profile} "
                f"--only {executed.stem}")
    ensure_mathjax(book_dir, log=log)
    cmd = [jupyter_book_exe(), "build", str(book_dir), "--all"]
    log(f"[pipeline] building the book: {' '.join(cmd)}")
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT)
    out = book_dir / "_build"
    out.mkdir(exist_ok=True)
    (out / "build.log").write_text(r.stdout + "\n--- stderr ---\n" + r.stderr)
    for line in (r.stdout + r.stderr).splitlines():
        if "WARNING" in line or "ERROR" in line:
            log(f"[jupyter-book] {line}")
    if r.returncode:
        raise PipelineError(f"jupyter-book build failed (exit {r.returncode}); see {_rel(out / 'build.log')}:\n"
                            + (r.stdout + r.stderr)[-2000:])
    html = out / "html"
    log(f"[pipeline] book: {_rel(html / 'index.html')}")
    return html


# --------------------------------------------------------------------------------------------- CLI
def gpus_needed(params_by_stem: dict) -> int:
    """The most CUDA devices any notebook's parameters ask for (TP degrees, grid TP degrees, process counts)."""
    need = 1
    for params in params_by_stem.values():
        for k, v in params.items():
            if k in ("tp", "speed_tp", "nproc") and isinstance(v, int):
                need = max(need, v)
            if k == "grid" and isinstance(v, list):
                need = max([need] + [g[0] for g in v if isinstance(g, list) and g and isinstance(g[0], int)])
    return need


def check_gpus(profile: str, params_by_stem: dict) -> None:
    spec = PROFILE_SPECS[profile]
    if spec.gpus is None:
        return
    need = spec.gpus or gpus_needed(params_by_stem)
    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if have < need:
        found = f"{have} x {torch.cuda.get_device_name(0)}" if have else "no CUDA GPU"
        raise PipelineError(f"profile {profile} needs {need} CUDA GPU(s) (its largest TP degree / process count); "
                            f"found {found}: run it on a GPU node, or use --profile cpu / smoke here")


def run(profile: str, only=None, force: bool = False, book_only: bool = False, no_book: bool = False,
        book_dir: Path | None = None, notebooks_dir: Path = NOTEBOOKS_DIR, profiles_dir: Path = PROFILES_DIR,
        log=print, log_output: bool = False, output_root: Path = REPO_ROOT) -> None:
    if profile not in PROFILE_SPECS:
        raise PipelineError(f"unknown profile {profile!r}; expected one of {tuple(PROFILE_SPECS)}")
    if book_only and no_book:
        raise PipelineError("--book-only and --no-book exclude each other")
    if book_dir is None:
        book_dir = output_book_dir(profile)
    if PROFILE_SPECS[profile].offline:  # as the Makefile does: these profiles read LADDER_DATA, never the hub
        for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
            os.environ.setdefault(var, "1")
    notebooks = []
    if not book_only:
        notebooks = discover(notebooks_dir, only)
        if not notebooks:
            raise PipelineError(f"no notebooks matching NN_*.ipynb in {_rel(notebooks_dir)}")
        if PROFILE_SPECS[profile].partial:
            missing = [nb.stem for nb in notebooks if not (Path(profiles_dir) / profile / f"{nb.stem}.yaml").is_file()]
            if missing:
                log(f"[pipeline] profile {profile} covers {len(notebooks) - len(missing)} of {len(notebooks)} "
                    f"chapters; skipped (no profiles/{profile}/<stem>.yaml): {', '.join(missing)}")
            notebooks = [nb for nb in notebooks if nb.stem not in missing]
            if not notebooks:
                raise PipelineError(f"profile {profile} has no parameter files in {_rel(Path(profiles_dir) / profile)}")
        # every parameter file is checked (names and types), and the GPUs counted, before anything is written
        params = {nb.stem: load_parameters(profile, nb.stem, profiles_dir, nb) for nb in notebooks}
        check_gpus(profile, params)
    if Path(book_dir).resolve() != BOOK_DIR.resolve():
        _copy_book_sources(Path(book_dir))
        log(f"[pipeline] profile {profile}: writing to {_rel(book_dir)} (only the {PUBLISHED} profile writes book/)")
    for nb in notebooks:
        execute(nb, profile, book_dir, force=force, profiles_dir=profiles_dir, log=log, log_output=log_output,
                output_root=output_root)
    # every notebook ran: the kernel's configuration folder is not a failure to inspect (partly executed
    # copies of earlier failures are replaced by their chapter's next run)
    shutil.rmtree(Path(book_dir) / "_failed" / "ipython", ignore_errors=True)
    with contextlib.suppress(OSError):
        (Path(book_dir) / "_failed").rmdir()  # only when empty
    if not no_book:
        build_book(profile, book_dir, log=log)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ladder.pipeline", description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", required=True, help=f"one of {', '.join(PROFILES)}")
    ap.add_argument("--only", nargs="+", metavar="STEM", help="run only these notebooks (e.g. 01_architecture)")
    ap.add_argument("--force", action="store_true", help="re-run notebooks even when nothing changed")
    ap.add_argument("--book-only", action="store_true", help="build the book from the stored executed notebooks")
    ap.add_argument("--no-book", action="store_true", help="execute the notebooks but do not build the book")
    ap.add_argument("--book-dir", type=Path, default=None,
                    help=f"book folder (default: book/ for the {PUBLISHED} profile, else _output/<profile>/book); "
                         "executed copies go to <book-dir>/notebooks")
    ap.add_argument("--log-output", action="store_true",
                    help="stream the notebooks' cell outputs to the terminal (long gpu runs)")
    ap.add_argument("--output-root", type=Path, default=REPO_ROOT,
                    help="the folder results and training runs go below (default: the repository; "
                         "python -m ladder.stability gives each re-run its own)")
    ap.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = ap.parse_args(argv)
    try:
        run(args.profile, args.only, args.force, args.book_only, args.no_book, book_dir=args.book_dir,
            log_output=args.log_output, output_root=args.output_root)
    except (PipelineError, FileNotFoundError, DataFolderError, CorruptDataError) as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
