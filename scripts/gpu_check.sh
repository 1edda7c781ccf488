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

# The three steps take ~7 + 3 + 8 minutes: more than one 15-minute device session holds. Pick them with
# STEPS (default "1 2 3"), e.g. STEPS="1" in one session and STEPS="3" in the next.
STEPS=${STEPS:-1 2 3}

# 1. the GPU tests (graph == eager per wiring, link durations, 70B-rank recovery and roofline): ~4 min
if [[ " ${STEPS} " == *" 1 "* ]]; then
  timeout 420 python -m pytest -q -s tests/gpu 2>&1 | tee "$OUT/test_gpu.log"
  echo "test-gpu exit: ${PIPESTATUS[0]}" | tee -a "$OUT/test_gpu.log"
fi

# 2. the peer comparison on CUDA (8-layer Llama-3-8B shape): ~1 min
if [[ " ${STEPS} " == *" 2 "* ]]; then
  timeout 180 python benchmarks/bench_vs_transformers.py --device cuda --preset llama3-8B --layers 8 \
      --dtype bfloat16 --prompt-len 128 --new-tokens 256 --repeats 3 2>&1 | tee "$OUT/bench_vs_transformers.log"
fi

# 3. chapter 2, gpu1 profile (one GPU, emulated interconnect) ---------------------------------------
# The GPU machines have no papermill / ipykernel / myst-nb: carry their wheels in the git-ignored .whl/
# (`pip download -d .whl papermill ipykernel myst-nb` on a connected machine) and install them offline.
if [[ " ${STEPS} " == *" 3 "* ]]; then
  [ -d .whl ] && python -m pip install -q --no-index --find-links .whl papermill ipykernel myst-nb 2>&1 | tail -2
  python -m ipykernel install --user --name python3 >/dev/null 2>&1
  timeout 480 python -m ladder.pipeline --profile gpu1 --only 02_speedup --no-book 2>&1 | tee "$OUT/gpu1_02.log"
  echo "gpu1 chapter 2 exit: ${PIPESTATUS[0]}" | tee -a "$OUT/gpu1_02.log"
  cp -r data/results/gpu1 "$OUT/" 2>/dev/null
  cp -r _output/gpu1/book/notebooks "$OUT/gpu1_notebooks" 2>/dev/null
fi
