#!/usr/bin/env bash
# GPU benchmark run (see README "Speed"): builds with CUDA, makes a full-size random-weight
# checkpoint in the official format, exports it in bf16, checks parity on CUDA, runs `ocr-cli bench`.
#   scripts/bench.sh OUT_DIR [FIXTURE_DIR]
# Writes OUT_DIR/bench.json (+ logs). Needs: nvcc, torch 2.11 with CUDA, OpenCV for C++ (on the
# lent GPU machine: `source .device/setup.sh` first).
set -euo pipefail
out=${1:?usage: scripts/bench.sh OUT_DIR [FIXTURE_DIR]}
fixture=${2:-}
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
py=${OCR_PYTHON:-python3}
build=${OCR_BUILD_DIR:-$root/build-cuda}
work=${OCR_BENCH_WORK:-/tmp/ocr-bench}
mkdir -p "$work"
t0=$(date +%s)
stamp() { echo "[bench.sh +$(( $(date +%s) - t0 ))s] $*" >&2; }

stamp "configure + build (CUDA)"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DOCR_WITH_CUDA=ON -DOCR_WITH_PDF=OFF \
  -DOCR_BUILD_TESTS=OFF -DCMAKE_PREFIX_PATH="$($py -c 'import torch;print(torch.utils.cmake_prefix_path)');${CMAKE_PREFIX_PATH:-}" \
  -DPython3_EXECUTABLE="$(command -v $py)" > "$out/cmake.log" 2>&1
cmake --build "$build" -j "$(nproc)" > "$out/build.log" 2>&1
ops="$build/libocr_ops.so"

if [ -n "$fixture" ]; then
  stamp "parity on CUDA (fp32 export of the fixture)"
  OCR_PYTHON=$py "$build/ocr-cli" parity "$fixture" --device cuda --json "$out/parity_cuda_fp32.json" > "$out/parity_cuda_fp32.txt" 2>&1 || true
  tail -1 "$out/parity_cuda_fp32.txt" >&2
fi

stamp "tokenizer + full-size random checkpoint"
tok="$work/tokenizer"
mkdir -p "$tok"
cp "$root"/models/tokenizer/*.json "$tok"/
xz -dc "$root/models/tokenizer/tokenizer.json.xz" > "$tok/tokenizer.json"
[ -f "$work/full-hf/model.safetensors" ] || $py "$root/scripts/make_checkpoint.py" "$work/full-hf" --full --tokenizer-dir "$tok" > "$out/make_checkpoint.log" 2>&1
stamp "export bf16"
[ -f "$work/full/manifest.json" ] || /usr/bin/time -v $py "$root/scripts/export.py" "$work/full-hf" "$work/full" --dtype bf16 --ops-lib "$ops" > "$out/export.log" 2>&1
grep -E "Maximum resident" "$out/export.log" >&2 || true
stamp "bench"
"$build/ocr-cli" bench --model "$work/full" --device cuda ${OCR_BENCH_ARGS:-} > "$out/bench.json" 2> "$out/bench.stderr"
stamp "done"
