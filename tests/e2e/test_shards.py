#!/usr/bin/env python3
"""--shard i/N (and the Slurm / Kubernetes variables) split a corpus with no overlap and no gap;
--files-from with newline- and NUL-separated lists."""
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from checks import Checks  # noqa: E402

CLI = os.environ["OCR_CLI"]
SRC = Path(os.environ["OCR_SOURCE_DIR"])
MODEL = str(Path(os.environ["OCR_TEST_MODELS"]) / "tiny-stop")
PAGE = SRC / "tests" / "data" / "sample_page.png"

check = Checks("shards")


def run(args, env=None, stdin=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "JOB_COMPLETION", "OCR_SHARD"))}
    e.update(env or {})
    return subprocess.run([CLI] + args + ["--model", MODEL, "--mode", "tiny"], capture_output=True, text=True,
                          env=e, input=stdin, timeout=900)


def outputs(d):
    return sorted(str(p.relative_to(d)) for p in Path(d).rglob("*.md"))


with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    src = tmp / "in"
    names = []
    for i in range(7):
        d = src / f"f{i % 2}" / ("sub dir" if i % 3 == 0 else "")
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy(PAGE, d / f"page {i}.png")
        names.append(str((d / f"page {i}.png").relative_to(src)).replace(".png", ".md"))
    everything = sorted(names)
    seen = []
    for i in range(3):
        r = run([str(src), "-o", str(tmp / f"s{i}"), "--shard", f"{i}/3"])
        check(f"shard {i}/3 ok", r.returncode == 0, r.stderr)
        seen += outputs(tmp / f"s{i}")
    check("shards cover the corpus exactly once", sorted(seen) == everything and len(seen) == len(set(seen)), seen)
    r = run([str(src), "-o", str(tmp / "slurm")], env={"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "3",
                                                          "SLURM_ARRAY_TASK_MIN": "1"})
    check("Slurm variables = --shard 1/3", outputs(tmp / "slurm") == outputs(tmp / "s1"), outputs(tmp / "slurm"))
    r = run([str(src), "-o", str(tmp / "k8s")], env={"JOB_COMPLETION_INDEX": "2", "OCR_SHARD_COUNT": "3"})
    check("Kubernetes index = --shard 2/3", outputs(tmp / "k8s") == outputs(tmp / "s2"), outputs(tmp / "k8s"))
    check("bad shard exit 2", run([str(src), "--shard", "3/3"]).returncode == 2)

    # --files-from: newline list from a file, NUL list from stdin (as find -print0 writes).
    files = sorted(str(p) for p in src.rglob("*.png"))
    (tmp / "list.txt").write_text("\n".join(files[:3]) + "\n")
    r = run(["--files-from", str(tmp / "list.txt"), "-o", str(tmp / "l1")])
    check("files-from newline list", r.returncode == 0 and len(outputs(tmp / "l1")) == 3, (r.stderr, outputs(tmp / "l1")))
    r = run(["--files-from", "-", "-0", "-o", str(tmp / "l2")], stdin="\0".join(files) + "\0")
    # Listed files are mirrored by their file name (page 0.md .. page 6.md, all distinct).
    check("files-from NUL list on stdin", r.returncode == 0 and outputs(tmp / "l2") == sorted(f"page {i}.md" for i in range(7)),
          (r.stderr, outputs(tmp / "l2")))

check.finish()
