#!/usr/bin/env python3
"""Writes the generated seed corpora of the fuzz targets into tests/fuzz/corpus/<target>/.

    python3 tests/fuzz/make_seeds.py [MANIFEST_JSON]

Seeds are small valid inputs and near-valid variants (truncated, lying sizes, wrong types).
Files named regress-* are inputs that once crashed a target; they are committed by hand and
left alone here. MANIFEST_JSON (default build/models/tiny/manifest.json) is the exported model's
manifest that the manifest seeds are derived from. Needs Pillow and numpy; output is
deterministic.
"""
import io
import json
import os
import struct
import sys
import zlib

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def out_dir(target):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        if not f.startswith("regress-"):
            os.remove(os.path.join(d, f))
    return d


def write(target, name, data):
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(out_dir.dirs[target], name), "wb") as f:
        f.write(data)


out_dir.dirs = {}


def begin(target):
    out_dir.dirs[target] = out_dir(target)


# --- safetensors ---------------------------------------------------------------------------------
def safetensors_file(header, data=b"", pad=True):
    h = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def safetensors_seeds():
    begin("safetensors_header")
    good = {"__metadata__": {"format": "pt"},
            "a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
            "b": {"dtype": "BF16", "shape": [3], "data_offsets": [16, 22]},
            "c": {"dtype": "I64", "shape": [], "data_offsets": [22, 30]}}
    write("safetensors_header", "valid", safetensors_file(good, bytes(range(30))))
    write("safetensors_header", "empty_tensor",
          safetensors_file({"e": {"dtype": "U8", "shape": [0, 5], "data_offsets": [0, 0]}}))
    write("safetensors_header", "metadata_only", safetensors_file({"__metadata__": {"k": "v"}}))
    write("safetensors_header", "overlap", safetensors_file(
        {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
         "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, bytes(12)))
    write("safetensors_header", "lying_offsets", safetensors_file(
        {"a": {"dtype": "F16", "shape": [4], "data_offsets": [0, 8]}}, bytes(4)))
    write("safetensors_header", "bad_dtype", safetensors_file(
        {"a": {"dtype": "Q4", "shape": [1], "data_offsets": [0, 1]}}, bytes(1)))
    write("safetensors_header", "huge_shape", safetensors_file(
        {"a": {"dtype": "F64", "shape": [2**31, 2**31, 2**31], "data_offsets": [0, 8]}}, bytes(8)))
    write("safetensors_header", "header_len_lies", struct.pack("<Q", 2**40) + b"{}")
    write("safetensors_header", "not_json", struct.pack("<Q", 4) + b"{\"a\"")
    write("safetensors_header", "array_header", safetensors_file([1, 2, 3]))


# --- manifest ------------------------------------------------------------------------------------
def manifest_seeds(path):
    begin("manifest")
    with open(path) as f:
        m = json.load(f)
    write("manifest", "valid.json", json.dumps(m, indent=1))
    variants = {
        "version2.json": lambda d: d.update(format_version=2),
        "bad_dtype.json": lambda d: d.update(dtype="int8"),
        "no_dims.json": lambda d: d.pop("dims"),
        "heads_mismatch.json": lambda d: d["dims"].update(n_heads=5),
        "float_layers.json": lambda d: d["dims"].update(n_layers=2.5),
        "token_outside.json": lambda d: d["special_tokens"].update(eos=10**6),
        "zero_patch.json": lambda d: d["image"].update(patch_size=0),  # once divided by zero
        "float_patch.json": lambda d: d["image"].update(patch_size=1e300),  # once UB in get<int>()
        "huge_vocab.json": lambda d: d["dims"].update(vocab=2**64 - 1),
        "tiles_reversed.json": lambda d: d["image"].update(min_tiles=9, max_tiles=2),
        "mode_indivisible.json": lambda d: d["modes"][0].update(base_size=500),
        "files_array.json": lambda d: d.update(files=["a", "b"]),
    }
    for name, edit in variants.items():
        d = json.loads(json.dumps(m))
        edit(d)
        write("manifest", name, json.dumps(d))
    write("manifest", "not_object.json", "[1,2,3]")
    write("manifest", "hf_config.json", json.dumps({"model_type": "deepseek_vl_v2"}))


# --- grounding -----------------------------------------------------------------------------------
EOS = "<\uff5cend\u2581of\u2581sentence\uff5c>"


def grounding_seeds():
    begin("grounding")
    write("grounding", "markdown.txt",
          "<|ref|>title<|/ref|><|det|>[[101, 52, 898, 90]]<|/det|>\n# Annual report\n\n"
          "<|ref|>text<|/ref|><|det|>[[100, 110, 900, 300]]<|/det|>\nRevenue grew by 12%.\n\n"
          "<|ref|>image<|/ref|><|det|>[[120, 320, 880, 700]]<|/det|>\n\n"
          "<|ref|>table<|/ref|><|det|>[[100, 720, 900, 950]]<|/det|>\n<table><tr><td>1</td></tr></table>"
          + EOS)
    write("grounding", "multi_box.txt",
          "<|ref|>cat<|/ref|><|det|>[[1, 2, 3, 4], [500, 500, 999, 999], [0,0,0,0]]<|/det|>")
    write("grounding", "locate.txt", "Locate <|ref|>the red car<|/ref|> in the image.")
    write("grounding", "nested.txt",
          "<|ref|>a<|ref|>b<|/ref|><|det|>[[[1,2,3,4]]]<|/det|><|/det|> x \\coloneqq y \\eqqcolon z")
    # Once overflowed the int conversion in grid_box_to_pixels.
    write("grounding", "negative.txt",
          "<|ref|>image<|/ref|><|det|>[[-5, -0, 1000, 99999999999]]<|/det|>  \u3000 \n")
    write("grounding", "unclosed.txt", "<|ref|>text<|/ref|><|det|>[[1, 2, 3, 4]\n\n" + EOS + EOS)
    write("grounding", "plain.txt", "Just text, \u4e2d\u6587, and $x^2$.\n")


def layout_seeds():
    begin("layout")
    write("layout", "page.md",
          "<|ref|>title<|/ref|><|det|>[[101, 52, 898, 90]]<|/det|>\n# **Annual** report\n\n"
          "<|ref|>table<|/ref|><|det|>[[100, 720, 900, 950]]<|/det|>\n<table><tr><td>a &amp; b</td>"
          "<td>1<br>2</td></tr><tr><th>x</th></tr></table>\n\n"
          "<|ref|>image<|/ref|><|det|>[[0, 0, 999, 999], [999, 999, 0, 0]]<|/det|>\n\n\n\n"
          "<|ref|>text<|/ref|><|det|>[[5, 5, 5, 900]]<|/det|>\n<center>Line  </center>\t \n" + EOS)
    write("layout", "untagged.md", "Intro text \\coloneqq x\n\n\n<p>para</p><div>d</div>\n## H2\n")
    write("layout", "odd_tags.md", "<td><tdx><//td></table></table><tr attr='1'>&nbsp;&#39;&quot;&lt;")
    write("layout", "huge.md", "<|ref|>title<|/ref|><|det|>[[-99999, 2147483647, 99999999999, -1]]<|/det|>")


# --- tokenizer -----------------------------------------------------------------------------------
def tokenizer_seeds():
    begin("tokenizer")
    texts = {
        "english.txt": "The quick brown fox jumps over the lazy dog. It's 3.14159 -- isn't it?\n",
        "chinese.txt": "\u6df1\u5ea6\u6c42\u7d22\u662f\u4e00\u5bb6\u4eba\u5de5\u667a\u80fd\u516c\u53f8\u3002\u4f60\u597d\uff0c\u4e16\u754c\uff01",
        "mixed.txt": "Caf\u00e9 na\u00efve \u0645\u0631\u062d\u0628\u0627 \u05e9\u05dc\u05d5\u05dd \U0001f600\U0001f44d\u200d \u0915\u094d\u0937 \u00a0\u2003tab\there\r\n",
        "code.txt": "def f(x):\n    return [i**2 for i in range(x)]  # 12345678901234567890\n",
        "markdown.txt": "| a | b |\n|---|---|\n| 1 | 2 |\n\n**bold** _it_ $\\frac{1}{2}$ \\coloneqq\n",
        "specials.txt": "<image>\n<|grounding|>Convert the document to markdown.<|ref|>x<|/ref|><|det|>[[1,2,3,4]]<|/det|>"
                        + EOS + "<\uff5cbegin\u2581of\u2581sentence\uff5c><td></td>",
        "spaces.txt": "   \n\n\n  a  \t\t b     \n",
    }
    for name, t in texts.items():
        write("tokenizer", name, t)
    write("tokenizer", "invalid_utf8.bin", b"ok \xff\xfe \xc3( \xe2\x82 \xf0\x9f\x98 end \xed\xa0\x80")
    write("tokenizer", "ids.bin", struct.pack("<8i", 0, 1, 100, 128815, 128820, -1, 2**31 - 1, 129279))


# --- images --------------------------------------------------------------------------------------
def encode(img, fmt, **kw):
    b = io.BytesIO()
    img.save(b, fmt, **kw)
    return b.getvalue()


def exif_orientation(o):
    e = Image.Exif()
    e[0x0112] = o
    return e.tobytes()


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def image_seeds():
    begin("image")
    rng = np.random.default_rng(7)
    rgb = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), "RGB")
    grey = rgb.convert("L")
    write("image", "rgb.png", encode(rgb, "PNG"))
    write("image", "grey.png", encode(grey, "PNG"))
    write("image", "rgba.png", encode(rgb.convert("RGBA"), "PNG"))
    write("image", "palette.png", encode(rgb.convert("P"), "PNG"))
    write("image", "grey16.png", encode(Image.fromarray(
        rng.integers(0, 65536, (9, 7), dtype=np.uint16)), "PNG"))
    write("image", "exif6.png", encode(rgb, "PNG", exif=exif_orientation(6)))
    write("image", "rgb.jpg", encode(rgb, "JPEG", quality=80))
    write("image", "progressive.jpg", encode(rgb, "JPEG", quality=60, progressive=True))
    write("image", "grey.jpg", encode(grey, "JPEG"))
    write("image", "cmyk.jpg", encode(rgb.convert("CMYK"), "JPEG"))
    write("image", "exif8.jpg", encode(rgb, "JPEG", exif=exif_orientation(8)))
    write("image", "rgb.bmp", encode(rgb, "BMP"))
    write("image", "palette.bmp", encode(rgb.convert("P"), "BMP"))
    write("image", "rgb.tif", encode(rgb, "TIFF"))
    write("image", "lzw.tif", encode(grey, "TIFF", compression="tiff_lzw"))
    write("image", "rgb.webp", encode(rgb, "WEBP", quality=50))
    write("image", "lossless.webp", encode(rgb, "WEBP", lossless=True, exif=exif_orientation(3)))
    write("image", "rgb.ppm", encode(rgb, "PPM"))
    write("image", "grey.pgm", encode(grey, "PPM"))
    write("image", "bits.pbm", encode(grey.convert("1"), "PPM"))
    png = encode(rgb, "PNG")
    write("image", "truncated.png", png[: len(png) // 2])
    jpg = encode(rgb, "JPEG")
    write("image", "truncated.jpg", jpg[: len(jpg) - 40])
    # Decompression bombs: headers claiming huge sizes over tiny data.
    ihdr = struct.pack(">IIBBBBB", 100000, 100000, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    write("image", "bomb.png", png[:8] + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat)
          + png_chunk(b"IEND", b""))
    write("image", "bomb.bmp", b"BM" + struct.pack("<IHHI", 70, 0, 0, 54)
          + struct.pack("<IiiHHIIiiII", 40, 60000, -60000, 1, 24, 0, 16, 2835, 2835, 0, 0) + bytes(16))
    write("image", "bomb.pgm", b"P5\n65535 65535\n255\n" + bytes(32))
    pages = [rgb, grey.convert("RGB"), rgb.rotate(90, expand=True)]
    write("image", "three_pages.tif", encode(pages[0], "TIFF", save_all=True, append_images=pages[1:]))
    write("image", "big.tif", encode(grey, "TIFF", big_tiff=True))


# --- pdf -----------------------------------------------------------------------------------------
def make_pdf(objects):
    out = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n"
    offsets = []
    for i, body in enumerate(objects):
        offsets.append(len(out))
        out += f"{i + 1} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for off in offsets:
        out += f"{off:010d} 00000 n \n".encode()
    out += (f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n").encode()
    return out


def stream(content, extra=b""):
    return b"<< /Length %d %s>>\nstream\n" % (len(content), extra) + content + b"\nendstream"


def pages_pdf(pages, resources=b""):
    """pages: list of (media_box, content, page_extra)."""
    n = len(pages)
    kids = b" ".join(b"%d 0 R" % (3 + 2 * i) for i in range(n))
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [" + kids + b"] /Count %d >>" % n]
    for i, (box, content, extra) in enumerate(pages):
        objs.append(b"<< /Type /Page /Parent 2 0 R /MediaBox " + box + b" /Contents %d 0 R " % (4 + 2 * i)
                    + resources + extra + b">>")
        objs.append(stream(content))
    return make_pdf(objs)


def pdf_seeds():
    begin("pdf")
    rect = b"0 0 0 rg 100 200 50 80 re f"
    write("pdf", "rect.pdf", pages_pdf([(b"[0 0 200 300]", rect, b"")]))
    write("pdf", "two_pages_rotated.pdf", pages_pdf([(b"[0 0 200 300]", rect, b"/Rotate 90 "),
                                                     (b"[10 10 110 60]", b"1 0 0 rg 20 20 30 30 re f", b"/CropBox [20 20 90 50] ")]))
    font = b"/Resources << /Font << /F1 << /Type /Font /Subtype /Type1 /BaseFont /Helvetica >> >> >> "
    write("pdf", "text.pdf", pages_pdf([(b"[0 0 300 100]",
                                         b"BT /F1 24 Tf 10 40 Td (Hello, fuzz!) Tj ET 0.5 g 5 5 m 295 95 l S", b"")],
                                       resources=font))
    # A content stream compressed with FlateDecode and an inline image.
    content = b"q 50 0 0 50 10 10 cm BI /W 2 /H 2 /CS /G /BPC 8 ID \x00\xff\xff\x00 EI Q"
    z = zlib.compress(content)
    write("pdf", "flate_inline_image.pdf", make_pdf([
        b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 72 72] /Contents 4 0 R >>",
        stream(z, b"/Filter /FlateDecode ")]))
    write("pdf", "huge_mediabox.pdf", pages_pdf([(b"[0 0 14400 14400]", rect, b"")]))
    write("pdf", "broken_xref.pdf", pages_pdf([(b"[0 0 200 300]", rect, b"")]).replace(b"startxref\n", b"startxref\n9"))
    write("pdf", "no_pages.pdf", make_pdf([b"<< /Type /Catalog /Pages 2 0 R >>",
                                           b"<< /Type /Pages /Kids [] /Count 0 >>"]))
    for name in ("encrypted_owner_only.pdf", "encrypted_user_password.pdf"):
        with open(os.path.join(ROOT, "tests", "data", "pdf", name), "rb") as f:
            write("pdf", name, f.read())


# --- --pages -------------------------------------------------------------------------------------
def page_ranges_seeds():
    begin("page_ranges")
    for i, (count, spec) in enumerate([(10, "1-3,7,10-"), (5, "-2, 4 ,3-"), (1, "1"), (3, "2-1"),
                                       (3, "0"), (200, "1-200,150-,-5"), (9, ",,"), (4, "5"),
                                       (99, "123456789-")]):
        write("page_ranges", f"spec{i}", bytes([count - 1]) + spec.encode())


def main():
    manifest = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build", "models", "tiny", "manifest.json")
    safetensors_seeds()
    manifest_seeds(manifest)
    grounding_seeds()
    layout_seeds()
    tokenizer_seeds()
    image_seeds()
    pdf_seeds()
    page_ranges_seeds()
    total = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(os.path.join(HERE, "corpus"))
                for f in fs)
    print(f"seed corpora written: {total} bytes")


if __name__ == "__main__":
    main()
