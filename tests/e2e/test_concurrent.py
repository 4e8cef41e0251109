#!/usr/bin/env python3
"""Several processes on one -o folder (an accidental double run, overlapping shards, two --force
runs): every input is done exactly once between them, every output equals a single-process run,
nothing is left behind that a rerun trips on. A process killed while holding claims (SIGKILL: no
clean-up of its own) blocks nothing: the next run takes the claims over and removes its temporary
files."""
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
N = 16
SKIPS = ("being processed by another process", "done by another process", "already done")

check = Checks("concurrent")


def cmd(src, out, *extra):
    return [CLI, str(src), "-o", str(out), "--model", MODEL, "--mode", "tiny", "-v"] + list(extra)


def tree(d):
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(Path(d).rglob("*")) if p.is_file()}


def together(*cmds):
    """Starts the commands at once; returns [(returncode, stderr)]."""
    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for c in cmds]
    errs = [p.communicate(timeout=900)[1] for p in procs]
    return [(p.returncode, e) for p, e in zip(procs, errs)]


def pages_done(err):
    return sum(1 for l in err.splitlines() if " image tokens (" in l)


def skipped(err):
    return sum(1 for l in err.splitlines() if any(s in l for s in SKIPS))


def leftovers(out):
    return sorted(str(p.relative_to(out)) for p in Path(out).rglob("*") if ".tmp." in p.name or ".ocr-cli.locks" in str(p))


def fnv1a(data):
    h = 14695981039346656037
    for c in data:
        h = ((h ^ c) * 1099511628211) % (1 << 64)
    return h


with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    src = tmp / "in"
    for i in range(N):
        (src / f"d{i % 2}").mkdir(parents=True, exist_ok=True)
        shutil.copy(PAGE, src / f"d{i % 2}" / f"p{i:02d}.png")
    ref = subprocess.run(cmd(src, tmp / "ref"), capture_output=True, text=True, timeout=900)
    check("single-process run ok", ref.returncode == 0 and pages_done(ref.stderr) == N, ref.stderr[-2000:])
    expected = tree(tmp / "ref")
    check("reference has every output", len(expected) == N, sorted(expected))

    # An accidental double run: the same command twice at once.
    out = tmp / "out"
    (a_rc, a_err), (b_rc, b_err) = together(cmd(src, out), cmd(src, out))
    check("double run: both exit 0", a_rc == 0 and b_rc == 0, (a_err[-2000:], b_err[-2000:]))
    done_a, done_b = pages_done(a_err), pages_done(b_err)
    print(f"double run: process A did {done_a} inputs, process B {done_b}")
    check("double run: every input done exactly once between them", done_a + done_b == N, (done_a, done_b))
    check("double run: both did work (they overlapped)", done_a > 0 and done_b > 0, (done_a, done_b))
    check("double run: each skipped what the other did", skipped(a_err) == N - done_a and skipped(b_err) == N - done_b,
          (a_err[-3000:], b_err[-3000:]))
    check("double run: outputs equal the single-process run", tree(out) == expected, sorted(tree(out)))
    check("double run: nothing left behind", leftovers(out) == [], leftovers(out))
    again = subprocess.run(cmd(src, out), capture_output=True, text=True, timeout=900)
    check("rerun: everything already done", again.returncode == 0 and again.stderr.count("already done") == N,
          again.stderr[-2000:])

    # Two --force runs at once redo each output once: an output newer than a process's start was
    # made by the other one.
    (a_rc, a_err), (b_rc, b_err) = together(cmd(src, out, "--force"), cmd(src, out, "--force"))
    done_a, done_b = pages_done(a_err), pages_done(b_err)
    check("--force pair: both exit 0", a_rc == 0 and b_rc == 0, (a_err[-2000:], b_err[-2000:]))
    check("--force pair: every input redone exactly once", done_a + done_b == N, (done_a, done_b))
    check("--force pair: outputs equal the single-process run", tree(out) == expected, sorted(tree(out)))
    check("--force pair: nothing left behind", leftovers(out) == [], leftovers(out))

    # Overlapping shards: one process on shard 0/2 while another does everything.
    out2 = tmp / "out-shards"
    (a_rc, a_err), (b_rc, b_err) = together(cmd(src, out2, "--shard", "0/2"), cmd(src, out2))
    done_a, done_b = pages_done(a_err), pages_done(b_err)
    check("overlapping shards: both exit 0", a_rc == 0 and b_rc == 0, (a_err[-2000:], b_err[-2000:]))
    check("overlapping shards: every input done exactly once", done_a + done_b == N and done_a <= N // 2,
          (done_a, done_b))
    check("overlapping shards: outputs equal the single-process run", tree(out2) == expected, sorted(tree(out2)))

    # A process killed while it holds claims: the kernel drops its locks, the next run takes over.
    out3 = tmp / "out-killed"
    proc = subprocess.Popen(cmd(src, out3), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not list(out3.rglob("*.md")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stale_locks = list((out3 / ".ocr-cli.locks").glob("*.lock"))
    check("killed run left its claim files behind", len(stale_locks) >= 1, stale_locks)
    # ... and, as if killed mid-write, a temporary file of an output not yet written.
    victim = f"{out3}/d1/p15.md"
    (out3 / "d1").mkdir(exist_ok=True)
    tmp_file = Path(victim + ".tmp.4000000")
    tmp_file.write_bytes(b"half a document")
    lock = out3 / ".ocr-cli.locks" / f"{fnv1a(victim.encode()):016x}.lock"
    lock.touch()
    r = subprocess.run(cmd(src, out3), capture_output=True, text=True, timeout=900)
    check("after the kill: the rerun finishes, exit 0", r.returncode == 0, r.stderr[-2000:])
    check("after the kill: no input skipped as busy", "being processed by another process" not in r.stderr, r.stderr[-2000:])
    check("after the kill: outputs equal the single-process run", tree(out3) == expected, sorted(tree(out3)))
    check("after the kill: stale temporary and claim files removed", leftovers(out3) == [] and not tmp_file.exists(),
          leftovers(out3))

check.finish()
