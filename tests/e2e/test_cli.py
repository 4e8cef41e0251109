#!/usr/bin/env python3
"""The ocr-cli binary on real inputs with the tiny model: stdout/stderr split, exit codes, stdin,
and the parity checker failing on a model that is not the fixture's."""
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from checks import Checks  # noqa: E402

CLI = os.environ["OCR_CLI"]
# A model crafted to answer 5 tokens then EOS (pages succeed); the random one never stops.
MODEL = str(Path(os.environ["OCR_TEST_MODELS"]) / "tiny-stop")
RANDOM_MODEL = str(Path(os.environ["OCR_TEST_MODELS"]) / "tiny")
SRC = Path(os.environ["OCR_SOURCE_DIR"])
SHARED = Path(os.environ["OCR_SHARED_DIR"])
PAGE = SRC / "tests" / "data" / "sample_page.png"

check = Checks("cli")


def run(args, stdin=None):
    return subprocess.run([CLI] + args, input=stdin, capture_output=True, timeout=600)


# One image to stdout; logs only on stderr.
r = run([str(PAGE), "--model", MODEL, "--mode", "base", "--max-tokens", "12", "-v"])
check("ok exit", r.returncode == 0, r.stderr.decode())
check("text on stdout", len(r.stdout.strip()) > 0, r.stdout)
check("log on stderr", b"273 image tokens" in r.stderr, r.stderr.decode())
check("no log on stdout", b"image tokens" not in r.stdout, r.stdout)

# stdin gives the same output as the file.
r2 = run(["-", "--model", MODEL, "--mode", "base", "--max-tokens", "12"], stdin=PAGE.read_bytes())
check("stdin same as file", r2.returncode == 0 and r2.stdout == r.stdout, (r2.stdout, r.stdout))

# Two inputs, one broken: the good one is printed, one-line error names the bad file, exit 3.
with tempfile.TemporaryDirectory() as tmp:
    bad = Path(tmp) / "broken page.png"
    bad.write_bytes(PAGE.read_bytes()[:200])
    r3 = run([str(bad), str(PAGE), "--model", MODEL, "--mode", "base", "--max-tokens", "12"])
    check("partial failure exit 3", r3.returncode == 3, r3.returncode)
    check("good page still printed", r3.stdout == r.stdout, r3.stdout)
    err = [l for l in r3.stderr.decode().strip().splitlines() if "error:" in l]
    check("one-line error naming the file", len(err) == 1 and "broken page.png" in err[0], err)
    check("summary line", "2 files, 1 pages, 1 failed" in r3.stderr.decode(), r3.stderr)

# Empty stdin, unknown mode, bad model folder, no input.
r4 = run(["-", "--model", MODEL], stdin=b"")
check("empty stdin exit 3", r4.returncode == 3 and b"stdin" in r4.stderr, r4.stderr)
check("unknown mode exit 2", run([str(PAGE), "--model", MODEL, "--mode", "huge"]).returncode == 2)
r5 = run([str(PAGE), "--model", str(SRC)])
check("bad model folder exit 1", r5.returncode == 1 and b"manifest.json" in r5.stderr, r5.stderr)
check("no input exit 2", run(["--model", MODEL]).returncode == 2)
check("bad prompt exit 2", run([str(PAGE), "--model", MODEL, "--prompt", "no image tag"]).returncode == 2)

# Each task prompt runs; locate needs --ref.
for task in ["markdown", "ocr", "free", "figure", "describe"]:
    rt = run([str(PAGE), "--model", MODEL, "--mode", "tiny", "--task", task])
    check(f"task {task}", rt.returncode == 0, rt.stderr)
check("locate without ref exit 2", run([str(PAGE), "--model", MODEL, "--task", "locate"]).returncode == 2)
rl = run([str(PAGE), "--model", MODEL, "--mode", "tiny", "--task", "locate", "--ref", "the title"])
check("locate with ref", rl.returncode == 0, rl.stderr)

# PDFs nobody here wrote (Debian documentation packages installed by scripts/setup.sh).
manuals = [Path(p) for p in ["/usr/share/doc/libtasn1-doc/libtasn1.pdf",
                             "/usr/share/doc/shared-mime-info/shared-mime-info-spec.pdf"] if Path(p).exists()]
check("a Debian PDF manual is installed", bool(manuals), "install libtasn1-doc or shared-mime-info")
for pdf in manuals[:1]:
    rp = run([str(pdf), "--model", MODEL, "--mode", "tiny", "--pages", "1-2", "-v"])
    out = rp.stdout.decode()
    check("pdf pages ok", rp.returncode == 0, rp.stderr)
    check("pdf two pages separated", out.count("<--- Page Split --->") == 1 and len(out.strip()) > 0, out)
    check("pdf pages logged by number", b"page 1:" in rp.stderr and b"page 2:" in rp.stderr, rp.stderr)
    rs = run(["-", "--model", MODEL, "--mode", "tiny", "--pages", "2"], stdin=pdf.read_bytes())
    check("pdf from stdin (sniffed)", rs.returncode == 0 and rs.stdout.strip() != b"", rs.stderr)
    rb = run([str(pdf), "--model", MODEL, "--pages", "9999"])
    check("page beyond the document exit 3", rb.returncode == 3 and b"9999" in rb.stderr, rb.stderr)
check("bad --pages exit 2", run([str(PAGE), "--model", MODEL, "--pages", "1-x"]).returncode == 2)
with tempfile.TemporaryDirectory() as tmp:
    trunc = Path(tmp) / "cut.pdf"
    trunc.write_bytes(b"%PDF-1.4\n1 0 obj <<")
    rt = run([str(trunc), "--model", MODEL])
    err = rt.stderr.decode().strip().splitlines()
    check("truncated pdf exit 3, one line", rt.returncode == 3 and len(err) == 1 and "cut.pdf" in err[0], err)

# The parity checker must fail on a model that is not the fixture's (same sizes, other weights).
fixture = SHARED / "fixtures" / "parity-a"
if (fixture / "cases.json").exists():
    rp = run(["parity", str(fixture), "--model", RANDOM_MODEL])
    out = rp.stdout.decode()
    check("parity fails on the wrong model", rp.returncode == 1 and "FAIL a1_gundam_portrait" in out, out[-2000:])
    check("parity reports views still exact", "pixels_u8                          0.00e+00" in out, out[:2000])

check.finish()
