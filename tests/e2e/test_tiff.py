#!/usr/bin/env python3
"""Multi-page TIFF: every page decoded exactly as Pillow decodes it (compressions, modes, sizes
per page), each page a page of the document through the binary (--pages, stdin, page numbers in
records and logs), the pixel limit per page, and cut-off files failing with one line."""
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from checks import Checks  # noqa: E402

CLI = os.environ["OCR_CLI"]
TOOLS = Path(os.environ["OCR_TOOLS_DIR"])
MODEL = str(Path(os.environ["OCR_TEST_MODELS"]) / "tiny-stop")
PROBE = TOOLS / "tiff_probe"

check = Checks("tiff")
rng = np.random.default_rng(5)
SIZES = [(64, 48), (40, 70), (33, 17)]


def frames(mode):
    out = []
    for w, h in SIZES:
        im = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")
        out.append(im if mode == "RGB" else im.convert(mode))
    return out


def save(path, mode="RGB", **kw):
    fr = frames(mode)
    fr[0].save(path, save_all=True, append_images=fr[1:], **kw)
    return path


def run(args, stdin=None):
    return subprocess.run([CLI] + args + ["--model", MODEL, "--mode", "tiny"], input=stdin, capture_output=True,
                          timeout=900)


def one_error_line(stderr, *needles):
    lines = [l for l in stderr.decode().splitlines() if "error:" in l]
    return len(lines) == 1 and all(n in lines[0] for n in needles)


with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    # 1. Decoding: each page of Pillow-written files equals Pillow's own decoding, pixel for pixel.
    cases = {"raw": ("RGB", {}), "lzw": ("RGB", {"compression": "tiff_lzw"}),
             "deflate": ("RGB", {"compression": "tiff_adobe_deflate"}), "jpeg": ("RGB", {"compression": "jpeg"}),
             "packbits": ("RGB", {"compression": "packbits"}), "grey": ("L", {}),
             "fax-g4": ("1", {"compression": "group4"}), "palette": ("P", {}), "rgba": ("RGBA", {}),
             "cmyk": ("CMYK", {})}
    for name, (mode, kw) in cases.items():
        f = save(tmp / f"{name}.tif", mode, **kw)
        out = tmp / f"probe-{name}"
        out.mkdir()
        r = subprocess.run([str(PROBE), str(f), str(out)], capture_output=True, text=True, timeout=300)
        ok = r.returncode == 0 and json.loads(r.stdout)["pages"] == 3
        diffs = []
        with Image.open(f) as im:
            for k in range(im.n_frames):
                im.seek(k)
                ref = np.array(im.convert("RGB"))
                got = np.array(Image.open(out / f"page_{k + 1}.png").convert("RGB")) if ok else None
                if got is None or got.shape != ref.shape or not (got == ref).all():
                    diffs.append(k + 1)
        check(f"{name}: 3 pages equal to Pillow's", ok and not diffs, (r.stderr, diffs))

    # 2. Through the binary: one page per frame, in order, numbered.
    multi = save(tmp / "scan.tif", "RGB", compression="tiff_lzw")
    r = run([str(multi), "-v"])
    check("3 pages, exit 0", r.returncode == 0, r.stderr.decode()[-2000:])
    check("pages separated", r.stdout.decode().count("<--- Page Split --->") == 2, r.stdout)
    check("pages logged by number", all(f"scan.tif page {p}:".encode() in r.stderr for p in (1, 2, 3)), r.stderr)
    rj = run([str(multi), "--format", "jsonl"])
    recs = [json.loads(l) for l in rj.stdout.decode().splitlines()]
    check("jsonl: one record per page", [x["page"] for x in recs] == [1, 2, 3], recs)
    rs = run(["-", "--format", "jsonl"], stdin=multi.read_bytes())
    check("stdin: same pages", [json.loads(l)["page"] for l in rs.stdout.decode().splitlines()] == [1, 2, 3], rs.stderr)
    # json: each page has its own size.
    rjs = run([str(multi), "--format", "json"])
    doc = json.loads(rjs.stdout)
    check("json: page sizes per frame", [(p["width"], p["height"]) for p in doc["pages"]] == SIZES, doc)

    # 3. --pages applies as for a PDF; a page beyond the document is an error naming the count.
    r2 = run([str(multi), "--pages", "2", "--format", "jsonl"])
    check("--pages 2", r2.returncode == 0 and [json.loads(l)["page"] for l in r2.stdout.decode().splitlines()] == [2],
          r2.stdout)
    r3 = run([str(multi), "--pages", "3,1", "--format", "jsonl"])
    check("--pages 3,1 ascending", [json.loads(l)["page"] for l in r3.stdout.decode().splitlines()] == [1, 3], r3.stdout)
    r4 = run([str(multi), "--pages", "5"])
    check("--pages 5 of 3: exit 3, one line", r4.returncode == 3 and one_error_line(r4.stderr, "scan.tif", "5", "3 pages"),
          r4.stderr)
    single = tmp / "single.tif"
    frames("RGB")[0].save(single)
    r5 = run([str(single), "--pages", "2-3", "--format", "jsonl"])
    check("single-page TIFF: one page, --pages ignored as for other images",
          r5.returncode == 0 and [json.loads(l)["page"] for l in r5.stdout.decode().splitlines()] == [1], r5.stderr)

    # 4. The pixel limit is checked per page: with 2900, page 1 (64x48 = 3072 px) is refused while
    #    pages 2 (2800 px) and 3 (561 px) are read.
    r6 = run([str(multi), "--max-pixels", "2900", "--format", "jsonl"])
    pages6 = [json.loads(l)["page"] for l in r6.stdout.decode().splitlines()]
    check("pixel limit per page: page 1 refused, 2 and 3 done",
          r6.returncode == 3 and pages6 == [2, 3] and one_error_line(r6.stderr, "scan.tif: page 1", "64x48", "2900"),
          (r6.returncode, pages6, r6.stderr))

    # 5. Cut-off files: one line naming the file, exit 3; under -o no output file for it.
    data = (tmp / "raw.tif").read_bytes()
    for frac in (0.5, 0.9):
        cut = tmp / f"cut{int(frac * 100)}.tif"
        cut.write_bytes(data[:int(len(data) * frac)])
        rc = run([str(cut)])
        check(f"cut at {frac:.0%}: exit 3, one-line error", rc.returncode == 3 and one_error_line(rc.stderr, cut.name, "truncated"),
              rc.stderr)
        out = tmp / f"out-cut{int(frac * 100)}"
        ro = run([str(cut), "-o", str(out)])
        files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
        check(f"cut at {frac:.0%}: no output file", ro.returncode == 3 and files == ["_failed.jsonl"], files)
    header_only = tmp / "header.tif"
    header_only.write_bytes(data[:6])
    rh = run([str(header_only)])
    check("6-byte TIFF: one line", rh.returncode == 3 and one_error_line(rh.stderr, "header.tif", "truncated"), rh.stderr)

check.finish()
