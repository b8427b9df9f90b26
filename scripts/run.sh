#!/usr/bin/env bash
# The main job on its embedded default: builds seqkv, starts a local server
# with data in ./seqkv-data (when the server is built), runs a short demo
# workload of real KV from ../shared/kvdata/dev against it, then evaluates
# the codecs on the same data with model-level quality.
# Environment: SKIP_DEPS=1 skips apt-get; QUALITY=0 skips the model run.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
[ "${SKIP_DEPS:-0}" = 1 ] || bash scripts/install_deps.sh
bash scripts/build.sh "$root/build" >/dev/null
shared="$root/../shared"
ctl="$root/build/tools/seqkvctl/seqkvctl"

if [ -x "$root/scripts/demo_store.sh" ] && [ -n "$(find "$root/build" -name seqkv-server -type f 2>/dev/null | head -1)" ]; then
  echo "== store demo: a local server on 127.0.0.1, data in ./seqkv-data =="
  bash "$root/scripts/demo_store.sh" "$root/build"
fi

echo "== codec evaluation on $shared/kvdata/dev =="
quality=()
[ "${QUALITY:-1}" = 0 ] || quality=(--quality --model "$shared/models/tinyllama-12m")
"$ctl" codec eval --in "$shared/kvdata/dev" \
  --codecs "raw;lossless;turboquant:bits=4;turboquant:bits=3;turboquant:bits=2;kivi:bits=4;kivi:bits=2;tokens" \
  "${quality[@]}"
