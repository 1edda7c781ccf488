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


# What `make test-fast` (the edit loop, `pytest -m "not slow"`) leaves out: the tests that take seconds each,
# every one of them still part of `make test` (CI). They run a whole book or a wheel, start torchrun or spawn
# rank processes beyond the one TP = 2 equality check per wiring (tests/test_tp.py, tests/test_registry.py),
# compile, or run lm-eval. A file whose every test is slow marks itself (`pytestmark`).
SLOW_FILES = ("test_book.py", "test_wheel.py")
SLOW_TESTS = {
    "test_adapt_on_two_torchrun_processes_with_fsdp_equals_one_process",
    "test_failed_distributed_retraining_reports_its_error",
    "test_run_adaptation_chooses_on_the_selection_set_and_judges_on_the_test_set",
    "test_two_torchrun_processes_with_fsdp_equal_one_process",
    "test_ddp_equals_gradient_accumulation",
    "test_fsdp_equals_gradient_accumulation_and_resumes_in_one_process",
    "test_tp_equivalence_matches_one_device",
    "test_tp2_records_agree_across_ranks_and_count_collectives",
    "test_ranks_hold_identical_timings",
    "test_compiled_virtual_ranks_with_an_emulated_link",
    "test_bench_cli_errors_are_one_line",
    "test_every_batch_size_is_compiled_past_dynamos_default_limit",
    "test_compiled_steps_match_eager",
    "test_compiled_top_k_sampling_runs_fullgraph_and_repeats",
    "test_lm_eval_on_local_tasks_returns_metrics",
    "test_a_dry_run_leaves_a_json_record_per_step",
    "test_stories260k_at_tp2_matches_transformers",
    "test_emulated_allreduce_is_a_lower_bound_and_exact",
    "test_emulation_does_not_change_results",
    "test_validate_measures_and_replays_each_ratio",
    "test_rivals_measure_and_replay_every_method",
    "test_rivals_section_glues_plain_numbers",
    "test_the_up_to_date_check_covers_the_manifest_hashes_of_the_data_read",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in SLOW_FILES or getattr(item, "originalname", item.name) in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)

