#!/usr/bin/env bash
# The GPU check (`make gpu-check`): on a machine with an NVIDIA GPU, from a fresh copy of the repo,
# with the Python that has a CUDA torch (PYTHON=python3 by default, not a venv) in under 8 minutes:
#   1. build semiearth._C with its CUDA kernels (FORCE_CUDA=1, TORCH_CUDA_ARCH_LIST, MAX_JOBS);
#   2. run the GPU tests (Triton and CUDA backends against the references);
#   3. bench/kernel_budgets.py (ptxas registers/spills with this machine's Triton) and
#      bench/purify_throughput.py (kernels beside their floors, VLM-PP end to end);
#   4. 40 training iterations of semiearth/configs/potsdam_dinov2.yaml (DINOv2-S + DPT, random weights) on
#      synthetic 518 px scenes, without VLM-PP and with it (OpenCLIP ViT-B/16, random weights, 16
#      regions per image), stage times from metrics.jsonl;
#   5. bench/vlm_timing.py (one VLM-PP call with the Qwen2.5-VL-3B architecture) when present.
# Everything lands in $OUT (default runs/gpu_check): logs, the JSON of each step and gpu_check.json
# with all figures. Wheels of packages the machine lacks (open_clip_torch, ftfy, wcwidth, ...) are
# installed from .whl/ when that folder exists. Steps run on after a failure; the exit code is 1 if
# any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
OUT=${OUT:-runs/gpu_check}
ITERS=${GPU_CHECK_ITERS:-40}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
unset TRITON_INTERPRET
status=0
step() {  # step NAME COMMAND...: run, log to $OUT/NAME.log, record the exit code and wall time
    local name=$1 t0=$SECONDS rc
    shift
    echo "== $name: $*"
    "$@" >"$OUT/$name.log" 2>&1
    rc=$?
    echo "{\"step\": \"$name\", \"rc\": $rc, \"seconds\": $((SECONDS - t0))}" >>"$OUT/steps.jsonl"
    tail -n 25 "$OUT/$name.log"
    [ $rc -eq 0 ] || status=1
}
rm -f "$OUT/steps.jsonl"

if [ -d .whl ]; then
    $PYTHON -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
# `semiearth.kernels` is the kernels/ folder (setup.py maps it there for pip); without an install
# the in-place build needs a link (git-ignored).
$PYTHON -c "import semiearth.kernels" 2>/dev/null || ln -sfn ../kernels semiearth/kernels

step build env FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-16}" \
    $PYTHON setup.py build_ext --inplace
step gpu_tests $PYTHON -m pytest -q -p no:cacheprovider -k "triton or cuda or gpu" --junitxml="$OUT/gpu_tests.xml" \
    tests/test_purify_stats.py tests/test_purify_apply.py tests/test_crop_batch.py tests/test_triton_kernels.py \
    tests/test_purify_purifier.py tests/test_bad_input.py
step kernel_budgets $PYTHON bench/kernel_budgets.py --arch 90 --json "$OUT/kernel_budgets.json"
step throughput $PYTHON bench/purify_throughput.py --json "$OUT/throughput.json"

TRAIN=(-m semiearth.cli.train --config potsdam_dinov2 --overwrite
    --set data.name=synthetic --set data.root= --set "data.options={size: 518, labeled: 8, unlabeled: 32, val: 2, test: 2}"
    --set data.splits={} --set model.pretrained=false --set train.iters="$ITERS" --set train.log_every=10
    --set train.eval_every=0 --set train.ckpt_every=1000 --set train.panel_every=0 --set train.num_workers=2
    --set eval.mode=whole)
step train_none $PYTHON "${TRAIN[@]}" --out "$OUT/train_none" --set purify.method=none
step train_vlmpp $PYTHON "${TRAIN[@]}" --out "$OUT/train_vlmpp" --set purify.method=openclip \
    --set "purify.classifier_options={model: ViT-B-16, pretrained: null, device: ${GPU_CHECK_DEVICE:-cuda}}" \
    --set purify.max_regions=16
[ -f bench/vlm_timing.py ] && step vlm_timing $PYTHON bench/vlm_timing.py --arch qwen2.5-vl-3b --device cuda \
    --regions 64 --json "$OUT/vlm_timing.json"

$PYTHON bench/gpu_summary.py "$OUT" | tee "$OUT/summary.txt" || status=1
exit $status
