import pytest
import torch

from ladder import build_model, preset
from ladder.generate import compiled_steps, generate


def prompt(batch=2, n=8, seed=0):
    return torch.randint(0, 256, (batch, n), generator=torch.Generator().manual_seed(seed))


def test_greedy_generation_equals_argmax_of_full_forward():
    model = build_model(preset("tiny", wiring="ladder"), seed=0)
    out, timing = generate(model, prompt(), 6)
    with torch.no_grad():  # each generated token is the argmax of a full (uncached) forward over its prefix
        for i in range(8, 14):
            assert torch.equal(model(out[:, :i])[:, -1].argmax(-1), out[:, i])
    assert timing.new_tokens == 6 and timing.tokens_per_s > 0


def test_sampling_is_reproducible_by_seed():
    model = build_model(preset("tiny"), seed=0)
    a, _ = generate(model, prompt(), 10, temperature=1.0, top_k=20, seed=3)
    b, _ = generate(model, prompt(), 10, temperature=1.0, top_k=20, seed=3)
    c, _ = generate(model, prompt(), 10, temperature=1.0, top_k=20, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_compiled_steps_match_eager():
    """The torch.compile path the GPU benchmark uses (fullgraph), here with inductor on CPU."""
    model = build_model(preset("tiny", wiring="ladder"), seed=0)
    eager, _ = generate(model, prompt(), 6)
    pre, dec = compiled_steps(mode="default")
    compiled, _ = generate(model, prompt(), 6, prefill_fn=pre, decode_fn=dec)
    assert torch.equal(compiled, eager)


def test_bad_prompt_shape_is_a_clear_error():
    model = build_model(preset("tiny"), seed=0)
    with pytest.raises(ValueError, match="prompt must be"):
        generate(model, torch.zeros(5, dtype=torch.long), 3)


def test_compiled_top_k_sampling_runs_fullgraph_and_repeats():
    """Top-k sampling inside the compiled step: no torch.Generator in the graph (fullgraph=True would
    refuse torch.multinomial(..., generator=...)); a seeded run repeats exactly and equals eager."""
    model = build_model(preset("tiny"), seed=0)
    pre, dec = compiled_steps(mode="default")
    kw = dict(temperature=1.0, top_k=20, seed=5)
    a, _ = generate(model, prompt(), 6, prefill_fn=pre, decode_fn=dec, **kw)
    b, _ = generate(model, prompt(), 6, prefill_fn=pre, decode_fn=dec, **kw)
    eager, _ = generate(model, prompt(), 6, **kw)
    assert torch.equal(a, b) and torch.equal(a, eager)


def test_noise_sampling_draws_from_the_top_k_distribution():
    from ladder.generate import draw_noise, sample
    logits = torch.tensor([[[0.0, 1.0, 2.0, -5.0]]]).expand(20000, 1, 4)
    gen = torch.Generator().manual_seed(0)
    tok = sample(logits, temperature=1.0, top_k=3, noise=draw_noise(20000, 4, gen, "cpu"))
    freq = torch.bincount(tok, minlength=4).float() / 20000
    p = torch.softmax(torch.tensor([0.0, 1.0, 2.0]), 0)
    assert freq[3] == 0  # outside the top 3: never drawn
    torch.testing.assert_close(freq[:3], p, atol=0.015, rtol=0)
    with pytest.raises(ValueError, match="noise"):
        sample(logits, temperature=1.0)
