#!/usr/bin/env bash
# Demo of the single-node store: starts seqkv-server on its built-in defaults
# (127.0.0.1:50051, metrics on 127.0.0.1:9464), puts the 8 dev KV dumps of
# ../shared/kvdata/dev with seqkvctl (two sessions re-sending shared
# prefixes), gets them back and compares, prints hit rate, dedup ratio and
# compression ratio, and stops the server cleanly.
#
# usage: scripts/demo_store.sh BUILD_DIR [DATA_DIR]
#   DATA_DIR defaults to ./seqkv-data (the server's default). Set
#   SEQKV_DEMO_LISTEN=127.0.0.1:0 (and SEQKV_DEMO_METRICS=127.0.0.1:0) to run
#   next to another server.
set -euo pipefail

build=${1:?usage: $0 BUILD_DIR [DATA_DIR]}
data_dir=${2:-./seqkv-data}
root=$(cd "$(dirname "$0")/.." && pwd)
dumps=$root/../shared/kvdata/dev
model=$root/../shared/models/tinyllama-12m
server_bin=$build/server/src/rpc/seqkv-server
ctl_bin=$build/tools/seqkvctl/seqkvctl
for f in "$server_bin" "$ctl_bin" "$dumps/doc00.safetensors" "$model/config.json"; do
  [[ -e $f ]] || { echo "missing $f" >&2; exit 1; }
done

work=$(mktemp -d)
server_args=(--data-dir "$data_dir")
[[ -n ${SEQKV_DEMO_LISTEN:-} ]] && server_args+=(--listen "$SEQKV_DEMO_LISTEN")
[[ -n ${SEQKV_DEMO_METRICS:-} ]] && server_args+=(--metrics-listen "$SEQKV_DEMO_METRICS")

echo "== starting seqkv-server ${server_args[*]}"
"$server_bin" "${server_args[@]}" >"$work/server.out" 2>"$work/server.log" &
server_pid=$!
stop_server() {
  if kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid"
    wait "$server_pid" || true
  fi
}
trap 'stop_server; rm -rf "$work"' EXIT

address=""
for _ in $(seq 1 100); do  # up to 10 s
  address=$(sed -n 's/^listening on //p' "$work/server.out")
  [[ -n $address ]] && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
  sleep 0.1
done
[[ -n $address ]] || { echo "server did not start" >&2; cat "$work/server.log" >&2; exit 1; }
echo "   listening on $address, data in $data_dir"
ctl() { "$ctl_bin" --server "$address" "$@"; }

echo "== session 1: kv put all 8 dumps (lossless)"
ctl kv put --model "$model" "$dumps"/doc0{0..7}.safetensors
echo "== session 2: re-sends doc00 and doc03 whole (the server deduplicates)"
ctl kv put --model "$model" --no-skip "$dumps/doc00.safetensors" "$dumps/doc03.safetensors"
echo "== session 3: puts doc00 again, looking up first (nothing to send)"
ctl kv put --model "$model" "$dumps/doc00.safetensors"

echo "== kv get every dump back and compare with the original"
all_exact=1
for i in 0 1 2 3 4 5 6 7; do
  out=$work/doc0$i.out.safetensors
  json=$(ctl kv get --model "$model" --compare --json --out "$out" "$dumps/doc0$i.safetensors" 2>/dev/null)
  exact=$(python3 -c 'import json,sys; j=json.load(sys.stdin); print(j["tokens"], "tokens, bit-exact:", j.get("bit_exact"))' <<<"$json")
  echo "   doc0$i: $exact"
  [[ $exact == *"bit-exact: True" ]] || all_exact=0
done

echo "== stats"
ctl stats
ctl stats --json | python3 -c '
import json, sys
s = json.load(sys.stdin)
hit = s["hit_tokens"] / s["lookup_tokens"] if s["lookup_tokens"] else 0.0
print("hit rate          %.1f%% (%d of %d looked-up tokens)" % (100 * hit, s["hit_tokens"], s["lookup_tokens"]))
print("dedup ratio       %.3f (logical %d / physical %d bytes)" % (s["dedup_ratio"], s["logical_bytes"], s["physical_bytes"]))
print("compression ratio %.3f (raw KV %d / stored %d bytes)" % (s["compression_ratio"], s["raw_kv_bytes"], s["physical_bytes"]))
'
echo "== stopping the server (SIGTERM)"
stop_server
tail -n 3 "$work/server.log"
[[ $all_exact == 1 ]] && echo "demo OK: every dump came back bit-exact" || { echo "demo FAILED: a dump differed" >&2; exit 1; }
