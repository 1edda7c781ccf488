"""The GPU checks' machine-readable record: with LADDER_GPU_RECORD=<path> (scripts/gpu_check.sh sets it under
$OUT) the session writes one JSON there: provenance (commit from $LADDER_COMMIT where there is no .git, device,
torch and CUDA versions, date), each test's outcome and duration, and what the tests put in `gpu_record`
(spin calibration, each link's requested vs achieved duration, the 70B rank's step times and recoveries).
The file is rewritten after every test, so a step killed part-way keeps what it measured."""
import json
import os
import time

import pytest

_RECORD: dict = {"tests": {}, "measured": {}}


def _write():
    path = os.environ.get("LADDER_GPU_RECORD")
    if not path:
        return
    import torch

    from ladder.bench import run_provenance
    cuda = torch.cuda.is_available()
    body = {"provenance": run_provenance(), "device": torch.cuda.get_device_name() if cuda else "none (no CUDA)",
            "torch": torch.__version__, "cuda": torch.version.cuda, **_RECORD}
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(body, f, indent=2, default=str)
    os.replace(tmp, path)


@pytest.fixture(scope="session")
def gpu_record() -> dict:
    """A dict the tests fill with what they measured (kept in the JSON record under "measured")."""
    return _RECORD["measured"]


def pytest_sessionstart(session):
    _RECORD["started"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    _write()


def pytest_runtest_logreport(report):
    t = _RECORD["tests"].setdefault(report.nodeid, {"outcome": "passed", "duration_s": 0.0})
    t["duration_s"] += report.duration
    if report.failed:
        t["outcome"] = "failed"
        t.setdefault("error", str(report.longrepr)[-1500:])
    elif report.skipped and t["outcome"] == "passed":
        t["outcome"] = "skipped"
        t["reason"] = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if report.when == "teardown":
        _write()


def pytest_collectreport(report):
    if report.skipped:  # a module skipped as a whole (no CUDA)
        _RECORD["tests"][report.nodeid] = {"outcome": "skipped", "reason": str(report.longrepr)[-300:]}


def pytest_sessionfinish(session, exitstatus):
    _RECORD["exit_status"] = int(exitstatus)
    _write()
