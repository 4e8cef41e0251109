#!/usr/bin/env python3
"""--format md|text|json|jsonl, --raw, figures and --draw-boxes overlays through the binary.

A checkpoint crafted to print one grounded block (tests/e2e/grounded_model.py) gives real boxes:
their conversion to pixels (and PDF points) is checked against the official formula, figure crops
against the page's pixels, overlays against the page, links against the files written."""
import json
import os
import signal
import subprocess
import sys
import tempfile
import urllib.parse
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from checks import Checks  # noqa: E402
import grounded_model  # noqa: E402

CLI = os.environ["OCR_CLI"]
SRC = Path(os.environ["OCR_SOURCE_DIR"])
BUILD = Path(os.environ["OCR_BUILD_DIR"])
TOOLS = Path(os.environ["OCR_TOOLS_DIR"])
MODELS = Path(os.environ["OCR_TEST_MODELS"])
STOP_MODEL = str(MODELS / "tiny-stop")
PAGE = SRC / "tests" / "data" / "sample_page.png"
PDF = next((Path(p) for p in ["/usr/share/doc/libtasn1-doc/libtasn1.pdf",
                              "/usr/share/doc/shared-mime-info/shared-mime-info-spec.pdf"] if Path(p).exists()), None)
G = grounded_model.GRID_BOX

check = Checks("formats")


def run(args, model, stdin=None):
    return subprocess.run([CLI] + args + ["--model", model, "--mode", "tiny"], input=stdin, capture_output=True,
                          text=True, timeout=900)


def pixel_box(w, h):
    """The official conversion: int(c / 999 * size)."""
    return [int(G[0] / 999 * w), int(G[1] / 999 * h), int(G[2] / 999 * w), int(G[3] / 999 * h)]


def inside(box, w, h):
    return 0 <= box[0] <= box[2] <= w and 0 <= box[1] <= box[3] <= h


def label_colour(label):
    """src/postprocess/layout.cpp label_colour: FNV-1a of the label into a fixed palette."""
    palette = [(230, 25, 75), (60, 140, 60), (0, 90, 200), (245, 130, 48), (145, 30, 180), (0, 150, 150),
               (200, 40, 200), (128, 110, 0), (170, 110, 40), (128, 0, 0), (0, 0, 128), (90, 90, 90)]
    h = 2166136261
    for c in label.encode():
        h = ((h ^ c) * 16777619) & 0xFFFFFFFF
    return palette[h % len(palette)]


def md_links(md_path):
    """Targets of ![](...) links in a markdown file, resolved against its folder."""
    text = md_path.read_text()
    out, pos = [], 0
    while (i := text.find("![](", pos)) >= 0:
        j = text.index(")", i)
        out.append(md_path.parent / urllib.parse.unquote(text[i + 4:j]))
        pos = j
    return out


def files_under(d):
    return sorted(str(p.relative_to(d)) for p in Path(d).rglob("*") if p.is_file())


with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    model = str(grounded_model.make(tmp / "grounded", SRC, BUILD, MODELS / "tokenizer"))
    page = np.array(Image.open(PAGE).convert("RGB"))
    H, W = page.shape[:2]
    box = pixel_box(W, H)

    # 1. stdout, one image: every format.
    r = run([str(PAGE), "--raw"], model)
    check("--raw: the grounding tags as generated", r.returncode == 0 and r.stdout == grounded_model.TEXT + "\n",
          (r.stdout, r.stderr))
    r = run([str(PAGE)], model)
    check("md: the official clean-up with its figure placeholder",
          r.returncode == 0 and r.stdout == "![](images/0.jpg)\n\nFigure one\n", r.stdout)
    md_stdout = r.stdout
    r = run([str(PAGE), "--format", "text"], model)
    check("text: no tags, no links", r.returncode == 0 and r.stdout == "Figure one\n", r.stdout)
    r = run([str(PAGE), "--format", "json"], model)
    doc = json.loads(r.stdout)
    p = doc["pages"][0]
    check("json: one line per input", r.stdout.count("\n") == 1, r.stdout)
    check("json: page size", (p["page"], p["width"], p["height"]) == (1, W, H), p)
    check("json: the block", [(b["label"], b["text"]) for b in p["blocks"]] == [("image", "Figure one")], p["blocks"])
    check("json: box in pixels by the official formula", p["blocks"][0]["boxes"] == [box]
          and p["blocks"][0]["boxes_grid"] == [G], p["blocks"][0])
    check("json: every box inside the page", all(inside(b, W, H) for bl in p["blocks"] for b in bl["boxes"]), p)
    check("json: no point boxes for an image", "boxes_pt" not in p["blocks"][0] and "width_pt" not in p, p)
    check("json: markdown as md", p["markdown"] + "\n" == md_stdout and p["finish_reason"] == "stop", p)
    r = run([str(PAGE), "--format", "jsonl"], model)
    rec = json.loads(r.stdout)
    check("jsonl: one record", r.stdout.count("\n") == 1 and rec["page"] == 1 and rec["finish_reason"] == "stop"
          and rec["generated_tokens"] == len(grounded_model.PIECES) + 1 and rec["markdown"] + "\n" == md_stdout
          and rec["input"] == str(PAGE) and rec["decode_ms"] > 0, rec)

    # 2. A PDF: boxes in points, stdout placeholders named by page as the official PDF script.
    if PDF:
        r = run([str(PDF), "--pages", "2-3", "--format", "json"], model)
        doc = json.loads(r.stdout)
        probe = subprocess.run([str(TOOLS / "pdf_probe"), str(PDF), "--pages", "2-3"], capture_output=True, text=True)
        sizes = [json.loads(l) for l in probe.stdout.splitlines()]
        check("pdf json: two pages", r.returncode == 0 and [q["page"] for q in doc["pages"]] == [2, 3], r.stderr)
        for q, s in zip(doc["pages"], sizes):
            b = q["blocks"][0]
            check(f"pdf page {q['page']}: sizes as rendered", (q["width"], q["height"], q["width_pt"], q["height_pt"], q["dpi"])
                  == (s["width"], s["height"], s["width_pt"], s["height_pt"], 144), (q, s))
            check(f"pdf page {q['page']}: pixel box", b["boxes"] == [pixel_box(q["width"], q["height"])], b)
            want_pt = [round(G[0] / 999 * q["width_pt"], 2), round(G[1] / 999 * q["height_pt"], 2),
                       round(G[2] / 999 * q["width_pt"], 2), round(G[3] / 999 * q["height_pt"], 2)]
            check(f"pdf page {q['page']}: point box", b["boxes_pt"] == [want_pt], (b["boxes_pt"], want_pt))
            check(f"pdf page {q['page']}: boxes inside the page", all(inside(x, q["width_pt"], q["height_pt"]) for x in b["boxes_pt"])
                  and all(inside(x, q["width"], q["height"]) for x in b["boxes"]), b)
        r = run([str(PDF), "--pages", "2-3"], model)
        check("pdf md on stdout: official PDF placeholders", r.stdout.count("![](images/0_0.jpg)") == 1
              and r.stdout.count("![](images/1_0.jpg)") == 1 and r.stdout.count("<--- Page Split --->") == 1, r.stdout)
        r = run([str(PDF), "--pages", "2-3", "--format", "text"], model)
        check("pdf text: pages separated by a form feed", r.stdout == "Figure one\n\fFigure one\n", repr(r.stdout))

    # 3. -o: a tree with an image (a name with a space), a PDF and a multi-page TIFF; figures and overlays.
    src = tmp / "in"
    (src / "a").mkdir(parents=True)
    Image.open(PAGE).save(src / "a" / "my page.png")
    tiff_sizes = [(320, 200), (150, 260)]
    frames = [Image.fromarray(np.ascontiguousarray(page[:h, :w]), "RGB") for w, h in tiff_sizes]
    frames[0].save(src / "scan.tif", save_all=True, append_images=frames[1:], compression="tiff_lzw")
    if PDF:
        (src / "doc.pdf").write_bytes(PDF.read_bytes())
    out = tmp / "out"
    r = run([str(src), "-o", str(out), "--draw-boxes", "--pages", "1-2"], model)
    check("-o md --draw-boxes: exit 0", r.returncode == 0, r.stderr)
    want = ["a/my page.md", "a/my page_boxes/p1.jpg", "a/my page_images/p1_0.jpg",
            "scan.md", "scan_boxes/p1.jpg", "scan_boxes/p2.jpg", "scan_images/p1_0.jpg", "scan_images/p2_0.jpg"]
    if PDF:
        want += ["doc.md", "doc_boxes/p1.jpg", "doc_boxes/p2.jpg", "doc_images/p1_0.jpg", "doc_images/p2_0.jpg"]
    check("-o: exactly the expected files", files_under(out) == sorted(want), files_under(out))
    links = md_links(out / "a" / "my page.md")
    check("md links resolve to the figure files", links == [out / "a" / "my page_images" / "p1_0.jpg"]
          and all(x.exists() for x in links), links)
    check("md link percent-encodes the space", "![](my%20page_images/p1_0.jpg)" in (out / "a" / "my page.md").read_text(),
          (out / "a" / "my page.md").read_text())
    fig = np.array(Image.open(out / "a" / "my page_images" / "p1_0.jpg").convert("RGB")).astype(int)
    crop = page[box[1]:box[3], box[0]:box[2]].astype(int)
    check("figure: the box's pixels (JPEG)", fig.shape == crop.shape and np.abs(fig - crop).mean() < 4,
          (fig.shape, crop.shape))
    ov = np.array(Image.open(out / "a" / "my page_boxes" / "p1.jpg").convert("RGB")).astype(int)
    check("overlay: the page's size", ov.shape == page.shape, ov.shape)
    colour = np.array(label_colour("image"))
    edge = ov[box[1] + 20:box[3] - 20, box[0]:box[0] + 2]  # the left outline, 2 px wide
    check("overlay: outline in the label's colour", np.abs(edge - colour).mean() < 40, edge.mean(axis=(0, 1)))
    far = (slice(H - 30, H), slice(W - 30, W))
    check("overlay: page unchanged outside the boxes", np.abs(ov[far] - page[far].astype(int)).mean() < 4)
    for (w, h), k in zip(tiff_sizes, (1, 2)):
        f = Image.open(out / "scan_images" / f"p{k}_0.jpg")
        bw = pixel_box(w, h)
        check(f"tiff page {k}: figure from that page's size", f.size == (bw[2] - bw[0], bw[3] - bw[1]), f.size)
        check(f"tiff page {k}: overlay of that page", Image.open(out / "scan_boxes" / f"p{k}.jpg").size == (w, h))
    md = (out / "scan.md").read_text()
    check("tiff md: pages split, each page's figure linked", md.count("<--- Page Split --->") == 1
          and md_links(out / "scan.md") == [out / "scan_images" / "p1_0.jpg", out / "scan_images" / "p2_0.jpg"], md)

    # Resume leaves everything alone; --force rewrites and removes figures no longer produced.
    before = {f: (out / f).stat().st_mtime_ns for f in want}
    r2 = run([str(src), "-o", str(out), "--draw-boxes", "--pages", "1-2"], model)
    check("resume: nothing rewritten", r2.returncode == 0 and {f: (out / f).stat().st_mtime_ns for f in want} == before)
    r3 = run([str(src / "scan.tif"), "-o", str(out), "--pages", "1", "--force"], model)
    check("--force with fewer pages: stale figures removed, overlays of the earlier run kept",
          r3.returncode == 0 and sorted(x.name for x in (out / "scan_images").iterdir()) == ["p1_0.jpg"]
          and (out / "scan_boxes" / "p2.jpg").exists(), files_under(out))

    # 4. -o json and text.
    outj = tmp / "out-json"
    r = run([str(src), "-o", str(outj), "--format", "json", "--pages", "1-2"], model)
    check("-o json: exit 0", r.returncode == 0, r.stderr)
    for name in ["a/my page.json", "scan.json"] + (["doc.json"] if PDF else []):
        d = json.loads((outj / name).read_text())
        ok = len(d["pages"]) == (1 if name.startswith("a/") else 2)
        for q in d["pages"]:
            for b in q["blocks"]:
                ok &= all(inside(x, q["width"], q["height"]) for x in b["boxes"])
                ok &= all(inside(x, q["width_pt"], q["height_pt"]) for x in b.get("boxes_pt", []))
                ok &= all((outj / name).parent.joinpath(f).exists() for f in b.get("figures", []))
                ok &= len(b.get("figures", [])) == 1
        check(f"-o json {name}: pages, boxes inside, figures exist", ok, d)
    outt = tmp / "out-text"
    r = run([str(src), "-o", str(outt), "--format", "text", "--pages", "1-2"], model)
    check("-o text: .txt files only, no figures", r.returncode == 0 and files_under(outt) ==
          sorted(["a/my page.txt", "scan.txt"] + (["doc.txt"] if PDF else [])), files_under(outt))
    check("-o text: form feed between pages", (outt / "scan.txt").read_text() == "Figure one\n\fFigure one\n",
          repr((outt / "scan.txt").read_text()))

    # 5. A document that fails after its first page was read leaves nothing: no main file, no
    #    figures, no overlays (uncompressed, Pillow writes each directory before its page's data,
    #    so the cut leaves page 1 whole and page 2's data short).
    bad = tmp / "bad"
    bad.mkdir()
    frames[0].save(bad / "cut.tif", save_all=True, append_images=frames[1:])
    data = (bad / "cut.tif").read_bytes()
    (bad / "cut.tif").write_bytes(data[:len(data) - 100])
    outb = tmp / "out-bad"
    r = run([str(bad), "-o", str(outb), "--draw-boxes", "-v"], model)
    check("failed document: page 1 was read, page 2 fails", "cut.tif page 1:" in r.stderr
          and "cut.tif: truncated TIFF: the image data of page 2" in r.stderr, r.stderr)
    check("failed document: exit 3, only _failed.jsonl", r.returncode == 3 and files_under(outb) == ["_failed.jsonl"],
          (r.returncode, files_under(outb), r.stderr))

    # Interrupted after page 1 of 8: exit 130 and no file at all (figures and overlays of page 1
    # were held back with the document).
    long_doc = bad / "long.tif"
    (frames * 4)[0].save(long_doc, save_all=True, append_images=(frames * 4)[1:])
    outi = tmp / "out-int"
    proc = subprocess.Popen([CLI, str(long_doc), "-o", str(outi), "--draw-boxes", "-v", "--model", model,
                             "--mode", "tiny"], stderr=subprocess.PIPE, text=True)
    err = ""
    for line in proc.stderr:
        err += line
        if "long.tif page 1:" in line:
            proc.send_signal(signal.SIGINT)
            break
    err += proc.communicate(timeout=600)[1]
    check("interrupted: exit 130", proc.returncode == 130, (proc.returncode, err[-1000:]))
    check("interrupted: no files", not outi.exists() or files_under(outi) == [], files_under(outi))

    # 6. A page without grounding (tiny-stop prints 5 plain tokens): one unlabelled block, no boxes.
    r = run([str(PAGE), "--format", "json"], STOP_MODEL)
    q = json.loads(r.stdout)["pages"][0]
    check("ungrounded text: label null, no boxes", len(q["blocks"]) == 1 and q["blocks"][0]["label"] is None
          and q["blocks"][0]["boxes"] == [] and q["blocks"][0]["text"] == q["markdown"], q)

    # 7. Usage errors: one line, exit 2.
    for args, needle in [(["--draw-boxes"], "-o DIR"), (["--raw", "--format", "text"], "choose one"),
                         (["--format", "html"], "html")]:
        r = run([str(PAGE)] + args, model)
        check(f"usage error {' '.join(args)}", r.returncode == 2 and needle in r.stderr, r.stderr)

check.finish()
