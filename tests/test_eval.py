"""ladder.eval: lm-eval over the offline task YAMLs on a tiny saved checkpoint; perplexity."""
import math

import pytest
import torch

from ladder import ModelConfig, build_model
from ladder.data import TokenBlocks, load_tokenizer
from ladder.eval import LOCAL_TASKS, evaluate, headline, local_task_names, perplexity
from ladder.tasks import loaders
from ladder.train import loss_fn, save_hf


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    tok = load_tokenizer("gpt2")
    cfg = ModelConfig(n_layers=2, dim=32, n_heads=4, n_kv_heads=2, ffn_dim=64, vocab_size=len(tok),
                      max_seq_len=64, tie_embeddings=True, wiring="ladder")
    return save_hf(build_model(cfg, seed=0), tmp_path_factory.mktemp("ckpt"), tok)


def test_every_paper_task_has_a_local_yaml():
    assert set(LOCAL_TASKS.values()) <= set(local_task_names())


def test_lm_eval_on_local_tasks_returns_metrics(checkpoint):
    scores = evaluate(checkpoint, ["arc_easy", "winogrande", "sciq", "wikitext", "lambada_openai"], limit=4,
                      batch_size=4, local=True)
    assert 0 <= scores["arc_easy"]["acc"] <= 1 and scores["arc_easy"]["n"] == 4
    assert 0 <= scores["winogrande"]["acc"] <= 1
    assert scores["sciq"]["substitute"] == "openbookqa" and scores["sciq"]["task"] == "ladder_openbookqa"
    assert scores["wikitext"]["word_perplexity"] > 1 and "bits_per_byte" in scores["wikitext"]
    assert "perplexity" in scores["lambada_openai"]
    h = headline(scores)
    assert h["arc_easy"] == pytest.approx(100 * scores["arc_easy"]["acc"])
    assert h["wikitext"] == scores["wikitext"]["word_perplexity"]


def test_a_hub_id_is_evaluated_from_its_downloaded_folder(checkpoint, monkeypatch, tmp_path):
    """The gpu profile names hub models (meta-llama/...): lm-eval gets the folder the hub download gives,
    while a missing local folder stays a clear error."""
    import huggingface_hub
    asked = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo, **kw: asked.append(repo) or str(checkpoint))
    by_id = evaluate("some-org/tiny-ladder", ["arc_easy"], limit=4, batch_size=4, local=True)
    assert asked == ["some-org/tiny-ladder"]
    assert by_id == evaluate(checkpoint, ["arc_easy"], limit=4, batch_size=4, local=True)
    with pytest.raises(FileNotFoundError, match="not a saved checkpoint"):
        evaluate(tmp_path / "missing", ["arc_easy"], limit=4, local=True)
    assert asked == ["some-org/tiny-ladder"]


def test_local_loaders_read_the_full_sets():
    hs = loaders.hellaswag()["test"]
    assert len(hs) == 10042 and all(len(c) == 4 for c in hs["choices"][:50])
    assert set(hs["gold"]) == {0, 1, 2, 3}
    arc = loaders.arc_challenge()["test"]
    assert len(arc) == 1172 and arc[0]["query"].startswith("Question:") and arc[0]["query"].endswith("\nAnswer:")
    pages = loaders.wikitext()["test"]["page"]
    assert 55 <= len(pages) <= 70 and pages[0].lstrip().startswith("= Robert Boulter =")


def test_bad_inputs_are_clear_errors(checkpoint, tmp_path):
    with pytest.raises(ValueError, match="no offline version"):
        evaluate(checkpoint, ["mmlu"], local=True)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        evaluate(tmp_path, ["arc_easy"], local=True)


def test_perplexity_is_exp_of_mean_loss():
    cfg = ModelConfig(n_layers=2, dim=32, n_heads=4, n_kv_heads=2, ffn_dim=64, vocab_size=50, max_seq_len=32)
    model = build_model(cfg, seed=0)
    blocks = TokenBlocks(torch.randint(0, 50, (5, 17), generator=torch.Generator().manual_seed(0)))
    x, y = blocks.inputs_targets()
    with torch.no_grad():
        expected = math.exp(loss_fn(model(x), y).item())
    assert perplexity(model, blocks, batch_size=2) == pytest.approx(expected, rel=1e-5)
    assert 30 < expected < 80  # a near-uniform random model: about the vocabulary size


def test_answer_longer_than_context_is_a_clear_error(tmp_path):
    tok = load_tokenizer("gpt2")
    cfg = ModelConfig(n_layers=1, dim=32, n_heads=4, n_kv_heads=2, ffn_dim=64, vocab_size=len(tok), max_seq_len=8)
    ckpt = save_hf(build_model(cfg, seed=0), tmp_path, tok)
    with pytest.raises(ValueError, match="longer than the model's context"):
        evaluate(ckpt, ["piqa"], limit=2, local=True)
