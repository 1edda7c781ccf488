"""ladder.parallelize: the process group's start and its errors, and each step of `parallelize` (activation
checkpointing, regional compilation, FSDP2 / DDP) changes how a model runs, never what it computes."""
import copy
import socket

import pytest
import torch
import torch.distributed as dist

from ladder import ModelConfig, build_model, preset
from ladder.cudagraph import compile_modules
from ladder.data import TokenBlocks
from ladder.generate import generate
from ladder.model import MLP, Attention, RMSNorm
from ladder.parallelize import init_process_group, parallelize
from ladder.train import loss_fn

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK")


def tiny(wiring, **kw):
    return ModelConfig(n_layers=2, dim=32, n_heads=4, n_kv_heads=2, ffn_dim=64, vocab_size=97, max_seq_len=32,
                       wiring=wiring, **kw)


def batch(n=4, seq_len=16):
    """(inputs, targets) of n random sequences."""
    tokens = torch.randint(0, 97, (n, seq_len + 1), generator=torch.Generator().manual_seed(0))
    return TokenBlocks(tokens).inputs_targets()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------------- process group
def test_without_torchrun_the_error_names_the_missing_variables(monkeypatch):
    from ladder.parallelize import init_distributed
    for v in TORCHRUN_VARS:
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv("RANK", "0")
    for start in (init_process_group, init_distributed):
        with pytest.raises(RuntimeError, match=r"\['WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'\] are not set: "
                                               r"launch with torchrun"):
            start(device="cpu")
    assert not dist.is_initialized()


def test_one_torchrun_rank_gets_a_gloo_group_once(monkeypatch):
    from ladder.parallelize import init_distributed
    from ladder.tp import TensorParallel
    for k, v in dict(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                     MASTER_PORT=str(_free_port())).items():
        monkeypatch.setenv(k, v)
    try:
        assert init_process_group(device="cpu") == torch.device("cpu")
        group = dist.group.WORLD
        assert dist.get_backend() == "gloo" and dist.get_world_size() == 1
        comm, dev = init_distributed(device="cpu")  # the group is up: kept, not started again
        assert isinstance(comm, TensorParallel) and dev == torch.device("cpu") and dist.group.WORLD is group
    finally:
        dist.destroy_process_group()


def test_data_parallelism_needs_a_launch_and_a_known_kind():
    model = build_model(tiny("ladder"))
    with pytest.raises(ValueError, match="data_parallel must be None, 'fsdp' or 'ddp'"):
        parallelize(model, data_parallel="zero3")
    for kind in ("fsdp", "ddp"):
        with pytest.raises(ValueError, match=f"data_parallel='{kind}'.*launch with torchrun"):
            parallelize(model, data_parallel=kind)


# --------------------------------------------------------------------------------------------- checkpointing
def _loss_grads_and_recomputes(model, x, y):
    calls = []
    # a pre-hook: a recompute stops as soon as it has what backward needs, maybe before a post-hook
    model.layers[0].mlp.gate_proj.register_forward_pre_hook(lambda *_: calls.append(1))
    loss = loss_fn(model(x), y)
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in model.named_parameters()}, len(calls)


def test_activation_checkpointing_gives_the_same_loss_and_gradients():
    x, y = batch(4)
    config = tiny("hybrid", ladder_layers=1)
    plain = build_model(config, seed=2)
    checkpointed = parallelize(build_model(config, seed=2), activation_checkpointing=True)
    parallelize(checkpointed, activation_checkpointing=True)  # a second time: still recomputed once
    loss, grads, calls = _loss_grads_and_recomputes(plain, x, y)
    loss_ac, grads_ac, calls_ac = _loss_grads_and_recomputes(checkpointed, x, y)
    assert (calls, calls_ac) == (1, 2)  # with checkpointing the MLP runs again in backward
    assert torch.equal(loss_ac, loss)
    assert list(grads_ac) == list(grads)  # the same parameter names
    for n, g in grads.items():
        torch.testing.assert_close(grads_ac[n], g, atol=1e-6, rtol=1e-5)


def test_activation_checkpointing_keeps_the_state_dict_and_the_kv_cache():
    config = tiny("ladder")
    plain, checkpointed = build_model(config, seed=0), build_model(config, seed=1)
    parallelize(checkpointed, activation_checkpointing=True)
    assert list(checkpointed.state_dict()) == list(plain.state_dict())
    checkpointed.load_state_dict(plain.state_dict())  # a checkpoint saved without it loads (strict)
    prompt = batch(2)[0][:, :8]
    with torch.inference_mode():  # generation: the cache set up on block.self_attn is the one attention uses
        torch.testing.assert_close(generate(checkpointed, prompt, 4)[0], generate(plain, prompt, 4)[0])
    # a deep copy runs (and recomputes) with its own weights, not the original's
    twin = copy.deepcopy(checkpointed)
    with torch.no_grad():
        twin.layers[0].mlp.down_proj.weight.zero_()
    x, _ = batch(2)
    assert not torch.allclose(twin(x), checkpointed(x))


# --------------------------------------------------------------------------------------------- compilation
def _compiled(model) -> list[str]:
    return [n for n, m in model.named_modules() if getattr(m, "_compiled_call_impl", None) is not None]


def test_compile_is_regional_as_compile_modules_was():
    """Every RMSNorm, Attention and MLP module (and nothing else) is compiled, by parallelize and by
    cudagraph.compile_modules alike; with checkpointing too, the compiled model computes the same gradients."""
    config = preset("tiny", wiring="ladder")
    regions = [n for n, m in build_model(config).named_modules() if isinstance(m, (RMSNorm, Attention, MLP))]
    assert _compiled(parallelize(build_model(config), compile=True)) == regions
    assert _compiled(compile_modules(build_model(config))) == regions

    x, y = batch(2)
    model = parallelize(build_model(tiny("ladder"), seed=0), activation_checkpointing=True, compile=True,
                        compile_kwargs={"backend": "aot_eager"})
    _, grads, _ = _loss_grads_and_recomputes(model, x, y)
    _, want, _ = _loss_grads_and_recomputes(build_model(tiny("ladder"), seed=0), x, y)
    for n, g in want.items():
        torch.testing.assert_close(grads[n], g, atol=1e-6, rtol=1e-5)


# --------------------------------------------------------------------------------------------- data parallel
def _data_parallel_worker(comm, config, x, y):
    """Each of 2 gloo ranks takes half the batch: FSDP2 (with checkpointing) and DDP, via parallelize."""
    rank = dist.get_rank()
    out = {}
    for kind in ("fsdp", "ddp"):
        model = build_model(config, seed=0)
        run = parallelize(model, data_parallel=kind, activation_checkpointing=kind == "fsdp")
        loss = loss_fn(run(x[rank::2]), y[rank::2])
        loss.backward()  # gradients averaged over the ranks: the full batch's
        grads = {n: p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad
                 for n, p in model.named_parameters()}
        out[kind] = (loss.item(), grads)
    return out


def test_fsdp_and_ddp_equal_the_unsharded_model():
    from ladder.launch import launch_local
    config = tiny("hybrid", ladder_layers=1)
    x, y = batch(4)
    ranks = launch_local(_data_parallel_worker, 2, config, x, y)
    single = build_model(config, seed=0)
    loss = loss_fn(single(x), y)
    loss.backward()
    for kind in ("fsdp", "ddp"):
        assert (ranks[0][kind][0] + ranks[1][kind][0]) / 2 == pytest.approx(loss.item(), rel=1e-6)
        for n, p in single.named_parameters():
            torch.testing.assert_close(ranks[0][kind][1][n], p.grad, atol=1e-6, rtol=1e-5)
