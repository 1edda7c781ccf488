"""The wheel, installed into a fresh virtual environment outside the repository, runs every notebook
on the smoke profile from an empty directory (as Colab/Binder would after the install cell): the package
data (paper tables, task YAMLs, data manifest) is found through importlib.resources, and results and
figures land in that directory (below _output/smoke/manual, as for any hand run), not in site-packages. Offline: the dependencies come from this
environment's site-packages (a .pth line), the package itself only from the wheel."""
from __future__ import annotations

import os
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from ladder.paths import data_root
from ladder.provenance import CHECKOUT

pytestmark = pytest.mark.slow


def _run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert r.returncode == 0, f"{cmd} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory):
    if CHECKOUT is None:
        pytest.skip("needs the source checkout")
    tmp = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp), str(CHECKOUT)],
         timeout=300)
    whl = next(tmp.glob("ladder_residual-*.whl"))
    names = zipfile.ZipFile(whl).namelist()
    for f in ("ladder/paper/speed_grid.csv", "ladder/tasks/ladder_arc_easy.yaml", "ladder/data_manifest.csv"):
        assert f in names, f
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], timeout=120)
    py = venv / "bin" / "python"
    sp = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    # the wheel first: with the deps' site-packages already visible, pip would find the editable install of
    # this checkout there ("already satisfied") and install nothing
    # (and without PYTHONPATH: a checkout on it, with its .egg-info, also reads as installed)
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    _run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--no-index", str(whl)],
         timeout=300, env=clean)
    (sp / "_deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")  # the deps, not the editable ladder
    _run([str(py), "-m", "ipykernel", "install", "--prefix", str(venv), "--name", "ladder-wheel"], timeout=120)
    return py


def test_wheel_runs_every_notebook_from_an_empty_directory(wheel_venv, tmp_path):
    work = tmp_path / "empty"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LADDER_WORKDIR", "LADDER_BOOK_DIR")}
    env.update(LADDER_DATA=str(data_root()), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    where = _run([str(wheel_venv), "-c", "import ladder, ladder.provenance as p; print(ladder.__file__); "
                  "print(p.REPO_ROOT)"], cwd=work, env=env).stdout.split()
    assert "site-packages" in where[0] and Path(where[1]) == work.resolve()
    for stem in ("01_architecture", "02_speedup", "03_pretraining", "04_llama_adaptation"):
        nb = work / f"{stem}.ipynb"
        nb.write_bytes((CHECKOUT / "notebooks" / f"{stem}.ipynb").read_bytes())
        params = yaml.safe_load((CHECKOUT / "profiles" / "smoke" / f"{stem}.yaml").read_text())
        pfile = tmp_path / f"{stem}.params.yaml"
        pfile.write_text(yaml.safe_dump({**params, "profile": "smoke"}))
        _run([str(wheel_venv), "-m", "papermill", str(nb), str(work / f"{stem}.out.ipynb"), "-f", str(pfile),
              "-k", "ladder-wheel", "--cwd", str(work), "--no-progress-bar"], cwd=work, env=env, timeout=900)
    # a hand run (no ladder.pipeline): below _output/<profile>/manual of the working directory
    out = work / "_output" / "smoke" / "manual"
    assert (out / "data" / "results" / "smoke" / "architecture.json").is_file()
    assert list((out / "data" / "results" / "smoke").glob("speed*.json"))
    assert list((out / "book" / "figures").glob("*.png"))
    for name in ("pretraining", "adaptation"):  # 03 evaluates through the packaged lm-eval task YAMLs
        assert (out / "data" / "results" / "smoke" / f"{name}.json").is_file(), name
