"""Hugging Face interoperability (issues 2 and 5).

* the pretrained stories260K checkpoint in the native runtime equals transformers' LlamaForCausalLM
  (logits and greedy continuation), at TP = 1 and TP = 2;
* Llama-3.1 rope scaling matches transformers;
* export (`to_hf` -> save_pretrained -> AutoModelForCausalLM.from_pretrained) round-trips every wiring;
* `convert(checkpoint, N)`: exact for N = 0, equal to the native hybrid for N > 0, generates with the KV
  cache like the native runtime, loads back into the native TP runtime, evaluates through lm-eval;
* bad checkpoints and impossible conversions fail with clear errors.
"""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, LlamaConfig, LlamaForCausalLM

from ladder import build_model, preset
from ladder.generate import generate
from ladder.hf import LadderLlamaForCausalLM, convert, load_pretrained, to_hf
from ladder.launch import launch_local

PROMPT = "Once upon a time, there was a little"
NEW_TOKENS = 24


@pytest.fixture(scope="module")
def stories(stories_dir):
    tok = AutoTokenizer.from_pretrained(stories_dir)
    ids = torch.tensor([tok(PROMPT).input_ids])
    ref = LlamaForCausalLM.from_pretrained(stories_dir, dtype=torch.float32).eval()
    return ref, ids


def hf_greedy(model, ids, n=NEW_TOKENS):
    with torch.no_grad():
        return model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, use_cache=True,
                              pad_token_id=0)


@pytest.fixture(scope="module")
def random_llama_dir(tmp_path_factory):
    """A random Llama with GQA, untied embeddings and Llama-3.1 rope scaling, saved as a HF checkpoint."""
    d = tmp_path_factory.mktemp("random_llama")
    cfg = LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=160, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      tie_word_embeddings=False,
                      rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                       "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                       "original_max_position_embeddings": 32})
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():  # non-trivial norm gains, so a mis-mapped norm would show
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    model.save_pretrained(d)
    return d


def tokens(vocab, batch=2, seq=40, seed=0):
    return torch.randint(3, vocab, (batch, seq), generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------------------------- native == HF
def test_stories260k_native_standard_matches_transformers(stories, stories_dir):
    ref, ids = stories
    native = load_pretrained(stories_dir)
    assert native.config.wiring == "standard" and native.config.n_kv_heads == 4
    with torch.no_grad():
        torch.testing.assert_close(native(ids), ref(ids).logits, rtol=1e-5, atol=1e-5)
    ours, _ = generate(native, ids, NEW_TOKENS)
    assert torch.equal(ours, hf_greedy(ref, ids))


def _tp_stories(comm, path, converted_path, ids):
    """On one rank: logits and greedy continuation of stories260K and of its converted hybrid."""
    out = {}
    for name, p in (("standard", path), ("hybrid", converted_path)):
        model = load_pretrained(p, comm)
        with torch.no_grad():
            logits = model(ids)
        out[name] = (logits, generate(model, ids, NEW_TOKENS)[0], model.config.wiring, comm.count())
    return out


def test_stories260k_at_tp2_matches_transformers(stories, stories_dir, tmp_path):
    ref, ids = stories
    hybrid = convert(stories_dir, ladder_layers=3)
    hybrid.save_pretrained(tmp_path)
    ranks = launch_local(_tp_stories, 2, str(stories_dir), str(tmp_path), ids)
    with torch.no_grad():
        expected = {"standard": (ref(ids).logits, hf_greedy(ref, ids)),
                    "hybrid": (hybrid(ids).logits, hf_greedy(hybrid, ids))}
    for rank in ranks:
        for name, (logits, greedy) in expected.items():
            got_logits, got_greedy, wiring, launched = rank[name]
            assert wiring == name and launched > 0  # really sharded, really communicating
            torch.testing.assert_close(got_logits, logits, rtol=1e-5, atol=1e-5)
            assert torch.equal(got_greedy, greedy)


def test_llama31_rope_scaling_matches_transformers(random_llama_dir):
    ref = LlamaForCausalLM.from_pretrained(random_llama_dir).eval()
    native = load_pretrained(random_llama_dir)
    assert native.config.rope_scaling["factor"] == 8.0
    tok = tokens(300, seq=100)  # longer than original_max_position_embeddings
    with torch.no_grad():
        torch.testing.assert_close(native(tok), ref(tok).logits, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------- export
@pytest.mark.parametrize("wiring,extra", [("standard", {}), ("parallel", {}), ("ladder", {}),
                                          ("hybrid", {"ladder_layers": 2}), ("hybrid", {"ladder_layers": [0, 2]})])
def test_to_hf_save_pretrained_round_trip(wiring, extra, tmp_path):
    config = preset("tiny", wiring=wiring, **extra)
    native = build_model(config, seed=4)
    tok = tokens(config.vocab_size, seq=10)
    to_hf(native).save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    if wiring == "standard":
        assert type(loaded) is LlamaForCausalLM  # a plain Llama checkpoint, loadable without ladder
        assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "llama"
    else:
        assert type(loaded) is LadderLlamaForCausalLM
        assert loaded.config.wiring == wiring
    back = load_pretrained(tmp_path)
    assert back.config == config
    with torch.no_grad():
        expected = native(tok)
        torch.testing.assert_close(loaded(tok).logits, expected, rtol=1e-5, atol=1e-5)
        assert torch.equal(back(tok), expected)


# --------------------------------------------------------------------------------------------- convert
def test_convert_zero_ladder_layers_is_exactly_the_source(stories, stories_dir, random_llama_dir):
    ref, ids = stories
    with torch.no_grad():
        assert torch.equal(convert(stories_dir, ladder_layers=0)(ids).logits, ref(ids).logits)
        rand_ref = LlamaForCausalLM.from_pretrained(random_llama_dir).eval()
        tok = tokens(300)
        assert torch.equal(convert(random_llama_dir, ladder_layers=0)(tok).logits, rand_ref(tok).logits)


@pytest.mark.parametrize("n", [1, 3, 5, [1, 3]])
def test_convert_equals_native_hybrid(stories, stories_dir, n):
    ref, ids = stories
    hybrid = convert(stories_dir, ladder_layers=n)
    native = load_pretrained(stories_dir, wiring="hybrid", ladder_layers=n)
    with torch.no_grad():
        got = hybrid(ids).logits
        torch.testing.assert_close(got, native(ids), rtol=1e-5, atol=1e-5)
        assert (got - ref(ids).logits).abs().max() > 1e-2  # the rewiring really changes the model


def test_converted_generation_with_kv_cache_matches_native(stories, stories_dir, tmp_path):
    _, ids = stories
    hybrid = convert(stories_dir, ladder_layers=3)
    hybrid.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert type(loaded) is LadderLlamaForCausalLM and loaded.config.ladder_layers == 3
    native, _ = generate(load_pretrained(stories_dir, wiring="hybrid", ladder_layers=3), ids, NEW_TOKENS)
    assert torch.equal(hf_greedy(hybrid, ids), native)
    assert torch.equal(hf_greedy(loaded, ids), native)
    # the cache matters: a cached decode must equal recomputing the whole prefix each step
    with torch.no_grad():
        uncached = hybrid.generate(ids, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
                                   use_cache=False, pad_token_id=0)
    assert torch.equal(uncached, native)


def test_converted_random_llama_round_trips_and_matches_native(random_llama_dir, tmp_path):
    hybrid = convert(random_llama_dir, ladder_layers=2)
    hybrid.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    native = load_pretrained(tmp_path)  # the native runtime reads the converted checkpoint's wiring
    assert native.config.wiring == "hybrid" and native.config.ladder_layer_indices() == (2, 3)
    tok = tokens(300)
    with torch.no_grad():
        assert torch.equal(loaded(tok).logits, hybrid(tok).logits)
        torch.testing.assert_close(native(tok), hybrid(tok).logits, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------- lm-eval
TINY_TASK = """task: tiny_stories_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{query}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{gold}}}}"
metric_list:
  - metric: acc
"""

DOCS = [
    {"query": "Once upon a time, there was a little", "choices": [" girl", " table", " seven"], "gold": 0},
    {"query": "Lily wanted to play with the", "choices": [" ball", " because", " sad"], "gold": 0},
    {"query": "The sun was shining and the sky was", "choices": [" went", " blue", " dog"], "gold": 1},
    {"query": "Tom was very happy. He said, \"Thank", "choices": [" car", " tree", " you"], "gold": 2},
]


def lm_eval_logliks(pretrained, task_dir, tokenizer):
    import lm_eval
    from lm_eval.tasks import TaskManager
    out = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={pretrained},tokenizer={tokenizer},dtype=float32",
                                  tasks=["tiny_stories_mc"], task_manager=TaskManager(include_path=str(task_dir),
                                                                                     include_defaults=False),
                                  batch_size=4, device="cpu", log_samples=True, random_seed=0, numpy_random_seed=0,
                                  torch_random_seed=0, fewshot_random_seed=0)
    acc = out["results"]["tiny_stories_mc"]["acc,none"]
    samples = sorted(out["samples"]["tiny_stories_mc"], key=lambda s: s["doc_id"])
    return acc, torch.tensor([[r[0][0] for r in s["resps"]] for s in samples])


def test_converted_model_evaluates_through_lm_eval(stories_dir, tmp_path):
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    (tmp_path / "tiny.yaml").write_text(TINY_TASK.format(data=data))
    for n in (0, 3):
        convert(stories_dir, ladder_layers=n).save_pretrained(tmp_path / f"hybrid{n}")
    acc_src, ll_src = lm_eval_logliks(stories_dir, tmp_path, stories_dir)
    acc0, ll0 = lm_eval_logliks(tmp_path / "hybrid0", tmp_path, stories_dir)
    acc3, ll3 = lm_eval_logliks(tmp_path / "hybrid3", tmp_path, stories_dir)
    assert 0.0 <= acc3 <= 1.0 and acc0 == acc_src
    torch.testing.assert_close(ll0, ll_src)  # zero ladder layers: the source model, through lm-eval too
    assert (ll3 - ll_src).abs().max() > 1e-2  # lm-eval really ran the rewired model


# --------------------------------------------------------------------------------------------- errors
def test_a_hub_id_that_cannot_be_downloaded_is_a_clear_error(monkeypatch):
    import huggingface_hub
    with pytest.raises(FileNotFoundError, match=r"could not get 'no-org/no-model' from the Hugging Face hub "
                                                r"\(\w+Error: .*licence accepted"):
        load_pretrained("no-org/no-model")  # offline (as in CI) or online: no such repo either way

    def refuse(repo, **kw):
        raise PermissionError(f"Access to model {repo} is restricted")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)
    with pytest.raises(FileNotFoundError, match=r"\(PermissionError: Access to model meta-llama/x is restricted\)"):
        load_pretrained("meta-llama/x")


def test_convert_refuses_a_non_llama(tmp_path):
    GPT2Config(n_layer=2, n_embd=32, n_head=2).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="Llama-architecture.*gpt2"):
        convert(tmp_path, ladder_layers=1)
    with pytest.raises(ValueError, match="not a Llama-architecture checkpoint"):
        load_pretrained(tmp_path)


def test_convert_refuses_malformed_checkpoints(stories_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        convert(tmp_path / "does-not-exist", ladder_layers=1)
    no_config = tmp_path / "no_config"
    no_config.mkdir()
    (no_config / "model.safetensors").write_bytes((stories_dir / "model.safetensors").read_bytes())
    with pytest.raises(FileNotFoundError, match="no config.json"):
        convert(no_config, ladder_layers=1)
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((stories_dir / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="no \\*.safetensors"):
        convert(no_weights, ladder_layers=1)
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "config.json").write_text((stories_dir / "config.json").read_text())
    state = load_file(str(stories_dir / "model.safetensors"))
    dropped = next(k for k in state if k.endswith("layers.4.mlp.down_proj.weight"))
    save_file({k: v for k, v in state.items() if k != dropped}, str(partial / "model.safetensors"))
    with pytest.raises(ValueError, match="missing.*layers.4.mlp.down_proj"):
        convert(partial, ladder_layers=1)
    with pytest.raises(ValueError, match="missing.*layers.4.mlp.down_proj"):
        load_pretrained(partial)


@pytest.mark.parametrize("n,match", [(6, "only 5 layers"), (-1, "only 5 layers|between 0 and"),
                                     ([2, 7], "outside 0..4")])
def test_convert_refuses_more_ladder_layers_than_the_model_has(stories_dir, n, match):
    with pytest.raises(ValueError, match=match):
        convert(stories_dir, ladder_layers=n)
    with pytest.raises(ValueError, match="between 0 and n_layers=5|outside 0..4"):
        load_pretrained(stories_dir, wiring="hybrid", ladder_layers=n)
