"""The benchmark harness: complete records with provenance, ranks in agreement, clear errors."""
import json
from pathlib import Path

import pytest

from ladder.bench import BenchConfig, flat, main, read_records, run_one, run_local, sweep, write_records

TINY = dict(preset="tiny", prompt_len=4, new_tokens=3, warmup=1, samples=2)
REQUIRED = ("tokens_per_s", "tokens_per_s_spread", "prefill_s", "decode_s_per_token", "samples_tokens_per_s",
            "allreduces_per_generation", "wiring", "tp", "batch", "dtype", "link", "provenance", "model_config")


def check_record(rec, cfg):
    for key in REQUIRED:
        assert key in rec, key
    assert rec["wiring"] == cfg.wiring and rec["tp"] == cfg.tp and rec["batch"] == cfg.batch
    assert len(rec["samples_tokens_per_s"]) == cfg.samples
    assert rec["tokens_per_s"] > 0 and rec["prefill_s"] > 0 and rec["decode_s_per_token"] > 0
    s = rec["tokens_per_s_spread"]
    assert s["min"] <= s["median"] <= s["max"]
    prov = rec["provenance"]
    for key in ("git_commit", "date", "versions", "hardware", "params"):
        assert key in prov, key
    assert prov["params"]["wiring"] == cfg.wiring
    assert "torch" in prov["versions"]


def test_single_process_record_is_complete():
    cfg = BenchConfig(**TINY, wiring="ladder", batch=2)
    rec = run_one(cfg)
    check_record(rec, cfg)
    assert rec["allreduces_per_generation"] == 0  # one device: no collectives
    json.dumps(rec)  # storable


def test_tp2_records_agree_across_ranks_and_count_collectives():
    cfgs = sweep(dict(TINY, tp=2), wiring=["standard", "parallel", "ladder", "upper_bound"])
    recs = run_local(cfgs, progress=False)
    n_layers, steps = 4, 3  # prefill + 2 decode steps
    for cfg, rec in zip(cfgs, recs):
        check_record(rec, cfg)
        assert rec["backend"] == "gloo" and rec["world_size"] == 2
    counts = {r["wiring"]: r["allreduces_per_generation"] for r in recs}
    assert counts == {"standard": 2 * n_layers * steps, "parallel": n_layers * steps,
                      "ladder": 2 * n_layers * steps, "upper_bound": 0}


def _both_ranks(comm, cfg):
    return run_one(cfg, comm)


def test_ranks_hold_identical_timings():
    from ladder.launch import launch_local
    cfg = BenchConfig(**TINY, tp=2, link="custom:0.0001:1e9", probe_allreduce=True)
    r0, r1 = launch_local(_both_ranks, 2, cfg)
    for key in ("samples_tokens_per_s", "samples_prefill_s", "samples_decode_s", "allreduce_decode_s"):
        assert r0[key] == r1[key], key
    assert r0["allreduce_decode_s"] >= 1e-4  # the emulated link is a lower bound
    assert r0["link"]["alpha_s"] == 1e-4


def test_virtual_ranks_pay_the_link_cost():
    cfg = BenchConfig(**TINY, tp=2, ranks="virtual", link="custom:0.002:1e12", probe_allreduce=True)
    rec = run_local([cfg], progress=False)[0]
    assert rec["allreduce_decode_s"] >= 0.002
    # 2 all-reduces per layer per decode step, each >= 2 ms
    assert rec["decode_s_per_token"] >= 2 * 4 * 0.002


def test_records_round_trip_through_jsonl_and_csv(tmp_path):
    cfg = BenchConfig(**TINY)
    rec = run_one(cfg)
    out = write_records([rec, rec], tmp_path / "runs.jsonl")
    assert len(read_records(out)) == 2
    lines = (tmp_path / "runs.csv").read_text().splitlines()
    assert len(lines) == 3 and lines[0].startswith("preset,wiring")
    assert flat(rec)["link"] == "none"


def test_cli_writes_records(tmp_path, capsys):
    out = tmp_path / "cli.jsonl"
    main(["--preset", "tiny", "--wiring", "standard", "ladder", "--batch", "1", "--prompt-len", "4",
          "--new-tokens", "2", "--samples", "1", "--warmup", "0", "--out", str(out)])
    recs = read_records(out)
    assert [r["wiring"] for r in recs] == ["standard", "ladder"]
    assert "tokens_per_s" in capsys.readouterr().out


def test_cli_times_a_checkpoint_rewired_as_hybrid(tmp_path, stories_dir, capsys):
    """The converted model's speed on the GPU path: `torchrun ... -m ladder.bench --checkpoint ...`."""
    out = tmp_path / "ckpt.jsonl"
    main(["--checkpoint", str(stories_dir), "--wiring", "standard", "hybrid", "--ladder-layers", "3",
          "--prompt-len", "4", "--new-tokens", "2", "--samples", "1", "--warmup", "0", "--out", str(out)])
    recs = read_records(out)
    assert [r["wiring"] for r in recs] == ["standard", "hybrid"] and recs[1]["ladder_layers"] == 3
    assert all(r["checkpoint"] == str(stories_dir) and r["n_layers"] == 5 for r in recs)
    # checked against the checkpoint's 5 layers; the CLI says so in one line (the traceback with --debug)
    with pytest.raises(SystemExit):
        main(["--checkpoint", str(stories_dir), "--wiring", "hybrid", "--ladder-layers", "9", "--samples", "1"])
    assert "ladder_layers=9" in capsys.readouterr().err
    with pytest.raises(ValueError, match="ladder_layers=9"):
        main(["--checkpoint", str(stories_dir), "--wiring", "hybrid", "--ladder-layers", "9", "--samples", "1",
              "--debug"])


@pytest.mark.parametrize("bad, match", [
    (dict(dtype="float8"), "dtype"),
    (dict(batch=0), "batch"),
    (dict(link="warp-drive"), "link"),
    (dict(preset="llama3-70B", tp=3), "divisible"),
    (dict(wiring="sideways"), "wiring"),
    (dict(ranks="imaginary"), "ranks"),
])
def test_bad_configs_name_the_problem(bad, match):
    with pytest.raises(ValueError, match=match):
        BenchConfig(**{**TINY, **bad})


def test_run_local_refuses_gpu_configs():
    with pytest.raises(ValueError, match="device"):
        run_local([BenchConfig(**TINY, device="cuda")])


def test_interleaved_runs_share_weights_and_match_sequential_counts():
    cfgs = sweep(dict(TINY, tp=2, ranks="virtual"), wiring=["standard", "parallel", "ladder"])
    recs = run_local(cfgs, progress=False, interleave=True)
    assert [r["allreduces_per_generation"] for r in recs] == [24, 12, 24]
    for cfg, rec in zip(cfgs, recs):
        check_record(rec, cfg)


def test_shared_twin_has_the_same_tensors():
    from ladder import SingleDevice
    from ladder.bench import _build
    shared = {}
    a = _build(BenchConfig(**TINY, wiring="standard"), SingleDevice(), "cpu", shared)
    b = _build(BenchConfig(**TINY, wiring="ladder"), SingleDevice(), "cpu", shared)
    assert b.config.wiring == "ladder"
    assert b.layers[0].mlp.up_proj.weight.data_ptr() == a.layers[0].mlp.up_proj.weight.data_ptr()


def test_compiled_virtual_ranks_with_an_emulated_link():
    """compile=True compiles the modules only: the host link's start/wait stay in Python, at the wiring's
    places, and every all-reduce is still counted."""
    cfg = BenchConfig(**TINY, tp=2, ranks="virtual", wiring="ladder", compile=True, link="custom:0.0001:1e12")
    rec = run_one(cfg)
    check_record(rec, cfg)
    assert rec["allreduces_per_generation"] == 2 * 4 * 3 and rec["cuda_graph"] is True


def test_a_closed_case_frees_its_compiled_model():
    """Compiled modules sit in a reference cycle: close() must free the model before the next case is
    built (under torchrun two ranks' worth of 70B weights do not fit in one GPU)."""
    import gc
    import weakref

    from ladder.bench import _Case
    gc.disable()  # the cycle collector must not run by chance between close() and the check
    try:
        case = _Case(BenchConfig(**TINY, tp=2, ranks="virtual", wiring="ladder", compile=True), None, "cpu")
        model = weakref.ref(case.model)
        case.close()
        assert model() is None
    finally:
        gc.enable()


def test_torchrun_command_goes_through_the_one_launcher():
    from ladder.bench import torchrun_command
    from ladder.launch import torchrun_argv
    argv, env = torchrun_command(4, ["--batch", "1"], p2p=False)
    assert argv == torchrun_argv(4, "ladder.bench", ["--batch", "1"])
    assert argv[argv.index("-m", 2) + 1] == "ladder.bench" and "--nproc-per-node=4" in argv
    assert env["NCCL_P2P_DISABLE"] == "1"
    with pytest.raises(ValueError, match="nproc"):
        torchrun_argv(0, "ladder.bench", [])


# --------------------------------------------------------------------------------------------- issue 18
_KILLER = """
import os, signal, sys
from ladder import bench
path, kill_batch, interleave = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
build = bench._Case.__init__
def init(self, cfg, *a, **k):  # SIGKILL (no cleanup, no buffered write survives) when batch `kill_batch` starts
    if cfg.batch == kill_batch:
        os.kill(os.getpid(), signal.SIGKILL)
    build(self, cfg, *a, **k)
bench._Case.__init__ = init
cfgs = bench.sweep(dict(preset="tiny", prompt_len=4, new_tokens=3, warmup=0, samples=2, tp=2, ranks="virtual"),
                   batch=[1, 2, 3], wiring=["standard", "ladder"])
bench.start_records(path)
bench.run(cfgs, progress=False, interleave=interleave, interleave_by=("batch",), out=path)
"""


@pytest.mark.parametrize("interleave", [True, False])
def test_a_killed_run_keeps_every_record_it_finished(tmp_path, interleave):
    """Issue 18, item 1: records stream to the JSON-lines file as they are measured, so a run SIGKILLed
    part-way (here: as batch 3 starts, after batches 1 and 2 = 4 records) leaves 4 complete records."""
    import os
    import signal
    import subprocess
    import sys
    path = tmp_path / "records.jsonl"
    path.write_text('{"stale": "a previous run"}\n')  # start_records must drop it
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parents[1]),
                                                                     os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", _KILLER, str(path), "3", "1" if interleave else "0"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    recs = read_records(path)
    assert [(r["batch"], r["wiring"]) for r in recs] == [(1, "standard"), (1, "ladder"), (2, "standard"),
                                                         (2, "ladder")]
    for r in recs:
        assert len(r["samples_tokens_per_s"]) == 2 and r["tokens_per_s"] > 0 and "provenance" in r


def test_an_error_part_way_leaves_the_finished_records(tmp_path, monkeypatch):
    from ladder import bench
    build = bench._Case.__init__

    def init(self, cfg, *a, **k):
        if cfg.batch == 2:
            raise RuntimeError("CUDA out of memory (injected)")
        build(self, cfg, *a, **k)

    monkeypatch.setattr(bench._Case, "__init__", init)
    path = bench.start_records(tmp_path / "r.jsonl")
    cfgs = sweep(dict(TINY, tp=2, ranks="virtual"), batch=[1, 2], wiring=["standard", "ladder"])
    with pytest.raises(RuntimeError, match="injected"):
        bench.run(cfgs, progress=False, interleave=True, interleave_by=("batch",), out=path, tags={"set": "x"})
    recs = read_records(path)
    assert [(r["batch"], r["wiring"], r["set"]) for r in recs] == [(1, "standard", "x"), (1, "ladder", "x")]


def test_a_record_cut_short_by_a_kill_is_skipped(tmp_path, capsys):
    path = tmp_path / "r.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": 3, "tok')
    assert read_records(path) == [{"a": 1}, {"a": 2}]
    assert "incomplete" in capsys.readouterr().err
    path.write_text('{"a": 1}\n{"a": \n{"a": 3}\n')
    with pytest.raises(ValueError, match="line 2"):
        read_records(path)


@pytest.mark.parametrize("one_call", [True, False])
def test_no_model_of_the_first_shape_is_alive_when_the_second_is_built(monkeypatch, one_call):
    """Issue 18, item 3: a shape's models are freed (and the cycle collector run) before the next shape is
    built, whether both shapes are in one interleaved call (split into groups) or in two calls (the
    notebook's extra shapes). Every model built here sits in a reference cycle, as a compiled one does."""
    import gc
    import weakref

    from ladder import bench
    built = []
    build = bench._build

    def tracked(cfg, comm, device, shared=None):
        shape = cfg.model_config().n_layers
        alive = [s for s, ref in built if s != shape and ref() is not None]
        assert not alive, f"building shape {shape} while a model of shape {alive[0]} is alive"
        model = build(cfg, comm, device, shared)
        model._cycle = [model]  # module -> ... -> module, as a compiled module's call
        built.append((shape, weakref.ref(model)))
        return model

    monkeypatch.setattr(bench, "_build", tracked)
    a = sweep(dict(TINY, tp=2, ranks="virtual"), wiring=["standard", "ladder", "upper_bound"])
    b = sweep(dict(TINY, tp=2, ranks="virtual", overrides={"n_layers": 2}), wiring=["standard", "ladder"])
    gc.disable()  # only the benchmark's own collection may free them
    try:
        if one_call:
            bench.run(a + b, progress=False, interleave=True, interleave_by=("overrides",))
        else:
            bench.run(a, progress=False, interleave=True)
            bench.run(b, progress=False, interleave=True)
    finally:
        gc.enable()
    assert {s for s, _ in built} == {4, 2} and len(built) == 5


def test_cli_help_has_defaults_and_lists_presets_and_links(capsys):
    from ladder.bench import build_parser
    from ladder.config import PRESETS as SHAPES
    from ladder.link import PRESETS as LINKS
    ap = build_parser()
    for action in ap._actions:
        assert action.help, action.dest
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert text.count("(default:") >= len(ap._actions) - 1  # every option but --help
    for name in [*SHAPES, *LINKS]:
        assert name in text, name


def test_records_carry_decode_ms_beside_tokens_per_s_and_a_passed_in_commit(monkeypatch):
    from ladder import bench
    monkeypatch.setattr(bench, "provenance", lambda params=None: {"git_commit": "unknown", "params": params})
    monkeypatch.setenv("LADDER_COMMIT", "abc1234")
    rec = run_one(BenchConfig(**TINY))
    assert rec["provenance"]["git_commit"] == "abc1234"
    row = flat(rec)
    keys = list(row)
    assert keys.index("decode_ms_per_token") == keys.index("tokens_per_s") + 1
    assert row["decode_ms_per_token"] == pytest.approx(1e3 * rec["decode_s_per_token"])
