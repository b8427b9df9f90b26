# Sourced by the GPU-machine scripts (quick.sh, ncu_sass.sh, kernel_times.sh,
# check.sh): the codec-only CUDA build's configuration. codec_only_configure
# BUILD_DIR [CMAKE_ARGS...] unpacks the carried .debs (scripts/gpu/fetch_debs.sh) into
# /tmp/seqkv-deps, puts nvcc on PATH and configures codec/ and gpu/ only
# (SEQKV_CODEC_ONLY, CUDA on, Release) in BUILD_DIR; the caller checks its
# status. $root must be the checkout.
codec_only_configure() {
  local build=$1
  shift
  local deps=/tmp/seqkv-deps
  mkdir -p "$deps"
  local f
  for f in "$root"/.debs/*.deb; do dpkg -x "$f" "$deps"; done
  export PATH="/usr/local/cuda/bin:$PATH"
  cmake -S "$root" -B "$build" -DSEQKV_CODEC_ONLY=ON -DSEQKV_BUILD_BENCH=OFF -DSEQKV_CUDA=ON \
    -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$deps/usr" -DCMAKE_INCLUDE_PATH="$deps/usr/include" \
    -DGTest_DIR="$deps/usr/lib/x86_64-linux-gnu/cmake/GTest" "$@"
}

# codec_only_build BUILD_DIR TARGET...: the codec-only build with the GPU
# benches (bench/gpu/bench.cmake) configured in BUILD_DIR and the targets
# built (errors and warnings shown), then the data the tests and benches
# read (SEQKV_SHARED_DIR: the carried .shared) exported. For quick.sh,
# ncu_sass.sh and kernel_times.sh; fails when the configuration does.
codec_only_build() {
  local build=$1
  shift
  codec_only_configure "$build" -DCMAKE_PROJECT_seqkv_INCLUDE="$root/bench/gpu/bench.cmake" >/dev/null || return 1
  cmake --build "$build" -j "$(nproc)" --target "$@" 2>&1 | grep -E "error|warning" | head -20
  [ -d "$root/.shared" ] && export SEQKV_SHARED_DIR="$root/.shared"
  export SEQKV_SOURCE_DIR="$root"
  return 0
}

# The path of Nsight Compute's ncu on this machine; nothing (and status 1) without one.
codec_only_ncu() {
  local bin
  bin="$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)"
  [ -n "$bin" ] && echo "$bin"
}
