#!/usr/bin/env bash
# Here, before a device run: the "before" side of a same-run A/B
# (scripts/gpu/ab_bench.sh). Writes .ab/ (git-ignored; the device run carries
# it): .ab/rev names BASE, .ab/base/PATH holds BASE's version of each file
# under codec/, gpu/, bench/ and CMakeLists.txt that differs from the working
# tree, .ab/added lists the files the working tree has and BASE does not.
# Usage: bash scripts/gpu/ab_prepare.sh BASE_REV   (e.g. main, HEAD~1)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
[ $# -eq 1 ] || { echo "usage: ab_prepare.sh BASE_REV" >&2; exit 2; }
base=$1
cd "$root"
git rev-parse --verify -q "$base^{commit}" >/dev/null || { echo "ab_prepare: no commit '$base'" >&2; exit 2; }
rm -rf .ab
mkdir -p .ab/base
: >.ab/added
echo "$base ($(git rev-parse --short "$base"))" >.ab/rev
changed=0
# Tracked files that differ (modified or deleted here), then untracked ones.
while IFS= read -r path; do
  if git cat-file -e "$base:$path" 2>/dev/null; then
    mkdir -p ".ab/base/$(dirname "$path")"
    git show "$base:$path" >".ab/base/$path"
  else
    echo "$path" >>.ab/added
  fi
  changed=$((changed + 1))
done < <({ git diff --name-only "$base" -- codec gpu bench CMakeLists.txt
           git ls-files --others --exclude-standard -- codec gpu bench; } | sort -u)
[ "$changed" -gt 0 ] || { echo "ab_prepare: no file under codec/ gpu/ bench/ differs from $base" >&2; exit 1; }
echo "ab_prepare: $changed file(s) differ from $(cat .ab/rev):"
(cd .ab/base && find . -type f | sed 's|^\./|  |' | sort)
sed 's/^/  (added) /' .ab/added
