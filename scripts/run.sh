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

dev="$shared/kvdata/dev"
model="$shared/models/tinyllama-12m"
mkdir -p "$root/seqkv-data"
profile="$root/seqkv-data/tinyllama-12m.sqkp"
echo "== sequential codec: calibrate a profile on doc00-03 (prose), write $profile =="
if [ "${QUALITY:-1}" = 0 ]; then
  sens=(--no-sensitivity)  # sensitivities and the KL-proxy fit run the model
else
  sens=()
fi
"$ctl" codec calibrate --in "$dev"/doc0{0,1,2,3}.safetensors --model "$model" --out "$profile" "${sens[@]}"

echo "== codec evaluation on doc04-07 (jargon, Python code: held out from calibration) =="
quality=()
[ "${QUALITY:-1}" = 0 ] || quality=(--quality)
seq_codecs="seq:bits=2;seq:bits=1"
[ "${QUALITY:-1}" = 0 ] || seq_codecs="seq:kl=0.002;seq:kl=0.02;$seq_codecs"
"$ctl" codec eval --in "$dev"/doc0{4,5,6,7}.safetensors --profile "$profile" --model "$model" \
  --codecs "raw;lossless;lossless:coder=rans;seq:lossless;$seq_codecs;turboquant:bits=4;turboquant:bits=3;turboquant:bits=2;kivi:bits=4;kivi:bits=2;tokens" \
  "${quality[@]}"
