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

# Steps 1 + 2 take ~5 minutes, step 3 up to 9: one command may run 10 minutes and a device session holds 15
# (machine start included), so run them as two commands, STEPS="1 2" (the default) and STEPS="3", each
# with a timeout_s of 600; step 3 alone if only one fits.
STEPS=${STEPS:-1 2}

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
# The GPU machines (Python 3.12, no network) have no papermill / ipykernel / myst-nb: `make gpu-wheels` on a
# connected machine puts their Python 3.12 wheels (~40 MB) in the git-ignored .whl/; carry it and they are
# installed offline. (Nothing here reads ../shared: every model in these steps has random weights.)
if [[ " ${STEPS} " == *" 3 "* ]]; then
  if [ -d .whl ]; then
    python -m pip install -q --no-index --find-links .whl papermill ipykernel myst-nb 2>&1 | tail -2
  fi
  python -c "import papermill, ipykernel, myst_nb" || { echo "step 3 needs papermill, ipykernel and myst-nb: make gpu-wheels, then carry .whl" | tee "$OUT/gpu1_02.log"; exit 1; }
  python -m ipykernel install --user --name python3 >/dev/null 2>&1
  timeout 540 python -m ladder.pipeline --profile gpu1 --only 02_speedup --no-book 2>&1 | tee "$OUT/gpu1_02.log"
  echo "gpu1 chapter 2 exit: ${PIPESTATUS[0]}" | tee -a "$OUT/gpu1_02.log"
  cp -r data/results/gpu1 "$OUT/" 2>/dev/null
  cp -r _output/gpu1/book/notebooks "$OUT/gpu1_notebooks" 2>/dev/null
fi
