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
# built (the build's whole output in BUILD_DIR/build.log, its errors and
# warnings shown), then the data the tests and benches read
# (SEQKV_SHARED_DIR: the carried .shared) exported. For quick.sh,
# ncu_sass.sh, kernel_times.sh and ab_bench.sh; fails when the configuration
# or the build does (so no caller runs a binary left from an earlier build).
codec_only_build() {
  local build=$1
  shift
  codec_only_configure "$build" -DCMAKE_PROJECT_seqkv_INCLUDE="$root/bench/gpu/bench.cmake" >/dev/null || return 1
  local status=0
  cmake --build "$build" -j "$(nproc)" --target "$@" >"$build/build.log" 2>&1 || status=$?
  grep -E "error|warning" "$build/build.log" | head -20
  [ "$status" -eq 0 ] || tail -5 "$build/build.log"
  [ -d "$root/.shared" ] && export SEQKV_SHARED_DIR="$root/.shared"
  export SEQKV_SOURCE_DIR="$root"
  return $status
}

# The path of Nsight Compute's ncu on this machine; nothing (and status 1) without one.
codec_only_ncu() {
  local bin
  bin="$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)"
  [ -n "$bin" ] && echo "$bin"
}

# ab_base_into DIR: BASE's side of a same-run A/B (scripts/gpu/ab_prepare.sh)
# over the tree in DIR: $root/.ab/base's files copied in, the files BASE
# does not have (.ab/added) removed. For ab_bench.sh (DIR = the checkout)
# and sweep.sh (a copy of it).
ab_base_into() {
  local dir=$1 f
  cp -r "$root/.ab/base/." "$dir/"
  while IFS= read -r f; do [ -n "$f" ] && rm -f "$dir/$f"; done <"$root/.ab/added"
}
