#!/usr/bin/env python3
"""make_checkpoint.py --full describes exactly the 2,710 official tensors (names and shapes)."""
import os
import subprocess
import sys
from pathlib import Path

src = Path(os.environ["OCR_SOURCE_DIR"])
tsv = Path(os.environ["OCR_SHARED_DIR"]) / "spec" / "checkpoint-tensors.tsv"
out = subprocess.run([sys.executable, str(src / "scripts" / "make_checkpoint.py"), "--full", "--list"],
                     capture_output=True, text=True, check=True).stdout
ours = {}
for line in out.splitlines():
    name, shape, dtype = line.split("\t")
    ours[name] = (shape, dtype)
ref = {}
for line in tsv.read_text().splitlines():
    if line.startswith("#") or not line.strip():
        continue
    name, shape, dtype = line.split("\t")
    ref[name] = (shape, dtype)
missing = sorted(set(ref) - set(ours))
extra = sorted(set(ours) - set(ref))
wrong = [(n, ours[n], ref[n]) for n in sorted(set(ref) & set(ours)) if ours[n] != ref[n]]
for what, items in [("missing", missing), ("extra", extra), ("wrong shape", wrong)]:
    for item in items[:10]:
        print(f"{what}: {item}")
n_fail = len(missing) + len(extra) + len(wrong)
print(f"checkpoint_tensors: {len(ref) - len(missing) - len(wrong)} passed, {n_fail} failed (of {len(ref)} official tensors)")
sys.exit(1 if n_fail or len(ref) != 2710 else 0)
