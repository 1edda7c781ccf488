
import pytest
import torch

from ladder import build_model, preset
from ladder.model import rope_inv_freq

WIRING_CONFIGS = {
    "standard": {}, "parallel": {}, "ladder": {}, "upper_bound": {},
    "hybrid": {"ladder_layers": 2},
}


def tiny(wiring="standard", **kw):
    return preset("tiny", wiring=wiring, **{**WIRING_CONFIGS.get(wiring, {}), **kw})


def tokens(batch=2, seq=12, vocab=256, seed=0):
    return torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("wiring", list(WIRING_CONFIGS))
def test_prefill_plus_cached_decode_equals_full_forward(wiring):
    model = build_model(tiny(wiring), seed=1)
    tok = tokens()
    with torch.inference_mode():
        full = model(tok)
        model.setup_cache(2, 32)
        steps = [model(tok[:, :7], torch.arange(7))]
        steps += [model(tok[:, i:i + 1], torch.tensor([i])) for i in range(7, tok.shape[1])]
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-5, atol=1e-5)


def weights(config):
    return build_model(config, seed=3).state_dict()


def logits(config, state, tok):
    with torch.inference_mode():
        return build_model(config, state_dict=state)(tok)


def test_hybrid_endpoints_equal_standard_and_ladder_exactly():
    state, tok = weights(tiny("standard")), tokens()
    standard = logits(tiny("standard"), state, tok)
    ladder = logits(tiny("ladder"), state, tok)
    assert torch.equal(logits(tiny("hybrid", ladder_layers=0), state, tok), standard)
    assert torch.equal(logits(tiny("hybrid", ladder_layers=4), state, tok), ladder)
    # a ladder that silently ran the standard dataflow would be caught here
    assert (ladder - standard).abs().max() > 1e-3
    mid = logits(tiny("hybrid", ladder_layers=2), state, tok)
    assert (mid - standard).abs().max() > 1e-3 and (mid - ladder).abs().max() > 1e-3


def test_ladder_dataflow_matches_reference_equations():
    """Layer l: attention reads everything but MLP(l-1); the MLP reads everything but attention(l)."""
    config = tiny("ladder")
    model = build_model(config, seed=5)
    tok = tokens(seq=6)
    with torch.no_grad():
        x = model.embed_tokens(tok)
        cos, sin = model.rope_cos[:6], model.rope_sin[:6]
        prev_attn = prev_mlp = torch.zeros_like(x)
        for blk in model.layers:  # ladder-residual.md, "Ladder, as executed"
            x = x + prev_attn
            a = blk.self_attn(blk.input_layernorm(x), cos=cos, sin=sin)
            x = x + prev_mlp
            m = blk.mlp(blk.post_attention_layernorm(x))
            prev_attn, prev_mlp = a, m
        expected = model.lm_head(model.norm(x + prev_attn + prev_mlp))
        torch.testing.assert_close(model(tok), expected, rtol=1e-6, atol=1e-6)


def test_hybrid_boundary_matches_two_stream_definition():
    """ladder-residual.md's hybrid: ladder layer (R, A) -> attn_stream = R + Attn(N1(A)),
    mlp_stream = attn_stream + MLP(N2(R)); the first ladder attention skips the last standard MLP."""
    config = tiny("hybrid", ladder_layers=2)
    model = build_model(config, seed=6)
    tok = tokens(seq=5)
    with torch.no_grad():
        cos, sin = model.rope_cos[:5], model.rope_sin[:5]
        attn = lambda b, h: b.self_attn(b.input_layernorm(h), cos=cos, sin=sin)
        mlp = lambda b, h: b.mlp(b.post_attention_layernorm(h))
        mlp_stream = attn_stream = model.embed_tokens(tok)
        for i, blk in enumerate(model.layers):
            if i < 2:  # standard
                attn_stream = mlp_stream + attn(blk, mlp_stream)
                mlp_stream = attn_stream + mlp(blk, attn_stream)
            else:
                R, A = mlp_stream, attn_stream
                attn_stream = R + attn(blk, A)
                mlp_stream = attn_stream + mlp(blk, R)
        expected = model.lm_head(model.norm(mlp_stream))
        torch.testing.assert_close(model(tok), expected, rtol=1e-5, atol=1e-5)


def test_parallel_has_one_norm_per_layer_and_param_count_matches():
    for wiring in WIRING_CONFIGS:
        config = tiny(wiring)
        model = build_model(config)
        n = sum(p.numel() for p in model.parameters())
        assert n == config.num_params(), wiring
    par = build_model(tiny("parallel"))
    assert all(b.post_attention_layernorm is None for b in par.layers)


def test_tied_embeddings_share_storage():
    model = build_model(preset("cpu-small", n_layers=1))
    assert model.lm_head.weight is model.embed_tokens.weight


def test_llama31_rope_scaling_matches_transformers():
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    config = preset("llama3.1-405B")
    hf = LlamaConfig(hidden_size=config.dim, num_attention_heads=config.n_heads, max_position_embeddings=131072,
                     rope_parameters={"rope_type": "llama3", "rope_theta": config.rope_theta, **config.rope_scaling})
    ref, _ = ROPE_INIT_FUNCTIONS["llama3"](hf, "cpu")
    torch.testing.assert_close(rope_inv_freq(config), ref)
    plain = rope_inv_freq(config.replace(rope_scaling=None))
    assert not torch.allclose(plain, ref)  # scaling changed something


def test_paper_presets_have_the_published_shapes():
    p = preset("llama3-70B")
    assert (p.n_layers, p.dim, p.n_heads, p.n_kv_heads, p.ffn_dim, p.vocab_size) == (80, 8192, 64, 8, 28672, 128256)
    assert 69e9 < p.num_params() < 72e9
    assert 400e9 < preset("llama3.1-405B").num_params() < 411e9  # 16 KV heads (paper), not 8: +4B
    assert 1.1e9 < preset("1B").num_params() < 1.3e9
    for name in ("llama3-70B", "llama3.1-405B", "codellama-34B", "llama3-8B"):
        preset(name).local_sizes(8)
    preset("llama3.1-405B").local_sizes(16)


def test_random_tp_model_allocates_only_its_shard():
    # build_model never materialises the full model: shapes are the local ones
    config = tiny()

    class FakeComm:
        size, rank = 2, 1
    model = build_model(config, FakeComm())
    blk = model.layers[0]
    assert blk.self_attn.q_proj.weight.shape == (config.dim // 2, config.dim)
    assert blk.self_attn.k_proj.weight.shape == (config.n_kv_heads * config.head_dim // 2, config.dim)
    assert blk.mlp.down_proj.weight.shape == (config.dim, config.ffn_dim // 2)
    assert model.embed_tokens.weight.shape == (config.vocab_size, config.dim)


@pytest.mark.parametrize("make, match", [
    (lambda: preset("no-such-model"), "unknown preset 'no-such-model'"),
    (lambda: preset("tiny", wiring="zigzag"), "unknown wiring 'zigzag'"),
    (lambda: preset("tiny", ladder_layers=2), "only meaningful with wiring='hybrid'"),
    (lambda: preset("tiny", wiring="hybrid", ladder_layers=9), "ladder_layers=9 must be between 0 and n_layers=4"),
    (lambda: preset("tiny", wiring="hybrid", ladder_layers=[1, 7]), r"indices \[7\] outside"),
    (lambda: preset("tiny", n_heads=3), "dim=64 is not divisible by n_heads=3"),
    (lambda: preset("tiny", n_kv_heads=3), "n_heads=4 is not a multiple of n_kv_heads=3"),
    (lambda: preset("tiny", bogus=1), "unknown ModelConfig field"),
    (lambda: preset("tiny").local_sizes(4), "n_kv_heads=2 is not divisible by the tensor-parallel size 4"),
    (lambda: preset("1B").local_sizes(16), "n_heads=24 is not divisible by the tensor-parallel size 16"),
    (lambda: preset("tiny", ffn_dim=130).local_sizes(4), "not divisible"),
])
def test_bad_configurations_raise_clear_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_inputs_raise_clear_errors():
    model = build_model(tiny())
    with pytest.raises(ValueError, match="tokens must be"):
        model(torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="exceeds config.max_seq_len"):
        model(torch.zeros(1, 300, dtype=torch.long))
    with pytest.raises(RuntimeError, match="setup_cache"):
        model(torch.zeros(1, 3, dtype=torch.long), torch.arange(3))
    with pytest.raises(ValueError, match="exceeds config.max_seq_len"):
        model.setup_cache(1, 1000)
