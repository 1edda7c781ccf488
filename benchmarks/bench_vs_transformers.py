"""Side-by-side: our TP = 1 generation against transformers' LlamaForCausalLM.generate (static cache).

Same shape, same weights (exported with ladder.hf.to_hf), same batch, dtype, prompt and greedy decoding,
in one process on the same machine; the two are timed alternately so load drift hits both alike.
Decode time per token is measured as (time for prompt + G tokens - time for prompt + 1 token) / (G - 1)
for transformers (its generate has no separate prefill timer) and directly for ours.

    .venv/bin/python benchmarks/bench_vs_transformers.py --preset cpu-bench --batch 1 --new-tokens 32
    PYTHONPATH=. python benchmarks/bench_vs_transformers.py --device cuda --preset llama3-8B --layers 8 \
        --dtype bfloat16 --prompt-len 128 --new-tokens 256

On CUDA both sides are compiled: ours with compiled modules and each decode step in one CUDA graph
(ladder.cudagraph), transformers with its static cache and generate's own compilation
(compile_config through generate); the first round's time (compilation included) is printed for each.

A benchmark, not a test: it prints medians and the ratio and asserts nothing about speed.
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

from ladder import build_model, preset
from ladder.generate import generate
from ladder.hf import to_hf

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def hf_generate(hf, prompt, new_tokens):
    _sync(prompt.device)
    t0 = time.perf_counter()
    out = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens,
                      min_new_tokens=new_tokens, do_sample=False, cache_implementation="static",
                      pad_token_id=0)
    _sync(prompt.device)
    return out, time.perf_counter() - t0


def hf_twin(ours, dtype, device):
    """transformers' LlamaForCausalLM with `ours`'s weights, in `dtype` on `device`, its RoPE inverse
    frequencies kept in float32 as transformers itself keeps them (a plain `.to(bfloat16)` rounds those
    buffers to bf16, and then greedy tokens can differ for a reason that is ours, not transformers')."""
    hf = to_hf(ours)
    rope = {n: b.detach().float().clone() for n, b in hf.named_buffers() if n.endswith("inv_freq")}
    hf = hf.to(dtype).to(device).eval()
    for name, buf in rope.items():
        mod, _, attr = name.rpartition(".")
        setattr(hf.get_submodule(mod), attr, buf.to(device))
    return hf


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="cpu-bench")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--dtype", default="float32", choices=list(DTYPES))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--layers", type=int, default=None, help="cut the preset to this many layers")
    ap.add_argument("--json", default=None, help="also write the results (with provenance) to this JSON file")
    a = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(a.threads)
    dtype = DTYPES[a.dtype]

    dev = torch.device(a.device)
    over = {"n_layers": a.layers} if a.layers else {}
    cfg = preset(a.preset, max_seq_len=max(preset(a.preset).max_seq_len, a.prompt_len + a.new_tokens), **over)
    ours = build_model(cfg, dtype=dtype, seed=0, device=dev).eval()
    hf = hf_twin(ours, dtype, dev)  # the same weights
    hf.generation_config.pad_token_id = 0
    fns = {}
    if dev.type == "cuda":
        from ladder.cudagraph import GraphedDecode, compile_modules
        compile_modules(ours)
        fns = {"decode_fn": GraphedDecode()}
    prompt = torch.randint(0, cfg.vocab_size, (a.batch, a.prompt_len),
                           generator=torch.Generator().manual_seed(0)).to(dev)

    ours_dec, ours_pre, hf_dec, hf_pre = [], [], [], []
    for i in range(a.repeats + 1):  # the first round warms up (and compiles) both
        t0 = time.perf_counter()
        tok_ours, t = generate(ours, prompt, a.new_tokens, **fns)
        t1 = time.perf_counter()
        with torch.inference_mode():
            _, t_one = hf_generate(hf, prompt, 1)
            tok_hf, t_all = hf_generate(hf, prompt, a.new_tokens)
        if i == 0:
            same = torch.equal(tok_ours, tok_hf)
            first_ours, first_hf = t1 - t0, t_one + t_all
            continue
        ours_pre.append(t.prefill_s)
        ours_dec.append(t.decode_s / (a.new_tokens - 1))
        hf_pre.append(t_one)
        hf_dec.append((t_all - t_one) / (a.new_tokens - 1))

    med = statistics.median
    print(f"{a.preset} ({cfg.num_params() / 1e6:.1f}M params), batch {a.batch}, prompt {a.prompt_len}, "
          f"{a.new_tokens} new tokens, {a.dtype}, {a.device}, {a.threads} threads, {a.repeats} repeats")
    print(f"greedy tokens identical: {same}")
    print(f"first round (compilation included)  ours {first_ours:.1f} s   transformers {first_hf:.1f} s")
    print(f"prefill (+1st token)  ours {1e3 * med(ours_pre):8.2f} ms   transformers {1e3 * med(hf_pre):8.2f} ms")
    print(f"decode per token      ours {1e3 * med(ours_dec):8.2f} ms   transformers {1e3 * med(hf_dec):8.2f} ms"
          f"   (spread ours {1e3 * min(ours_dec):.2f}-{1e3 * max(ours_dec):.2f}, "
          f"transformers {1e3 * min(hf_dec):.2f}-{1e3 * max(hf_dec):.2f})")
    print(f"ratio transformers / ours (decode): {med(hf_dec) / med(ours_dec):.2f}x")
    if a.json:
        import json

        from ladder.bench import run_provenance
        result = {"greedy_tokens_identical": bool(same), "first_round_s": {"ours": first_ours, "transformers": first_hf},
                  "prefill_ms": {"ours": 1e3 * med(ours_pre), "transformers": 1e3 * med(hf_pre)},
                  "decode_ms_per_token": {"ours": 1e3 * med(ours_dec), "transformers": 1e3 * med(hf_dec)},
                  "decode_ms_per_token_samples": {"ours": [1e3 * x for x in ours_dec],
                                                  "transformers": [1e3 * x for x in hf_dec]},
                  "ratio_transformers_over_ours_decode": med(hf_dec) / med(ours_dec),
                  "num_params": cfg.num_params(), "provenance": run_provenance(vars(a))}
        with open(a.json, "w") as f:
            json.dump(result, f, indent=2, default=str)


if __name__ == "__main__":
    main()
