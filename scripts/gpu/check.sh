#!/usr/bin/env bash
# On the GPU machine: unpack the carried .debs, build codec/ and gpu/ only
# (SEQKV_CODEC_ONLY), and run their tests, GPU-labelled ones included.
# Usage (device run, carrying .debs): bash scripts/gpu/check.sh [OUT_DIR]
# SEQKV_CHECK_CMAKE_ARGS adds configure arguments (bench/gpu/run.sh uses it to
# add the GPU bench target to the same build).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
out="${1:-/tmp}"
deps=/tmp/seqkv-deps
mkdir -p "$deps"
for f in "$root"/.debs/*.deb; do dpkg -x "$f" "$deps"; done
export PATH="/usr/local/cuda/bin:$PATH"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
# shellcheck disable=SC2086
cmake -S "$root" -B /tmp/seqkv-build -DSEQKV_CODEC_ONLY=ON -DSEQKV_BUILD_BENCH=OFF -DSEQKV_CUDA=ON \
  -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$deps/usr" -DCMAKE_INCLUDE_PATH="$deps/usr/include" \
  -DGTest_DIR="$deps/usr/lib/x86_64-linux-gnu/cmake/GTest" ${SEQKV_CHECK_CMAKE_ARGS:-} 2>&1 | tail -5
cmake --build /tmp/seqkv-build -j "$(nproc)" 2>&1 | tail -3
cd /tmp/seqkv-build
# The dev dumps travel in .shared/ (copied there by scripts/gpu/fetch_debs.sh).
[ -d "$root/.shared" ] && export SEQKV_SHARED_DIR="$root/.shared"
ctest --output-on-failure -j 8 2>&1 | tee "$out/ctest.log" | tail -25
