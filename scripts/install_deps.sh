#!/usr/bin/env bash
# Installs every Debian package seqkv needs to build, test and run.
# Idempotent and non-interactive; run as root (or with sudo available).
set -euo pipefail

PACKAGES=(
  # build
  build-essential cmake ninja-build pkg-config clang libclang-rt-14-dev
  # libraries
  libzstd-dev libxxhash-dev nlohmann-json3-dev libcli11-dev libspdlog-dev libyaml-cpp-dev
  librocksdb-dev libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  prometheus-cpp-dev libucx-dev pybind11-dev
  # tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev redis-server etcd-server
  # model-level quality tool (Debian's Python, PyTorch and numpy)
  python3 python3-torch python3-numpy python3-pytest
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install_deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi
echo "install_deps: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
