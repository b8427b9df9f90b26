#!/usr/bin/env bash
# On the GPU machine: every kernel's time in a run of a bench, summed per
# kernel name (ncu, one metric per launch, launches serialized), so a
# pipeline's stages can be split where the bench's own events do not.
# Usage (device run, carrying .debs and .shared):
#   bash scripts/gpu/kernel_times.sh seq_encode_bench 'lanes2 int12' [VAR=VALUE...]
# The second argument is passed to the bench (its row filter). Writes
# $OUT/times.csv and prints the table, largest first; "launches" counts every
# call the bench made (warm-ups included), "ms per call" divides by CALLS
# (default: the fewest launches of any kernel, i.e. the bench's calls when a
# kernel runs once per call: seq_encode_bench makes 10 a row — 2 warm-ups,
# 5 timed, 3 for Finish; the header says which count it used).
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
[ $# -ge 2 ] || { echo "usage: kernel_times.sh TARGET BENCH_ARG [VAR=VALUE...]" >&2; exit 2; }
target=$1 arg=$2
shift 2
out="${OUT:?set OUT (the device run sets it)}"
build=/tmp/seqkv-quick
# shellcheck source=codec_only.sh
source "$root/scripts/gpu/codec_only.sh"
codec_only_build "$build" "$target" || exit 1
ncu_bin="$(codec_only_ncu)" || { echo "no ncu on this machine" >&2; exit 1; }
env "$@" "$ncu_bin" --clock-control none --metrics gpu__time_duration.sum --csv \
  "$build/$target" "$arg" >"$out/times.csv" 2>"$out/ncu_err.txt"
python3 - "$out/times.csv" "${CALLS:-0}" <<'PY'
import csv, sys, collections
rows = [l for l in open(sys.argv[1]) if l.startswith('"')]
tot, n = collections.defaultdict(float), collections.Counter()
for r in csv.DictReader(rows):
    if r.get("Metric Name") != "gpu__time_duration.sum":
        continue
    name = r["Kernel Name"].replace("(anonymous namespace)::", "").split("(")[0]
    v = float(r["Metric Value"].replace(",", ""))
    unit = r.get("Metric Unit", "ns")
    v *= {"nsecond": 1e-6, "ns": 1e-6, "usecond": 1e-3, "us": 1e-3, "msecond": 1.0, "ms": 1.0}.get(unit, 1e-6)
    tot[name] += v
    n[name] += 1
if not n:
    sys.exit("kernel_times: no kernel times in " + sys.argv[1])
calls = int(sys.argv[2]) or min(n.values())
print(f"calls: {calls} ({'CALLS' if int(sys.argv[2]) else 'the fewest launches of any kernel; CALLS overrides'})")
print(f"{'kernel':70s} {'launches':>8s} {'ms per call':>12s}")
for k, v in sorted(tot.items(), key=lambda kv: -kv[1]):
    print(f"{k[:70]:70s} {n[k]:8d} {v / calls:12.3f}")
print(f"{'total':70s} {sum(n.values()):8d} {sum(tot.values()) / calls:12.3f}")
PY
