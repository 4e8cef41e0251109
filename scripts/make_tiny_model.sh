#!/usr/bin/env bash
# Makes the tiny demo/test model (random weights, official HF layout, exported with scripts/export.py):
#   OUT_DIR/tiny: the parity-a sizes, fp32, seed 7; OUT_DIR/tiny-stop: crafted to stop after 5 tokens.
#   Usage: make_tiny_model.sh OUT_DIR LIBOCR_OPS
set -euo pipefail
out=$1
ops=$2
root=$(cd "$(dirname "$0")/.." && pwd)
py=${OCR_PYTHON:-python3}
tok="$out/tokenizer"
if [ ! -f "$tok/tokenizer.json" ]; then
  mkdir -p "$tok"
  cp "$root"/models/tokenizer/*.json "$tok"/
  xz -dc "$root/models/tokenizer/tokenizer.json.xz" > "$tok/tokenizer.json"
fi
if [ ! -f "$out/tiny/manifest.json" ]; then
  "$py" "$root/scripts/make_checkpoint.py" "$out/tiny-hf" --preset tiny --seed 7 --tokenizer-dir "$tok"
  "$py" "$root/scripts/export.py" "$out/tiny-hf" "$out/tiny" --dtype fp32 --ops-lib "$ops"
fi
# tiny-stop: same sizes, crafted to answer 5 tokens and then EOS (a page that succeeds).
if [ ! -f "$out/tiny-stop/manifest.json" ]; then
  "$py" "$root/scripts/make_checkpoint.py" "$out/tiny-stop-hf" --preset tiny --seed 7 --cycle 6 --stop --tokenizer-dir "$tok"
  "$py" "$root/scripts/export.py" "$out/tiny-stop-hf" "$out/tiny-stop" --dtype fp32 --ops-lib "$ops"
fi
echo "test models ready in $out"
