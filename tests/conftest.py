import os
from pathlib import Path

import pytest

# Hermetic and offline: no hub access, caches in a temp dir.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def shared_data_dir() -> Path:
    """The data directory the code reads (ladder.paths.data_root: $LADDER_DATA, ../shared/data beside the
    repo, else the user cache that `make data` fills)."""
    from ladder.paths import data_root
    try:
        return data_root()
    except FileNotFoundError:
        return Path(os.environ.get("LADDER_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = shared_data_dir()
    if not d.is_dir():
        pytest.fail(f"data directory {d} not found: run `make data` (or set LADDER_DATA)")
    return d


@pytest.fixture(scope="session")
def stories_dir(data_dir) -> Path:
    return data_dir / "models" / "stories260K" / "hf"


@pytest.fixture(autouse=True, scope="session")
def _hf_home(tmp_path_factory):
    os.environ["HF_HOME"] = str(tmp_path_factory.mktemp("hf_home"))


@pytest.fixture(scope="session")
def model_vs_paper():
    """The performance model calibrated on the paper's 70B TP = 8 column and compared with its tables
    (ladder.speedup.model_vs_paper): ~6 s, so computed once per test session. Read it, never change it."""
    from ladder import speedup
    return speedup.model_vs_paper(fit_tp=8)
