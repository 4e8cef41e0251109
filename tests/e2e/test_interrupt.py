#!/usr/bin/env python3
"""SIGINT/SIGTERM mid-batch: exit 130, no partial files, summary printed; a rerun resumes and the
final outputs equal those of an uninterrupted run."""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from checks import Checks  # noqa: E402

CLI = os.environ["OCR_CLI"]
SRC = Path(os.environ["OCR_SOURCE_DIR"])
MODEL = str(Path(os.environ["OCR_TEST_MODELS"]) / "tiny-stop")
PAGE = SRC / "tests" / "data" / "sample_page.png"

check = Checks("interrupt")


def tree(d):
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(Path(d).rglob("*")) if p.is_file()}


ARGS = ["--model", MODEL, "--mode", "base", "-v"]
with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    src = tmp / "in"
    for i in range(8):
        (src / f"d{i % 3}").mkdir(parents=True, exist_ok=True)
        shutil.copy(PAGE, src / f"d{i % 3}" / f"p{i}.png")
    full = subprocess.run([CLI, str(src), "-o", str(tmp / "full")] + ARGS, capture_output=True, text=True, timeout=900)
    check("uninterrupted run ok", full.returncode == 0, full.stderr)
    expected = tree(tmp / "full")
    for sig in (signal.SIGINT, signal.SIGTERM):
        out = tmp / f"out-{sig.name}"
        proc = subprocess.Popen([CLI, str(src), "-o", str(out)] + ARGS, stderr=subprocess.PIPE, text=True)
        # Wait until the first file is written, then interrupt mid-batch.
        deadline = time.time() + 300
        while time.time() < deadline and not any(out.rglob("*.md")):
            time.sleep(0.05)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=300)
        got = tree(out)
        check(f"{sig.name}: exit 130", proc.returncode == 130, (proc.returncode, err))
        check(f"{sig.name}: stopped early", 0 < len(got) < len(expected), sorted(got))
        check(f"{sig.name}: no partial files", all(".tmp." not in f for f in got) and all(got[f] == expected[f] for f in got),
              sorted(got))
        check(f"{sig.name}: says so", "interrupted" in err and "files," in err, err[-500:])
        again = subprocess.run([CLI, str(src), "-o", str(out)] + ARGS, capture_output=True, text=True, timeout=900)
        check(f"{sig.name}: rerun resumes", again.returncode == 0 and "already done" in again.stderr, again.stderr[-500:])
        check(f"{sig.name}: final outputs identical", tree(out) == expected, sorted(tree(out)))

check.finish()
