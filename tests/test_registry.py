"""One wiring registry: a new wiring is one record plus its layer function, and every consumer runs it."""
import pytest
import torch

import toy_wiring  # noqa: F401  (registers "mlp_ladder")
from ladder import perfmodel, trace
from ladder.config import WIRING_SPECS, ModelConfig, Wiring, preset
from ladder.launch import launch_local
from ladder.model import LAYER_WIRINGS, build_model, register_wiring
from ladder.verify import cached_logits

L = 4
CFG = ModelConfig(n_layers=L, dim=64, n_heads=4, n_kv_heads=2, ffn_dim=128, vocab_size=128, max_seq_len=32)


def test_every_wiring_has_a_record_and_every_record_a_layer_function():
    assert set(LAYER_WIRINGS) == {n for n, w in WIRING_SPECS.items() if not w.per_layer}
    assert [n for n, w in WIRING_SPECS.items() if w.shares_norm] == ["parallel"]
    assert WIRING_SPECS["two_batch"].architecture == WIRING_SPECS["upper_bound"].architecture == "standard"
    assert WIRING_SPECS["ladder"].architecture == "ladder"


@pytest.mark.parametrize("wiring,n,kept", [("hybrid", 2, 2), ("hybrid", (0, 3), (0, 3)), ("ladder", 2, 0),
                                           ("standard", 3, 0), ("two_batch", 1, 0), ("mlp_ladder", 2, 0)])
def test_rewired_keeps_ladder_layers_for_the_hybrid_only(wiring, n, kept):
    cfg = CFG.rewired(wiring, n)
    assert cfg.wiring == wiring and cfg.ladder_layers == kept


def test_rewired_refuses_an_unknown_wiring():
    with pytest.raises(ValueError, match="unknown wiring 'sideways'"):
        CFG.rewired("sideways")


def test_a_per_layer_wiring_cannot_be_registered_as_a_layer_function():
    with pytest.raises(ValueError, match="per-layer"):
        register_wiring(Wiring("stack", per_layer=True), lambda *a, **k: None)


def test_toy_wiring_runs_in_the_model_and_is_its_own_model():
    cfg = CFG.rewired("mlp_ladder")
    weights = build_model(CFG, seed=0).state_dict()
    tokens = torch.randint(0, CFG.vocab_size, (2, 7), generator=torch.Generator().manual_seed(0))
    toy, n_toy = cached_logits(cfg, weights, tokens, 4)
    std, _ = cached_logits(CFG, weights, tokens, 4)
    assert torch.isfinite(toy).all() and (toy - std).abs().max() > 1e-3  # a different dataflow, same weights
    # prefill + cached decode = one full forward
    full = build_model(cfg, state_dict=weights)(tokens)
    assert torch.allclose(toy, full, atol=1e-5)


def test_toy_wiring_on_two_ranks_matches_one_device():
    cfg = CFG.rewired("mlp_ladder")
    weights = build_model(CFG, seed=1).state_dict()
    tokens = torch.randint(0, CFG.vocab_size, (1, 6), generator=torch.Generator().manual_seed(1))
    one, _ = cached_logits(cfg, weights, tokens, 4)
    ranks = launch_local(toy_wiring.tp_worker, 2, cfg, weights, tokens, 4)
    (tp2, n), (tp2_b, _) = ranks
    assert torch.allclose(tp2, one, atol=1e-4) and torch.allclose(tp2_b, one, atol=1e-4)
    assert n == 2 * L * 3  # two all-reduces per layer, per step: the prefill and two decode steps


def test_toy_wiring_overlap_is_counted_by_the_tracer():
    ov = trace.step_overlap(CFG.rewired("mlp_ladder"))
    hidden = [o for o in ov if o["overlapped"]]
    # every MLP all-reduce but the last runs behind the next layer's attention; attention's all block
    assert len(ov) == 2 * L and len(hidden) == L - 1
    assert all(m.startswith("attn") for o in hidden for m in o["hidden_behind"])
    recs = trace.trace_wiring("mlp_ladder", n_layers=3)
    assert [r["all_reduce"] for r in recs] == ["blocking", "overlapped"] * 2 + ["blocking", "blocking"]


def test_toy_wiring_in_the_performance_model_sits_between_standard_and_ladder():
    t = {w: perfmodel.predict(preset("llama3-70B"), tp=8, wiring=w, link="pcie5-nop2p").decode_step_s
         for w in ("standard", "mlp_ladder", "ladder")}
    assert t["ladder"] < t["mlp_ladder"] < t["standard"]
