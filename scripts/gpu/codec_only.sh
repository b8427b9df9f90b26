# Sourced by the GPU-machine scripts (quick.sh, ncu_sass.sh, check.sh): the
# codec-only CUDA build's configuration. codec_only_configure BUILD_DIR
# [CMAKE_ARGS...] unpacks the carried .debs (scripts/gpu/fetch_debs.sh) into
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
