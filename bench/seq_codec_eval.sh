#!/usr/bin/env bash
# The sequential codec's table (issue 4): every codec in one run, calibrated on
# some dev dumps and scored on the others, with the model-level quality tool.
#
#   bench/seq_codec_eval.sh [OUT_DIR]        (default out/seq_eval)
#   SPLIT=a      calibrate doc00-03 (prose, dictionary), score doc04-07 (jargon, code)  [default]
#   SPLIT=b      the reverse
#   SPLIT=mixed  calibrate doc00,02,05,06, score doc01,03,04,07 (both content types on both sides)
#   INPUTS=all|same|mean  predictor inputs (default: calibrate's auto = all for this model); `same`
#                is the form that scales to production shapes
#
# Steps (all timed, all printed): measure sensitivities on the calibration
# dumps (python3 -m seqkv_quality sensitivity), `seqkvctl codec calibrate`
# (predictors, KLT, steps, KL-proxy fit), then `seqkvctl codec eval --quality`
# over the scored dumps for the baselines, a sweep of seq:delta= (the bits-vs-KL
# curve), the guardrail modes seq:kl=, rate control seq:bits=, and the lossless
# codecs. bench/seq_codec_table.py turns the JSON into the markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${1:-out/seq_eval}
SPLIT=${SPLIT:-a}
SHARED=${SEQKV_SHARED_DIR:-$ROOT/../shared}
DEV=$SHARED/kvdata/dev
MODEL=$SHARED/models/tinyllama-12m
PY=${SEQKV_PYTHON:-/usr/bin/python3}
CTL=$ROOT/build/tools/seqkvctl/seqkvctl
mkdir -p "$OUT"
case $SPLIT in
  a) CAL="0 1 2 3"; TEST="4 5 6 7" ;;
  b) CAL="4 5 6 7"; TEST="0 1 2 3" ;;
  mixed) CAL="0 2 5 6"; TEST="1 3 4 7" ;;
  *) echo "SPLIT must be a, b or mixed" >&2; exit 2 ;;
esac
files() { for i in $1; do printf '%s/doc%02d.safetensors ' "$DEV" "$i"; done; }
[ -x "$CTL" ] || { echo "build first: scripts/build.sh" >&2; exit 2; }

echo "== split $SPLIT, inputs ${INPUTS:-auto}: calibrate on [$CAL], score on [$TEST]; $(date -u +%FT%TZ) on $(nproc) cores" >&2
t0=$(date +%s)
PYTHONPATH=$ROOT/python "$PY" -m seqkv_quality sensitivity --model "$MODEL" --out "$OUT/sens.json" $(files "$CAL")
t1=$(date +%s)
"$CTL" codec calibrate --in $(files "$CAL") --out "$OUT/profile.sqkp" --model "$MODEL" \
  --sensitivity "$OUT/sens.json" --inputs "${INPUTS:-auto}" --json > "$OUT/calibrate.json"
t2=$(date +%s)
ID=$(PYTHONPATH= "$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$OUT/calibrate.json")
P=",profile=$ID"
CODECS="turboquant:bits=2;turboquant:bits=3;turboquant:bits=4;kivi:bits=2;kivi:bits=4"
for d in 0.1 0.14 0.2 0.28 0.4 0.56 0.8 1.1 1.6 2.2; do CODECS+=";seq:delta=$d$P"; done
CODECS+=";seq:kl=0.002$P;seq:kl=0.02$P;seq:bits=2$P;seq:bits=1.5$P;seq:bits=2,kl=0.002$P"
CODECS+=";lossless:level=19;seq:lossless;tokens"
"$CTL" codec eval --in $(files "$TEST") --profile "$OUT/profile.sqkp" --model "$MODEL" --quality \
  --per-file --json --codecs "$CODECS" > "$OUT/eval.json"
t3=$(date +%s)
echo "sensitivity $((t1 - t0)) s, calibrate $((t2 - t1)) s, eval $((t3 - t2)) s" >&2
PYTHONPATH= "$PY" bench/seq_codec_table.py "$OUT" --split "$SPLIT" | tee "$OUT/table.md"
