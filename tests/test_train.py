"""ladder.train: one step learns for every wiring, resume == uninterrupted, HF export reloads."""
import json
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaForCausalLM

from ladder import ModelConfig, build_model
from ladder.data import TokenBlocks
from ladder.paths import display_path
from ladder.train import TrainConfig, loss_fn, lr_at, param_groups, read_metrics, save_hf, train

WIRINGS = ["standard", "parallel", "ladder"]


def tiny(wiring, **kw):
    return ModelConfig(n_layers=2, dim=32, n_heads=4, n_kv_heads=2, ffn_dim=64, vocab_size=97, max_seq_len=32,
                       wiring=wiring, **kw)


def blocks(n=16, seq_len=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    # a learnable stream: a repeating pattern with a little noise
    base = torch.arange(n * (seq_len + 1)) % 13
    noise = torch.randint(0, 97, base.shape, generator=g) * (torch.rand(base.shape, generator=g) < 0.1)
    return TokenBlocks(((base + noise) % 97).view(n, seq_len + 1))


@pytest.mark.parametrize("wiring", WIRINGS)
def test_one_step_reduces_loss(wiring, tmp_path):
    torch.manual_seed(0)
    data = blocks(n=4)
    model = build_model(tiny(wiring), seed=0)
    x, y = data.inputs_targets()
    with torch.no_grad():
        before = loss_fn(model(x), y).item()
    cfg = TrainConfig(max_steps=1, batch_size=4, lr=1e-2, warmup_steps=1, progress=False, device="cpu")
    summary = train(model, data, None, cfg, tmp_path)
    with torch.no_grad():
        after = loss_fn(model(x), y).item()
    assert summary["train_loss"] == pytest.approx(before, rel=1e-5)  # the logged loss is the pre-step loss
    assert after < before - 0.01


def test_wirings_start_from_the_same_weights():
    a, b = build_model(tiny("standard"), seed=3), build_model(tiny("ladder"), seed=3)
    assert all(torch.equal(p, b.state_dict()[k]) for k, p in a.state_dict().items())


def test_resume_continues_the_same_trajectory(tmp_path):
    cfg = TrainConfig(max_steps=6, batch_size=4, grad_accum=2, lr=3e-3, warmup_steps=2, ckpt_every=3,
                      keep_checkpoints=5, eval_every=3, eval_batches=2, progress=False, device="cpu")
    data, val = blocks(n=24), blocks(n=8, seed=1)
    full = tmp_path / "full"
    train(build_model(tiny("ladder"), seed=0), data, val, cfg, full)
    # "kill" the run after step 3: keep only that checkpoint (and the log that ran further)
    part = tmp_path / "part"
    shutil.copytree(full, part)
    shutil.rmtree(part / "checkpoints" / "step_000006")
    # and a later save was killed half-way: its .tmp folder is not a checkpoint
    (part / "checkpoints" / "step_000006.tmp").mkdir()
    resumed_model = build_model(tiny("ladder"), seed=123)  # different init: weights must come from the checkpoint
    train(resumed_model, data, val, cfg, part)
    m_full, m_part = read_metrics(full), read_metrics(part)
    assert [m["step"] for m in m_part] == list(range(1, 7))
    for a, b in zip(m_full, m_part):
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-6)
        assert b["lr"] == pytest.approx(a["lr"], abs=1e-12)
        assert b.get("val_loss", 0) == pytest.approx(a.get("val_loss", 0), abs=1e-6)
    assert m_full[-1]["tokens"] == 6 * 4 * 2 * 16


def test_lr_schedule_and_weight_decay_groups():
    cfg = TrainConfig(max_steps=100, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(100, cfg) == pytest.approx(0.1) and 0.1 < lr_at(55, cfg) < 1.0
    model = build_model(tiny("standard", tie_embeddings=True))
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(p.dim() == 2 and "embed" not in names[id(p)] for p in decay["params"])
    assert {names[id(p)] for p in no_decay["params"]} >= {"embed_tokens.weight", "norm.weight"}


@pytest.mark.parametrize("wiring", WIRINGS)
def test_saved_checkpoint_reloads_with_same_logits(wiring, tmp_path):
    import ladder.hf  # noqa: F401  registers LadderLlamaForCausalLM
    model = build_model(tiny(wiring), seed=1)
    with torch.no_grad():  # move off the init so a silently re-initialised reload would differ
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    save_hf(model, tmp_path)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert (type(hf) is LlamaForCausalLM) == (wiring == "standard")
    assert json.loads((tmp_path / "config.json").read_text()).get("wiring", "standard") == wiring
    x = blocks(n=2).tokens[:, :-1]
    with torch.no_grad():
        torch.testing.assert_close(hf(x).logits, model(x), atol=1e-5, rtol=1e-5)


def _ddp_worker(comm, data, out_dir):
    torch.manual_seed(0)
    cfg = TrainConfig(max_steps=3, batch_size=4, grad_accum=1, lr=3e-3, warmup_steps=1, progress=False, device="cpu")
    model = build_model(tiny("ladder"), seed=0)  # replicated (no TP): torch's DDP splits the batches
    train(model, data, None, cfg, out_dir)
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_ddp_equals_gradient_accumulation(tmp_path):
    """2 data-parallel ranks x 1 micro-batch == 1 process x 2 accumulated micro-batches (same batches)."""
    from ladder.launch import launch_local
    data = blocks(n=24)
    ranks = launch_local(_ddp_worker, 2, data, str(tmp_path / "ddp"))
    single = build_model(tiny("ladder"), seed=0)
    cfg = TrainConfig(max_steps=3, batch_size=4, grad_accum=2, lr=3e-3, warmup_steps=1, progress=False, device="cpu")
    train(single, data, None, cfg, tmp_path / "single")
    for k, v in single.state_dict().items():
        torch.testing.assert_close(ranks[0][k], v, atol=2e-6, rtol=1e-5)
        torch.testing.assert_close(ranks[1][k], v, atol=2e-6, rtol=1e-5)
    ddp_log, single_log = read_metrics(tmp_path / "ddp"), read_metrics(tmp_path / "single")
    assert [m["tokens"] for m in ddp_log] == [m["tokens"] for m in single_log]
    assert [m["loss"] for m in ddp_log] == pytest.approx([m["loss"] for m in single_log], abs=1e-5)


def test_finished_run_is_reused_not_retrained(tmp_path):
    cfg = TrainConfig(max_steps=2, batch_size=4, lr=3e-3, warmup_steps=1, progress=False, device="cpu")
    data = blocks(n=8)
    first = train(build_model(tiny("parallel"), seed=0), data, None, cfg, tmp_path)
    again_model = build_model(tiny("parallel"), seed=99)
    again = train(again_model, data, None, cfg, tmp_path)
    assert again["reused"] and again["train_loss"] == first["train_loss"] and again["tokens"] == first["tokens"]
    assert len(read_metrics(tmp_path)) == 2
    trained = build_model(tiny("parallel"), seed=0)
    train(trained, data, None, cfg, tmp_path / "fresh")
    assert all(torch.equal(p, trained.state_dict()[k]) for k, p in again_model.state_dict().items())


def test_reused_or_resumed_run_names_the_code_that_changed_since_it_started(tmp_path, monkeypatch, capsys):
    """A run's folder is keyed by its parameters only: reusing it records which training files changed since
    the commit the run started from (kept in train_config.json, also across a resume), and checks the run
    against this code; resuming it says so."""
    import ladder.train as lt
    monkeypatch.setattr(lt, "git_commit", lambda: "aaaaaaaaaaaa")
    asked = []
    monkeypatch.setattr(lt, "code_changed_since", lambda c, paths: asked.append(c) or paths_asked.append(paths) or [])
    paths_asked = []
    cfg = TrainConfig(max_steps=4, batch_size=4, lr=3e-3, warmup_steps=1, ckpt_every=2, keep_checkpoints=5,
                      progress=False, device="cpu")
    data = blocks(n=8)
    first = train(build_model(tiny("ladder"), seed=0), data, None, cfg, tmp_path)
    assert json.loads((tmp_path / "train_config.json").read_text())["git_commit"] == "aaaaaaaaaaaa"
    assert asked == [] and "note:" not in capsys.readouterr().out  # a fresh run: nothing to compare
    again = train(build_model(tiny("ladder"), seed=0), data, None, cfg, tmp_path)
    assert asked == ["aaaaaaaaaaaa"] and "code_changed" not in again  # unchanged code: nothing to check
    # what is compared: the training code and what it imports, not the rest of the package
    assert {"ladder/train.py", "ladder/model.py", "ladder/data.py"} <= set(paths_asked[0])
    assert not {"ladder/adapt.py", "ladder/speedup.py"} & set(paths_asked[0])
    monkeypatch.setattr(lt, "code_changed_since", lambda c, paths: [f"ladder/m{i}.py" for i in range(4)])
    model = build_model(tiny("ladder"), seed=0)
    reused = train(model, data, None, cfg, tmp_path)
    assert reused["reused"] and reused["train_loss"] == first["train_loss"]
    changed = reused["code_changed"]
    assert changed["trained_at"] == "aaaaaaaaaaaa" and changed["files"][0] == "ladder/m0.py"
    # this code trains the run exactly as it was trained (on CPU: identical losses), every step of a short run
    assert changed["check"] == {"steps": 4, "max_loss_diff": 0.0, "max_lr_rel_diff": pytest.approx(0, abs=1e-15),
                                "same": True}
    # the check trained `model` in place; what the caller gets is still the run's final weights
    final = lt._checkpoint_weights(lt._checkpoints(tmp_path)[-1], model)
    assert all(torch.equal(v, final[k]) for k, v in model.state_dict().items())
    out = capsys.readouterr()
    assert "note:" not in out.out and out.err == ""  # reported by the chapter, once (reuse_report); no progress bar
    # resumed at a later commit: the note says so, and the run keeps the commit it started from
    shutil.rmtree(tmp_path / "checkpoints" / "step_000004")
    monkeypatch.setattr(lt, "git_commit", lambda: "bbbbbbbbbbbb")
    assert not train(build_model(tiny("ladder"), seed=0), data, None, cfg, tmp_path).get("reused")
    out = capsys.readouterr().out
    assert "resuming" in out and "aaaaaaaaaa" in out and "ladder/m0.py, ladder/m1.py, ladder/m2.py and 1 more" in out
    assert json.loads((tmp_path / "train_config.json").read_text())["git_commit"] == "aaaaaaaaaaaa"


def test_reuse_check_catches_code_that_trains_differently(tmp_path, monkeypatch):
    """Reused under changed code that no longer trains the same run: the check says so and the report names
    the run; a changed schedule shows in the logged learning rates too."""
    import ladder.train as lt
    monkeypatch.setattr(lt, "code_changed_since", lambda c, paths: None)
    cfg = TrainConfig(max_steps=12, batch_size=4, lr=3e-3, warmup_steps=2, progress=False, device="cpu")
    data = blocks(n=8)
    train(build_model(tiny("standard"), seed=0), data, None, cfg, tmp_path)
    monkeypatch.setattr(lt, "code_changed_since", lambda c, paths: ["ladder/train.py"])
    monkeypatch.setattr(lt, "loss_fn", lambda logits, y: loss_fn(logits, y) * 1.01)  # a "changed" loss
    bad = train(build_model(tiny("standard"), seed=0), data, None, cfg, tmp_path)["code_changed"]["check"]
    assert bad["steps"] == lt.REUSE_CHECK_STEPS and bad["max_loss_diff"] > 0.04 and not bad["same"]
    assert bad["max_lr_rel_diff"] < 1e-12  # the schedule itself did not change
    monkeypatch.setattr(lt, "loss_fn", loss_fn)
    monkeypatch.setattr(lt, "lr_at", lambda step, c: lr_at(step, c) * (1 if step < 10 else 0.5))  # late steps only
    late = train(build_model(tiny("standard"), seed=0), data, None, cfg, tmp_path)
    check = late["code_changed"]["check"]
    assert check["max_loss_diff"] == 0 and check["max_lr_rel_diff"] == pytest.approx(1.0) and not check["same"]
    # the chapter's report names the run that is not what this code trains
    assert f" {display_path(tmp_path)} is NOT what this code trains: " in lt.reuse_report([late])


def test_reuse_check_of_a_run_with_an_empty_log_names_the_run(tmp_path):
    from ladder.train import reuse_check
    cfg = TrainConfig(max_steps=2, batch_size=4, lr=3e-3, warmup_steps=1, progress=False, device="cpu")
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(ValueError) as err:
        reuse_check(build_model(tiny("standard"), seed=0), blocks(n=8), cfg, tmp_path)
    assert str(err.value) == f"{display_path(tmp_path)}: no logged step to compare with (metrics.jsonl is empty)"
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 1.0, "lr": 3e-3}) + "\n")
    assert reuse_check(build_model(tiny("standard"), seed=0), blocks(n=8), cfg, tmp_path)["steps"] == 1  # one is enough


def test_train_until_stops_early_on_the_full_schedule(tmp_path):
    cfg = TrainConfig(max_steps=10, batch_size=4, lr=3e-3, warmup_steps=2, progress=False, device="cpu")
    data = blocks(n=8)
    train(build_model(tiny("ladder"), seed=0), data, None, cfg, tmp_path / "full")
    train(build_model(tiny("ladder"), seed=0), data, None, cfg, tmp_path / "part", until=3)
    full, part = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "part")
    assert [r["step"] for r in part] == [1, 2, 3]
    assert [(r["loss"], r["lr"]) for r in part] == [(r["loss"], r["lr"]) for r in full[:3]]
    assert not (tmp_path / "part" / "checkpoints").exists()  # stopped early: no final checkpoint


def test_compare_logs_rule_and_its_thresholds():
    from ladder.train import REUSE_CHECK_LR_RTOL, REUSE_CHECK_STEPS, REUSE_CHECK_TOL, compare_logs
    assert (REUSE_CHECK_STEPS, REUSE_CHECK_TOL, REUSE_CHECK_LR_RTOL) == (8, 1e-3, 1e-9)
    cfg = TrainConfig(max_steps=4, lr=2.0, warmup_steps=1)
    logged = [{"step": s, "loss": 5.0, "lr": 2.0 * lr_at(s - 1, cfg)} for s in (1, 2, 3, 4)]
    def again(diff):
        return [{"step": 1, "loss": 5.0}, {"step": 2, "loss": 5.0 + diff}]
    assert compare_logs(again(0.0), logged, cfg) == {"steps": 2, "max_loss_diff": 0.0, "max_lr_rel_diff": 0.0,
                                                     "same": True}
    assert compare_logs(again(0.0009765625), logged, cfg)["same"]          # 2**-10 < 1e-3: still the same run
    assert not compare_logs(again(0.00103515625), logged, cfg)["same"]     # just above
    assert not compare_logs(again(-0.00103515625), logged, cfg)["same"]    # either direction
    shifted = [dict(r, lr=r["lr"] * (1 + 5e-10)) if r["step"] == 4 else r for r in logged]
    assert compare_logs(again(0.0), shifted, cfg)["same"]
    shifted = [dict(r, lr=r["lr"] * (1 + 2e-9)) if r["step"] == 4 else r for r in logged]
    assert not compare_logs(again(0.0), shifted, cfg)["same"]
    # each tolerance itself still counts as the same run (set to values whose differences are exact in binary)
    import ladder.train as lt
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(lt, "REUSE_CHECK_TOL", 2.0 ** -10)
        mp.setattr(lt, "REUSE_CHECK_LR_RTOL", 2.0 ** -20)
        flat = TrainConfig(max_steps=100, lr=1.0, warmup_steps=0)  # lr_at(0) == 1.0 exactly
        log = [{"step": 1, "loss": 0.0, "lr": 1.0 + 2.0 ** -20}]
        assert compare_logs([{"step": 1, "loss": 2.0 ** -10}], log, flat)["same"]
        assert not compare_logs([{"step": 1, "loss": 2.0 ** -10 + 2.0 ** -30}], log, flat)["same"]
        assert not compare_logs([{"step": 1, "loss": 0.0}], [dict(log[0], lr=1.0 + 2.0 ** -19)], flat)["same"]
    zero = TrainConfig(max_steps=4, lr=0.0, warmup_steps=1)  # a zero schedule: compared absolutely
    assert compare_logs(again(0.0), [dict(r, lr=0.0) for r in logged], zero)["same"]
    assert not compare_logs(again(0.0), logged, zero)["same"]


def _summary(reused=True, check=None, trained_at="207a133fc7aa", files=("ladder/model.py",), run="runs/x"):
    s = {"reused": reused}
    if trained_at:
        s["code_changed"] = {"run": run, "trained_at": trained_at, "files": list(files), "check": check}
    return s


def test_reuse_report_says_how_many_runs_were_reused_and_what_the_check_found():
    from ladder.train import reuse_report
    same = {"steps": 8, "max_loss_diff": 0.0, "max_lr_rel_diff": 0.0, "same": True}
    assert reuse_report([{"train_loss": 1.0}]) is None
    assert reuse_report([_summary(trained_at=None), {}]) == ("1 of 2 runs reused from earlier executions with the "
                                                             "same parameters: the code that trains has not changed "
                                                             "since they were trained.")
    text = reuse_report([_summary(check=same), _summary(check=same, trained_at="670e082edaff",
                                                        files=("ladder/data.py", "ladder/model.py"))])
    assert text == ("2 of 2 runs reused from earlier executions with the same parameters; 2 were trained at earlier "
                    "commits (207a133fc7, 670e082eda) and the code that trains has changed since (ladder/data.py, "
                    "ladder/model.py). Retraining the first 8 steps of each with this code gives the logged losses "
                    "exactly (the check allows 0.001), and their logged learning rates follow this code's schedule.")
    close = dict(same, max_loss_diff=2.5e-4)
    assert " gives the logged losses within 2.5e-04 nats (the check allows " in reuse_report(
        [_summary(check=same), _summary(check=close)])
    assert "1 was trained at an earlier commit (207a133fc7)" in reuse_report([_summary(check=same), {}])
    bad = dict(same, max_loss_diff=0.05, max_lr_rel_diff=0.5, same=False)
    text = reuse_report([_summary(check=same), _summary(check=bad, run="runs/y"), _summary(check=None)])
    assert text.endswith(" Retraining the first 8 steps of 1 of them with this code gives the logged losses exactly "
                         "(the check allows 0.001), and their logged learning rates follow this code's schedule. "
                         "runs/y is NOT what this code trains: its first 8 steps differ by up to 0.05 nats (learning "
                         "rate: 5.0e-01 relative); delete that folder to retrain it. 1 could not be checked (trained "
                         "on several processes).")


def test_saved_checkpoint_carries_the_tokenizers_special_tokens(tmp_path):
    from ladder.data import train_tokenizer
    tok = train_tokenizer(["hello world, a small corpus of text."] * 50, vocab_size=300)
    model = build_model(tiny("standard").replace(vocab_size=len(tok)), seed=1)
    save_hf(model, tmp_path, tokenizer=tok)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert tok.eos_token_id is not None
    assert cfg["eos_token_id"] == tok.eos_token_id



def _fsdp_worker(comm, data, val, out_dir, config, activation_checkpointing):
    """FSDP2 over 2 gloo ranks, 4 steps, a checkpoint after every step."""
    from ladder.train import full_state
    model = build_model(config, seed=0)
    train(model, data, val, fsdp_cfg(fsdp=True, activation_checkpointing=activation_checkpointing), out_dir)
    save_hf(model, out_dir / "hf")  # every rank calls: the shards are gathered to rank 0, which writes
    return full_state(model)[0]  # rank 0: the full weights; rank 1: {}


def fsdp_cfg(**kw):
    return TrainConfig(max_steps=4, batch_size=4, lr=3e-3, warmup_steps=1, ckpt_every=1, keep_checkpoints=10,
                       eval_every=2, eval_batches=3, progress=False, device="cpu", **kw)


@pytest.mark.parametrize("wiring,tied,activation_checkpointing", [("hybrid", False, True), ("ladder", True, False)])
def test_fsdp_equals_gradient_accumulation_and_resumes_in_one_process(wiring, tied, activation_checkpointing,
                                                                      tmp_path):
    """Sharded training (FSDP2, 2 ranks x 1 micro-batch) == 1 process accumulating 2 micro-batches, and
    its checkpoints are full weights by name: a single process resumes them on the same trajectory."""
    from ladder.launch import launch_local
    config = tiny(wiring, tie_embeddings=tied, **({"ladder_layers": 1} if wiring == "hybrid" else {}))
    data, val = blocks(n=24), blocks(n=12, seed=1)  # 3 validation batches: one rank evaluates 2, the other 1
    fsdp = launch_local(_fsdp_worker, 2, data, val, tmp_path / "fsdp", config, activation_checkpointing)
    assert fsdp[1] == {} and set(fsdp[0]) >= {"embed_tokens.weight", "layers.1.mlp.down_proj.weight"}

    single = build_model(config, seed=0)
    train(single, data, val, fsdp_cfg(grad_accum=2), tmp_path / "single")
    for k, v in single.state_dict().items():
        torch.testing.assert_close(fsdp[0][k], v, atol=2e-6, rtol=1e-5)
    fsdp_log, single_log = read_metrics(tmp_path / "fsdp"), read_metrics(tmp_path / "single")
    assert [m["loss"] for m in fsdp_log] == pytest.approx([m["loss"] for m in single_log], abs=1e-5)
    assert [m["grad_norm"] for m in fsdp_log] == pytest.approx([m["grad_norm"] for m in single_log], rel=1e-4)
    val_losses = {m["step"]: m["val_loss"] for m in fsdp_log if "val_loss" in m}
    assert list(val_losses) == [2, 4]
    assert list(val_losses.values()) == pytest.approx([m["val_loss"] for m in single_log if "val_loss" in m], rel=1e-5)

    # the exported HF checkpoint holds the trained (gathered) weights
    import ladder.hf  # noqa: F401
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "fsdp" / "hf")
    x = data.tokens[:2, :-1]
    with torch.no_grad():
        torch.testing.assert_close(hf(x).logits, single(x), atol=1e-4, rtol=1e-4)

    # kill the sharded run after step 2; resume it in one process
    part = tmp_path / "part"
    shutil.copytree(tmp_path / "fsdp", part)
    for step in (3, 4):
        shutil.rmtree(part / "checkpoints" / f"step_{step:06d}")
    resumed = build_model(config, seed=5)
    train(resumed, data, val, fsdp_cfg(grad_accum=2), part)
    for k, v in single.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, atol=2e-6, rtol=1e-5)


def test_fsdp_needs_a_distributed_launch(tmp_path):
    with pytest.raises(ValueError, match="fsdp=True.*torchrun"):
        train(build_model(tiny("ladder")), blocks(n=8), None, fsdp_cfg(fsdp=True), tmp_path)
