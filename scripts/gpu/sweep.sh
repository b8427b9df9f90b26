#!/usr/bin/env bash
# On the GPU machine: one bench, built once, run under several environments
# in alternating rounds, with a summary printed last (so the run's output tail
# holds it). For measuring switches read from the environment (e.g.
# SEQKV_DENSE_PDL=0); a variant named "before" runs BASE's binary instead,
# built from .ab/ (scripts/gpu/ab_prepare.sh BASE, run here first) in a copy
# of the tree, beside the working tree's build.
# Usage (device run, carrying .debs and .shared, and .ab for "before"):
#   SEQKV_BENCH_MATHS=f16 SWEEP_ROW='^e2e-8k seq same-head lanes3 f16 ' \
#     bash scripts/gpu/sweep.sh seq_decode_bench 'e2e-8k seq same-head lanes3' \
#     'on:' 'off:SEQKV_DENSE_PDL=0' 'before:'
# Each variant is LABEL:ASSIGNMENTS (space-separated VAR=VALUE, may be
# empty). SWEEP_ROUNDS (default 3) rounds; no run starts after SWEEP_BUDGET
# seconds (default 480, builds included). SWEEP_ROW is an extended regex
# for the rows to keep (default: every line); SWEEP_COL the field to
# summarize, counted from the row's end (default 4: seq_decode_bench's
# "steady ms"; 1 is the last field). Every run's whole output goes to
# $OUT/sweep.log (one file: a device run brings back a limited number).
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
[ $# -ge 3 ] || { echo "usage: sweep.sh TARGET BENCH_ARG LABEL:VARS..." >&2; exit 2; }
target=$1 arg=$2
shift 2
out="${OUT:-/tmp/seqkv-sweep}"
mkdir -p "$out"
log="$out/sweep.log"
: >"$log"
start=$SECONDS
# shellcheck source=codec_only.sh
source "$root/scripts/gpu/codec_only.sh"

need_before=0
for v in "$@"; do [ "${v%%:*}" = before ] && need_before=1; done
before_bin=""
if [ "$need_before" = 1 ]; then
  [ -f "$root/.ab/rev" ] || { echo "sweep: a 'before' variant needs .ab/ (scripts/gpu/ab_prepare.sh)" >&2; exit 2; }
  tree=/tmp/seqkv-sweep-base
  rm -rf "$tree" && mkdir -p "$tree"
  (cd "$root" && for f in * .debs; do cp -r "$f" "$tree/"; done)
  ab_base_into "$tree"
  (root=$tree; codec_only_build /tmp/seqkv-sweep-base-build "$target" >"$out/build-before.log" 2>&1) &
  before_pid=$!
fi
codec_only_build /tmp/seqkv-quick "$target" >"$out/build.log" 2>&1 || { tail -20 "$out/build.log"; exit 1; }
bin=/tmp/seqkv-quick/$target
if [ "$need_before" = 1 ]; then
  wait "$before_pid" || { echo "sweep: BASE's build failed"; tail -20 "$out/build-before.log"; exit 1; }
  before_bin=/tmp/seqkv-sweep-base-build/$target
  echo "sweep: BASE is $(cat "$root/.ab/rev")"
fi
echo "sweep: built in $((SECONDS - start)) s"

summary="$out/sweep.values"
: >"$summary"
status=0
for round in $(seq 1 "${SWEEP_ROUNDS:-3}"); do
  for v in "$@"; do
    if [ $((SECONDS - start)) -ge "${SWEEP_BUDGET:-480}" ]; then
      echo "sweep: budget reached in round $round"
      break 2
    fi
    label=${v%%:*} vars=${v#*:}
    run_bin=$bin
    [ "$label" = before ] && run_bin=$before_bin
    echo "=== round $round: $label ($vars)" >>"$log"
    # shellcheck disable=SC2086  # vars: space-separated assignments
    rows="$(env $vars "$run_bin" ${arg:+"$arg"} 2>&1 | tee -a "$log" | grep -E "${SWEEP_ROW:-.}")" || status=1
    while IFS= read -r row; do
      [ -n "$row" ] || continue
      echo "$round $label | $row"
      echo "$label $(echo "$row" | awk -v c="${SWEEP_COL:-4}" '{print $(NF - c + 1)}')" >>"$summary"
    done <<<"$rows"
  done
done
echo "== summary: field ${SWEEP_COL:-4} from the end of each kept row, per variant (values in run order; median)"
awk '{n[$1]++; v[$1, n[$1]] = $2; if (!($1 in seen)) {seen[$1] = 1; order[++k] = $1}}
  END {
    for (i = 1; i <= k; i++) {
      l = order[i]; m = n[l]; s = ""
      for (j = 1; j <= m; j++) { a[j] = v[l, j]; s = s " " v[l, j] }
      for (j = 2; j <= m; j++) { x = a[j]; p = j - 1; while (p > 0 && a[p] + 0 > x + 0) { a[p + 1] = a[p]; p-- } a[p + 1] = x }
      med = (m % 2) ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
      printf "%-12s%s; median %s\n", l, s, med
    }
  }' "$summary"
exit $status
