#!/usr/bin/env bash
# Downloads the few -dev packages that a codec-only build needs and the GPU
# machine lacks, as .deb files into .debs/ (git-ignored; the device run
# carries it). Run here, where apt reaches Debian's archive.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
mkdir -p "$root/.debs"
cd "$root/.debs"
apt-get download libxxhash-dev nlohmann-json3-dev libgtest-dev googletest 2>&1 | grep -v "^W: Download is performed unsandboxed" || true
ls -1 "$root/.debs"
# The dev dumps, for the codec tests there (../shared does not travel).
mkdir -p "$root/.shared/kvdata"
cp -r "$root/../shared/kvdata/dev" "$root/.shared/kvdata/"
