#!/usr/bin/env bash
# The offline GPU-node check: a real sweep with trials sharing GPUs, on the node a researcher is
# handed (PyTorch installed, no internet, Ray not installed).
#
# 1. On a connected machine, pack the wheels: this project's and every package it needs (Ray and
#    its dependencies included) except PyTorch's own stack (torch, torchvision, triton, nvidia-*, cuda-*),
#    which the node has; for the node's Python and platform. Wheels over 60 MB (Ray's, about 79 MB)
#    are split into parts of at most 60 MB; SHA256SUMS holds each whole wheel's digest:
#
#      bash bench/gpu_sweep.sh --pack wheels/ --python-version 3.11 --platform manylinux2014_x86_64
#
#    (defaults: --python's version and this machine's architecture; --platform is repeatable).
#    With --node-freeze node.txt (`python -m pip freeze > node.txt`, run on the node), packages the
#    node already has are kept at its versions where the requirements allow, and not packed.
# 2. Copy the checkout and wheels/ to the node (wheels/ may sit in bench/, the default), then:
#
#      bash bench/gpu_sweep.sh --wheels wheels/ --dry-run   # join, check, install, import; nothing else
#      bash bench/gpu_sweep.sh --wheels wheels/             # and then the GPU check below
#
#    The parts are joined and checked against SHA256SUMS, every wheel is installed with pip
#    (--no-index --no-deps) into a fresh target, $OUT/site, which the node's Python then reads
#    through PYTHONPATH beside its own PyTorch; every requirement of every installed wheel must be
#    met there, and Ray, Ray Tune and this project must import.
#
# The GPU check (CUDA needed; without it the install check is all, and the script says so):
#   - sweeps/quickstart.yaml on the GPU, every trial with gpu: 0.5 (two per GPU), runtime.device
#     cuda, bf16 autocast, channels_last; nvidia-smi samples each GPU's utilisation meanwhile
#   - the sweep's quiet latency pass, on one whole GPU
#   - the same sweep on the CPU (runtime.device: cpu as the file has it), for each trial's accuracy
#   - bench/train_throughput.py --device cuda (resnet20, batch 128; goal >= 3x the plain loop)
#   - bench/rebuild_speedup.py --device cuda --round-to auto
# then one summary (bench/gpu_sweep_summary.py): trials per GPU and the most at once on each, GPU
# utilisation over the sweep, the trainer ratio, and each trial's accuracy on the GPU next to the
# CPU's. Each step's output goes to $OUT/<step>.log (default OUT: /tmp/gpu-sweep), the summary to
# $OUT/summary.txt.
#
#   --python PY   the node's Python with PyTorch (default: .venv/bin/python if present, else python3)
#
# Exit status: 0 when every step passed, 1 when one failed, 2 on a bad argument or input.

set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PROG=bench/gpu_sweep.sh
PART_SIZE=${PART_SIZE:-60000000}  # bytes: parts of at most 60 MB
# modules the install check imports (PyTorch's come from the node)
IMPORTS=${GPU_SWEEP_IMPORTS:-"ray ray.tune prune_core prune_sweep torch_pruning optuna pandas pyarrow"}

die() {  # one line, exit status 2 (bad input) unless given
    echo "$PROG: error: $1" >&2
    exit "${2:-2}"
}

MODE=run
WHEELS=$ROOT/bench/wheels
OUT=${OUT:-/tmp/gpu-sweep}
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
PYVER=""
PLATFORMS=()
DOWNLOAD=1
NODE_FREEZE=""
while [ $# -gt 0 ]; do
    case "$1" in
        --pack) [ $# -ge 2 ] || die "--pack needs a directory"; MODE=pack; WHEELS=$2; shift ;;
        --dry-run) MODE=dry ;;
        --wheels) [ $# -ge 2 ] || die "--wheels needs a directory"; WHEELS=$2; shift ;;
        --python) [ $# -ge 2 ] || die "--python needs an interpreter"; PY=$2; shift ;;
        --python-version) [ $# -ge 2 ] || die "--python-version needs X.Y"; PYVER=$2; shift ;;
        --platform) [ $# -ge 2 ] || die "--platform needs a tag"; PLATFORMS+=("$2"); shift ;;
        --no-download) DOWNLOAD=0 ;;
        --node-freeze) [ $# -ge 2 ] || die "--node-freeze needs a file"; NODE_FREEZE=$2; shift ;;
        -h | --help) sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$1'; expected --pack DIR, --dry-run, --wheels DIR, --python PY, --python-version X.Y, --platform TAG, --node-freeze FILE or --no-download" ;;
    esac
    shift
done
WHEELS=$(cd "$(dirname "$WHEELS")" 2>/dev/null && echo "$(pwd)/$(basename "$WHEELS")") \
    || die "--wheels/--pack: the folder above '$WHEELS' does not exist"
"$PY" -c "import sys" 2>/dev/null || die "--python $PY: not a Python interpreter"

# --- packing, on a connected machine ------------------------------------------------------------
pack() {
    mkdir -p "$WHEELS" || die "--pack $WHEELS: cannot create it"
    if [ "$DOWNLOAD" = 1 ]; then
        local tmp ver arch tags=() reqs
        tmp=$(mktemp -d)
        ver=${PYVER:-$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')}
        arch=$(uname -m)
        [ ${#PLATFORMS[@]} -gt 0 ] || PLATFORMS=("manylinux2014_$arch" "manylinux_2_17_$arch" "manylinux_2_28_$arch")
        tags=(--only-binary=:all: --python-version "$ver" --implementation cp)
        for p in "${PLATFORMS[@]}"; do tags+=(--platform "$p"); done
        echo "packing for Python $ver on ${PLATFORMS[*]} into $WHEELS"
        "$PY" -m pip wheel --no-deps --no-build-isolation -q -w "$WHEELS" "$ROOT" >"$tmp/wheel.log" 2>&1 \
            || die "building this project's wheel failed: $(tail -n 1 "$tmp/wheel.log")" 1
        local own
        own=$(ls -t "$WHEELS"/prune_sweep-*.whl | head -n 1)
        # pip resolves the whole set for the node's tags (at the node's versions where they do);
        # PyTorch's stack and what the node has at the resolved version are left out (bench/wheelset.py)
        : >"$tmp/node.txt"
        if [ -n "$NODE_FREEZE" ]; then
            [ -f "$NODE_FREEZE" ] || die "--node-freeze $NODE_FREEZE: no such file; make it on the node with: python -m pip freeze > node.txt"
            "$PY" "$ROOT/bench/wheelset.py" constraints "$NODE_FREEZE" >"$tmp/node.txt"
        fi
        resolve() {
            "$PY" -m pip install --dry-run --ignore-installed -q --report "$tmp/report.json" "${tags[@]}" "$@" \
                --target "$tmp/unused" "$own" >"$tmp/resolve.log" 2>&1
        }
        if ! resolve -c "$tmp/node.txt"; then
            [ -s "$tmp/node.txt" ] || die "resolving the dependencies failed: $(grep -v '^WARNING' "$tmp/resolve.log" | tail -n 1)" 1
            echo "the node's versions do not satisfy every requirement ($(grep -v '^WARNING' "$tmp/resolve.log" | tail -n 1)); resolving without them"
            resolve || die "resolving the dependencies failed: $(grep -v '^WARNING' "$tmp/resolve.log" | tail -n 1)" 1
        fi
        reqs=$("$PY" "$ROOT/bench/wheelset.py" select "$tmp/report.json" "$tmp/node.txt")
        # shellcheck disable=SC2086
        "$PY" -m pip download --no-deps "${tags[@]}" -q -d "$WHEELS" $reqs >"$tmp/download.log" 2>&1 \
            || die "downloading the wheels failed: $(grep -v '^WARNING' "$tmp/download.log" | tail -n 1)" 1
        rm -rf "$tmp"
    fi
    local f name size count=0 split_n=0
    cd "$WHEELS" || die "--pack $WHEELS: cannot enter it"
    touch SHA256SUMS
    for f in *.whl; do
        [ -e "$f" ] || continue
        count=$((count + 1))
        grep -v "  $f\$" SHA256SUMS >SHA256SUMS.new
        sha256sum "$f" >>SHA256SUMS.new
        mv SHA256SUMS.new SHA256SUMS
        size=$(stat -c %s "$f")
        if [ "$size" -gt "$PART_SIZE" ]; then
            rm -f "$f".part-*
            split -b "$PART_SIZE" -d -a 2 "$f" "$f.part-" && rm "$f"
            split_n=$((split_n + 1))
            echo "split $f ($((size / 1000000)) MB) into $(ls "$f".part-* | wc -l) parts"
        fi
    done
    cd "$ROOT" || exit 2
    echo "packed: $count wheels in $WHEELS ($split_n split into parts of at most $PART_SIZE bytes), SHA256SUMS written"
    echo "next: copy this checkout and $(basename "$WHEELS")/ to the node, then: bash $PROG --wheels <its path> --dry-run"
}

if [ "$MODE" = pack ]; then
    pack
    exit 0
fi

# --- on the node: join, check, install, import ---------------------------------------------------
[ -d "$WHEELS" ] || die "--wheels $WHEELS: no such folder; pack one on a connected machine with: bash $PROG --pack DIR"
mkdir -p "$OUT" || die "OUT=$OUT: cannot create it"
OUT=$(cd "$OUT" && pwd)
JOINED=$OUT/wheels
TARGET=$OUT/site
rm -rf "$JOINED" "$TARGET"
mkdir -p "$JOINED"
LINES=()
note() { LINES+=("$*"); }

nwhl=0
njoined=0
for f in "$WHEELS"/*.whl; do
    [ -e "$f" ] || continue
    ln -s "$f" "$JOINED/$(basename "$f")"
    nwhl=$((nwhl + 1))
done
for first in "$WHEELS"/*.whl.part-00; do
    [ -e "$first" ] || continue
    whl=${first%.part-00}
    cat "$whl".part-* >"$JOINED/$(basename "$whl")"  # part-00, part-01, ... in order
    nparts=$(ls "$whl".part-* | wc -l)
    note "joined $(basename "$whl") from $nparts parts"
    nwhl=$((nwhl + 1))
    njoined=$((njoined + 1))
done
[ "$nwhl" -gt 0 ] || die "--wheels $WHEELS: no wheels (*.whl or *.whl.part-00) in it; pack them with: bash $PROG --pack DIR"
if [ -f "$WHEELS/SHA256SUMS" ]; then
    bad=$(cd "$JOINED" && sha256sum -c --quiet "$WHEELS/SHA256SUMS" 2>/dev/null | sed -n 's/: FAILED.*//p' | head -n 3 | paste -sd, -)
    missing=$(cd "$JOINED" && awk '{print $2}' "$WHEELS/SHA256SUMS" | while read -r w; do [ -e "$w" ] || echo "$w"; done | head -n 3 | paste -sd, -)
    [ -z "$missing" ] || die "--wheels $WHEELS: SHA256SUMS lists $missing, which is not there (nor its parts); copy it again" 1
    [ -z "$bad" ] || die "--wheels $WHEELS: $bad does not match SHA256SUMS (a part missing, cut short or corrupt); copy it again" 1
    note "wheels: $nwhl from $WHEELS ($njoined joined from parts), every one matching SHA256SUMS"
else
    note "wheels: $nwhl from $WHEELS ($njoined joined from parts); no SHA256SUMS there, so they were not checked"
fi

t0=$SECONDS
"$PY" -m pip install --no-index --no-deps --no-compile --disable-pip-version-check -q --target "$TARGET" \
    "$JOINED"/*.whl >"$OUT/install.log" 2>&1 \
    || die "pip could not install the wheels into $TARGET: $(grep -v '^\s*$' "$OUT/install.log" | tail -n 1) (log: $OUT/install.log)" 1
note "installed: $nwhl wheels into $TARGET in $((SECONDS - t0)) s (pip install --no-index --no-deps --target)"

# every requirement of every installed wheel met (the node's PyTorch among them), and the imports
# work from a folder outside the checkout, so the project comes from the target
# shellcheck disable=SC2086
CHECK=$(cd "$OUT" && PYTHONPATH="$TARGET" "$PY" "$ROOT/bench/wheelset.py" check "$TARGET" $IMPORTS 2>&1)
rc=$?
[ "$rc" = 0 ] || die "the installed set does not work: $(echo "$CHECK" | tail -n 1)" 1
note "$CHECK"

finish() {
    printf '%s\n' "${LINES[@]}" >"$OUT/summary.txt"
    echo "======== $PROG summary ========"
    cat "$OUT/summary.txt"
    exit "$1"
}

if [ "$MODE" = dry ]; then
    note "dry run: the install check passed; nothing else ran"
    finish 0
fi
if ! PYTHONPATH="$TARGET" "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1; then
    note "no CUDA device (torch.cuda.is_available() is False): the install check passed; the GPU check needs one"
    finish 0
fi

# --- the GPU check -------------------------------------------------------------------------------
export PYTHONPATH="$TARGET"
FAILED=0
# shellcheck source=bench/steps.sh
. "$ROOT/bench/steps.sh"
checked() {  # checked NAME LIMIT_S CMD...: a step whose failure is a line of the summary
    step "$@"
    [ "$RC" = 0 ] || { FAILED=1; note "$1: FAILED (exit $RC after $SECS s; $OUT/$1.log): $(grep -v '^\s*$' "$OUT/$1.log" | tail -n 1)"; }
}
IFS='|' read -r NGPU GPU_NAME TORCH_V < <("$PY" -c "import torch
print(torch.cuda.device_count(), torch.cuda.get_device_name(0), torch.__version__, sep='|')")
CPUS=$(nproc)
note "device: $GPU_NAME x$NGPU, $CPUS CPUs, torch $TORCH_V"
"$PY" - "$ROOT/sweeps/quickstart.yaml" "$OUT" "$CPUS" "$NGPU" <<'EOF' || die "writing the sweep files failed" 1
import sys, yaml
src, out, cpus, ngpu = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
raw = yaml.safe_load(open(src))
gpu = {**raw, "name": "quickstart-gpu", "resources": {"cpu": max(1, min(4, cpus // (2 * ngpu))), "gpu": 0.5}}
gpu["base"] = {**raw["base"], "runtime": {**raw["base"]["runtime"], "device": "cuda", "amp": True, "amp_dtype": "bf16"}}
gpu["search"] = {**raw["search"], "max_concurrent": 0}  # as many as the GPUs hold: two per GPU
cpu = {**raw, "name": "quickstart-cpu", "resources": {"cpu": 2}, "search": {**raw["search"], "max_concurrent": max(1, cpus // 2)}}
for name, sweep in (("gpu", gpu), ("cpu", cpu)):
    yaml.safe_dump(sweep, open(f"{out}/quickstart_{name}.yaml", "w"), sort_keys=False)
EOF
rm -rf "$OUT/runs"
nvidia-smi --query-gpu=timestamp,index,utilization.gpu,memory.used --format=csv,noheader,nounits -lms 500 \
    >"$OUT/gpu_util.csv" 2>/dev/null &
SMI=$!
checked sweep_gpu 420 "$PY" launch.py "$OUT/quickstart_gpu.yaml" --storage "$OUT/runs" --no-dashboard
kill "$SMI" 2>/dev/null
checked sweep_cpu 420 "$PY" launch.py "$OUT/quickstart_cpu.yaml" --storage "$OUT/runs" --no-dashboard --no-quiet-latency
checked throughput 90 "$PY" bench/train_throughput.py --device cuda --model resnet20 --batch-size 128 --steps 60 --rounds 3
checked rebuild_speedup 150 "$PY" bench/rebuild_speedup.py --device cuda --round-to auto
while IFS= read -r line; do note "$line"; done < <("$PY" bench/gpu_sweep_summary.py --gpu "$OUT/runs/quickstart-gpu" \
    --cpu "$OUT/runs/quickstart-cpu" --util "$OUT/gpu_util.csv" --sweep-log "$OUT/sweep_gpu.log" \
    --throughput "$OUT/throughput.log" --rebuild "$OUT/rebuild_speedup.log" 2>&1)
note "overall: $([ "$FAILED" = 0 ] && echo 'every step passed' || echo 'some step FAILED (see above and its log)')"
finish "$FAILED"
