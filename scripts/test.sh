#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian machine:
#   1. installs dependencies (apt-get),
#   2. builds with g++ and runs every test (CTest),
#   3. builds codec/ and gpu/ with clang + AddressSanitizer/UndefinedBehaviorSanitizer
#      and runs their tests and the chunk-decoder fuzzer.
# Environment: SKIP_DEPS=1 skips step 1; SKIP_SANITIZE=1 skips step 3.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
[ "${SKIP_DEPS:-0}" = 1 ] || bash scripts/install_deps.sh

echo "== build (g++) =="
bash scripts/build.sh "$root/build" -DSEQKV_BUILD_BENCH=ON
echo "== tests =="
(cd build && ctest --output-on-failure -j 2 --timeout 900)

if [ "${SKIP_SANITIZE:-0}" != 1 ]; then
  echo "== build (clang, ASan + UBSan, codec and gpu only) =="
  CC=clang CXX=clang++ bash scripts/build.sh "$root/build-asan" -DSEQKV_SANITIZE=ON -DSEQKV_FUZZ=ON \
    -DSEQKV_CODEC_ONLY=ON -DSEQKV_BUILD_BENCH=OFF -DSEQKV_CUDA=OFF
  echo "== tests under sanitizers, and the fuzzer =="
  (cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --output-on-failure -j 2 --timeout 900)
fi
