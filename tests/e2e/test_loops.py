#!/usr/bin/env python3
"""Loops never pass silently: a checkpoint crafted so that greedy decoding provably cycles
(scripts/make_checkpoint.py --cycle) drives the loop detector, the retry ladder and the failure
marking end to end through the binary; blank pages; seeded sampling."""
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from checks import Checks  # noqa: E402

import numpy as np
from PIL import Image

CLI = os.environ["OCR_CLI"]
SRC = Path(os.environ["OCR_SOURCE_DIR"])
BUILD = Path(os.environ["OCR_BUILD_DIR"])
MODELS = Path(os.environ["OCR_TEST_MODELS"])
PY = sys.executable
PAGE = SRC / "tests" / "data" / "sample_page.png"

check = Checks("loops")


def run(args):
    return subprocess.run([CLI] + args, capture_output=True, text=True, timeout=900)


with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    subprocess.run([PY, str(SRC / "scripts" / "make_checkpoint.py"), str(tmp / "cycle-hf"), "--preset", "tiny",
                    "--cycle", "5", "--tokenizer-dir", str(MODELS / "tokenizer")], check=True, capture_output=True)
    subprocess.run([PY, str(SRC / "scripts" / "export.py"), str(tmp / "cycle-hf"), str(tmp / "cycle"), "--dtype", "fp32",
                    "--ops-lib", str(BUILD / "libocr_ops.so")], check=True, capture_output=True)
    cyc = str(tmp / "cycle")

    # 1. Greedy output cycles with period 5: detected, stopped early, retried through the ladder, marked.
    r = run([str(PAGE), "--model", cyc, "--mode", "base", "--no-ngram", "--max-tokens", "400", "--raw"])
    check("looping page exit 3", r.returncode == 3, (r.returncode, r.stderr))
    check("marker in the markdown", "<!-- ocr-cli: page 1 failed: repetition -->" in r.stdout, r.stdout[-500:])
    check("ladder step 1: next mode", "retry 1/3 with mode large" in r.stderr, r.stderr)
    check("ladder step 2: gundam, more tiles", "retry 2/3 with mode gundam, max 16 tiles" in r.stderr, r.stderr)
    check("ladder step 3: seeded sampling", "retry 3/3 with mode base, sampling T=0.3 top-p 0.9 seed 0" in r.stderr, r.stderr)
    check("failure line", "sample_page.png: failed: repetition after 4 attempt(s)" in r.stderr, r.stderr)
    body = r.stdout.split("<!--")[0]
    check("stopped early, not at the cap", 0 < len(body) < 400 * 8, len(body))

    # 2. No retry: one attempt. A cap below the detector's tail: finish "length", also a failure.
    r = run([str(PAGE), "--model", cyc, "--mode", "tiny", "--no-ngram", "--max-tokens", "400", "--no-retry"])
    check("no-retry: one attempt", r.returncode == 3 and "after 1 attempt(s)" in r.stderr and "retry" not in r.stderr, r.stderr)
    r = run([str(PAGE), "--model", cyc, "--mode", "tiny", "--no-ngram", "--max-tokens", "30", "--no-retry"])
    check("token cap without EOS fails as length", r.returncode == 3 and "failed: length" in r.stdout, (r.stdout, r.stderr))

    # 3. The windowed n-gram blocker (default 30/90) breaks the 5-token cycle: bans appear, so the
    #    output is no longer the pure cycle.
    r = run([str(PAGE), "--model", cyc, "--mode", "tiny", "--max-tokens", "120", "--no-retry", "--raw"])
    pure = run([str(PAGE), "--model", cyc, "--mode", "tiny", "--max-tokens", "120", "--no-retry", "--raw", "--no-ngram"])
    check("blocker changes a looping output", r.stdout != pure.stdout, r.stdout[:300])

    # 4. Blank pages are detected before decoding: empty page, finish blank, exit 0.
    white = tmp / "blank.png"
    arr = np.full((900, 700, 3), 250, np.uint8)
    arr[::97, ::89] = 246  # scanner noise below the tolerance
    Image.fromarray(arr).save(white)
    r = run([str(white), "--model", cyc, "-v"])
    check("blank page exit 0", r.returncode == 0, r.stderr)
    check("blank page empty output", r.stdout.strip() == "", r.stdout)
    check("blank page logged", "blank page" in r.stderr and "finish blank" in r.stderr, r.stderr)

    # 5. Seeded sampling: the same seed gives the same output, another seed another one.
    tiny = str(MODELS / "tiny")
    args = [str(PAGE), "--model", tiny, "--mode", "tiny", "--max-tokens", "24", "--no-retry", "--raw",
            "--temperature", "1.0", "--no-ngram"]
    a = run(args + ["--seed", "3"])
    b = run(args + ["--seed", "3"])
    c = run(args + ["--seed", "4"])
    check("same seed same output", a.stdout == b.stdout and a.stdout.strip() != "", (a.stdout, b.stdout))
    check("other seed other output", a.stdout != c.stdout, (a.stdout, c.stdout))

check.finish()
