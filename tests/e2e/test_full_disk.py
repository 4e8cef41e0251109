#!/usr/bin/env python3
"""A full disk under -o: a 64 KiB tmpfs, almost filled, as the output folder. The run stops at the
first output that does not fit: one error line naming that file and "No space left on device",
exit 1, the files finished before it complete, no temporary or lock file left; once space is
freed a rerun resumes and ends with every output equal to a run on a roomy disk.
Exits 77 (ctest SKIP_RETURN_CODE) where tmpfs cannot be mounted (not root, no CAP_SYS_ADMIN)."""
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
N_INPUTS = 30

check = Checks("full_disk")


def run(args):
    return subprocess.run([CLI] + [str(a) for a in args] + ["--model", MODEL, "--mode", "tiny", "-v"],
                          capture_output=True, text=True, timeout=900)


def tree(d):
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(Path(d).rglob("*")) if p.is_file()}


with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    mnt = tmp / "mnt"
    mnt.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if mounted.returncode != 0:
        print(f"SKIP: cannot mount a tmpfs here ({mounted.stderr.strip()}); run as root")
        sys.exit(77)
    try:
        src = tmp / "in"
        src.mkdir()
        for i in range(N_INPUTS):
            shutil.copy(PAGE, src / f"p{i}.png")
        ref = run([src, "-o", tmp / "ref"])
        check("reference run on a roomy disk", ref.returncode == 0, ref.stderr)
        expected = tree(tmp / "ref")

        # Leave sixteen 4 KiB pages free: the pipeline claims up to ~10 inputs ahead (one lock file
        # each, freed when the document is written) and every output takes a page, so the first
        # outputs fit and a later one does not.
        filler = mnt / "filler"
        filler.write_bytes(b"\0" * (192 * 1024))
        out = mnt / "out"
        r = run([src, "-o", out])
        errors = [l for l in r.stderr.splitlines() if "error:" in l]
        got = tree(out)
        md = sorted(f for f in got if f.endswith(".md"))
        check("exit 1 (the output disk is full)", r.returncode == 1, (r.returncode, r.stderr[-3000:]))
        check("one error line naming the output file and the cause", len(errors) == 1 and
              errors[0].startswith(f"ocr-cli: error: {out}/p") and errors[0].endswith(".md: cannot write (No space left on device)"),
              errors)
        check("says it stopped and that a rerun resumes", "stopped: the output file system is full" in r.stderr and
              "a rerun resumes" in r.stderr, r.stderr[-1000:])
        check("stopped early, after writing some", 0 < len(md) < N_INPUTS, md)
        check("the files written are complete", all(got[f] == expected[f] for f in md), md)
        check("the failed output is absent", errors and errors[0].split(": ")[1][len(str(out)) + 1:] not in got, (errors, md))
        leftovers = [p.name for p in mnt.rglob("*") if ".tmp." in p.name or p.suffix == ".lock"]
        check("no temporary or lock files left", not leftovers and not (out / ".ocr-cli.locks").exists(), leftovers)
        check("every stderr line is ocr-cli's or a log line", all(l.startswith(("ocr-cli: ", "[")) for l in r.stderr.splitlines()),
              r.stderr[-2000:])

        # Space freed: the rerun skips what was written and does the rest.
        filler.unlink()
        again = run([src, "-o", out])
        check("rerun after freeing space: exit 0", again.returncode == 0, again.stderr[-2000:])
        check("rerun skips the finished files", again.stderr.count("already done") == len(md), again.stderr[-2000:])
        final = {f: b for f, b in tree(out).items() if f != "_failed.jsonl"}
        check("final outputs equal the roomy run", final == expected, sorted(final))
    finally:
        subprocess.run(["umount", str(mnt)], check=True)

check.finish()
