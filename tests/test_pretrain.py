"""ladder.pretrain: a run trained on 2 torchrun processes (FSDP2) equals the same run in one process, and
how a run executes does not change which run folder it is."""
import dataclasses

import pytest
import torch
from transformers import AutoTokenizer

from ladder import pretrain
from ladder.data import TokenBlocks
from ladder.train import TrainConfig

SIZE = {"name": "2L-d32", "n_layers": 2, "dim": 32, "n_heads": 4, "n_kv_heads": 2, "ffn_dim": 64}


@pytest.fixture(scope="module")
def tok(stories_dir):
    return AutoTokenizer.from_pretrained(stories_dir)


def blocks(n, seed):
    g = torch.Generator().manual_seed(seed)
    return TokenBlocks(torch.randint(0, 512, (n, 17), generator=g))


def test_two_torchrun_processes_with_fsdp_equal_one_process(tok, tmp_path):
    train, val = blocks(32, 0), blocks(8, 1)
    cfg = TrainConfig(max_steps=3, batch_size=4, lr=3e-3, warmup_steps=1, eval_every=3, eval_batches=2,
                      progress=False)
    one = pretrain.train_run(SIZE, "ladder", 0, train, val, dataclasses.replace(cfg, grad_accum=2), tok,
                             tmp_path / "one", device="cpu")
    two = pretrain.train_run(SIZE, "ladder", 0, train, val,
                             dataclasses.replace(cfg, fsdp=True, activation_checkpointing=True), tok,
                             tmp_path / "two", device="cpu", nproc=2)
    assert two["steps"] == one["steps"] == 3 and two["tokens"] == one["tokens"] == 3 * 8 * 16
    assert two["val_loss"] == pytest.approx(one["val_loss"], rel=1e-5)
    assert two["model"].config.wiring == "ladder"
    x = train.tokens[:2, :-1]
    with torch.no_grad():
        torch.testing.assert_close(two["model"](x), one["model"](x), atol=1e-4, rtol=1e-4)


def test_run_folder_depends_on_what_is_computed_not_how(tok, tmp_path):
    train, val = blocks(16, 0), blocks(4, 1)
    cfg = TrainConfig(max_steps=1, batch_size=4, warmup_steps=1, progress=False)
    a = pretrain.train_run(SIZE, "standard", 0, train, val, cfg, tok, tmp_path, device="cpu")
    b = pretrain.train_run(SIZE, "standard", 0, train, val, dataclasses.replace(cfg, activation_checkpointing=True,
                           progress_interval=1.0), tok, tmp_path, device="cpu")
    c = pretrain.train_run(SIZE, "standard", 0, train, val, dataclasses.replace(cfg, lr=1e-3), tok, tmp_path,
                           device="cpu")
    assert b["run_dir"] == a["run_dir"] and b.get("reused")
    assert c["run_dir"] != a["run_dir"]
