"""GPU checks of the compiled, graph-captured decode step and the GPU-side emulated link (`make test-gpu`).

Skipped without CUDA. Imports nothing beyond torch, pytest and ladder (the GPU machines have no datasets,
lm-eval or papermill). The roofline and recovery checks use one rank of the paper's Llama-3-70B TP = 8
shape (~21 GB in bf16): they need a GPU with >= 40 GB of memory.
"""
import os
import socket
import statistics

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)

from ladder import build_model, preset  # noqa: E402
from ladder.bench import _share  # noqa: E402
from ladder.cudagraph import (DecodeGraph, GraphedDecode, StreamCollectives, compile_modules,  # noqa: E402
                              decode_bytes, peak_hbm_bandwidth)
from ladder.generate import generate  # noqa: E402
from ladder.link import PRESETS, CudaEmulatedLink, VirtualRanks, custom, emulate  # noqa: E402

DEV = torch.device("cuda")
SMALL = dict(n_layers=4, dim=256, n_heads=8, n_kv_heads=4, ffn_dim=512, vocab_size=512, max_seq_len=64)
WIRINGS = ["standard", "parallel", "ladder", "upper_bound", "hybrid"]


def small(wiring, comm):
    cfg = preset("tiny", **SMALL, wiring=wiring, ladder_layers=2 if wiring == "hybrid" else 0)
    return build_model(cfg, comm, device=DEV, seed=0).eval()


def prompt(batch=2, n=8):
    return torch.randint(0, SMALL["vocab_size"], (batch, n), generator=torch.Generator().manual_seed(0)).to(DEV)


@pytest.mark.parametrize("wiring", WIRINGS)
def test_graph_captured_step_equals_eager(wiring):
    """Same tokens, greedy and top-k sampled, eager vs one CUDA graph per step (eager modules: the same
    kernels, so bitwise) vs compiled modules in the graph (greedy tokens equal)."""
    link = custom(20e-6, 50e9)
    model = small(wiring, emulate(VirtualRanks(2), link, DEV))
    eager, _ = generate(model, prompt(), 10)
    graphed, _ = generate(model, prompt(), 10, decode_fn=GraphedDecode())
    assert torch.equal(graphed, eager)
    kw = dict(temperature=1.0, top_k=50, seed=3)
    assert torch.equal(generate(model, prompt(), 10, decode_fn=GraphedDecode(), **kw)[0],
                       generate(model, prompt(), 10, **kw)[0])
    compiled, _ = generate(compile_modules(model), prompt(), 10, decode_fn=GraphedDecode())
    assert torch.equal(compiled, eager)


def test_one_graphed_decode_follows_a_reallocated_cache():
    """generate() reallocates the KV cache for a longer run; a GraphedDecode kept across calls must not
    replay the graph captured on the old cache."""
    model = small("ladder", emulate(VirtualRanks(2), custom(20e-6, 50e9), DEV))
    decode = GraphedDecode()
    generate(model, prompt(n=4), 4, decode_fn=decode)  # captures on a cache of 8 slots
    longer, _ = generate(model, prompt(n=8), 20, decode_fn=decode)  # needs 28: a new cache
    eager, _ = generate(model, prompt(n=8), 20)
    assert torch.equal(longer, eager)


def test_a_cpu_prompt_generates_on_a_gpu_model():
    """Chapter 3 samples from prompts cut from CPU-side token blocks: generate moves them to the model."""
    from ladder.tp import SingleDevice
    model = small("ladder", SingleDevice())
    assert torch.equal(generate(model, prompt().cpu(), 5)[0], generate(model, prompt(), 5)[0])


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_nccl_collectives_on_their_stream_are_captured():
    """A one-rank NCCL group: real NCCL all-reduces on the communication stream, inside the graph."""
    import torch.distributed as dist

    from ladder.tp import SingleDevice, TensorParallel
    if not dist.is_nccl_available():
        pytest.skip("NCCL not available")
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1,
                            device_id=torch.device("cuda", torch.cuda.current_device()))
    try:
        ref, _ = generate(small("ladder", SingleDevice()), prompt(), 10)
        model = small("ladder", StreamCollectives(TensorParallel(), DEV))
        out, _ = generate(model, prompt(), 10, decode_fn=GraphedDecode())
        assert torch.equal(out, ref)
        assert model.comm.count() > 0
    finally:
        dist.destroy_process_group()


def test_torchrun_group_reduces_cuda_tensors_and_the_benchmarks_cpu_timings(monkeypatch):
    """init_distributed (as under torchrun, here one rank): NCCL for CUDA tensors, and gloo for the CPU
    tensors the benchmark reduces (each sample's time, the max over ranks), which NCCL alone refuses."""
    import torch.distributed as dist

    from ladder.tp import init_distributed
    for k, v in dict(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                     MASTER_PORT=str(_free_port())).items():
        monkeypatch.setenv(k, v)
    comm, dev = init_distributed(device="cuda")
    try:
        x = torch.full((4,), 2.0, device=dev)
        dist.all_reduce(x)
        t = torch.tensor([1.5, 2.5], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        assert dev.type == "cuda" and x.tolist() == [2.0] * 4 and t.tolist() == [1.5, 2.5]
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("seconds", [10e-6, 30e-6, 100e-6, 300e-6, 1e-3, 5e-3])
def test_gpu_link_achieves_the_requested_duration(seconds):
    link = CudaEmulatedLink(VirtualRanks(8), PRESETS["nvlink4"], DEV)
    achieved = link.achieved(seconds)
    assert abs(achieved - seconds) <= max(0.05 * seconds, 2e-6), (achieved, seconds)


def test_collectives_in_flight_serialise_inside_a_graph():
    """Ten all-reduces started back to back and waited at the end take ten durations, not one (one
    communication stream, as NCCL), also when replayed from a CUDA graph."""
    link = CudaEmulatedLink(VirtualRanks(2), custom(200e-6, 1e15), DEV)
    x = torch.ones(16, device=DEV)
    g = torch.cuda.CUDAGraph()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):  # warm-up outside capture
        for h in [link.start(x) for _ in range(2)]:
            link.wait(h)
    torch.cuda.current_stream().wait_stream(s)
    with torch.cuda.graph(g):
        handles = [link.start(x) for _ in range(10)]
        outs = [link.wait(h) for h in handles]
    times = []
    for _ in range(5):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda._sleep(200_000)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
    assert statistics.median(times) == pytest.approx(10 * link.achieved(200e-6), rel=0.05)
    assert all(torch.equal(o, x) for o in outs)


# --------------------------------------------------------------------------------------------- 70B rank
POS, CACHE = 1024, 1536


def _replay_s(g: DecodeGraph, n: int) -> float:
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(n):
        g.graph.replay()
    b.record()
    b.synchronize()
    return a.elapsed_time(b) / 1e3 / n


@pytest.fixture(scope="module")
def rank70b():
    """Seconds per decode step of one Llama-3-70B TP = 8 rank (random bf16 weights, batch 1, position
    1,024 of a 1,536-slot cache), compiled modules in one CUDA graph, over the P2P-off-class link; median
    of 4 round-robin rounds x 20 replays. Also returns the upper bound's model (for the roofline)."""
    free, _ = torch.cuda.mem_get_info()
    if free < 40e9:
        pytest.skip(f"one 70B TP=8 rank needs ~25 GB; only {free / 1e9:.0f} GB free")
    cfg = preset("llama3-70B", max_seq_len=CACHE)
    link = PRESETS["pcie5-nop2p"]
    base = build_model(cfg, emulate(VirtualRanks(8), link, DEV), device=DEV, dtype=torch.bfloat16, seed=0)
    models = {"standard": base}
    for w in ("ladder", "upper_bound"):
        models[w] = _share(base, cfg.replace(wiring=w), emulate(VirtualRanks(8), link, DEV), DEV)
    graphs = {}
    with torch.inference_mode():
        for w, m in models.items():
            compile_modules(m.eval())
            m.setup_cache(1, CACHE)
            graphs[w] = DecodeGraph(m, torch.zeros(1, dtype=torch.long, device=DEV),
                                    torch.tensor([POS], device=DEV))
        for g in graphs.values():
            _replay_s(g, 5)
        rounds = {w: [] for w in graphs}
        for _ in range(4):
            for w, g in graphs.items():
                rounds[w].append(_replay_s(g, 20))
    times = {w: statistics.median(r) for w, r in rounds.items()}
    print("70B TP=8 rank, batch 1, pcie5-nop2p, s/step:", times)
    return times, models["upper_bound"]


def test_ladder_recovers_the_upper_bounds_gain_on_a_70b_rank(rank70b):
    t, _ = rank70b
    speedup, bound = t["standard"] / t["ladder"], t["standard"] / t["upper_bound"]
    recovered = (speedup - 1) / (bound - 1)
    print(f"ladder {speedup:.3f}x, upper bound {bound:.3f}x, recovered {recovered:.1%}")
    assert recovered >= 0.9


def test_compiled_step_reaches_40_percent_of_the_hbm_roofline(rank70b):
    """Roofline = bytes this rank must read per decode step (ladder.cudagraph.decode_bytes: every weight
    but the embedding table, plus the whole KV cache) / peak HBM bandwidth. The peak comes from the
    datasheet table ladder.cudagraph.HBM_BANDWIDTH matched on torch.cuda.get_device_name (H200: 4.8 TB/s),
    or from the LADDER_HBM_BANDWIDTH environment variable (bytes/s), which overrides it. The step timed
    is the upper bound's (no communication): the compute the other wirings overlap with."""
    t, model = rank70b
    peak = peak_hbm_bandwidth()
    if peak is None:
        pytest.skip(f"no peak bandwidth for {torch.cuda.get_device_name()}: set LADDER_HBM_BANDWIDTH")
    achieved = decode_bytes(model) / t["upper_bound"]
    print(f"{decode_bytes(model) / 1e9:.1f} GB/step in {1e3 * t['upper_bound']:.2f} ms: "
          f"{achieved / 1e12:.2f} TB/s = {achieved / peak:.0%} of {peak / 1e12:.2f} TB/s")
    assert achieved / peak >= 0.4
