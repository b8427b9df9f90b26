#!/usr/bin/env bash
# On the GPU machine, in one go: build codec/ + gpu/ + the benches, run the
# tests (scripts/gpu/check.sh), the GPU tests verbosely, the TurboQuant,
# lossless, seq entropy, seq decode and seq encode benches, then the prefill-recompute comparison,
# whose end-to-end table is printed last.
# Usage (device run, carrying .debs and .shared): bash bench/gpu/run.sh $OUT
# SEQKV_GPU_PROFILE=1 also profiles one paged decode and one encode launch with
# ncu (--clock-control none) into $OUT/ncu.txt.
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
# The GPU tests' full output goes to one file ($OUT brings back at most 8).
"$build/tests/turboquant_gpu_test" 2>&1 | tee "$out/gpu_tests.log" | grep -E "^\[  |inexact|1 ulp|FAIL|Failure" | tail -40
"$build/tests/lossless_gpu_test" 2>&1 | tee -a "$out/gpu_tests.log" | grep -E "^\[  (PASSED|FAILED|SKIPPED)|Failure" | tail -10
"$build/tests/seq_entropy_gpu_test" 2>&1 | tee -a "$out/gpu_tests.log" | grep -E "^\[  (PASSED|FAILED|SKIPPED)|corrupted|Failure" | tail -10
for t in seq_decode_gpu_test seq_encode_gpu_test; do
  "$build/tests/$t" 2>&1 | tee -a "$out/gpu_tests.log" | grep -E "^\[  (PASSED|FAILED|SKIPPED)|Failure" | tail -10
done
for b in turboquant_bench lossless_bench seq_entropy_bench seq_decode_bench seq_encode_bench; do
  if [ ! -x "$build/$b" ]; then echo "$b not built"; exit 1; fi
done
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv,noheader || true
"$build/turboquant_bench" 2>&1 | tee "$out/bench.log"
"$build/lossless_bench" 2>&1 | tee "$out/lossless_bench.log" | grep -vE "^E2E"
"$build/seq_entropy_bench" 2>&1 | tee "$out/seq_entropy_bench.log" | tail -14
"$build/seq_decode_bench" 2>&1 | tee "$out/seq_decode_bench.log" | grep -vE "^E2E"
"$build/seq_encode_bench" 2>&1 | tee "$out/seq_encode_bench.log"
if [ -n "${SEQKV_GPU_PROFILE:-}" ]; then
  ncu_bin="$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)"
  if [ -n "$ncu_bin" ]; then
    "$ncu_bin" --clock-control none -k regex:"TqDecodeKernel|TqEncodeKernel" --launch-count 3 --set full \
      "$build/turboquant_bench" --profile >"$out/ncu.txt" 2>&1 || echo "ncu failed (see ncu.txt)"
    grep -E "TqDecodeKernel|TqEncodeKernel|Duration|Memory Throughput|DRAM Throughput|Compute \(SM\)|Issue Slots Busy|Achieved Occupancy|Registers Per" "$out/ncu.txt" | head -40
  else
    echo "no ncu on this machine"
  fi
fi
nvidia-smi --query-gpu=clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv,noheader || true
PYTHONUNBUFFERED=1 python3 "$root/bench/gpu/prefill_recompute.py" --decode-log "$out/bench.log" \
  --decode-log "$out/lossless_bench.log" --decode-log "$out/seq_decode_bench.log" 2>&1 | tee "$out/prefill.log"
