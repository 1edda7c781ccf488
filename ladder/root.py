"""Where things are: the source checkout, the working directory the user owns, and the data folder.

The bottom of the package: it imports nothing of ladder, so every module that must know a place (results,
runs, provenance, the data fetcher) can ask here without an import circle.
"""
from __future__ import annotations

import os
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


def user_cache() -> Path:
    """Where `python -m ladder.fetch` puts the data by default: $XDG_CACHE_HOME/ladder or ~/.cache/ladder."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "ladder"


class DataFolderError(RuntimeError):
    """$LADDER_DATA names a folder that does not exist (a typo, or a copy not mounted): never silently
    replaced by another folder or created, since the notebooks would then fall back to hub models."""


def _data_root_choice() -> tuple[Path, str]:
    """(the data folder, how it was chosen): the one rule of the notebooks, the tests and ladder.fetch."""
    env = os.environ.get("LADDER_DATA")
    if env:
        return Path(env).expanduser(), "LADDER_DATA"
    shared = CHECKOUT.parent / "shared" / "data" if CHECKOUT else None
    if shared is not None and shared.is_dir():
        return shared, "../shared/data beside the checkout"
    return user_cache(), "the user cache"


def fetch_root() -> Path:
    """The folder `python -m ladder.fetch` fills: the data folder, by the same rule as data_root()."""
    return data_root()


def data_root() -> Path:
    """The data directory: $LADDER_DATA (which must exist), else ../shared/data beside the checkout, else the
    user cache ~/.cache/ladder (created; data_path fetches into it what is missing)."""
    root, how = _data_root_choice()
    if how == "LADDER_DATA" and not root.is_dir():
        raise DataFolderError(f"LADDER_DATA={os.environ['LADDER_DATA']}: no such folder; fix the variable (a copy "
                              "of the data folder holds text/, eval/, tokenizers/ and models/), or create the "
                              "folder and run `make data` (python -m ladder.fetch) to fetch the data into it")
    if how == "the user cache":  # the cache fills itself (data_path fetches what is missing)
        root.mkdir(parents=True, exist_ok=True)
    return root
