"""Where data lives. The shared, read-only data directory is found through LADDER_DATA."""
from __future__ import annotations

import os
from pathlib import Path

from .provenance import REPO_ROOT


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


def data_root() -> Path:
    """The offline data directory: $LADDER_DATA, else ../shared/data beside the repository."""
    env = os.environ.get("LADDER_DATA")
    root = Path(env).expanduser() if env else REPO_ROOT.parent / "shared" / "data"
    if not root.is_dir():
        raise FileNotFoundError(f"data directory {root} does not exist; set LADDER_DATA to the folder that holds "
                                "text/, eval/, tokenizers/ and models/ (see README, 'Data')")
    return root


def data_path(*parts: str) -> Path:
    """A path inside the data directory, with an error naming it if it is missing."""
    p = data_root().joinpath(*parts)
    if not p.exists():
        raise FileNotFoundError(f"{p} not found in the data directory {data_root()} (LADDER_DATA)")
    return p


def results_dir(profile: str) -> Path:
    """data/results/<profile>/ in the repository, where experiments store their result files."""
    d = REPO_ROOT / "data" / "results" / profile
    d.mkdir(parents=True, exist_ok=True)
    return d


def figures_dir() -> Path:
    """Where notebooks save figures that other book pages show: <book>/figures, the book folder being
    $LADDER_BOOK_DIR when ladder.pipeline runs them (a temporary copy in tests), else the repo's book/."""
    d = Path(os.environ.get("LADDER_BOOK_DIR", REPO_ROOT / "book")) / "figures"
    d.mkdir(parents=True, exist_ok=True)
    return d
