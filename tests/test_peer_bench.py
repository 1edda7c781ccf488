"""benchmarks/bench_vs_transformers.py: the transformers twin is the same model, RoPE included."""
import importlib.util
from pathlib import Path

import torch

from ladder import build_model, preset
from ladder.hf import to_hf

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "bench_vs_transformers.py"


def _script():
    spec = importlib.util.spec_from_file_location("bench_vs_transformers", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_bf16_twin_keeps_transformers_rope_frequencies_in_float32():
    """Issue 18, item 8: casting the twin to bf16 must not round transformers' inv_freq buffers."""
    ours = build_model(preset("tiny"), dtype=torch.bfloat16, seed=0)
    hf = _script().hf_twin(ours, torch.bfloat16, torch.device("cpu"))
    ref = dict(to_hf(build_model(preset("tiny"), seed=0)).named_buffers())
    rope = {n: b for n, b in hf.named_buffers() if n.endswith("inv_freq")}
    assert rope
    for name, buf in rope.items():
        assert buf.dtype == torch.float32, name
        assert torch.equal(buf, ref[name]), name
    assert all(p.dtype == torch.bfloat16 for p in hf.parameters())


def test_the_peer_benchmark_writes_its_json(tmp_path, capsys):
    import json
    out = tmp_path / "peer.json"
    _script().main(["--preset", "tiny", "--prompt-len", "4", "--new-tokens", "3", "--repeats", "1",
                    "--threads", "1", "--json", str(out)])
    rec = json.loads(out.read_text())
    assert rec["greedy_tokens_identical"] is True  # float32 on CPU: the same model
    assert rec["decode_ms_per_token"]["ours"] > 0 and "git_commit" in rec["provenance"]
    assert "greedy tokens identical: True" in capsys.readouterr().out
