"""Where data and runs live. The shared, read-only data directory is found through LADDER_DATA."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from .provenance import REPO_ROOT


def is_hub_id(name) -> bool:
    """'org/name' that is not a local path: a Hugging Face hub repository id."""
    return isinstance(name, str) and name.count("/") == 1 and not name.startswith((".", "/", "~")) \
        and not Path(name).exists()


def run_key(*parts) -> str:
    """A short hash of everything that determines a run: its folder name, so a re-executed notebook reuses
    (or resumes) a run with the same parameters and starts anew when one changes."""
    import hashlib
    import json
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:10]


def paper_file(name: str) -> Path:
    """One of the paper's reference tables (ladder/paper/<name>, shipped inside the package)."""
    from importlib.resources import files
    p = Path(str(files("ladder") / "paper" / name))
    if not p.is_file():
        have = sorted(q.name for q in p.parent.glob("*.csv"))
        raise FileNotFoundError(f"paper table {name!r} not found in {p.parent} (have: {have})")
    return p


def paper_table(name: str):
    """A paper table as a pandas DataFrame, e.g. paper_table("speed_grid.csv")."""
    import pandas as pd
    return pd.read_csv(paper_file(name))


def user_cache() -> Path:
    """Where `python -m ladder.fetch` puts the data by default: $XDG_CACHE_HOME/ladder or ~/.cache/ladder."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "ladder"


def fetch_root() -> Path:
    """The folder the fetch writes to: $LADDER_DATA when set, else the user cache."""
    env = os.environ.get("LADDER_DATA")
    return Path(env).expanduser() if env else user_cache()


def data_root() -> Path:
    """The data directory: $LADDER_DATA, else ../shared/data beside the checkout, else the user cache."""
    from .provenance import CHECKOUT
    env = os.environ.get("LADDER_DATA")
    shared = CHECKOUT.parent / "shared" / "data" if CHECKOUT else None
    root = Path(env).expanduser() if env else shared if shared and shared.is_dir() else user_cache()
    if root == user_cache():  # the cache fills itself (data_path fetches what is missing)
        root.mkdir(parents=True, exist_ok=True)
    if not root.is_dir():
        raise FileNotFoundError(f"data directory {root} does not exist: run `make data` (or `python -m "
                                "ladder.fetch`), or set LADDER_DATA to a folder that holds text/, eval/, "
                                "tokenizers/ and models/")
    return root


def data_path(*parts: str) -> Path:
    """A path inside the data directory, with an error naming it and the fix if it is missing."""
    root = data_root()
    p = root.joinpath(*parts)
    if not p.exists() and root == user_cache() and os.environ.get("LADDER_NO_FETCH") != "1":
        # Colab, Binder, a fresh laptop: the data arrives by itself, verified against the manifest
        from .fetch import FetchError, fetch
        try:
            fetch(root, only=["/".join(parts)], log=lambda m: print(m, file=sys.stderr))
        except FetchError as e:
            if "no file of the manifest" not in str(e):
                raise
    if not p.exists():
        raise FileNotFoundError(f"{p} not found in the data directory {root}: run `make data` "
                                f"(or `python -m ladder.fetch --dest {root}`)")
    return p


def results_dir(profile: str) -> Path:
    """data/results/<profile>/ in the working directory (ladder.provenance.REPO_ROOT: $LADDER_WORKDIR, the
    checkout, or the current directory), where experiments store their result files."""
    d = REPO_ROOT / "data" / "results" / profile
    d.mkdir(parents=True, exist_ok=True)
    return d


def figures_dir() -> Path:
    """Where notebooks save figures that other book pages show: <book>/figures, the book folder being
    $LADDER_BOOK_DIR when ladder.pipeline runs them (a temporary copy in tests), else the repo's book/."""
    d = Path(os.environ.get("LADDER_BOOK_DIR", REPO_ROOT / "book")) / "figures"
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
    except FileNotFoundError:
        pass
    roots.append(("", REPO_ROOT))
    for prefix, root in roots:
        try:
            return prefix + str(Path(p).resolve().relative_to(root))
        except (ValueError, OSError):
            continue
    return p
