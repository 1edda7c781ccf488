"""The benchmark harness: complete records with provenance, ranks in agreement, clear errors."""
import json

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
