#!/usr/bin/env bash
# One prepared GPU session (~10 minutes): the GPU test suite, then chapter 2's gpu1 measurements.
# Runs with the machine's own python (torch + CUDA preinstalled): PYTHONPATH=. python ...
# Everything is written under $OUT (default: ./gpu_out).
set -uo pipefail
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
{ nvidia-smi; python -c "import torch; print(torch.__version__, torch.cuda.get_device_name())"; } > "$OUT/device.txt" 2>&1

# 1. the GPU tests (graph == eager per wiring, link durations, 70B-rank recovery and roofline): ~4 min
timeout 420 python -m pytest -q -s tests/gpu 2>&1 | tee "$OUT/test_gpu.log"
echo "test-gpu exit: ${PIPESTATUS[0]}" | tee -a "$OUT/test_gpu.log"

# 2. the peer comparison on CUDA (8-layer Llama-3-8B shape): ~1 min
timeout 180 python benchmarks/bench_vs_transformers.py --device cuda --preset llama3-8B --layers 8 \
    --dtype bfloat16 --prompt-len 128 --new-tokens 256 --repeats 3 2>&1 | tee "$OUT/bench_vs_transformers.log"

# 3. chapter 2, gpu1 profile (one GPU, emulated interconnect) ---------------------------------------
# TODO(helper B): run profiles/gpu1/02_speedup.yaml here with its results under $OUT, e.g.
#   timeout 480 python -m ladder.pipeline --profile gpu1 ... ; cp -r data/results/gpu1 "$OUT/"
