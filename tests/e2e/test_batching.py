#!/usr/bin/env python3
"""Continuous batching through the binary: more pages than KV-cache slots, pages of different sizes
and lengths joining as others finish, give exactly the outputs of one page at a time; the same after
an (injected) out-of-memory error in encode/prefill (the group is halved) or in a decoding step
(half the pages are evicted and restarted); documents print on stdout in input order."""
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
MODELS = Path(os.environ["OCR_TEST_MODELS"])
TINY = str(MODELS / "tiny")  # random weights: every page runs to the token cap (finish "length", exit 3)

check = Checks("batching")


def run(args, env=None):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([CLI] + args, capture_output=True, text=True, timeout=1200, env=e)


with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    src = tmp / "in"
    src.mkdir()
    rng = np.random.default_rng(3)
    sizes = [(300, 420), (640, 200), (160, 160), (500, 700), (220, 900), (1000, 300), (360, 360)]
    for i, (w, h) in enumerate(sizes):
        px = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        Image.fromarray(px).save(src / f"p{i}.png")
    common = ["--model", TINY, "--mode", "tiny", "--max-tokens", "24", "--no-ngram", "--no-retry", "-q"]

    one = run([str(src), "-o", str(tmp / "one"), "--batch-size", "1"] + common)
    check("batch 1 runs", one.returncode == 3, one.stderr)
    want = {p.name: p.read_text() for p in sorted((tmp / "one").glob("*.md"))}
    check("every page written", len(want) == len(sizes), sorted(want))

    def same_as_one(out, what):
        got = {p.name: p.read_text() for p in sorted(out.glob("*.md"))}
        check(what + ": same outputs as one page at a time", got == want,
              [k for k in want if got.get(k) != want[k]])

    many = run([str(src), "-o", str(tmp / "three"), "--batch-size", "3"] + common)
    check("7 pages through 3 slots", many.returncode == 3, many.stderr)
    same_as_one(tmp / "three", "batch 3")

    # The encoder thread (on by default on CUDA) encodes pages while others decode: same outputs,
    # also with more pages than slots and with an injected out-of-memory error in prefill.
    thr = run([str(src), "-o", str(tmp / "thread"), "--batch-size", "3"] + common, env={"OCR_ENCODER_THREAD": "1"})
    check("encoder thread: 7 pages through 3 slots", thr.returncode == 3, thr.stderr)
    same_as_one(tmp / "thread", "encoder thread")
    thr_files = [str(src / f"p{i}.png") for i in range(len(sizes))]
    thr_out = run(thr_files + ["--batch-size", "2", "--format", "jsonl"] + common, env={"OCR_ENCODER_THREAD": "1"})
    ref_out = run(thr_files + ["--batch-size", "2", "--format", "jsonl"] + common, env={"OCR_ENCODER_THREAD": "0"})
    import json

    def untimed(text):
        return [{k: v for k, v in json.loads(line).items() if not k.endswith("_ms")} for line in text.splitlines()]
    check("encoder thread: stdout identical to inline encoding (timings aside)",
          thr_out.stdout and untimed(thr_out.stdout) == untimed(ref_out.stdout), (thr_out.stderr[-500:], ref_out.stderr[-500:]))
    thr_oom = run([str(src), "-o", str(tmp / "thread-oom"), "--batch-size", "4"] + common,
                  env={"OCR_ENCODER_THREAD": "1", "OCR_FAULT_OOM": "admit:2"})
    check("encoder thread + OOM in prefill: run goes on", thr_oom.returncode == 3, thr_oom.stderr)
    same_as_one(tmp / "thread-oom", "encoder thread after OOM in prefill")

    # Injected out-of-memory errors take the recovery paths a CUDA OOM takes.
    oom1 = run([str(src), "-o", str(tmp / "oom-admit"), "--batch-size", "4", "--log-level", "info"] + common[:-1],
               env={"OCR_FAULT_OOM": "admit:1"})
    check("OOM in encode/prefill: run goes on", oom1.returncode == 3, oom1.stderr)
    same_as_one(tmp / "oom-admit", "after OOM in prefill")
    check("the prefill group was halved (logged)", "out of memory" in oom1.stderr and "halving" in oom1.stderr, oom1.stderr[-2000:])
    oom2 = run([str(src), "-o", str(tmp / "oom-step"), "--batch-size", "4", "--log-level", "info"] + common[:-1],
               env={"OCR_FAULT_OOM": "step:3"})
    check("OOM in a decoding step: run goes on", oom2.returncode == 3, oom2.stderr)
    same_as_one(tmp / "oom-step", "after OOM in a step")
    check("pages were evicted and the batch shrunk (logged)", "evicted" in oom2.stderr, oom2.stderr[-2000:])

    # stdout: documents in input order, whatever order they finish in.
    files = [str(src / f"p{i}.png") for i in range(len(sizes))]
    seq = [run([f] + common).stdout for f in files]
    together = run(files + ["--batch-size", "4"] + common)
    check("stdout batch runs", together.returncode == 3, together.stderr)
    check("stdout in input order", together.stdout == "\n<--- Page Split --->\n".join(seq),
          (together.stdout[:300], seq[0][:100]))
    jl = run(files + ["--batch-size", "4", "--format", "jsonl"] + common)
    import json
    inputs = [json.loads(line)["input"] for line in jl.stdout.splitlines()]
    check("jsonl records in input order", inputs == files, inputs)

    # A budget too small for even one page is a clear fatal error (on CPU it is ignored: no GPU).
    bad = run([files[0], "--max-gpu-memory", "lots"] + common)
    check("bad --max-gpu-memory is a usage error", bad.returncode == 2 and "--max-gpu-memory" in bad.stderr, bad.stderr)

check.finish()
