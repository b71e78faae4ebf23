# Sourced by bench/gpu.sh and bench/gpu_sweep.sh: one step of a check, run with a time limit.
#
# step NAME LIMIT_S CMD...: run CMD with a time limit (then SIGKILL 10 s later), its stdout and
# stderr to $OUT/NAME.log; sets RC (its exit status) and SECS (its wall time)
step() {
    local name=$1 limit=$2
    shift 2
    echo "== $name: $*" >&2
    local t0=$SECONDS
    timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
    RC=$?
    SECS=$((SECONDS - t0))
    if [ "$RC" = 124 ] || [ "$RC" = 137 ]; then
        echo "(killed after the ${limit} s limit)" >>"$OUT/$name.log"
    fi
}
