#!/usr/bin/env bash
# Set-up on a fresh Debian 12 / Ubuntu 24.04 machine: system packages, a Python venv with
# torch 2.11 (its package carries the C++ libtorch) and the exporter's few packages, then a
# ninja build in build/ and a tiny random-weight demo model in build/models/tiny.
#
#   bash scripts/setup.sh            # everything
#   OCR_SKIP_APT=1 bash scripts/setup.sh   # no apt-get (packages already there)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD=${OCR_BUILD_DIR:-$ROOT/build}
VENV=${OCR_VENV:-$ROOT/.venv}

log() { echo "[setup] $*" >&2; }

if [ -z "${OCR_SKIP_APT:-}" ]; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  pkgs="build-essential cmake ninja-build pkg-config git xz-utils python3 python3-venv python3-pip
        libopencv-dev libcli11-dev libspdlog-dev nlohmann-json3-dev libgtest-dev libgmock-dev
        libsentencepiece-dev libpoppler-cpp-dev libtasn1-doc shared-mime-info
        clang libclang-rt-dev"
  missing=""
  for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
  done
  if [ -n "$(echo $missing)" ]; then
    log "installing system packages:" $missing
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
  fi
fi

# Python: a venv that also sees an already-installed torch (no second 3 GB download).
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  python3 -m venv --system-site-packages "$VENV"
fi
PY="$VENV/bin/python"
if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.__version__.startswith("2.11") else 1)' 2>/dev/null; then
  log "installing torch 2.11 from PyPI"
  "$PY" -m pip install -q "torch==2.11.*"
fi
# Pillow 12.2-12.x is the oracle of the resampling tests (its pass order; see src/preprocess).
"$PY" -c "import numpy, tokenizers, safetensors, PIL, sys; v = tuple(map(int, PIL.__version__.split('.')[:2])); sys.exit(not (12, 2) <= v < (13, 0))" 2>/dev/null ||
  "$PY" -m pip install -q numpy "pillow>=12.2,<13" tokenizers safetensors

TORCH_PREFIX=$("$PY" -c 'import torch; print(torch.utils.cmake_prefix_path)')
log "configuring $BUILD (libtorch from $TORCH_PREFIX)"
cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$TORCH_PREFIX" -DPython3_EXECUTABLE="$PY" ${OCR_CMAKE_ARGS:-} >/dev/null
log "building (ninja)"
cmake --build "$BUILD" -j "${OCR_JOBS:-$(nproc)}"

# A tiny random-weight model, exported like the real one, for the demo command and the tests.
OCR_PYTHON="$PY" bash scripts/make_tiny_model.sh "$BUILD/models" "$BUILD/libocr_ops.so" >/dev/null
log "done: $BUILD/ocr-cli (demo model: $BUILD/models/tiny)"
