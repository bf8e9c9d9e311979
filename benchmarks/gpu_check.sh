#!/usr/bin/env bash
# End-to-end check of caprese on a GPU in bf16 (about 5 minutes on one H100-class GPU, ≤ 8 budgeted).
#
#   bash benchmarks/gpu_check.sh                               # CUDA, bfloat16, Llama-3.2-1B shape
#   DEVICE=cpu DTYPE=float32 SMALL=1 bash benchmarks/gpu_check.sh   # CPU smoke run (a few minutes)
#
# A model of Llama-3.2-1B's shape with random weights is built from caprese's dimension-only reference
# config (no download), with the toy-math tokenizer. On it: eval on toy-math under each method (dense,
# top-k, GRIFFIN, GRIFFIN --prune, GRIFFIN with reselection, CATS, TEAL with calibration), layer-wise
# + E2E distillation for a few steps, eval under the adapter unmerged and merged, the adapter checks of
# gpu_check.py (unchanged by apply, merged = unmerged, save -> load -> same logits, finite), and
# `caprese bench` at Llama-3.1-8B's FFN shape. Random weights score ~0% on toy-math: each step checks
# that it completes and writes finite results, not accuracy.
#
# Environment: DEVICE (cuda), DTYPE (bfloat16), SHAPE (Llama-3.2-1B), SMALL (0; 1 shrinks the model and
# the bench shape for a CPU), PYTHON (python), KEEP (0; 1 keeps the work folder), WORK (a fresh temp dir).
# Prints one PASS/FAIL line per step and exits non-zero when any step failed.
set -u
DEVICE=${DEVICE:-cuda}
DTYPE=${DTYPE:-bfloat16}
SHAPE=${SHAPE:-Llama-3.2-1B}
SMALL=${SMALL:-0}
PYTHON=${PYTHON:-python}
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/caprese-gpu-check.XXXXXX")}
mkdir -p "$WORK"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
CAPRESE=("$PYTHON" -m caprese.cli)
if [ "$SMALL" = 1 ]; then
    SAMPLES=8 NEW_TOKENS=12 DISTILL_SAMPLES=16 BENCH_SHAPE=512x2048 SMALL_FLAG=--small
else
    SAMPLES=32 NEW_TOKENS=64 DISTILL_SAMPLES=64 BENCH_SHAPE=Llama-3.1-8B SMALL_FLAG=
fi
FAILED=0
STARTED=$(date +%s)

step() {  # step NAME COMMAND...: run it, print PASS/FAIL and the log's tail on failure
    local name=$1 log="$WORK/$(echo "$1" | tr -c 'A-Za-z0-9\n' '_').log" start=$(date +%s)
    LAST_LOG=$log
    shift
    if "$@" >"$log" 2>&1; then
        echo "PASS $name ($(( $(date +%s) - start )) s)"
    else
        echo "FAIL $name ($(( $(date +%s) - start )) s, exit $?): last lines of $log"
        tail -n 15 "$log" | sed 's/^/    /'
        FAILED=$((FAILED + 1))
    fi
}

finite_metrics() {  # finite_metrics FILE: the metrics file exists and holds no NaN/Infinity
    "$PYTHON" - "$1" <<'EOF'
import json, math, sys
def walk(v):
    if isinstance(v, dict):
        return all(walk(x) for x in v.values())
    if isinstance(v, list):
        return all(walk(x) for x in v)
    return not isinstance(v, float) or math.isfinite(v)
data = json.load(open(sys.argv[1]))
sys.exit(0 if walk(data) else f"{sys.argv[1]} has non-finite numbers")
EOF
}

eval_step() {  # eval_step NAME OUT ARGS...
    local name=$1 out=$2
    shift 2
    step "eval $name" bash -c "$(printf '%q ' "${CAPRESE[@]}" eval --model "$WORK/model" --task toy-math \
        --samples "$SAMPLES" --max-new-tokens "$NEW_TOKENS" --batch-size 8 --dtype "$DTYPE" --device "$DEVICE" \
        --quiet --out "$out" "$@") && $(printf '%q ' finite_metrics "$out/metrics.json")"
}
export -f finite_metrics
export PYTHON

echo "caprese GPU check: device $DEVICE, dtype $DTYPE, shape $SHAPE$([ "$SMALL" = 1 ] && echo ' (small)'), work $WORK"
step "environment" "$PYTHON" -c "
import torch, caprese
print('torch', torch.__version__, 'caprese', caprese.__file__)
if '$DEVICE'.startswith('cuda'):
    assert torch.cuda.is_available(), 'CUDA is not available to this torch (install a CUDA build)'
    print(torch.cuda.get_device_name(), 'bf16 supported:', torch.cuda.is_bf16_supported())
"
step "build random $SHAPE model" "$PYTHON" "$HERE/gpu_check.py" build "$WORK/model" --shape "$SHAPE" --dtype "$DTYPE" $SMALL_FLAG

eval_step "dense" "$WORK/eval-dense"
eval_step "topk 50%" "$WORK/eval-topk" --method topk --sparsity 0.5
eval_step "griffin 50% first half" "$WORK/eval-griffin" --method griffin --sparsity 0.5 --layers first_half
eval_step "griffin --prune" "$WORK/eval-griffin-prune" --method griffin --sparsity 0.5 --layers first_half --prune
eval_step "griffin reselect every 4" "$WORK/eval-griffin-reselect" --method griffin --sparsity 0.5 --reselect-every 4
eval_step "cats 50%" "$WORK/eval-cats" --method cats --sparsity 0.5
eval_step "teal 50% (calibrated)" "$WORK/eval-teal" --method teal --sparsity 0.5 --calibration toy-language --calibration-samples 16

step "distill layer-wise + E2E (griffin, r 16)" bash -c "$(printf '%q ' "${CAPRESE[@]}" distill --model "$WORK/model" \
    --dtype "$DTYPE" --device "$DEVICE" --method griffin --sparsity 0.5 --layers first_half --rank 16 \
    --samples "$DISTILL_SAMPLES" --max-new-tokens "$NEW_TOKENS" --stage e2e --epochs 2 --batch-size 16 --lr 1e-3 \
    --e2e-epochs 1 --e2e-batch-size 8 --e2e-lr 1e-4 --out "$WORK/distill") && finite_metrics $WORK/distill/metrics.json"
step "distill closed form (cats, r 16)" bash -c "$(printf '%q ' "${CAPRESE[@]}" distill --model "$WORK/model" \
    --dtype "$DTYPE" --device "$DEVICE" --method cats --sparsity 0.5 --rank 16 --samples "$DISTILL_SAMPLES" \
    --max-new-tokens "$NEW_TOKENS" --stage closed_form --out "$WORK/distill-cf") && finite_metrics $WORK/distill-cf/metrics.json"
if [ -d "$WORK/distill/adapter" ]; then
    eval_step "griffin + Caprese (unmerged)" "$WORK/eval-caprese" --method griffin --sparsity 0.5 --layers first_half \
        --adapter "$WORK/distill/adapter"
    eval_step "griffin + Caprese (merged)" "$WORK/eval-caprese-merged" --method griffin --sparsity 0.5 --layers first_half \
        --adapter "$WORK/distill/adapter" --merged
    echo "adapter checks:"
    "$PYTHON" "$HERE/gpu_check.py" adapter "$WORK/model" "$WORK/distill/adapter" --dtype "$DTYPE" --device "$DEVICE" \
        2>"$WORK/adapter_checks.log"
    code=$?
    if [ $code -ne 0 ]; then
        FAILED=$((FAILED + code))
        grep -q . "$WORK/adapter_checks.log" && tail -n 15 "$WORK/adapter_checks.log" | sed 's/^/    /'
    fi
else
    echo "FAIL adapter checks: no adapter (distillation failed)"
    FAILED=$((FAILED + 1))
fi
step "bench at $BENCH_SHAPE FFN shape" bash -c "$(printf '%q ' "${CAPRESE[@]}" bench --shapes "$BENCH_SHAPE" \
    --dtypes "$DTYPE" --device "$DEVICE" --repeats 5 --out "$WORK/latency.json") && finite_metrics $WORK/latency.json"
grep -v '^\s*$' "$LAST_LOG" | tail -n 12 | sed 's/^/    /'

echo "$([ $FAILED -eq 0 ] && echo 'ALL PASSED' || echo "$FAILED FAILED") in $(( $(date +%s) - STARTED )) s (logs: $WORK)"
[ "${KEEP:-0}" = 1 ] || [ $FAILED -ne 0 ] || rm -rf "$WORK"
[ $FAILED -eq 0 ]
