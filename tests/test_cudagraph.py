"""The regionally compiled step keeps every all-reduce wait where the wiring puts it (CPU).

A recording communicator logs each start / wait, and the block's module calls log each compute, so the
log is the order in which the step issues work. The compiled step (compiled modules, wiring in Python)
must produce exactly the eager wiring's log; a log with a hoisted MLP wait (what whole-step compilation
does, see ladder/cudagraph.py) must be told apart.
"""
import pytest
import torch

from ladder import build_model, preset
from ladder.cudagraph import compile_modules
from ladder.generate import decode_one
from ladder.link import VirtualRanks
from ladder.model import Block


class Recording(VirtualRanks):
    def __init__(self, size, log):
        super().__init__(size)
        self.log = log

    def start(self, partial):
        self.log.append(f"start{self.n_collectives}")
        return super().start(partial), self.n_collectives - 1

    def wait(self, handle):
        if isinstance(handle, tuple):
            self.log.append(f"wait{handle[1]}")
            return handle[0]
        return handle


@pytest.fixture
def logged_modules(monkeypatch):
    log = []
    attn, ff = Block.attention, Block.feed_forward
    monkeypatch.setattr(Block, "attention", lambda self, h, **ctx: (log.append("attn"), attn(self, h, **ctx))[1])
    monkeypatch.setattr(Block, "feed_forward", lambda self, h: (log.append("mlp"), ff(self, h))[1])
    return log


def overlapped(log):
    """Per collective (in start order): did any module compute between its start and its wait?"""
    out = []
    for i, e in enumerate(log):
        if e.startswith("start"):
            j = log.index("wait" + e[5:])
            out.append(any(x in ("attn", "mlp") for x in log[i + 1:j]))
    return out


def step_log(wiring, compiled, log, ladder_layers=0):
    model = build_model(preset("tiny", wiring=wiring, ladder_layers=ladder_layers), Recording(2, log), seed=0)
    if compiled:
        compile_modules(model)
    with torch.inference_mode():
        model.setup_cache(1, 16)
        model(torch.zeros(1, 4, dtype=torch.long), torch.arange(4))  # prefill (compiles the prefill shape)
        log.clear()
        model.comm.n_collectives = 0  # number the decode step's collectives from 0
        tok = decode_one(model, torch.zeros(1, dtype=torch.long), torch.tensor([4]))
    return list(log), tok


@pytest.mark.parametrize("wiring, ladder_layers", [("ladder", 0), ("standard", 0), ("hybrid", 2)])
def test_compiled_step_keeps_the_wirings_wait_order(logged_modules, wiring, ladder_layers):
    eager, tok_eager = step_log(wiring, False, logged_modules, ladder_layers)
    compiled, tok_compiled = step_log(wiring, True, logged_modules, ladder_layers)
    assert compiled == eager
    torch.testing.assert_close(tok_compiled, tok_eager)
    n = preset("tiny").n_layers
    hidden = overlapped(eager)
    if wiring == "ladder":  # every all-reduce but the last layer's MLP (waited on by the final norm) hides
        assert hidden == [True] * (2 * n - 1) + [False]
    if wiring == "standard":
        assert hidden == [False] * (2 * n)


def test_the_order_check_detects_a_hoisted_mlp_wait(logged_modules):
    eager, _ = step_log("ladder", False, logged_modules)
    # what inductor does to a whole compiled step: layer 1's fused norms need MLP(0), so wait1 (MLP 0's
    # all-reduce) moves above attention(1)
    hoisted = list(eager)
    hoisted.remove("wait1")
    hoisted.insert(hoisted.index("attn", hoisted.index("start1")), "wait1")
    assert hoisted != eager
    assert overlapped(hoisted) != overlapped(eager) and overlapped(hoisted)[1] is False


def test_one_compiled_artifact_serves_every_layer():
    from torch._dynamo.utils import counters
    model = compile_modules(build_model(preset("tiny"), seed=0))
    with torch.inference_mode():
        model.setup_cache(1, 16)
        model(torch.zeros(1, 4, dtype=torch.long), torch.arange(4))
        before = counters["stats"]["unique_graphs"]
        decode_one(model, torch.zeros(1, dtype=torch.long), torch.tensor([4]))
        decode_one(model, torch.zeros(1, dtype=torch.long), torch.tensor([5]))
    # RMSNorm, Attention, MLP at the decode shape: 3 graphs for 4 layers (+ the final norm), not 4 x 3
    assert counters["stats"]["unique_graphs"] - before <= 3


def test_every_batch_size_is_compiled_past_dynamos_default_limit():
    """Chapter 2 meets more shapes than dynamo's default 8 cache entries per module class: each batch size
    (prefill and decode) must still get a compiled entry, not a silent eager fallback."""
    from torch._dynamo.eval_frame import _debug_get_cache_entry_list as entries

    from ladder.generate import generate
    from ladder.model import Attention
    shape = dict(n_layers=1, dim=48, n_heads=3, n_kv_heads=1, ffn_dim=96)  # a shape no other test compiles
    before = len(entries(Attention.forward.__code__))
    batches = range(1, 6)
    for b in batches:
        model = compile_modules(build_model(preset("tiny", **shape), seed=0), backend="eager")
        generate(model, torch.zeros(b, 4, dtype=torch.long), 2)
    assert len(entries(Attention.forward.__code__)) - before == 2 * len(batches)


@pytest.mark.parametrize("name, expected", [("NVIDIA H200", 4.8e12), ("NVIDIA GH200 480GB", 4.0e12),
                                            ("NVIDIA H20", 4.0e12), ("NVIDIA H100 80GB HBM3", 3.35e12),
                                            ("NVIDIA H100 PCIe", 2.0e12), ("NVIDIA A10", 0.6e12),
                                            ("NVIDIA A100-SXM4-80GB", 2.039e12), ("Some GPU", None)])
def test_roofline_bandwidth_matches_the_most_specific_device_name(monkeypatch, name, expected):
    """The datasheet table is matched by substring, first match wins: GH200 must not read as H200."""
    from ladder.cudagraph import peak_hbm_bandwidth
    monkeypatch.delenv("LADDER_HBM_BANDWIDTH", raising=False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    assert peak_hbm_bandwidth() == expected
    monkeypatch.setenv("LADDER_HBM_BANDWIDTH", "1e12")
    assert peak_hbm_bandwidth() == 1e12


def test_each_batch_size_gets_a_static_graph():
    """compile_modules compiles with dynamic=False (dynamo's automatic_dynamic_shapes off): a second batch
    size must get its own static graph, not turn the batch dimension symbolic (issue 18, item 7)."""
    from ladder.generate import generate
    graphs = []

    def record(gm, example_inputs):
        graphs.append(example_inputs)
        return gm.forward

    def symbolic(x):
        return isinstance(x, torch.SymInt) or (isinstance(x, torch.Tensor)
                                                and any(isinstance(d, torch.SymInt) for d in x.shape))

    shape = dict(n_layers=1, dim=40, n_heads=5, n_kv_heads=1, ffn_dim=72)  # a shape no other test compiles
    for b in (1, 2, 3):
        model = compile_modules(build_model(preset("tiny", **shape), seed=0), backend=record)
        generate(model, torch.zeros(b, 4, dtype=torch.long), 2)
    assert graphs, "nothing was compiled"
    assert not any(symbolic(x) for inputs in graphs for x in inputs)
