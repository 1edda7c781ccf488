"""GPU checks on one rank of the paper's Llama-3-70B TP = 8 shape (run FIRST by scripts/gpu_check.sh: they
are the ones whose numbers matter, and a later hang must not lose them).

One fixture builds the rank once (random bf16 weights, ~21 GB: needs a GPU with >= 40 GB free), shares its
weights between five models (standard and ladder on the fast and the slow link, and the upper bound),
compiles the modules (regional compilation) and captures one decode step of each in a CUDA graph (batch 1,
position 1,024 of a 1,536-slot cache); seconds per step are the median of 4 round-robin rounds x 20 replays.

* recovery >= 90% on `nvlink4` (14.9 us per all-reduce at p = 8: every estimate of the attention stretch
  that hides an MLP's all-reduce, 15-55 us on an H100, is longer);
* the slow link's (`pcie5-nop2p`, ~46 us) recovery is reported, not asserted: with one communication stream
  ladder hides an all-reduce only while it is shorter than the stretch that follows it, so it is a
  measurement (issue 18, item 2);
* the dead-link check: (standard - upper bound) / all-reduces per step is within 10% of the link's
  modelled all-reduce time (a link that costs nothing would pass any recovery test);
* the roofline: the upper bound's step reaches >= 40% of the HBM roofline.
"""
import math
import statistics

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)

from ladder import build_model, preset  # noqa: E402
from ladder.bench import _share  # noqa: E402
from ladder.cudagraph import DecodeGraph, compile_modules, decode_bytes, peak_hbm_bandwidth  # noqa: E402
from ladder.launch import release_memory  # noqa: E402
from ladder.link import PRESETS, VirtualRanks, emulate  # noqa: E402

DEV = torch.device("cuda")
POS, CACHE, TP, BATCH = 1024, 1536, 8, 1
FAST, SLOW = "nvlink4", "pcie5-nop2p"
UB = ("upper_bound", FAST)  # no all-reduce: the link does not matter


def _replay_s(g: DecodeGraph, n: int) -> float:
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(n):
        g.graph.replay()
    b.record()
    b.synchronize()
    return a.elapsed_time(b) / 1e3 / n


@pytest.fixture(scope="module")
def rank70b(gpu_record):
    free, _ = torch.cuda.mem_get_info()
    if free < 40e9:
        pytest.skip(f"one 70B TP=8 rank needs ~25 GB; only {free / 1e9:.0f} GB free")
    cfg = preset("llama3-70B", max_seq_len=CACHE)
    base = build_model(cfg, emulate(VirtualRanks(TP), PRESETS[FAST], DEV), device=DEV, dtype=torch.bfloat16, seed=0)
    models = {("standard", FAST): base}
    for w, link in (("ladder", FAST), ("standard", SLOW), ("ladder", SLOW), UB):
        models[(w, link)] = _share(base, cfg.replace(wiring=w), emulate(VirtualRanks(TP), PRESETS[link], DEV), DEV)
    graphs = {}
    with torch.inference_mode():
        for key, m in models.items():
            compile_modules(m.eval())
            m.setup_cache(BATCH, CACHE)
            graphs[key] = DecodeGraph(m, torch.zeros(BATCH, dtype=torch.long, device=DEV),
                                      torch.tensor([POS], device=DEV))
        for g in graphs.values():
            _replay_s(g, 5)
        rounds = {k: [] for k in graphs}
        for _ in range(4):
            for k, g in graphs.items():
                rounds[k].append(_replay_s(g, 20))
    times = {k: statistics.median(r) for k, r in rounds.items()}
    n_ar = graphs[("standard", FAST)].collectives
    nbytes = BATCH * cfg.dim * 2
    links = {name: models[("standard", name)].comm.durations(nbytes) for name in (FAST, SLOW)}
    gpu_record["rank70b"] = {
        "shape": "llama3-70B", "tp": TP, "batch": BATCH, "position": POS, "cache": CACHE,
        "s_per_step": {f"{w}@{link}": t for (w, link), t in times.items()},
        "s_per_step_rounds": {f"{w}@{link}": r for (w, link), r in rounds.items()},
        "allreduces_per_step": n_ar, "link_durations": links,
        "spin_calibration": models[("standard", FAST)].comm.calibration()}
    print("70B TP=8 rank, batch 1, s/step:", {f"{w}@{link}": round(t * 1e3, 3) for (w, link), t in times.items()},
          "ms; all-reduces per step:", n_ar, "; links requested vs achieved:", links)
    yield times, n_ar, models[UB]
    del models, graphs, base
    release_memory()


def _recovered(t, link):
    speedup, bound = t[("standard", link)] / t[("ladder", link)], t[("standard", link)] / t[UB]
    return (speedup - 1) / (bound - 1), speedup, bound


def test_ladder_recovers_90_percent_of_the_upper_bounds_gain_on_nvlink4(rank70b, gpu_record):
    t, _, _ = rank70b
    rec, speedup, bound = _recovered(t, FAST)
    gpu_record.setdefault("recovery", {})[FAST] = {"recovered": rec, "speedup": speedup, "upper_bound_speedup": bound}
    print(f"{FAST}: ladder {speedup:.3f}x, upper bound {bound:.3f}x, recovered {rec:.1%}")
    assert rec >= 0.9


def test_compiled_step_reaches_40_percent_of_the_hbm_roofline(rank70b, gpu_record):
    """Roofline = bytes this rank must read per decode step (ladder.cudagraph.decode_bytes: every weight
    but the embedding table, plus the whole KV cache) / peak HBM bandwidth. The peak comes from the
    datasheet table ladder.cudagraph.HBM_BANDWIDTH matched on torch.cuda.get_device_name (H200: 4.8 TB/s),
    or from the LADDER_HBM_BANDWIDTH environment variable (bytes/s), which overrides it. The step timed
    is the upper bound's (no communication): the compute the other wirings overlap with."""
    t, _, model = rank70b
    peak = peak_hbm_bandwidth()
    if peak is None:
        pytest.skip(f"no peak bandwidth for {torch.cuda.get_device_name()}: set LADDER_HBM_BANDWIDTH")
    achieved = decode_bytes(model) / t[UB]
    gpu_record["roofline"] = {"bytes_per_step": decode_bytes(model), "s_per_step": t[UB], "peak_Bps": peak,
                              "achieved_Bps": achieved, "share": achieved / peak}
    print(f"{decode_bytes(model) / 1e9:.1f} GB/step in {1e3 * t[UB]:.2f} ms: "
          f"{achieved / 1e12:.2f} TB/s = {achieved / peak:.0%} of {peak / 1e12:.2f} TB/s")
    assert achieved / peak >= 0.4


@pytest.mark.parametrize("link", [FAST, SLOW])
def test_each_allreduce_costs_the_links_modelled_time(rank70b, gpu_record, link):
    """The dead-link check: standard pays every all-reduce in series, the upper bound none, so their
    difference per all-reduce is one all-reduce's cost; it must be the link's modelled time +-10%."""
    t, n_ar, _ = rank70b
    per_ar = (t[("standard", link)] - t[UB]) / n_ar
    modelled = PRESETS[link].allreduce_time(BATCH * preset("llama3-70B").dim * 2, TP)
    gpu_record.setdefault("dead_link_check", {})[link] = {"per_allreduce_s": per_ar, "modelled_s": modelled,
                                                          "ratio": per_ar / modelled, "allreduces_per_step": n_ar}
    print(f"{link}: (standard - upper bound) / {n_ar} all-reduces = {per_ar * 1e6:.2f} us; "
          f"modelled {modelled * 1e6:.2f} us ({per_ar / modelled:.2f}x)")
    assert per_ar == pytest.approx(modelled, rel=0.10)


def test_the_slow_links_recovery_is_reported(rank70b, gpu_record):
    """A number, not a threshold (issue 18, item 2): printed and kept in the JSON record."""
    t, _, _ = rank70b
    rec, speedup, bound = _recovered(t, SLOW)
    gpu_record.setdefault("recovery", {})[SLOW] = {"recovered": rec, "speedup": speedup, "upper_bound_speedup": bound}
    print(f"{SLOW}: ladder {speedup:.3f}x, upper bound {bound:.3f}x, recovered {rec:.1%} (reported, not asserted)")
    assert math.isfinite(rec)
