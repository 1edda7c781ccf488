"""Where data and runs live. The shared, read-only data directory is found through LADDER_DATA."""
from __future__ import annotations

import hashlib
import json
import os
import sys
from importlib.resources import files
from pathlib import Path

from .fetch import FetchError, fetch, manifest
from .root import (REPO_ROOT, DataFolderError, _data_root_choice, data_root, fetch_root,  # noqa: F401
                   user_cache)
# pandas and safetensors are imported inside the functions that use them: importing ladder.paths (as most modules do)
# does not load them. fetch.sha256 is looked up at call time in verify_data (tests patch it).


def is_hub_id(name) -> bool:
    """'org/name' that is not a local path: a Hugging Face hub repository id."""
    return isinstance(name, str) and name.count("/") == 1 and not name.startswith((".", "/", "~")) \
        and not Path(name).exists()


def resolve_checkpoint(name_or_path: str | os.PathLike) -> Path:
    """A local checkpoint directory, or a hub id downloaded (config + safetensors) to the HF cache."""
    p = Path(name_or_path).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise FileNotFoundError(f"{p} has no config.json: not a Hugging Face checkpoint directory")
        return p
    if not is_hub_id(str(name_or_path)):
        raise FileNotFoundError(f"checkpoint {str(name_or_path)!r} not found (expected a directory with config.json "
                                "and *.safetensors, or a hub id like 'meta-llama/Llama-3.1-8B-Instruct')")
    from huggingface_hub import snapshot_download  # looked up at call time (tests patch it)
    try:
        return Path(snapshot_download(str(name_or_path), allow_patterns=["*.json", "*.safetensors"]))
    except Exception as e:  # offline, no such repo, no access: the hub's own error says which
        raise FileNotFoundError(f"could not get {str(name_or_path)!r} from the Hugging Face hub ({type(e).__name__}: "
                                f"{e}). A gated model (e.g. meta-llama/*) also needs its licence accepted on the "
                                "hub and a token (`hf auth login`)") from e


def run_key(*parts) -> str:
    """A short hash of everything that determines a run: its folder name, so a re-executed notebook reuses
    (or resumes) a run with the same parameters and starts anew when one changes."""
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:10]


def paper_file(name: str) -> Path:
    """One of the paper's reference tables (ladder/paper/<name>, shipped inside the package)."""
    p = Path(str(files("ladder") / "paper" / name))
    if not p.is_file():
        have = sorted(q.name for q in p.parent.glob("*.csv"))
        raise FileNotFoundError(f"paper table {name!r} not found in {p.parent} (have: {have})")
    return p


def paper_table(name: str):
    """A paper table as a pandas DataFrame, e.g. paper_table("speed_grid.csv")."""
    import pandas as pd
    return pd.read_csv(paper_file(name))


# ----------------------------------------------------------------------------------- data verification
class CorruptDataError(RuntimeError):
    """A data file differs from the size/sha256 the manifest records (truncated, edited, half-copied)."""


_VERIFIED: dict[str, tuple[int, int]] = {}  # path -> (size, mtime_ns) at which it matched the manifest
_MANIFEST: dict | None = None


def _manifest_by_path() -> dict:
    global _MANIFEST
    if _MANIFEST is None:
        _MANIFEST = {e.path: e for e in manifest()}
    return _MANIFEST


def manifest_entries(rel: str) -> list:
    """The manifest's entries at `rel` (a file) or under it (a folder), e.g. "tokenizers/gpt2"."""
    rel = rel.strip("/")
    m = _manifest_by_path()
    return [e for path, e in m.items() if path == rel or path.startswith(rel + "/")] if rel else list(m.values())


def verify_data(rel: str, root: Path | None = None) -> list:
    """Check the data files at or under `rel` against the manifest's size and sha256, once per process and
    file version (size, mtime); a file that differs is named with the fix. Files the manifest marks `skip`
    are checked when present. Returns the manifest entries read (recorded for ladder.pipeline's
    up-to-date check when $LADDER_DATA_LOG names a file)."""
    from .fetch import sha256  # looked up at call time (tests patch fetch.sha256)
    root = Path(root) if root is not None else data_root()
    entries = manifest_entries(rel)
    for e in entries:
        f = root / e.path
        try:
            st = f.stat()
        except FileNotFoundError:
            if e.fetch == "skip":
                continue
            raise FileNotFoundError(f"{f} is missing from the data folder {root} (data/manifest.csv lists it): "
                                    f"run `make data` (or `python -m ladder.fetch --dest {root}`)") from None
        key = (st.st_size, st.st_mtime_ns)
        if _VERIFIED.get(str(f)) == key:
            continue
        got = "" if st.st_size != e.bytes else sha256(f)
        if st.st_size != e.bytes or got != e.sha256:
            what = (f"{st.st_size} bytes, the manifest records {e.bytes}" if st.st_size != e.bytes else
                    f"sha256 {got[:12]}..., the manifest records {e.sha256[:12]}...")
            raise CorruptDataError(f"{f} is corrupt or incomplete ({what}): run `make data` (or `python -m "
                                   f"ladder.fetch --dest {root}`), which names and fetches it again")
        _VERIFIED[str(f)] = key
    log = os.environ.get("LADDER_DATA_LOG")
    if log and entries:
        with open(log, "a") as fh:
            fh.write("".join(f"{e.path} {e.sha256}\n" for e in entries if e.fetch != "skip" or (root / e.path).exists()))
    return entries


def data_path(*parts: str) -> Path:
    """A path inside the data directory, with an error naming it and the fix if it is missing; the files at
    or under it are checked against the manifest (verify_data) before anything reads them."""
    root = data_root()
    p = root.joinpath(*parts)
    if not p.exists() and root == user_cache() and os.environ.get("LADDER_NO_FETCH") != "1":
        # Colab, Binder, a fresh laptop: the data arrives by itself, verified against the manifest
        try:
            fetch(root, only=["/".join(parts)], log=lambda m: print(m, file=sys.stderr))
        except FetchError as e:
            if "no file of the manifest" not in str(e):
                raise
    if not p.exists():
        raise FileNotFoundError(f"{p} not found in the data directory {root}: run `make data` "
                                f"(or `python -m ladder.fetch --dest {root}`)")
    verify_data("/".join(parts), root)
    return p


# ----------------------------------------------------------------------------------- where runs write
# ladder.pipeline sets $LADDER_OUTPUT to the folder its run writes results, training runs and (with
# $LADDER_BOOK_DIR) figures under: the repository itself, so its cpu run writes the committed
# data/results/cpu/, runs/cpu/ and book/figures/. Any other run (plain papermill, Jupyter, Colab) has no such
# variable and writes below _output/<profile>/manual/ in the working directory, never the committed files.
OUTPUT_ENV = "LADDER_OUTPUT"
_current = {"profile": None}  # the profile this process (a notebook's kernel) last named
_told: set[str] = set()  # output roots already announced


def pipeline_run() -> bool:
    """True in a notebook that ladder.pipeline runs (it names the output folder)."""
    return bool(os.environ.get(OUTPUT_ENV))


def output_root(profile: str | None = None) -> Path:
    """The folder this run writes data/results/<profile>/, runs/ and book/figures/ below: $LADDER_OUTPUT
    when ladder.pipeline runs the notebook, else <working directory>/_output/<profile>/manual. A notebook
    names its profile here (or to results_dir) first; figures_dir() then uses it."""
    if profile:
        _current["profile"] = profile
    else:
        profile = _current["profile"]
    env = os.environ.get(OUTPUT_ENV)
    if env:
        return Path(env).expanduser().resolve()
    root = REPO_ROOT / "_output" / (profile or "unknown") / "manual"
    if str(root) not in _told:
        _told.add(str(root))
        print(f"[ladder] not run by ladder.pipeline: results, training runs and figures go to {root} (only "
              "`python -m ladder.pipeline --profile cpu` writes the committed data/results/cpu, runs/cpu and book/)",
              file=sys.stderr)
    return root


def runs_dir(profile: str) -> Path:
    """runs/ of this run's output root (training runs, keyed by their parameters)."""
    return output_root(profile) / "runs"


OUTPUT_PREFIXES = ("data/results/", "runs/")  # relative paths that name what a run wrote


def local_candidates(p: str | os.PathLike) -> tuple[Path, ...]:
    """Where a local path given as a parameter may be, in order. A relative path to something a run writes
    (e.g. chapter 3's exported data/results/cpu/checkpoints/standard, which chapter 4 reads) is in this run's
    output root only: a hand run reads what its own chapter 3 wrote, the pipeline what its own did (the
    repository's copy). Any other relative path: the working directory, then the repository."""
    p = Path(p).expanduser()
    if p.is_absolute():
        return (p,)
    if p.as_posix().startswith(OUTPUT_PREFIXES):
        return (output_root() / p,)
    return (p, REPO_ROOT / p)


def results_dir(profile: str) -> Path:
    """<output root>/data/results/<profile>/, where experiments store their result files: the repository's
    data/results/<profile> in a ladder.pipeline run, else _output/<profile>/manual/data/results/<profile>."""
    d = output_root(profile) / "data" / "results" / profile
    d.mkdir(parents=True, exist_ok=True)
    return d


def figures_dir() -> Path:
    """Where notebooks save figures that other book pages show: <book>/figures, the book folder being
    $LADDER_BOOK_DIR when ladder.pipeline runs them (book/ for the cpu profile, _output/<profile>/book for
    the others, a temporary copy in tests), else the output root's book/ (never the committed one)."""
    book = os.environ.get("LADDER_BOOK_DIR")
    d = (Path(book) if book else output_root() / "book") / "figures"
    d.mkdir(parents=True, exist_ok=True)
    return d


def read_safetensors(path) -> dict:
    """safetensors.torch.load_file, with a file that cannot be read named (a truncated or corrupted
    download says only 'incomplete metadata' otherwise)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path} cannot be read as safetensors ({e}); the file is corrupt or incomplete: "
                         "delete it and fetch, export or train it again") from None


def display_path(p) -> str:
    """A path as pages show it: relative to the data folder (`<data>/...`) or the working directory, so no
    machine's absolute paths end up in the book; anything else (a hub id) unchanged."""
    p = str(p)
    roots = []
    try:
        roots.append(("<data>/", data_root().resolve()))
    except (FileNotFoundError, DataFolderError):
        pass
    roots.append(("", REPO_ROOT))
    for prefix, root in roots:
        try:
            return prefix + str(Path(p).resolve().relative_to(root))
        except (ValueError, OSError):
            continue
    return p
