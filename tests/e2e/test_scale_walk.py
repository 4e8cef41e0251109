#!/usr/bin/env python3
"""100,000 small inputs in a nested tree (and one 200 folders deep): walked and scheduled with
bounded memory. No inference (100,000 pages would take hours on CPU): --dry-run walks and plans
every input, and a resume run (every output already there) loads the model and checks and skips
every input. Peak RSS of each is compared with the same run over one input."""
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from checks import Checks  # noqa: E402

CLI = os.environ["OCR_CLI"]
MODEL = str(Path(os.environ["OCR_TEST_MODELS"]) / "tiny-stop")
SRC = Path(os.environ["OCR_SOURCE_DIR"])
sys.path.insert(0, str(SRC / "scripts"))
import make_bad_corpus as corpus  # noqa: E402

N_TOP, N_MID, N_LEAF = 100, 10, 100  # 100,000 files
DEPTH = 200
MAX_GROWTH_MIB = 100  # over the one-input run: 1 KiB an input at most

check = Checks("scale_walk")


def measured(args):
    """Runs the binary; returns (returncode, stdout, stderr, peak RSS MiB, seconds)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.time()
        p = subprocess.Popen([CLI] + [str(a) for a in args], stdout=out, stderr=err)
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        secs = time.time() - t0
        out.seek(0)
        err.seek(0)
        return p.returncode, out.read().decode(), err.read().decode(), usage.ru_maxrss / 1024, secs


with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    src, out = tmp / "in", tmp / "out"
    pixel = corpus.encode(corpus.page_image().resize((1, 1)), "PNG")
    t0 = time.time()
    rel = []  # relative paths of every input, in the walk's bytewise order
    for a in range(N_TOP):
        for b in range(N_MID):
            d = f"dir {a:03d}/sub{b}"
            os.makedirs(src / d)
            for c in range(N_LEAF):
                name = f"{d}/page {c:03d}.png"
                with open(src / name, "wb") as f:
                    f.write(pixel)
                rel.append(name)
    deep = "/".join(["d"] * DEPTH)
    os.makedirs(src / deep)
    (src / deep / "bottom.png").write_bytes(pixel)
    rel.append(f"{deep}/bottom.png")
    rel.sort(key=lambda s: s.encode())
    n = len(rel)
    print(f"made {n} inputs in {time.time() - t0:.1f} s")
    one = tmp / "one"
    one.mkdir()
    (one / "page.png").write_bytes(pixel)

    # --- --dry-run: walk and plan, no model ---------------------------------------------------
    rc1, plan1, err1, rss1, _ = measured([one, "-o", tmp / "one-out", "--dry-run"])
    rc, plan, err, rss, secs = measured([src, "-o", out, "--dry-run"])
    lines = plan.splitlines()
    check("dry run exit 0", rc == 0 and rc1 == 0, (err[-2000:], err1))
    check("dry run: one line per input", len(lines) == n, len(lines))
    check("dry run: every input planned, in the stable order, with its output",
          lines == [f"todo\t{src}/{r}\t{out}/{r[:-4]}.md" for r in rel], lines[:3])
    check("dry run: counts on stderr", f"dry run: {n} inputs, {n} to do, 0 done" in err, err)
    check("dry run writes nothing", not out.exists())
    print(f"dry run over {n} inputs: {secs:.1f} s, peak RSS {rss:.0f} MiB (one input: {rss1:.0f} MiB), "
          f"{(rss - rss1) * 1024 * 1024 / n:.0f} bytes an input")
    check(f"dry run: peak RSS < {MAX_GROWTH_MIB} MiB over one input", rss - rss1 < MAX_GROWTH_MIB, (rss, rss1))

    rc, plan, err, _, _ = measured([src, "-o", out, "--dry-run", "--shard", "1/4"])
    check("dry run --shard 1/4: every 4th input", rc == 0 and
          plan.splitlines() == [f"todo\t{src}/{r}\t{out}/{r[:-4]}.md" for r in rel[1::4]], plan[:300])

    # --- outputs for all but the page 000 of each folder: the plan tells done from todo ----------
    for r in rel:
        if not r.endswith("page 000.png"):
            o = out / (r[:-4] + ".md")
            o.parent.mkdir(parents=True, exist_ok=True)
            o.write_bytes(b"done\n")
    todo = [r for r in rel if r.endswith("page 000.png")]
    rc, plan, err, _, _ = measured([src, "-o", out, "--dry-run"])
    statuses = [l.split("\t")[0] for l in plan.splitlines()]
    check("dry run after a partial run: done and todo told apart",
          statuses.count("todo") == len(todo) and statuses.count("done") == n - len(todo), err)

    # --- resume: the model loads, every input is checked and skipped ------------------------------
    for r in todo:
        (out / (r[:-4] + ".md")).write_bytes(b"done\n")
    (tmp / "one-out").mkdir()
    (tmp / "one-out" / "page.md").write_bytes(b"done\n")
    args = ["--model", MODEL, "--mode", "tiny"]
    rc1, _, err1, rss1, _ = measured([one, "-o", tmp / "one-out"] + args)
    rc, _, err, rss, secs = measured([src, "-o", out] + args)
    check("resume run exit 0", rc == 0 and rc1 == 0, (err[-2000:], err1[-2000:]))
    check("resume run skipped every input", f"0 files, 0 pages, 0 failed, {n} skipped (done)" in err, err[-2000:])
    print(f"resume run over {n} inputs: {secs:.1f} s, peak RSS {rss:.0f} MiB (one input: {rss1:.0f} MiB)")
    check(f"resume run: peak RSS < {MAX_GROWTH_MIB} MiB over one input", rss - rss1 < MAX_GROWTH_MIB, (rss, rss1))

check.finish()
