#!/usr/bin/env bash
# On the GPU machine: unpack the carried .debs, build codec/ and gpu/ only
# (SEQKV_CODEC_ONLY), and run their tests, GPU-labelled ones included.
# Usage (device run, carrying .debs): bash scripts/gpu/check.sh [OUT_DIR]
# SEQKV_CHECK_CMAKE_ARGS adds configure arguments (bench/gpu/run.sh uses it to
# add the GPU bench target to the same build).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
out="${1:-/tmp}"
# shellcheck source=codec_only.sh
source "$root/scripts/gpu/codec_only.sh"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
# shellcheck disable=SC2086
codec_only_configure /tmp/seqkv-build ${SEQKV_CHECK_CMAKE_ARGS:-} 2>&1 | tail -5
cmake --build /tmp/seqkv-build -j "$(nproc)" 2>&1 | tail -3
cd /tmp/seqkv-build
# The dev dumps travel in .shared/ (copied there by scripts/gpu/fetch_debs.sh).
[ -d "$root/.shared" ] && export SEQKV_SHARED_DIR="$root/.shared"
ctest --output-on-failure -j 8 2>&1 | tee "$out/ctest.log" | tail -25
