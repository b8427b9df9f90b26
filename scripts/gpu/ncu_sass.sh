#!/usr/bin/env bash
# On the GPU machine: profile one launch of a kernel with ncu (--set full) and
# export its per-SASS-instruction counts, for scripts/gpu/sass_hot.py on the
# development machine. Builds TARGET (a bench or test of the codec-only CUDA
# build with bench/gpu/bench.cmake, as quick.sh) and runs it under ncu with
# the environment given after it.
# Usage (device run, carrying .debs and .shared):
#   bash scripts/gpu/ncu_sass.sh seq_decode_bench 'SlDecodeKernelILb1ELj256' SEQKV_BENCH_LARGE=32
# KERNEL is a regex on the mangled name (template arguments included, e.g.
# ILb1ELj256 for <true, 256>); NCU_SKIP=N profiles the launch after the
# first N matching ones (e.g. 1: a per-layer kernel's layer 1); BENCH_ARG is
# passed to the target (a bench's row filter: seq_decode_bench matches a
# batch's name, e.g. 'e2e-8k seq same-head lanes3', and takes its maths from
# SEQKV_BENCH_MATHS, e.g. SEQKV_BENCH_MATHS=f16 after the kernel regex). Writes $OUT/kernel.ncu-rep, $OUT/sass.csv and
# $OUT/details.txt, and prints the headline metrics.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
[ $# -ge 2 ] || { echo "usage: ncu_sass.sh TARGET KERNEL_REGEX [VAR=VALUE...]" >&2; exit 2; }
target=$1 kernel=$2
shift 2
out="${OUT:?set OUT (the device run sets it)}"
build=/tmp/seqkv-quick
# shellcheck source=codec_only.sh
source "$root/scripts/gpu/codec_only.sh"
codec_only_build "$build" "$target" || exit 1
bin="$build/$target"
[ -x "$bin" ] || bin="$build/tests/$target"
ncu_bin="$(codec_only_ncu)" || { echo "no ncu on this machine" >&2; exit 1; }
env "$@" "$ncu_bin" --clock-control none --kernel-name-base mangled -k regex:"$kernel" --launch-skip "${NCU_SKIP:-0}" --launch-count 1 \
  --set full --import-source no -o "$out/kernel" "$bin" ${BENCH_ARG:+"$BENCH_ARG"} >"$out/ncu_run.txt" 2>&1
[ -f "$out/kernel.ncu-rep" ] || { tail -20 "$out/ncu_run.txt"; exit 1; }
"$ncu_bin" -i "$out/kernel.ncu-rep" --page source --print-source sass --csv >"$out/sass.csv" 2>&1
"$ncu_bin" -i "$out/kernel.ncu-rep" --page details >"$out/details.txt" 2>&1
grep -E "^  +(Duration|Issue Slots Busy|Issued Warp Per Scheduler|Achieved Occupancy|Warp Cycles Per Issued|Avg. Active Threads|Registers Per Thread)" \
  "$out/details.txt"
