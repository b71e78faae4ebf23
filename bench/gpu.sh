#!/usr/bin/env bash
# The GPU check in one go, on a CUDA machine (a few minutes on one H100/H200; each step has a
# time limit, 9 min 15 s in all, under the device machine's 10-minute command limit):
#
#   1. python -m pytest -m gpu -q -rs       the CUDA tests (tests/test_gpu.py)
#   2. bench/train_throughput.py --device cuda, resnet20 (batch 128) and resnet18 (batch 256):
#      images/s of prune_core's loop against a plain torchvision-style loop (goal: >= 3x)
#   3. bench/rebuild_speedup.py --device cuda --round-to auto: FLOPs reduction against measured
#      latency speedup after rebuild
#   4. bench/rebuild_speedup.py --device cuda --target latency (global, 0.3 and 0.5): the latency
#      kept against the target (goal: within 5 %)
#
# Each step's full output goes to ${OUT:-/tmp/gpu-bench}/<step>.log; one summary (each step's
# status, pytest's counts and skip reasons, the throughput ratios against the goal, the
# rebuild-speedup table) is printed at the end and kept in summary.txt. A failing step is
# recorded and the next one runs; optional packages that are missing (ray, optuna, onnx, ...) are
# listed, and the tests that need them skip. Without CUDA it prints one line and exits 0.
#
#   bash bench/gpu.sh                  # python: .venv/bin/python if present, else python3
#   OUT=/some/dir bash bench/gpu.sh
#
# Exit status: 0 when every step passed, 1 when any failed (the summary says which).

set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    echo "bench/gpu.sh: error: $PY cannot import torch; install the project first (pip install -e .)"
    exit 2
fi
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1; then
    echo "bench/gpu.sh: skipped: no CUDA device (torch.cuda.is_available() is False)"
    exit 0
fi

OUT=${OUT:-/tmp/gpu-bench}
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
FAILED=0
LINES=()
note() { LINES+=("$*"); }

# shellcheck source=bench/steps.sh
. "$ROOT/bench/steps.sh"  # step NAME LIMIT_S CMD...: sets RC and SECS

status_word() {  # the exit status in words
    case "$1" in
        0) echo "ok" ;;
        124 | 137) echo "failed: over its time limit" ;;
        *) echo "failed (exit $1)" ;;
    esac
}

# --- environment --------------------------------------------------------------------------------
ENV_LINE=$("$PY" - <<'EOF' 2>/dev/null
import importlib.util, platform, torch
missing = [m for m in ("ray", "optuna", "onnx", "onnxruntime", "pytest_timeout")
           if importlib.util.find_spec(m) is None]
print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
      f"Python {platform.python_version()}; optional packages missing: {', '.join(missing) or 'none'}")
EOF
)
note "GPU check ($(date -u '+%Y-%m-%d %H:%M UTC'), $(git rev-parse --short HEAD 2>/dev/null || echo 'no git'))"
note "device: ${ENV_LINE:-unknown (the environment query failed)}"
note "logs: $OUT"

# --- 1. the CUDA tests ----------------------------------------------------------------------------
if ! "$PY" -c "import pytest" >/dev/null 2>&1; then
    note "pytest -m gpu: skipped (pytest is not installed for $PY)"
else
    # other modules' optional imports (ray, optuna) must not stop the gpu tests from running
    step pytest 180 "$PY" -m pytest -m gpu -q -rs -p no:cacheprovider --continue-on-collection-errors tests
    counts=$(grep -E '^=*\s*[0-9]+ (passed|failed|skipped|deselected|error|errors)' "$OUT/pytest.log" | tail -n 1 \
             | sed -E 's/=//g; s/^ +| +$//g')
    [ -n "$counts" ] || counts=$(grep -E '(passed|failed|skipped|error|no tests ran)' "$OUT/pytest.log" | tail -n 1)
    # pytest exits 1 on failed tests and on collection errors; only the former fail this step
    nfailed=$(echo "$counts" | grep -oE '[0-9]+ failed' | grep -oE '[0-9]+' || echo 0)
    npassed=$(echo "$counts" | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+' || echo 0)
    if [ "$RC" = 124 ] || [ "$RC" = 137 ] || [ "${nfailed:-0}" != 0 ] || [ "${npassed:-0}" = 0 ]; then
        FAILED=1
        note "pytest -m gpu: FAILED (exit $RC, ${SECS} s): ${counts:-no summary line}"
    else
        note "pytest -m gpu: passed (${SECS} s): $counts"
    fi
    while IFS= read -r line; do note "  $line"; done < <(grep -E '^(SKIPPED|FAILED|ERROR) ' "$OUT/pytest.log" | head -n 20)
fi

# --- 2. training throughput -----------------------------------------------------------------------
for spec in "resnet20 128 60 60" "resnet18 256 40 75"; do
    read -r model batch steps limit <<<"$spec"
    step "throughput_$model" "$limit" "$PY" bench/train_throughput.py --device cuda --model "$model" \
        --batch-size "$batch" --steps "$steps" --rounds 3
    ratio=$(sed -nE 's/^ratio ours\/baseline: ([0-9.]+)x.*/\1/p' "$OUT/throughput_$model.log" | tail -n 1)
    ips=$(grep -E '^(torchvision-style|prune_core \(tensor)' "$OUT/throughput_$model.log" | awk '{print $NF}' | paste -sd/ -)
    if [ "$RC" != 0 ] || [ -z "$ratio" ]; then
        FAILED=1
        note "train_throughput $model (batch $batch): $(status_word "$RC") in ${SECS} s: $(tail -n 1 "$OUT/throughput_$model.log")"
    elif awk -v r="$ratio" 'BEGIN { exit !(r >= 3) }'; then
        note "train_throughput $model (batch $batch): ${ratio}x the plain loop (goal >= 3x: met; images/s plain/ours $ips; ${SECS} s)"
    else
        FAILED=1
        note "train_throughput $model (batch $batch): ${ratio}x the plain loop (goal >= 3x: NOT met; images/s plain/ours $ips; ${SECS} s)"
    fi
done

# --- 3. rebuild speedup ---------------------------------------------------------------------------
step rebuild_speedup 120 "$PY" bench/rebuild_speedup.py --device cuda --round-to auto
if [ "$RC" = 0 ]; then
    note "rebuild_speedup --device cuda --round-to auto: ok (${SECS} s)"
    while IFS= read -r line; do note "  $line"; done < <(grep -vE '^\s*$|Warning|warn\(' "$OUT/rebuild_speedup.log" | head -n 24)
else
    FAILED=1
    note "rebuild_speedup --device cuda --round-to auto: $(status_word "$RC") in ${SECS} s: $(grep -v '^\s*$' "$OUT/rebuild_speedup.log" | tail -n 1)"
fi

# --- 4. latency targets ---------------------------------------------------------------------------
step latency_target 120 "$PY" bench/rebuild_speedup.py --device cuda --target latency --scope global --ratios 0.3 0.5
if [ "$RC" = 0 ]; then
    note "rebuild_speedup --device cuda --target latency: ok (${SECS} s)"
    while IFS= read -r line; do note "  $line"; done < <(grep -E 'latency target|round_to auto' "$OUT/latency_target.log")
else
    FAILED=1
    note "rebuild_speedup --device cuda --target latency: $(status_word "$RC") in ${SECS} s: $(grep -v '^\s*$' "$OUT/latency_target.log" | tail -n 1)"
fi

# --- summary --------------------------------------------------------------------------------------
note "overall: $([ "$FAILED" = 0 ] && echo 'every step passed' || echo 'some step FAILED (see above and its log)')"
printf '%s\n' "${LINES[@]}" >"$SUMMARY"
echo
echo "======== bench/gpu.sh summary ========"
cat "$SUMMARY"
exit "$FAILED"
