#!/usr/bin/env bash
# On the GPU machine, in one go: build codec/ + gpu/ + the bench, run the
# tests (scripts/gpu/check.sh), the TurboQuant GPU test verbosely, then the
# bench, whose table is printed last.
# Usage (device run, carrying .debs and .shared): bash bench/gpu/run.sh $OUT
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
out="${1:-/tmp}"
mkdir -p "$out"
date -u
SEQKV_CHECK_CMAKE_ARGS="-DCMAKE_PROJECT_seqkv_INCLUDE=$root/bench/gpu/bench.cmake" \
  bash "$root/scripts/gpu/check.sh" "$out" 2>&1 | tee "$out/check.log" | tail -30
build=/tmp/seqkv-build
[ -d "$root/.shared" ] && export SEQKV_SHARED_DIR="$root/.shared"
export SEQKV_SOURCE_DIR="$root"
"$build/tests/turboquant_gpu_test" 2>&1 | tee "$out/turboquant_gpu_test.log" | grep -E "^\[  |inexact|1 ulp|FAIL|Failure" | tail -40
if [ ! -x "$build/turboquant_bench" ]; then echo "bench not built"; exit 1; fi
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv,noheader || true
"$build/turboquant_bench" 2>&1 | tee "$out/bench.log"
