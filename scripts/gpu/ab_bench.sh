#!/usr/bin/env bash
# On the GPU machine: a same-run A/B of a GPU bench. Builds TARGET (codec-only
# CUDA build with the GPU benches, as quick.sh) from the working tree and runs
# it ("after"), then swaps in .ab/'s files (scripts/gpu/ab_prepare.sh, run
# here first), rebuilds, runs it again ("before"), and puts the working
# tree's files back; AB_ORDER (default "after before") sets the sequence,
# e.g. "after before after". Each run's whole output goes to
# $OUT/ab-N-SIDE.log; the last lines of each are printed, labelled.
# Usage (device run, carrying .debs, .shared and .ab):
#   bash scripts/gpu/ab_bench.sh seq_encode_bench 'same-head lanes2 int12'
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
[ $# -ge 1 ] || { echo "usage: ab_bench.sh TARGET [BENCH_ARG]" >&2; exit 2; }
target=$1 arg=${2:-}
[ -f "$root/.ab/rev" ] || { echo "ab_bench: no .ab/ (run scripts/gpu/ab_prepare.sh BASE here, carry .ab)" >&2; exit 2; }
out="${OUT:-/tmp/seqkv-ab}"
mkdir -p "$out"
build=/tmp/seqkv-quick
saved=/tmp/seqkv-ab-after
# shellcheck source=codec_only.sh
source "$root/scripts/gpu/codec_only.sh"
# The working tree's side of every file the swap touches: a copy in $saved,
# or (a file BASE has and the working tree does not) a line in $saved.absent.
rm -rf "$saved" "$saved.absent" && mkdir -p "$saved" && : >"$saved.absent"
{ (cd "$root/.ab/base" && find . -type f | sed 's|^\./||'); cat "$root/.ab/added"; } | while IFS= read -r f; do
  [ -n "$f" ] || continue
  if [ -f "$root/$f" ]; then
    mkdir -p "$saved/$(dirname "$f")"
    cp "$root/$f" "$saved/$f"
  else
    echo "$f" >>"$saved.absent"
  fi
done
side_is=after
use() {  # use after|before: the working tree's files or BASE's
  [ "$1" = "$side_is" ] && return 0
  local f
  if [ "$1" = before ]; then
    ab_base_into "$root"
  else
    cp -r "$saved/." "$root/"
    while IFS= read -r f; do [ -n "$f" ] && rm -f "$root/$f"; done <"$saved.absent"
  fi
  side_is=$1
}
status=0
n=0
side_is_built=none
for side in ${AB_ORDER:-after before}; do
  n=$((n + 1))
  use "$side"
  log="$out/ab-$n-$side.log"
  side_is_built=$side
  if ! codec_only_build "$build" "$target" >"$log" 2>&1; then  # never the other side's binary
    echo "== $n: $side: build failed"
    tail -20 "$log"
    status=1
    continue
  fi
  bin="$build/$target"
  [ -x "$bin" ] || bin="$build/tests/$target"
  "$bin" ${arg:+"$arg"} >>"$log" 2>&1 || status=1
  echo "== $n: $side ($([ "$side" = before ] && cat "$root/.ab/rev" || echo "working tree"))"
  tail -12 "$log"
done
use after
# A later call on this (warm) machine builds in the same directory, from a
# fresh copy of the working tree that keeps its files' own modification
# times, older than the objects built here from BASE's files: make would
# then keep BASE's objects. So when BASE's side was built last, build the
# working tree's again now (2026-12-03: one such stale run).
if [ "$side_is_built" = before ]; then
  echo "== rebuilding $target from the working tree (the build directory held BASE's objects)"
  codec_only_build "$build" "$target" >"$out/ab-rebuild.log" 2>&1 || { tail -20 "$out/ab-rebuild.log"; status=1; }
fi
exit $status
