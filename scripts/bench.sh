#!/usr/bin/env bash
# GPU benchmark run (README "Speed"): builds with CUDA, checks parity on CUDA (fp32 and bf16 exports
# of the fixture), makes a full-size random-weight checkpoint in the official format, exports it in
# bf16 and runs `ocr-cli bench` on it.
#   scripts/bench.sh OUT_DIR [FIXTURE_DIR]
# Writes OUT_DIR/bench.json, parity_cuda_{fp32,bf16}.txt and logs.txt. Needs nvcc, torch 2.11 with
# CUDA and OpenCV for C++ (on the lent GPU machine: `source .device/setup.sh` first).
set -euo pipefail
out=${1:?usage: scripts/bench.sh OUT_DIR [FIXTURE_DIR]}
fixture=${2:-}
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
py=${OCR_PYTHON:-python3}
build=${OCR_BUILD_DIR:-$root/build-cuda}
work=${OCR_BENCH_WORK:-/tmp/ocr-bench}
logs="$out/logs.txt"
mkdir -p "$work"
t0=$(date +%s)
stamp() { echo "[bench.sh +$(( $(date +%s) - t0 ))s] $*" | tee -a "$logs" >&2; }

stamp "configure + build (CUDA)"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DOCR_WITH_CUDA=ON -DOCR_WITH_PDF=OFF \
  -DOCR_BUILD_TESTS=OFF -DCMAKE_PREFIX_PATH="$($py -c 'import torch;print(torch.utils.cmake_prefix_path)');${CMAKE_PREFIX_PATH:-}" \
  -DPython3_EXECUTABLE="$(command -v $py)" >> "$logs" 2>&1
cmake --build "$build" -j "$(nproc)" >> "$logs" 2>&1
ops="$build/libocr_ops.so"

if [ -n "$fixture" ]; then
  stamp "parity on CUDA, fp32 export of the fixture"
  OCR_PYTHON=$py "$build/ocr-cli" parity "$fixture" --device cuda > "$out/parity_cuda_fp32.txt" 2>&1 || true
  tail -1 "$out/parity_cuda_fp32.txt" | tee -a "$logs" >&2
  stamp "parity on CUDA, bf16 export (every tolerance x${OCR_BF16_TOLERANCE_SCALE:-500})"
  $py "$root/scripts/export.py" "$fixture" "$work/fixture-bf16" --dtype bf16 --ops-lib "$ops" >> "$logs" 2>&1
  "$build/ocr-cli" parity "$fixture" --model "$work/fixture-bf16" --device cuda \
    --tolerance-scale "${OCR_BF16_TOLERANCE_SCALE:-500}" > "$out/parity_cuda_bf16.txt" 2>&1 || true
  tail -1 "$out/parity_cuda_bf16.txt" | tee -a "$logs" >&2
fi

stamp "tokenizer + full-size random checkpoint"
tok="$work/tokenizer"
mkdir -p "$tok"
cp "$root"/models/tokenizer/*.json "$tok"/
xz -dc "$root/models/tokenizer/tokenizer.json.xz" > "$tok/tokenizer.json"
[ -f "$work/full-hf/model.safetensors" ] ||
  $py "$root/scripts/make_checkpoint.py" "$work/full-hf" --full --tokenizer-dir "$tok" >> "$logs" 2>&1
stamp "export bf16 (peak RSS in the JSON line below)"
[ -f "$work/full/manifest.json" ] ||
  $py "$root/scripts/export.py" "$work/full-hf" "$work/full" --dtype bf16 --ops-lib "$ops" 2>>"$logs" | tee -a "$logs" >&2
skip=",${OCR_BENCH_SKIP:-},"
if [[ $skip != *,sweeps,* ]]; then
stamp "select_tokens sweep (CUDA vs CPU reference)"
$py "$root/tests/kernels/test_select_sweep.py" "$ops" 2>&1 | tail -3 | tee -a "$logs" >&2 || true
stamp "decode-op sweep (rms_norm, add_rms_norm, rope_kv_write, moe_route: CUDA vs CPU reference)"
$py "$root/tests/kernels/test_decode_sweep.py" "$ops" --json "$out/decode_sweep.json" 2>&1 | tail -3 | tee -a "$logs" >&2 || true
stamp "decode_attention sweep (CUDA vs CPU reference, timings against SDPA)"
$py "$root/tests/kernels/test_attention_sweep.py" "$ops" --json "$out/attention_sweep.json" 2>&1 | tail -12 | tee -a "$logs" >&2 || true
fi
if [ "${OCR_BENCH_PROFILE:-0}" = 1 ]; then
  stamp "kernel profile (tests/bench/profile_gpu.py)"
  $py "$root/tests/bench/profile_gpu.py" "$ops" "$work/full" "$out" --only "${OCR_PROFILE_ONLY:-decode1,decode256,encoder}" \
    2>&1 | grep -E "^####|kernels/step" | tee -a "$logs" >&2 || true
fi
if [[ $skip == *,bench,* ]]; then stamp "done (bench skipped)"; exit 0; fi
stamp "bench"
"$build/ocr-cli" bench --model "$work/full" --device cuda ${OCR_BENCH_ARGS:-} > "$out/bench.json" 2>> "$logs" || stamp "bench failed"
stamp "engine under a 22 GiB budget (a 24 GB card), separate process"
"$build/ocr-cli" bench --model "$work/full" --device cuda --engine-only --max-gpu-memory 22GiB \
  --pages 256 --engine-pages ${OCR_BUDGET_PAGES:-64} --tokens-per-page ${OCR_BUDGET_TOKENS:-200} --decode-tokens 64 \
  > "$out/bench_22gib.json" 2>> "$logs" || stamp "22 GiB run failed"
stamp "the product path: ocr-cli on a folder of page images (pipelined CPU work, continuous batching)"
pages_dir="$work/pages"
if [ ! -d "$pages_dir" ]; then
  $py - "$pages_dir" "${OCR_CLI_PAGES:-128}" <<'PY'
import sys, os, numpy as np
from PIL import Image
out, n = sys.argv[1], int(sys.argv[2])
os.makedirs(out)
rng = np.random.default_rng(0)
for i in range(n):
    img = np.full((1584, 1224, 3), 250, np.uint8)
    for y in range(60, 1520, 36):            # text-like lines of random "words"
        x = 80
        while x < 1120:
            w = int(rng.integers(20, 90))
            img[y:y + 16, x:min(x + w, 1140)] = 30
            x += w + int(rng.integers(10, 20))
    Image.fromarray(img).save(f"{out}/page{i:04d}.png")
PY
fi
/usr/bin/time -v "$build/ocr-cli" "$pages_dir" -o "$work/cli-out" --force --model "$work/full" --device cuda \
  --format jsonl --max-tokens ${OCR_CLI_TOKENS:-500} --no-retry ${OCR_CLI_ARGS:-} > "$out/cli_run.txt" 2>&1 || true
grep -E "ocr-cli: [0-9]+ files|Maximum resident|Elapsed" "$out/cli_run.txt" | tee -a "$logs" >&2
stamp "done"
