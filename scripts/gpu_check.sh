#!/usr/bin/env bash
# One prepared GPU check (under 8 minutes on one H100): the layer and model benchmarks on CUDA,
# fp32 and AMP bf16 with channels_last. Writes its Markdown tables to $OUT/gpu_benchmarks.md
# ($OUT if set, else ./gpu_results), with the device, torch version and commit. Each step has a
# time limit (STEP_TIMEOUT seconds, default 90); a step that fails or times out is noted in the
# file and the others still run. Paste the file into docs/benchmarks.md.
#
#   bash scripts/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-./gpu_results}"
RESULTS="$OUT_DIR/gpu_benchmarks.md"
STEP_TIMEOUT="${STEP_TIMEOUT:-90}"
BATCH="${BATCH:-64}"
mkdir -p "$OUT_DIR"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's dcls, not an installed one

python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device')" \
  || exit 1

{
  echo "# GPU check, $(date -u '+%Y-%m-%d %H:%M') UTC, commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
  python -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name())"
} > "$RESULTS"

step() {
  echo "[gpu_check] $*" >&2
  {
    echo
    echo "## python $*"
    echo
    timeout "$STEP_TIMEOUT" python "$@" || echo "(step failed or timed out, exit $?)"
  } >> "$RESULTS"
}

LAYERS="scripts/bench_layers.py --device cuda --models T --versions bilinear --batch $BATCH --repeats 20"
MODELS="scripts/bench_models.py --device cuda --batch $BATCH --repeats 10"
step $LAYERS
step $LAYERS --amp --channels-last
step $MODELS --models convnext_tiny resnet50
step $MODELS --models convnext_tiny resnet50 --amp --channels-last
step $MODELS --models convnext_atto convnext_small convnext_base --amp --channels-last
echo "[gpu_check] tables in $RESULTS" >&2
