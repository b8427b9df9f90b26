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
# What the codec tests read from ../shared (which does not travel): the dev
# dumps, the dev token split and the tinyllama-12m model (~51 MB in all; the
# whole transfer must stay under the device tool's 64 MiB).
mkdir -p "$root/.shared/kvdata" "$root/.shared/models"
cp -r "$root/../shared/kvdata/dev" "$root/.shared/kvdata/"
cp "$root/../shared/kvdata/dev-tokens.u16" "$root/../shared/kvdata/dev-tokens.json" "$root/.shared/kvdata/"
cp -r "$root/../shared/models/tinyllama-12m" "$root/.shared/models/"
chmod -R u+w "$root/.shared"
du -sh "$root/.shared"
