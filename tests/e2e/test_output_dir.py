#!/usr/bin/env python3
"""-o DIR: folder trees mirrored (spaces, non-ASCII names, symlink loops), resume, --force,
_failed.jsonl, jsonl records, no partial files."""
import json
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
MANUAL = next((Path(p) for p in ["/usr/share/doc/libtasn1-doc/libtasn1.pdf",
                                 "/usr/share/doc/shared-mime-info/shared-mime-info-spec.pdf"] if Path(p).exists()), None)

check = Checks("output_dir")


def run(args):
    return subprocess.run([CLI] + args + ["--model", MODEL, "--mode", "tiny"], capture_output=True, text=True, timeout=900)


with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    src = tmp / "in"
    (src / "a b" / "ü").mkdir(parents=True)
    (src / "c").mkdir()
    shutil.copy(PAGE, src / "a b" / "ü" / "page one.png")
    shutil.copy(PAGE, src / "c" / "x.PNG")
    (src / "c" / "broken.png").write_bytes(PAGE.read_bytes()[:300])
    (src / "c" / "notes.txt").write_text("not an input")
    os.symlink("..", src / "c" / "loop")  # a symlink loop: never followed
    if MANUAL:
        shutil.copy(MANUAL, src / "c" / "manual.pdf")
    out = tmp / "out"
    r = run([str(src), "-o", str(out), "--pages", "1-2"])
    check("exit 3 (one broken file)", r.returncode == 3, r.stderr)
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    expect = ["_failed.jsonl", "a b/ü/page one.md", "c/x.md"] + (["c/manual.md"] if MANUAL else [])
    check("mirrored tree", files == sorted(expect), files)
    check("no temporary files", not any(".tmp." in f for f in files), files)
    failed_lines = [json.loads(l) for l in (out / "_failed.jsonl").read_text().splitlines()]
    check("_failed.jsonl names the broken file", len(failed_lines) == 1 and failed_lines[0]["input"].endswith("broken.png")
          and "truncated" in failed_lines[0]["error"], failed_lines)
    if MANUAL:
        md = (out / "c" / "manual.md").read_text()
        check("pdf pages separated in the file", md.count("<--- Page Split --->") == 1, md)
    check("summary on stderr", "files," in r.stderr and "pages/s" in r.stderr, r.stderr)
    out_p = tmp / "out-progress"
    rp = run([str(src), "-o", str(out_p), "--pages", "1", "--progress-every", "0"])
    lines = [l for l in rp.stderr.splitlines() if l.startswith("ocr-cli: progress:")]
    check("plain progress lines when stderr is not a terminal", len(lines) >= 4 and "4/4 files" in lines[-1]
          and "ETA" in lines[-1], rp.stderr)
    rq = run([str(src), "-o", str(tmp / "out-quiet"), "--pages", "1", "--progress-every", "0", "-q"])
    check("--quiet: no progress, no summary", "progress" not in rq.stderr and "files," not in rq.stderr, rq.stderr)

    # Resume: a rerun skips finished files (unchanged), retries the broken one; --force redoes.
    before = {f: (out / f).stat().st_mtime_ns for f in expect if f != "_failed.jsonl"}
    r2 = run([str(src), "-o", str(out), "--pages", "1-2", "-v"])
    after = {f: (out / f).stat().st_mtime_ns for f in before}
    check("resume leaves finished files alone", before == after, (before, after))
    check("resume says skipped", r2.stderr.count("already done") == len(before), r2.stderr)
    check("broken file tried again", "broken.png" in r2.stderr and r2.returncode == 3, r2.stderr)
    r3 = run([str(src), "-o", str(out), "--pages", "1-2", "--force"])
    forced = {f: (out / f).stat().st_mtime_ns for f in before}
    check("--force rewrites", all(forced[f] != before[f] for f in before), (before, forced))

    # jsonl: one record per page, parseable.
    out2 = tmp / "out-jsonl"
    r4 = run([str(src / "c" / "x.PNG"), "-o", str(out2), "--format", "jsonl"])
    recs = [json.loads(l) for l in (out2 / "x.jsonl").read_text().splitlines()]
    check("jsonl record", r4.returncode == 0 and len(recs) == 1 and recs[0]["finish_reason"] == "stop"
          and recs[0]["page"] == 1 and recs[0]["generated_tokens"] == 6 and recs[0]["image_tokens"] == 73, recs)
    r5 = run([str(PAGE), "--format", "jsonl"])
    check("jsonl to stdout", r5.returncode == 0 and json.loads(r5.stdout)["input"].endswith("sample_page.png"), r5.stdout)

check.finish()
