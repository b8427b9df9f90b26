#!/usr/bin/env bash
# Runs bench/store_bench against seqkv-server and Redis 7 in one go:
#   - seqkv-server, default settings (every put fsynced), temp data dir;
#   - seqkv-server with sync_writes: false (small-op benchmarks only);
#   - redis-server on a free 127.0.0.1 port, no persistence (--save "" --appendonly no).
# All three are stopped and their data removed at the end.
#
# usage: bench/run_store_bench.sh BUILD_DIR [OUT_DIR] [-- extra store_bench flags]
#   OUT_DIR (default: BUILD_DIR/bench-results) receives store_bench.json and store_bench.txt.
set -euo pipefail

build=${1:?usage: $0 BUILD_DIR [OUT_DIR] [-- store_bench flags]}
shift
out_dir=$build/bench-results
if [[ $# -gt 0 && $1 != -- ]]; then out_dir=$1; shift; fi
[[ ${1:-} == -- ]] && shift
server_bin=$build/server/src/rpc/seqkv-server
bench_bin=$build/bench/store_bench
for f in "$server_bin" "$bench_bin"; do [[ -x $f ]] || { echo "missing $f (build it first)" >&2; exit 1; }; done
command -v redis-server >/dev/null || { echo "redis-server not installed" >&2; exit 1; }
mkdir -p "$out_dir"

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

start_seqkv() {  # NAME VAR extra-args... : starts a server, sets $VAR to its address
  local name=$1 var=$2; shift 2
  "$server_bin" --listen 127.0.0.1:0 --metrics-listen "" --data-dir "$work/$name" "$@" \
    >"$work/$name.out" 2>"$work/$name.log" &
  pids+=($!)
  local address=""
  for _ in $(seq 1 100); do
    address=$(sed -n 's/^listening on //p' "$work/$name.out")
    if [[ -n $address ]]; then printf -v "$var" '%s' "$address"; return; fi
    sleep 0.1
  done
  echo "seqkv-server $name did not start:" >&2; cat "$work/$name.log" >&2; exit 1
}

printf 'store:\n  sync_writes: false\n' >"$work/nosync.yaml"
start_seqkv durable seqkv_address --dram-budget 1GiB --disk-budget 8GiB
start_seqkv nosync nosync_address --dram-budget 256MiB --disk-budget 2GiB --config "$work/nosync.yaml"

redis_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no --dir "$work" \
  --protected-mode yes --loglevel warning >"$work/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  redis-cli -p "$redis_port" ping 2>/dev/null | grep -q PONG && break
  sleep 0.1
done
redis_version=$(redis-server --version | sed -n 's/.*v=\([0-9.]*\).*/\1/p')

echo "seqkv-server (durable) at $seqkv_address, seqkv-server (sync_writes: false) at $nosync_address," \
     "redis $redis_version at 127.0.0.1:$redis_port"
SEQKV_BENCH_SERVER=$seqkv_address SEQKV_BENCH_SERVER_NOSYNC=$nosync_address \
SEQKV_BENCH_REDIS=127.0.0.1:$redis_port \
  "$bench_bin" --benchmark_out="$out_dir/store_bench.json" --benchmark_out_format=json \
               --benchmark_counters_tabular=true "$@" | tee "$out_dir/store_bench.txt"
echo "results in $out_dir/store_bench.{txt,json}"
