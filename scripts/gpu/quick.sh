#!/usr/bin/env bash
# On the GPU machine: a quick check of a few GPU targets, when bench/gpu/run.sh
# (everything, ~4 minutes) is more than a change needs. Unpacks the carried
# .debs, builds codec/ + gpu/ (+ the GPU benches) in /tmp/seqkv-quick, builds
# only the given targets and runs each: tests (names ending in _test) with
# the gtest filter QUICK_FILTER (default "*Cuda*": the CPU cases run on the
# development machine), benches with the row filter QUICK_BENCH_ARG if set
# (seq_encode_bench's rate-control rows each take a CPU rate-control encode of
# an 8K chunk to compare: minutes without a filter). Each target's whole
# output also goes to $OUT/TARGET.log as it runs, so a run that reaches its
# time limit still brings back what it printed.
# Usage (device run, carrying .debs and .shared):
#   bash scripts/gpu/quick.sh seq_encode_gpu_test seq_encode_bench
#   QUICK_BENCH_ARG='lanes2 int12' SEQKV_GPU_STAGE_TIMES=1 bash scripts/gpu/quick.sh seq_encode_bench
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
[ $# -gt 0 ] || { echo "usage: quick.sh TARGET..." >&2; exit 2; }
build=/tmp/seqkv-quick
# shellcheck source=codec_only.sh
source "$root/scripts/gpu/codec_only.sh"
codec_only_build "$build" "$@" || exit 1
logs="${OUT:-/tmp/seqkv-quick-logs}"
mkdir -p "$logs"
status=0
for t in "$@"; do
  echo "== $t"
  case "$t" in
    *_test) "$build/tests/$t" --gtest_filter="${QUICK_FILTER:-*Cuda*}" 2>&1 | tee "$logs/$t.log" |
              grep -E "^\[  (PASSED|FAILED|SKIPPED)|Failure|tests ran|^\[ tolerance" | head -80
            [ "${PIPESTATUS[0]}" -eq 0 ] || status=1 ;;
    *) "$build/$t" ${QUICK_BENCH_ARG:+"$QUICK_BENCH_ARG"} 2>&1 | tee "$logs/$t.log" | tail -30
       [ "${PIPESTATUS[0]}" -eq 0 ] || status=1 ;;
  esac
done
exit $status
