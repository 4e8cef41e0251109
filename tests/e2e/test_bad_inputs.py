#!/usr/bin/env python3
"""Bad input, through the binary: the whole corpus of tests/data/bad/ plus odd names, symlink loops,
unreadable files and colliding outputs in one batch (one error line per bad file naming it, one
_failed.jsonl record, no output or temporary file for it, the good files still converted, exit 3);
encrypted PDFs with --password; --max-pixels; a PDF of thousands of pages with bounded memory; an
unwritable output folder; corrupted model folders (exit 1, one line naming the file)."""
import ctypes
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from checks import Checks  # noqa: E402

CLI = os.environ["OCR_CLI"]
SRC = Path(os.environ["OCR_SOURCE_DIR"])
MODEL = Path(os.environ["OCR_TEST_MODELS"]) / "tiny-stop"
PAGE = SRC / "tests" / "data" / "sample_page.png"
BAD = SRC / "tests" / "data" / "bad"
sys.path.insert(0, str(SRC / "scripts"))
import make_bad_corpus as corpus  # noqa: E402

check = Checks("bad_inputs")
ARGS = ["--model", str(MODEL), "--mode", "tiny"]


def one_line(b):
    """The escaping ocr::one_line applies to names in error lines (bytes in, bytes out)."""
    out = bytearray()
    for c in b:
        if c == 10:
            out += b"\\n"
        elif c == 13:
            out += b"\\r"
        elif c == 9:
            out += b"\\t"
        elif c < 0x20 or c == 0x7f:
            out += b"\\x%02x" % c
        else:
            out.append(c)
    return bytes(out)


libc = ctypes.CDLL(None, use_errno=True)


def drop_file_permission_override():
    """As root, drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the child's bounding set, so that
    mode 000 files are unreadable to it as to any user (chmod alone does not stop root)."""
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def can_drop_permission_override():
    if os.geteuid() != 0:
        return True  # permission bits apply anyway
    r = subprocess.run(["true"], preexec_fn=drop_file_permission_override, capture_output=True)
    return r.returncode == 0


def run(args, limited=False, stdin=None):
    pre = drop_file_permission_override if limited and os.geteuid() == 0 else None
    return subprocess.run([os.fsencode(CLI)] + [os.fsencode(a) if isinstance(a, (str, Path)) else a for a in args],
                          capture_output=True, timeout=900, preexec_fn=pre, input=stdin)


def run_measured(args):
    """Runs the binary and returns (returncode, stderr, peak RSS in MiB) from wait4's rusage."""
    with tempfile.TemporaryFile() as err:
        p = subprocess.Popen([CLI] + [str(a) for a in args], stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        return p.returncode, err.read(), usage.ru_maxrss / 1024


def files_under(d):
    d = os.fsencode(d)
    out = []
    for root, dirs, names in os.walk(d):
        for n in names + [x for x in dirs if os.path.islink(os.path.join(root, x))]:
            out.append(os.path.relpath(os.path.join(root, n), d))
    return sorted(out)


expected = json.loads((BAD / "expected.json").read_text())
committed = sorted(p.name for p in BAD.iterdir() if p.name not in ("expected.json", "README.md"))
check("every corpus file has an expected error", committed == sorted(expected), (committed, sorted(expected)))
# The committed corpus is the generator's (bytes may differ with the Pillow version; names and
# expected errors may not), so it can be regenerated after edits.
regenerated = corpus.small_corpus()
check("committed corpus matches scripts/make_bad_corpus.py",
      {name: text for name, (_, text) in regenerated.items()} == expected, sorted(regenerated))

limited = can_drop_permission_override()
if not limited:
    print("SKIP unreadable files: cannot drop CAP_DAC_OVERRIDE here (root without CAP_SETPCAP)")

with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    reference = run([PAGE, "-o", tmp / "ref"] + ARGS)
    check("reference run ok", reference.returncode == 0, reference.stderr)
    ref_md = (tmp / "ref" / "sample_page.md").read_bytes()

    # --- one batch over everything -------------------------------------------------------------
    odd = tmp / "odd"
    broken_png = regenerated["truncated png.png"][0]
    odd_paths = corpus.write_odd_names(odd, broken_png)
    corpus.write_symlink_loops(odd)
    (odd / "same").mkdir()
    shutil.copy(PAGE, odd / "same" / "x.jpg")  # content is sniffed: a PNG named .jpg is fine
    shutil.copy(PAGE, odd / "same" / "x.png")  # ... but both would write same/x.md
    shutil.copy(PAGE, os.path.join(os.fsencode(odd), b"good\nname.png"))
    shutil.copy(PAGE, os.path.join(os.fsencode(odd), b"good caf\xe9.png"))  # not UTF-8
    shutil.copy(PAGE, odd / "wrong extension but valid.pdf")
    (tmp / "good.pdf").write_bytes(corpus.pdf_pages(1))
    (tmp / "elsewhere").mkdir()
    shutil.copy(PAGE, tmp / "elsewhere" / "deep.png")
    dotted = tmp / "odd" / ".." / "elsewhere" / "deep.png"  # mirrored by its name: out/deep.md

    bad = {}  # path as printed (bytes) -> expected text
    for name, text in expected.items():
        bad[os.fsencode(BAD / name)] = text
    for path, (_, text) in zip(odd_paths, corpus.ODD_NAMES):
        bad[path] = text
    bad[os.fsencode(odd / "same" / "x.png")] = f"is also the output of {odd / 'same' / 'x.jpg'}"
    bad[os.fsencode(odd / "self.png")] = "cannot open (Too many levels of symbolic links)"
    if limited:
        (odd / "unreadable.png").write_bytes(PAGE.read_bytes())
        (odd / "unreadable.png").chmod(0)
        (odd / "locked").mkdir()
        shutil.copy(PAGE, odd / "locked" / "hidden.png")
        (odd / "locked").chmod(0)
        bad[os.fsencode(odd / "unreadable.png")] = "cannot open (Permission denied)"
        bad[os.fsencode(odd / "locked")] = "cannot read folder (Permission denied)"

    out = tmp / "out"
    r = run([BAD, odd, PAGE, tmp / "good.pdf", dotted, odd / "self.png", "-o", out] + ARGS, limited=limited)
    if limited:
        (odd / "locked").chmod(0o755)
    err_lines = r.stderr.splitlines()
    check("batch exit 3", r.returncode == 3, (r.returncode, r.stderr[-3000:]))
    noise = [l for l in err_lines if not l.startswith(b"ocr-cli: ")]
    check("nothing on stderr but ocr-cli's own lines (no library noise)", not noise, noise)
    errors = [l for l in err_lines if l.startswith(b"ocr-cli: error: ")]
    check("one error line per bad input", len(errors) == len(bad), (len(errors), len(bad), errors))
    for path, text in bad.items():
        prefix = b"ocr-cli: error: " + one_line(path) + b": "
        mine = [l for l in errors if l.startswith(prefix)]
        check(f"error line for {path!r}", len(mine) == 1 and text.encode() in mine[0], (text, mine, errors))

    records = [json.loads(l) for l in (out / "_failed.jsonl").read_text(errors="strict").splitlines()]
    recorded = sorted(rec["input"] for rec in records)
    check("one _failed.jsonl record per bad input", recorded == sorted(p.decode("utf-8", "replace") for p in bad),
          (recorded, sorted(bad)))
    check("_failed.jsonl records carry the error", all(rec["error"].startswith(rec["input"] + ": ") for rec in records),
          records)

    good = sorted([b"sample_page.md", b"good.md", b"deep.md", b"good\nname.md", b"good caf\xe9.md", b"same/x.md",
                   b"wrong extension but valid.md"])
    got = files_under(out)
    check("outputs: the good files only, no temporary or lock files", got == sorted(good + [b"_failed.jsonl"]) and
          not (out / ".ocr-cli.locks").exists(), got)
    for g in good:
        data = Path(os.fsdecode(os.path.join(os.fsencode(out), g))).read_bytes()
        if g == b"good.md":
            check("good PDF converted", len(data.strip()) > 0, data)
        else:
            check(f"good image {g!r} converted like a run of its own", data == ref_md, (data, ref_md))
    check("summary counts the failures", f"{len(bad)} failed".encode() in r.stderr, r.stderr[-500:])

    # A rerun redoes only what failed: the finished files are skipped, the bad ones fail again.
    r2 = run([BAD, odd, PAGE, tmp / "good.pdf", dotted, odd / "self.png", "-o", out] + ARGS + ["-v"], limited=limited)
    check("rerun exit 3, good files skipped", r2.returncode == 3 and r2.stderr.count(b"already done") == len(good),
          r2.stderr[-2000:])

    # --- encrypted PDFs -----------------------------------------------------------------------
    enc = BAD / "encrypted.pdf"
    r = run([enc, "--password", "secret", "-o", tmp / "enc"] + ARGS)
    check("--password opens the encrypted PDF", r.returncode == 0 and (tmp / "enc" / "encrypted.md").stat().st_size > 0,
          r.stderr)
    r = run([enc, "--password", "wrong", "-o", tmp / "enc-wrong"] + ARGS)
    check("wrong --password: one line, exit 3", r.returncode == 3 and r.stderr.count(b"error:") == 1 and
          b"the password given with --password is wrong" in r.stderr, r.stderr)

    # --- --max-pixels -------------------------------------------------------------------------
    r = run([PAGE, "--max-pixels", "1000"] + ARGS)
    check("--max-pixels refuses a larger image", r.returncode == 3 and
          b"over the --max-pixels limit of 1000" in r.stderr and r.stdout == b"", r.stderr)
    h = run(["--help"])
    check("--max-pixels default documented in --help", b"--max-pixels INT=200000000" in h.stdout, h.stdout)

    # --- thousands of pages: rendered one by one, memory bounded --------------------------------
    corpus.write_many_pages(tmp / "many.pdf", 3000)
    corpus.write_many_pages(tmp / "four.pdf", 4)
    rc_many, err_many, rss_many = run_measured([tmp / "many.pdf", "--pages", "1-2,2999-3000", "-o", tmp / "many"] + ARGS)
    rc_four, err_four, rss_four = run_measured([tmp / "four.pdf", "-o", tmp / "four"] + ARGS)
    md = (tmp / "many" / "many.md").read_text() if (tmp / "many" / "many.md").exists() else ""
    check("3000-page PDF, 4 pages selected", rc_many == 0 and md.count("<--- Page Split --->") == 3, err_many)
    check("4-page PDF", rc_four == 0, err_four)
    print(f"peak RSS: 3000-page PDF (4 pages read) {rss_many:.0f} MiB, 4-page PDF {rss_four:.0f} MiB")
    check("3000-page PDF costs < 64 MiB more than a 4-page one", rss_many - rss_four < 64, (rss_many, rss_four))
    r = run([tmp / "many.pdf", "--pages", "3001"] + ARGS)
    check("page beyond the document named", r.returncode == 3 and
          b"asks for page 3001 but the document has 3000 pages" in r.stderr, r.stderr)

    # --- unwritable output folder ---------------------------------------------------------------
    (tmp / "a file").write_text("not a folder")
    r = run([PAGE, "-o", tmp / "a file"] + ARGS)
    check("-o on a file: exit 1, one line", r.returncode == 1 and r.stderr.count(b"\n") == 1 and
          b"a file: cannot create folder (a file of that name is in the way)" in r.stderr, r.stderr)
    r = run([PAGE, "-o", tmp / "a file" / "sub"] + ARGS)
    check("-o under a file: exit 1, one line", r.returncode == 1 and r.stderr.count(b"\n") == 1 and
          b"a file: cannot create folder (a file of that name is in the way)" in r.stderr, r.stderr)
    ro = tmp / "ro"
    ro.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)], capture_output=True)
    if mounted.returncode == 0:
        try:
            r = run([PAGE, "-o", ro / "out"] + ARGS)
            check("-o on a read-only file system: exit 1, one line", r.returncode == 1 and r.stderr.count(b"\n") == 1
                  and b"ro/out: cannot create folder (Read-only file system)" in r.stderr, r.stderr)
            r = run([PAGE, "-o", ro] + ARGS)
            check("-o is a read-only mount: exit 1, one line", r.returncode == 1 and r.stderr.count(b"\n") == 1 and
                  b"output folder is not writable (Read-only file system)" in r.stderr, r.stderr)
        finally:
            subprocess.run(["umount", str(ro)], check=True)
    else:
        print(f"SKIP read-only mount: {mounted.stderr.decode().strip()}")
    if limited:
        (tmp / "closed").mkdir(mode=0o555)
        r = run([PAGE, "-o", tmp / "closed"] + ARGS, limited=True)
        check("-o without write permission: exit 1, one line", r.returncode == 1 and r.stderr.count(b"\n") == 1 and
              b"output folder is not writable (Permission denied)" in r.stderr, r.stderr)
    # A folder inside -o blocked by a file: that input fails, the batch goes on.
    (tmp / "tree" / "sub").mkdir(parents=True)
    shutil.copy(PAGE, tmp / "tree" / "sub" / "a.png")
    shutil.copy(PAGE, tmp / "tree" / "b.png")
    (tmp / "blocked").mkdir()
    (tmp / "blocked" / "sub").write_text("a file where a folder goes")
    r = run([tmp / "tree", "-o", tmp / "blocked"] + ARGS)
    check("blocked subfolder: that input fails, the others are written", r.returncode == 3 and
          r.stderr.count(b"error:") == 1 and b"blocked/sub: cannot create folder" in r.stderr and
          (tmp / "blocked" / "b.md").exists(), r.stderr)

    # --- corrupted model folders ------------------------------------------------------------------
    def model_copy(name, replace):
        """A model folder of symlinks to the tiny model, with the files in `replace` (name -> bytes
        or None to leave it out) written for real."""
        d = tmp / "models" / name
        d.mkdir(parents=True)
        for f in MODEL.iterdir():
            if f.name not in replace:
                os.symlink(f, d / f.name)
        for f, data in replace.items():
            if data is not None:
                (d / f).write_bytes(data)
        return d

    manifest = json.loads((MODEL / "manifest.json").read_text())
    enc_bytes = (MODEL / "encoder.pt").read_bytes()
    dec_bytes = (MODEL / "decoder.pt").read_bytes()
    flipped = bytearray(dec_bytes)
    flipped[len(flipped) // 2] ^= 0xFF

    def manifest_with(**changes):
        m = json.loads(json.dumps(manifest))
        for k, v in changes.items():
            if k in m["dims"]:
                m["dims"][k] = v
            else:
                m[k] = v
        return json.dumps(m).encode()

    cases = [  # (name, replaced files, extra args, file the line names, expected text)
        ("version", {"manifest.json": manifest_with(format_version=99)}, [], "",
         "model format version 99, this ocr-cli reads version 1; re-run scripts/export.py"),
        ("not json", {"manifest.json": (MODEL / "manifest.json").read_bytes()[:300]}, [], "manifest.json", "not valid JSON"),
        ("impossible dims", {"manifest.json": manifest_with(n_heads=3)}, [], "manifest.json", "impossible dims (hidden 64, heads 3"),
        ("no encoder", {"encoder.pt": None}, [], "", "encoder.pt is missing"),
        ("no decoder", {"decoder.pt": None}, [], "", "decoder.pt is missing"),
        ("truncated encoder", {"encoder.pt": enc_bytes[: len(enc_bytes) // 2]}, [], "encoder.pt",
         "sha256 does not match manifest.json"),
        ("truncated decoder", {"decoder.pt": dec_bytes[: len(dec_bytes) // 3]}, [], "decoder.pt",
         "sha256 does not match manifest.json"),
        ("flipped byte", {"decoder.pt": bytes(flipped)}, [], "decoder.pt", "sha256 does not match manifest.json"),
        ("truncated, unverified", {"decoder.pt": dec_bytes[: len(dec_bytes) // 3]}, ["--no-verify"], "",
         "cannot load the TorchScript modules"),
        ("no tokenizer", {"tokenizer.json": None}, [], "tokenizer.json", "cannot open"),
        ("truncated tokenizer", {"tokenizer.json": (MODEL / "tokenizer.json").read_bytes()[:5000]}, [], "tokenizer.json",
         "not valid JSON"),
    ]
    for name, replace, extra, names_file, text in cases:
        d = model_copy(name, replace)
        r = run([PAGE, "--model", d, "--mode", "tiny", "-o", tmp / "model-out"] + extra)
        where = str(d / names_file) if names_file else str(d)
        line = r.stderr.decode(errors="replace")
        check(f"model {name}: exit 1, one line naming {where}, '{text}'",
              r.returncode == 1 and line.count("\n") == 1 and line.startswith(f"ocr-cli: error: {where}") and text in line,
              (r.returncode, line))
    check("no output from a broken model", not (tmp / "model-out" / "sample_page.md").exists())

    # --- safetensors headers that lie (the parity checker reads the fixture's reference tensors) ---
    fixture = Path(os.environ.get("OCR_SHARED_DIR", "/nonexistent")) / "fixtures" / "parity-a"
    if (fixture / "cases.json").exists():
        case0 = json.loads((fixture / "cases.json").read_text())["cases"][0]
        expected_rel = case0["expected"]
        raw = (fixture / expected_rel).read_bytes()
        (n_header,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8:8 + n_header])
        first = sorted(k for k in header if k != "__metadata__")[0]

        def end_moved(delta):
            """The file with the first tensor's end offset moved by `delta` bytes."""
            h = json.loads(json.dumps(header))
            h[first]["data_offsets"][1] += delta
            hb = json.dumps(h).encode()
            return struct.pack("<Q", len(hb)) + hb + raw[8 + n_header:]

        def fixture_with(name, data):
            """The fixture as symlinks, with the first case's reference tensors replaced."""
            d = tmp / "fixtures" / name
            for f in fixture.rglob("*"):
                rel = f.relative_to(fixture)
                if f.is_dir():
                    (d / rel).mkdir(parents=True, exist_ok=True)
                elif str(rel) != expected_rel:
                    (d / rel).parent.mkdir(parents=True, exist_ok=True)
                    os.symlink(f, d / rel)
            (d / expected_rel).write_bytes(data)
            return d

        st_cases = [
            ("offsets past the data", end_moved(10 ** 12), f"tensor '{first}' data_offsets"),
            ("size not matching the shape", end_moved(-2), "but its shape and dtype need"),
            ("header length past the end", struct.pack("<Q", 1 << 40) + raw[8:4096], "exceeds the file size"),
        ]
        for name, data, text in st_cases:
            d = fixture_with(name, data)
            r = run(["parity", d, "--model", MODEL])
            line = r.stderr.decode(errors="replace")
            check(f"safetensors {name}: exit 1, one line naming the file", r.returncode == 1 and line.count("\n") == 1 and
                  line.startswith(f"ocr-cli: error: {d / expected_rel}: invalid safetensors file:") and text in line,
                  (r.returncode, line))
    else:
        print(f"SKIP safetensors cases: no parity fixture under {fixture}")

check.finish()
