"""Tensor parallelism on two real gloo processes: every valid wiring at TP = 2 equals TP = 1."""
import pytest
import torch

from ladder import build_model, preset
from ladder.launch import launch_local
from ladder.verify import cached_logits, tp_cached_logits

CASES = {
    "standard": {}, "parallel": {}, "ladder": {}, "hybrid": {"ladder_layers": 2}, "upper_bound": {},
    "two_batch": {},
}


def config(wiring):
    return preset("tiny", wiring=wiring, **CASES[wiring])


def _all_wirings(comm, states, tok):
    return {w: tp_cached_logits(comm, config(w), states[w], tok, 5) for w in CASES}


@pytest.fixture(scope="module")
def tp2_results():
    # the same seed gives every wiring the same weights (parallel simply has no second norm)
    states = {w: build_model(config(w), seed=11).state_dict() for w in CASES}
    tok = torch.randint(0, 256, (2, 9), generator=torch.Generator().manual_seed(0))
    ranks = launch_local(_all_wirings, 2, states, tok)
    single = {w: cached_logits(config(w), states[w], tok, 5) for w in CASES}
    return ranks, single


@pytest.mark.parametrize("wiring", ["standard", "parallel", "ladder", "hybrid", "two_batch"])
def test_tp2_equals_tp1_prefill_and_decode(tp2_results, wiring):
    ranks, single = tp2_results
    ref, _ = single[wiring]
    for rank in ranks:
        got, _ = rank[wiring]
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_collective_counts_per_wiring(tp2_results):
    ranks, _ = tp2_results
    n_layers, steps = preset("tiny").n_layers, 1 + 4  # prefill + 4 decode steps
    counts = {w: ranks[0][w][1] for w in CASES}
    assert counts["standard"] == counts["ladder"] == counts["hybrid"] == 2 * n_layers * steps
    assert counts["parallel"] == n_layers * steps
    assert counts["upper_bound"] == 0
    assert counts["two_batch"] == 2 * counts["standard"]  # each half's own all-reduces


def test_two_batch_overlap_is_the_standard_model_split_in_two(tp2_results):
    """The rival is exact: the same function as the unsplit standard model, at TP = 1 and TP = 2."""
    ranks, single = tp2_results
    ref, _ = single["standard"]
    torch.testing.assert_close(single["two_batch"][0], ref, rtol=1e-5, atol=1e-5)
    for rank in ranks:
        torch.testing.assert_close(rank["two_batch"][0], ref, rtol=1e-5, atol=1e-5)


def test_upper_bound_is_not_a_valid_model_at_tp2(tp2_results):
    ranks, single = tp2_results
    ref, _ = single["upper_bound"]
    assert (ranks[0]["upper_bound"][0] - ref).abs().max() > 1e-3


def _protocol_check(comm):
    from ladder.link import EmulatedLink, VirtualRanks, custom
    from ladder.tp import Communicator, SingleDevice, TensorParallel
    comms = [SingleDevice(), comm, EmulatedLink(comm, custom(0.0, 1e12)), VirtualRanks(4),
             EmulatedLink(VirtualRanks(4), custom(0.0, 1e12))]
    assert isinstance(comm, TensorParallel)
    return [type(c).__name__ for c in comms if isinstance(c, Communicator)], len(comms)


def test_every_communicator_satisfies_the_protocol():
    from ladder.tp import Communicator
    ok, n = launch_local(_protocol_check, 2)[0]
    assert len(ok) == n == 5

    class Incomplete:  # no count(), no rank: must not pass
        size = 1

        def start(self, partial):
            return partial

        def wait(self, handle):
            return handle

    assert not isinstance(Incomplete(), Communicator)
