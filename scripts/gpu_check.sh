#!/usr/bin/env bash
# One prepared GPU session: the GPU tests, the peer comparison, then chapter 2's gpu1 measurements.
# Runs with the machine's own python (torch + CUDA preinstalled): python3, or python where only that exists
# (override: PYTHON=...), with PYTHONPATH=<this checkout>. Everything is written under $OUT (default: ./gpu_out).
#
#   LADDER_COMMIT=$(git rev-parse HEAD) STEPS="1 2" bash scripts/gpu_check.sh   # ~5-7 min: run with timeout_s 500
#   LADDER_COMMIT=...                   STEPS=3     bash scripts/gpu_check.sh   # <= 420 s: run with timeout_s 480
#   DRY_RUN=1 STEPS="1 2 3" bash scripts/gpu_check.sh   # on a CPU machine: the same flow at smoke scale
#
# The device copy of the working tree has no .git: pass the commit in LADDER_COMMIT (every JSON record and
# benchmark record takes it from there). Every step writes $OUT/step<N>_<name>.json (provenance: commit,
# device, torch and CUDA versions, date; exit code, wall time; what it measured) even when it was killed by
# its limit, and its log $OUT/step<N>_<name>.log (PYTHONUNBUFFERED: a killed step keeps its output).
# Step order: 1 first (the 70B-rank tests first within it), because its numbers matter most.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-$(command -v python3 || command -v python)}
[ -n "$PY" ] || { echo "no python3 or python on PATH" | tee "$OUT/error.txt"; exit 1; }
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export LADDER_COMMIT=${LADDER_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
[ "$LADDER_COMMIT" = unknown ] && echo "warning: no commit known (no .git here): set LADDER_COMMIT" >&2
DRY_RUN=${DRY_RUN:-0}
export DRY_RUN
STEPS=${STEPS:-1 2}
STEP1_LIMIT=${STEP1_LIMIT:-300}    # the GPU tests (expected ~2-3 min)
TEST_TIMEOUT=${TEST_TIMEOUT:-180}  # per test (pytest-timeout): the 70B fixture builds, compiles and captures
STEP2_LIMIT=${STEP2_LIMIT:-150}    # the peer comparison (expected ~1 min)
STEP3_LIMIT=${STEP3_LIMIT:-420}    # chapter 2, gpu1 profile (estimate ~375 s: profiles/gpu1/02_speedup.yaml)
PROFILE3=${PROFILE3:-$([ "$DRY_RUN" = 1 ] && echo smoke || echo gpu1)}

{ nvidia-smi 2>&1 || echo "no nvidia-smi"; "$PY" -c "import sys, torch; print(sys.executable, torch.__version__, \
torch.version.cuda, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA')"; \
echo "commit $LADDER_COMMIT"; } > "$OUT/device.txt" 2>&1

# Offline wheels (`make gpu-wheels` on a connected machine fills the git-ignored .whl/; carry it), installed
# only where the module is missing; never in a dry run (it would write into the local environment).
need() {  # need MODULE PACKAGE...: 0 when MODULE imports (after installing PACKAGE... from .whl if it did not)
  "$PY" -c "import $1" 2>/dev/null && return 0
  if [ "$DRY_RUN" != 1 ] && [ -d .whl ]; then
    "$PY" -m pip install -q --no-index --find-links .whl "${@:2}" 2>&1 | tail -2
  fi
  "$PY" -c "import $1" 2>/dev/null
}

# step NAME LIMIT [--result F] [--records F] -- COMMAND...: run COMMAND under `timeout`, log it, record it
step() {
  local name=$1 limit=$2; shift 2
  local extra=()
  while [ "$1" != "--" ]; do extra+=("$1"); shift; done
  shift
  echo "[gpu_check] step $name (limit ${limit}s): $*" | tee "$OUT/step$name.log"
  local t0=$SECONDS
  timeout -k 15 "$limit" "$@" 2>&1 | tee -a "$OUT/step$name.log"
  local rc=${PIPESTATUS[0]}
  echo "[gpu_check] step $name exit: $rc" | tee -a "$OUT/step$name.log"
  "$PY" scripts/gpu_record.py --out "$OUT" --step "$name" --rc "$rc" --wall $((SECONDS - t0)) --limit "$limit" \
      --command "$*" ${extra[@]+"${extra[@]}"}
}

# 1. the GPU tests: the 70B-rank file first (recovery on nvlink4, dead-link check, roofline, slow link's
#    recovery), then the rest (graph == eager per wiring, link durations incl. after idle time, NCCL capture)
if [[ " ${STEPS} " == *" 1 "* ]]; then
  targs=()
  if need pytest_timeout pytest-timeout; then targs=(--timeout "$TEST_TIMEOUT"); else
    echo "warning: pytest-timeout missing (make gpu-wheels, carry .whl): no per-test timeout" | tee "$OUT/warning_step1.txt"; fi
  export LADDER_GPU_RECORD=$OUT/step1_gpu_tests.result.json
  step 1_gpu_tests "$STEP1_LIMIT" --result "$LADDER_GPU_RECORD" -- \
    "$PY" -m pytest -q -s -p no:cacheprovider ${targs[@]+"${targs[@]}"} tests/gpu/test_rank70b.py tests/gpu/test_gpu.py
  unset LADDER_GPU_RECORD
fi

# 2. the peer comparison (our generation vs transformers generate; 8-layer Llama-3-8B shape on CUDA)
if [[ " ${STEPS} " == *" 2 "* ]]; then
  if [ "$DRY_RUN" = 1 ]; then
    peer=(--device cpu --preset tiny --dtype float32 --prompt-len 8 --new-tokens 8 --repeats 1)
  else
    peer=(--device cuda --preset llama3-8B --layers 8 --dtype bfloat16 --prompt-len 128 --new-tokens 256 --repeats 3)
  fi
  step 2_peer "$STEP2_LIMIT" --result "$OUT/step2_peer.result.json" -- \
    "$PY" benchmarks/bench_vs_transformers.py "${peer[@]}" --json "$OUT/step2_peer.result.json"
fi

# 3. chapter 2 on the gpu1 profile (one GPU, emulated interconnect). Every benchmark record is appended to
#    data/results/$PROFILE3/speedup_records.jsonl as its grid point ends (the notebook truncates it first), so
#    a step killed by its limit keeps what it measured: it is copied to $OUT and summarised in the step's JSON.
#    The GPU machines have no papermill / ipykernel / myst-nb: carry .whl (make gpu-wheels).
if [[ " ${STEPS} " == *" 3 "* ]]; then
  if need "papermill, ipykernel, myst_nb" papermill ipykernel myst-nb; then
    [ "$DRY_RUN" = 1 ] || "$PY" -m ipykernel install --user --name python3 >/dev/null 2>&1
    results=data/results/$PROFILE3
    step 3_gpu1_chapter "$STEP3_LIMIT" --records "$results/speedup_records.jsonl" -- \
      "$PY" -m ladder.pipeline --profile "$PROFILE3" --only 02_speedup --no-book --force
    cp -r "$results" "$OUT/results_$PROFILE3" 2>/dev/null
    cp -r "_output/$PROFILE3/book/notebooks" "$OUT/notebooks_$PROFILE3" 2>/dev/null
  else
    echo "step 3 needs papermill, ipykernel and myst-nb: make gpu-wheels, then carry .whl" | tee "$OUT/step3_gpu1_chapter.log"
    "$PY" scripts/gpu_record.py --out "$OUT" --step 3_gpu1_chapter --rc 1 --wall 0 --command "missing papermill"
  fi
fi
echo "[gpu_check] done: $(ls "$OUT" | tr '\n' ' ')"
