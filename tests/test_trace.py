"""The overlap mechanism, counted exactly from real forward steps (ladder.trace)."""
import pytest
import torch

from ladder import trace
from ladder.config import ModelConfig
from ladder.trace import event_log as _event_log

L = 4
CFG = ModelConfig(n_layers=L, dim=64, n_heads=4, n_kv_heads=2, ffn_dim=128, vocab_size=128, max_seq_len=32)


def counts(wiring, n=0, **kw):
    ov = trace.step_overlap(CFG.replace(wiring=wiring, ladder_layers=n), **kw)
    return len(ov), sum(o["overlapped"] for o in ov)


@pytest.mark.parametrize("wiring,expected", [
    ("standard", (2 * L, 0)), ("parallel", (L, 0)), ("ladder", (2 * L, 2 * L - 1)), ("upper_bound", (0, 0))])
def test_decode_step_counts_per_wiring(wiring, expected):
    assert counts(wiring) == expected


def test_two_batch_overlap_hides_every_all_reduce_but_the_last():
    # two halves, each with the standard dataflow: 2 x 2L all-reduces, each behind the other half's module
    assert counts("two_batch", batch=2) == (4 * L, 4 * L - 1)
    ov = trace.step_overlap(CFG.replace(wiring="two_batch"), batch=4)
    # A.attn0 behind B.attn0, B.attn0 behind A.mlp0, A.mlp0 behind B.mlp0, B.mlp0 behind A.attn1
    assert [o["hidden_behind"] for o in ov[:4]] == [["attn0"], ["mlp0"], ["mlp0"], ["attn1"]]
    assert ov[0]["bytes"] == 2 * 64 * 4  # half of a batch of 4


def test_two_batch_refuses_a_batch_of_one():
    with pytest.raises(ValueError, match="batch of at least 2"):
        trace.step_overlap(CFG.replace(wiring="two_batch"), batch=1)


@pytest.mark.parametrize("n", range(L + 1))
def test_hybrid_hides_two_per_ladder_layer_but_its_last(n):
    # n ladder layers on top: every ladder module's all-reduce but the very last one has the next module
    # to hide behind; the standard layers below hide nothing (n = 0 is the standard model, n = L ladder)
    assert counts("hybrid", n) == (2 * L, max(2 * n - 1, 0))


def test_prefill_and_tp_degree_do_not_change_the_order():
    for kw in ({"tp": 1}, {"batch": 3}, {"prompt_len": 5}):
        assert counts("ladder", **kw) == (2 * L, 2 * L - 1)
    ov = trace.step_overlap(CFG.replace(wiring="ladder"), decode=False, prompt_len=6)
    assert sum(o["overlapped"] for o in ov) == 2 * L - 1


def test_what_each_ladder_all_reduce_hides_behind():
    ov = trace.step_overlap(CFG.replace(wiring="ladder"), tp=2, batch=1, prompt_len=8)
    # attention i's all-reduce runs behind MLP i, MLP i's behind attention i + 1; the last MLP's is exposed
    expected = []
    for i in range(L):
        expected += [(f"attn{i}", [f"mlp{i}"]), (f"mlp{i}", [f"attn{i + 1}"] if i + 1 < L else [])]
    assert [(o["after"], o["hidden_behind"]) for o in ov] == expected
    assert all(o["waited"] for o in ov)
    # weight bytes of one rank's MLP shard at TP = 2: 3 x dim x ffn/2 floats
    assert ov[0]["hidden_weight_bytes"] == 3 * 64 * 64 * 4
    assert ov[0]["hidden_flops"] == 2 * 3 * 64 * 64  # one decode token
    assert ov[0]["bytes"] == 64 * 4  # the all-reduced activation: batch x 1 token x dim floats


def _normalise_symbolic(log):
    ids, out = {}, []
    for e in log:
        if e[0] == "compute":
            out.append(("compute", e[1]))
        else:
            out.append((e[0], ids.setdefault(id(e[1]), len(ids))))
    return out


@pytest.mark.parametrize("wiring,n", [("standard", 0), ("parallel", 0), ("ladder", 0), ("upper_bound", 0),
                                      ("hybrid", 1), ("hybrid", 3), ("two_batch", 0)])
def test_real_step_has_the_order_the_performance_model_replays(wiring, n):
    cfg = CFG.replace(wiring=wiring, ladder_layers=n)
    from ladder.link import VirtualRanks
    from ladder.model import build_model
    m = build_model(cfg, VirtualRanks(2))
    m.setup_cache(2, 8)
    real = trace.record_step(m, torch.zeros(2, 4, dtype=torch.long), torch.arange(4))
    real = [(e[0], e[1]) for e in real if e[1] != "head"]
    if wiring == "parallel":  # one all-reduce of the summed outputs; the symbolic trace logs both modules too
        assert [e for e in real if e[0] == "compute"] == [("compute", f"{k}{i}") for i in range(L) for k in ("attn", "mlp")]
    assert real == _normalise_symbolic(_event_log(tuple(cfg.layer_wirings())))


def test_recorder_passes_collectives_through_and_restores_the_communicator():
    from ladder.link import VirtualRanks
    from ladder.model import build_model
    m = build_model(CFG.replace(wiring="ladder"), VirtualRanks(2))
    m.setup_cache(1, 8)
    inner = m.comm
    trace.record_step(m, torch.zeros(1, 2, dtype=torch.long), torch.arange(2))
    assert m.comm is inner and inner.count() == 2 * L  # every all-reduce reached the real communicator


def test_overlap_table_rows():
    df = trace.overlap_table(CFG, ladder_layers=2).set_index("wiring")
    assert df.loc["standard", "behind a whole module"] == 0
    assert df.loc["ladder", "behind a whole module"] == 2 * L - 1 and df.loc["ladder", "exposed"] == 1
    assert df.loc["hybrid (top 2 of 4 layers ladder)", "behind a whole module"] == 3
    assert df.loc["upper_bound", "all-reduces per step"] == 0


@pytest.mark.parametrize("wiring,n,expected", [("standard", 0, 2 * L), ("parallel", 0, L), ("ladder", 0, 2 * L),
                                               ("upper_bound", 0, 0), ("two_batch", 0, 4 * L), ("hybrid", 1, 2 * L)])
def test_one_all_reduce_count_for_every_consumer(wiring, n, expected):
    """The performance model, the replay and the benchmark's estimate all count with trace.n_allreduces,
    which is what a real step launches."""
    cfg = CFG.rewired(wiring, n)
    assert trace.n_allreduces(cfg) == expected
    if wiring != "two_batch":  # a real step needs batch >= 2 there; step_overlap counts the same otherwise
        assert len(trace.step_overlap(cfg)) == expected
