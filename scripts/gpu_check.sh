#!/usr/bin/env bash
# The one prepared GPU check for one H100/H200: the Triton kernel's CUDA tests, then the kernel,
# layer and model benchmarks of issue 12's targets, most important first, bf16 AMP with
# channels_last (and one fp32/TF32 row), each with the baseline in the same run. Ten steps, each
# with its own time limit (480 s in all, counted from the script's start) plus what the steps
# before it left unused (compilations and autotuning cost the step that needs them first): under
# 8 minutes however the steps go, leaving of the device tool's 15 minutes the machine's start and
# a short rerun of one step. The last two steps run mostly on the seconds left over. Writes Markdown to
# $OUT/gpu_benchmarks.md ($OUT if set, else ./gpu_results) with the device, versions and commit. Each step writes to the file, never through
# a pipe; a step that fails or times out is noted and the others still run. The kernel, layer and
# model tables end with the Triton autotuner's choice per shape (FMA or tensor cores, and both
# paths' best times). The ConvNeXt-T steps also write torch.profiler tables of each model's step
# (top kernels by GPU time, GPU busy time against wall time) to $OUT/profile_convnext_tiny_*.md.
# Missing packages (hydra-core, omegaconf, antlr4, the authors' dcls) install from wheels in
# .whl/ if present, at the versions the dev install resolved (hydra-core 1.3 needs omegaconf < 2.4,
# which a bare `pip wheel omegaconf` exceeds); build them with
#   pip wheel --no-deps -w .whl $(pip freeze | grep -iE '^(hydra-core|omegaconf|antlr4-python3-runtime|dcls)==')
# Paste the file into docs/benchmarks.md.
#
#   COMMIT=$(git rev-parse --short HEAD) bash scripts/gpu_check.sh  # COMMIT: where .git is absent
set -uo pipefail
cd "$(dirname "$0")/.."
PY="$(command -v python3 || command -v python)"
OUT_DIR="${OUT:-./gpu_results}"
RESULTS="$OUT_DIR/gpu_benchmarks.md"
mkdir -p "$OUT_DIR"
SITE="${GPU_CHECK_SITE:-/tmp/gpu_check_site}"  # the carried wheels, installed beside the image's
# This checkout's packages first, then the wheels, then the image's own.
export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"

if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .whl/*.whl > "$OUT_DIR/pip.log" 2>&1 \
    || echo "[gpu_check] wheel install failed (see pip.log)" >&2
fi
{
  echo "# GPU check, $(date -u '+%Y-%m-%d %H:%M') UTC, commit ${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"
  echo
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
  "$PY" -c "import torch, triton, timm; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'triton', triton.__version__, 'timm', timm.__version__)" 2>&1
  "$PY" -c "import hydra, omegaconf, DCLS; print('hydra-core', hydra.__version__, 'omegaconf', omegaconf.__version__, 'dcls (authors)', 'imported')" 2>&1 | tail -n 1
} > "$RESULTS"
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "No CUDA device: nothing measured." >> "$RESULTS"  # (the file still comes back)
  exit 1
fi

# The steps' limits add up from the script's start (bash's SECONDS): a step may use what the
# steps before it left, and the set-up's seconds (wheels, imports) come off the first step, so
# the whole script stays within the sum of the limits however the steps go.
ALLOTTED=0
step() {  # step TITLE SECONDS COMMAND...: runs COMMAND within what is left of the allotment
  local title="$1"
  ALLOTTED=$((ALLOTTED + $2))
  local limit=$((ALLOTTED - SECONDS))
  [ "$limit" -ge 1 ] || limit=1
  shift 2
  echo "[gpu_check] $title" >&2
  local log="$OUT_DIR/step.log"
  local start=$SECONDS
  timeout -k 5 "$limit" "$@" > "$log" 2>&1  # (-k: a step deaf to SIGTERM is killed 5 s on)
  local code=$?
  local used=$((SECONDS - start))
  {
    echo
    echo "## $title"
    echo
    echo "\`$*\` (exit $code, $used s of $limit)"
    echo
    if [ "$code" -eq 0 ]; then grep -v '^\[' "$log" | tail -n 60; else tail -n 40 "$log"; fi
  } >> "$RESULTS"
}

BF16="--device cuda --amp bf16 --channels-last"
step "Triton kernels on CUDA (gpu-marked tests: every autotune config, ConvNeXt-T shapes in bf16 and fp32/TF32, the kernel construction)" 150 \
  "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/dcls/test_triton.py \
  tests/dcls/test_triton_construct.py
step "Triton kernels one by one, ConvNeXt-T shapes, bf16 NHWC (which kernel, FMA or tensor cores)" 45 \
  "$PY" scripts/bench_triton_kernels.py --device cuda --dtype bf16 --channels-last --batch 64 \
  --repeats 10 --calls 5
step "Layers, ConvNeXt-T, bf16 (target: ours/dense 7x7 <= 1.5)" 45 \
  "$PY" scripts/bench_layers.py $BF16 --models T --versions bilinear --batch 64 --repeats 20 \
  --conv-algorithms auto triton fft
step "ConvNeXt-T train, bf16, batch 128 (targets: time <= 1.15, memory <= 1.10)" 75 \
  "$PY" scripts/bench_models.py $BF16 --models convnext_tiny --batch 128 --repeats 5 --steps 3 \
  --modes train --conv-algorithms auto triton --no-authors \
  --profile-out "$OUT_DIR/profile_convnext_tiny_train.md" --profile-rows 30
step "ConvNeXt-T inference, bf16, batch 256 (target: time <= 1.10)" 45 \
  "$PY" scripts/bench_models.py $BF16 --models convnext_tiny --batch 256 --repeats 5 --steps 5 \
  --modes infer --conv-algorithms auto triton --no-authors \
  --profile-out "$OUT_DIR/profile_convnext_tiny_infer.md" --profile-rows 30
step "eval.py's throughput, ConvNeXt-T-dcls against ConvNeXt-T, bf16, batch 128 (the same ratios)" 40 \
  "$PY" eval.py checkpoint=null model.name=convnext_tiny_dcls "sets=[throughput]" device=cuda \
  throughput.batch_size=128 throughput.steps=5
step "ConvNeXt-T train, fp32 with TF32, batch 128 (target: time <= 1.3)" 35 \
  "$PY" scripts/bench_models.py --device cuda --channels-last --tf32 --models convnext_tiny \
  --batch 128 --repeats 3 --steps 2 --modes train --conv-algorithms auto --no-authors
step "ConvNeXt-S and -B, ResNet-50, bf16, batch 128" 35 \
  "$PY" scripts/bench_models.py $BF16 --models convnext_small convnext_base resnet50 --batch 128 \
  --repeats 3 --steps 2 --conv-algorithms auto --no-authors
step "Triton sparsity options, ConvNeXt-T layers, bf16, trained-like positions (does skipping pay?)" 5 \
  "$PY" scripts/bench_layers.py $BF16 --models T --versions bilinear --batch 64 --repeats 10 \
  --conv-algorithms triton --triton-taps --spread-positions
step "ConvNeXt-T inference under torch.compile (inductor), bf16, batch 256 (does the compiled model run the Triton path, and at what ratio? mostly on the seconds left over)" 5 \
  "$PY" scripts/bench_models.py $BF16 --models convnext_tiny --batch 256 --repeats 3 --steps 5 \
  --modes infer --conv-algorithms auto --no-authors --compile
echo "[gpu_check] tables in $RESULTS" >&2
