#!/usr/bin/env bash
# Downloads the official DeepSeek-OCR checkpoint from the Hugging Face hub and exports it into an
# ocr-cli model folder (scripts/export.py: TorchScript encoder/decoder, manifest, tokenizer).
#
#   scripts/get-model.sh                          -> models/deepseek-ocr (bf16), the CLI's default --model
#   scripts/get-model.sh --out /models/dsocr --revision <commit> --dtype fp32
#   scripts/get-model.sh --from-dir ~/DeepSeek-OCR   export an existing local snapshot (no download)
#
# Options:
#   --out DIR          model folder to create (default models/deepseek-ocr under the repository)
#   --repo ID          hub repository (default deepseek-ai/DeepSeek-OCR)
#   --revision REV     branch, tag or commit (default main); pin a commit for reproducible exports
#   --dtype bf16|fp32  exported weights (default bf16, the checkpoint's own precision)
#   --download-dir DIR where the checkpoint is downloaded (default OUT.download); downloads resume
#   --keep-download    keep the downloaded checkpoint (~6.7 GB) after a successful export
#   --from-dir DIR     use this local Hugging Face snapshot instead of downloading (also $OCR_MODEL_SNAPSHOT)
#   --ops-lib PATH     libocr_ops.so for export.py (default: build/ or $OCR_OPS_LIB)
#   --force            replace an existing OUT
#   --dry-run          print the download and export steps, run nothing
# Environment: OCR_PYTHON (default .venv/bin/python, else python3), HF_TOKEN (gated or private
# repositories), HF_ENDPOINT (a mirror), HF_HUB_OFFLINE.
# Exit status: 0 done, 1 download or export failed (OUT is left as it was), 2 usage error.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT="$ROOT/models/deepseek-ocr"
REPO="deepseek-ai/DeepSeek-OCR"
REVISION="main"
DTYPE="bf16"
DOWNLOAD_DIR=""
KEEP=0
FROM_DIR="${OCR_MODEL_SNAPSHOT:-}"
OPS_LIB=""
FORCE=0
DRY=0

usage() {  # the comment block above, without the "# "
  sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
  exit 0
}
die() { echo "get-model.sh: error: $1" >&2; exit "${2:-1}"; }
need_value() { [ $# -ge 2 ] && [ -n "$2" ] && [[ "$2" != --* ]] || die "$1 needs a value" 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --out) need_value "$@"; OUT=$2; shift 2 ;;
    --repo) need_value "$@"; REPO=$2; shift 2 ;;
    --revision) need_value "$@"; REVISION=$2; shift 2 ;;
    --dtype) need_value "$@"; DTYPE=$2; shift 2 ;;
    --download-dir) need_value "$@"; DOWNLOAD_DIR=$2; shift 2 ;;
    --keep-download) KEEP=1; shift ;;
    --from-dir) need_value "$@"; FROM_DIR=$2; shift 2 ;;
    --ops-lib) need_value "$@"; OPS_LIB=$2; shift 2 ;;
    --force) FORCE=1; shift ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) usage ;;
    *) die "unknown argument '$1' (see --help)" 2 ;;
  esac
done
case "$DTYPE" in bf16|fp32) ;; *) die "--dtype must be bf16 or fp32, got '$DTYPE'" 2 ;; esac
[[ "$REPO" =~ ^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$ ]] || die "--repo must look like owner/name, got '$REPO'" 2
OUT=${OUT%/}
[ -n "$OUT" ] || die "--out must not be empty" 2
if [ -z "${OCR_PYTHON:-}" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then OCR_PYTHON="$ROOT/.venv/bin/python"; else OCR_PYTHON=python3; fi
fi
[ -n "$DOWNLOAD_DIR" ] || DOWNLOAD_DIR="$OUT.download"

if [ -e "$OUT" ] && [ "$FORCE" != 1 ]; then
  die "$OUT already exists; --force replaces it"
fi
if [ -n "$FROM_DIR" ]; then
  [ -d "$FROM_DIR" ] || die "$FROM_DIR: no such folder (--from-dir)"
  [ -f "$FROM_DIR/config.json" ] || die "$FROM_DIR: no config.json (is this a Hugging Face checkpoint folder?)"
  SNAPSHOT=$FROM_DIR
else
  SNAPSHOT=$DOWNLOAD_DIR
fi
export_cmd=("$OCR_PYTHON" "$ROOT/scripts/export.py" "$SNAPSHOT" "$OUT.partial" --dtype "$DTYPE")
[ -z "$OPS_LIB" ] || export_cmd+=(--ops-lib "$OPS_LIB")

# Only what export.py reads: config, weights (single or sharded + index), tokenizer and processor files.
download() {
  "$OCR_PYTHON" - "$REPO" "$REVISION" "$DOWNLOAD_DIR" <<'PY'
import fnmatch, json, os, sys, urllib.error, urllib.parse, urllib.request
repo, revision, dest = sys.argv[1:4]
patterns = ["*.json", "*.safetensors"]
os.makedirs(dest, exist_ok=True)
try:
    from huggingface_hub import snapshot_download
except ImportError:
    snapshot_download = None
try:
    if snapshot_download is not None:
        snapshot_download(repo_id=repo, revision=revision, local_dir=dest, allow_patterns=patterns)
    else:  # plain HTTPS against the hub's API, no extra package
        endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
        headers = {"Authorization": f"Bearer {os.environ['HF_TOKEN']}"} if os.environ.get("HF_TOKEN") else {}
        quoted = urllib.parse.quote(revision, safe="")
        req = urllib.request.Request(f"{endpoint}/api/models/{repo}/revision/{quoted}", headers=headers)
        with urllib.request.urlopen(req, timeout=60) as r:
            files = [s["rfilename"] for s in json.load(r)["siblings"]]
        for name in files:
            if "/" in name or not any(fnmatch.fnmatch(name, p) for p in patterns):
                continue
            path = os.path.join(dest, name)
            if os.path.exists(path):
                continue
            print(f"get-model.sh: downloading {name}", file=sys.stderr)
            req = urllib.request.Request(f"{endpoint}/{repo}/resolve/{quoted}/{name}", headers=headers)
            with urllib.request.urlopen(req, timeout=60) as r, open(path + ".part", "wb") as f:
                while chunk := r.read(1 << 22):
                    f.write(chunk)
            os.replace(path + ".part", path)
except Exception as e:  # one line, whatever the library raised
    msg = " ".join(str(e).split()) or type(e).__name__
    print(f"get-model.sh: error: cannot download {repo}@{revision}: {msg}", file=sys.stderr)
    sys.exit(1)
PY
}

if [ "$DRY" = 1 ]; then
  if [ -z "$FROM_DIR" ]; then
    echo "download: $REPO@$REVISION (*.json, *.safetensors) -> $DOWNLOAD_DIR"
  else
    echo "snapshot: $FROM_DIR (no download)"
  fi
  echo "export: ${export_cmd[*]}"
  echo "install: $OUT.partial -> $OUT"
  exit 0
fi

if [ -z "$FROM_DIR" ]; then
  echo "get-model.sh: downloading $REPO@$REVISION to $DOWNLOAD_DIR" >&2
  if ! download; then
    rmdir -- "$DOWNLOAD_DIR" 2>/dev/null || true  # kept when it holds files: the next run resumes
    exit 1
  fi
  [ -f "$DOWNLOAD_DIR/config.json" ] || die "$DOWNLOAD_DIR: the download has no config.json"
fi

echo "get-model.sh: exporting ($DTYPE) to $OUT" >&2
rm -rf -- "$OUT.partial"
if ! "${export_cmd[@]}" >&2; then
  rm -rf -- "$OUT.partial"
  die "export failed; $OUT left as it was"
fi
# Install: the old folder (with --force) is moved aside first, so OUT is never half-written.
if [ -e "$OUT" ]; then
  mv -- "$OUT" "$OUT.old.$$"
  mv -- "$OUT.partial" "$OUT"
  rm -rf -- "$OUT.old.$$"
else
  mv -- "$OUT.partial" "$OUT"
fi
if [ -z "$FROM_DIR" ] && [ "$KEEP" != 1 ]; then
  rm -rf -- "$DOWNLOAD_DIR"
fi
echo "get-model.sh: done: ocr-cli --model $OUT" >&2
