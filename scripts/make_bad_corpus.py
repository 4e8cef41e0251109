#!/usr/bin/env python3
"""The bad-input corpus that tests/e2e/test_bad_inputs.py runs ocr-cli over.

    scripts/make_bad_corpus.py small tests/data/bad   # the committed corpus (rewrite after edits)
    scripts/make_bad_corpus.py large DIR              # the large and odd ones, made at test time

`small` writes each file and expected.json: file name -> a text its one-line error must contain.
`large` (and the functions below, imported by the tests) makes what cannot or should not be
committed: a PDF of thousands of pages, names with newlines and non-UTF-8 bytes, symlink loops,
unreadable files. Everything is deterministic (fixed seeds, no timestamps)."""
import io
import json
import os
import random
import struct
import sys
import zlib
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent
BOMB = 50_000  # pixels a side claimed by the decompression-bomb headers (2.5 Gpx, over --max-pixels)


# --- PDF ------------------------------------------------------------------------------------------

def make_pdf(objects):
    """A PDF from its object bodies (object i+1 = objects[i]) with a correct xref table."""
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for i, body in enumerate(objects):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % (i + 1) + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def pdf_pages(n_pages, media_box=b"[0 0 200 300]"):
    """n_pages pages sharing one content stream (a black rectangle): about 60 bytes a page."""
    content = b"0 0 0 rg 100 200 50 80 re f"
    stream = b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content)
    first_page = 4
    kids = b" ".join(b"%d 0 R" % (first_page + i) for i in range(n_pages))
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>",
               b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, n_pages),
               stream]
    for _ in range(n_pages):
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox %s /Contents 3 0 R >>" % media_box)
    return make_pdf(objects)


# --- images ---------------------------------------------------------------------------------------

def page_image():
    """A small page-like RGB image: white paper, dark 'text' bars."""
    from PIL import Image, ImageDraw
    img = Image.new("RGB", (96, 64), "white")
    d = ImageDraw.Draw(img)
    for y in range(8, 56, 8):
        d.rectangle([8, y, 8 + (y * 7) % 70 + 10, y + 3], fill=(20, 20, 20))
    return img


def encode(img, fmt, **kw):
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff)


def png_with_size(width, height, idat=None):
    """A PNG whose IHDR claims width x height (8-bit RGB), with a small IDAT and correct CRCs."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64) if idat is None else idat
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def jpeg_bomb(side):
    """Baseline JPEG headers claiming side x side pixels (grey), one tiny scan, EOI."""
    dqt = b"\xff\xdb" + struct.pack(">H", 67) + b"\x00" + bytes([1] * 64)
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, side, side, 1) + b"\x01\x11\x00"
    # One DC and one AC table with a single 1-bit code each.
    dht = (b"\xff\xc4" + struct.pack(">H", 2 + 17 + 1) + b"\x00" + bytes([1] + [0] * 15) + b"\x00"
           + b"\xff\xc4" + struct.pack(">H", 2 + 17 + 1) + b"\x10" + bytes([1] + [0] * 15) + b"\x00")
    sos = b"\xff\xda" + struct.pack(">HB", 8, 1) + b"\x01\x00" + b"\x00\x3f\x00"
    return b"\xff\xd8" + dqt + sof + dht + sos + b"\x00" * 16 + b"\xff\xd9"


def tiff_bomb(side):
    """Little-endian TIFF, one IFD: side x side, 8-bit grey, one strip of 16 bytes."""
    entries = [(256, 4, 1, side), (257, 4, 1, side), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
               (273, 4, 1, 8 + 2 + 12 * 9 + 4), (277, 3, 1, 1), (278, 4, 1, side), (279, 4, 1, 16)]
    ifd = struct.pack("<H", len(entries))
    for tag, typ, count, value in entries:
        ifd += struct.pack("<HHI", tag, typ, count) + (struct.pack("<HH", value, 0) if typ == 3 else struct.pack("<I", value))
    ifd += struct.pack("<I", 0)
    return b"II*\0" + struct.pack("<I", 8) + ifd + b"\0" * 16


def bmp_bomb(side):
    """BITMAPINFOHEADER claiming side x side, 24 bits a pixel, with 64 bytes of pixels."""
    pixels = b"\0" * 64
    header = struct.pack("<IiiHHIIiiII", 40, side, side, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    file_header = b"BM" + struct.pack("<IHHI", 14 + len(header) + len(pixels), 0, 0, 14 + len(header))
    return file_header + header + pixels


def webp_bomb(side):
    """Extended WebP (VP8X) whose canvas is side x side, with no image chunk after it."""
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\0\0\0\0" + (side - 1).to_bytes(3, "little") + (side - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 4 + len(vp8x)) + b"WEBP" + vp8x


# --- the committed corpus -------------------------------------------------------------------------

def small_corpus():
    """name -> (bytes, text the error line must contain)."""
    rng = random.Random(7)
    img = page_image()
    png = encode(img, "PNG")
    jpg = encode(img, "JPEG", quality=90)
    tif = encode(img, "TIFF")  # uncompressed: one strip of 96*64*3 bytes
    bmp = encode(img, "BMP")
    webp = encode(img, "WEBP", lossless=True)
    gif = encode(img, "GIF")
    flipped = bytearray(png)
    idat = png.index(b"IDAT")
    flipped[idat + 8] ^= 0xff  # a byte of compressed data: the chunk CRC no longer matches
    encrypted = (SRC / "tests" / "data" / "pdf" / "encrypted_user_password.pdf").read_bytes()
    zero_pages = make_pdf([b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [] /Count 0 >>"])
    too_large = "over the --max-pixels limit"
    return {
        "empty png.png": (b"", "empty file (0 bytes)"),
        "empty pdf.pdf": (b"", "empty file (0 bytes)"),
        "random png.png": (bytes(rng.randrange(256) for _ in range(4096)), "not a supported image format"),
        "random pdf.pdf": (bytes(rng.randrange(256) for _ in range(4096)), "not a supported image format"),
        "text named.jpg": (b"This is a text file with an image extension.\n" * 20, "not a supported image format"),
        "gif named.png": (gif, "not a supported image format"),
        "truncated png.png": (png[: len(png) // 2], "truncated PNG data"),
        "truncated jpg.jpg": (jpg[: len(jpg) // 2], "truncated JPEG data"),
        "truncated tif.tif": (tif[: len(tif) // 2], "truncated TIFF: the image data of page 1 ends at byte 18572"),
        "truncated bmp.bmp": (bmp[: len(bmp) // 2], "truncated BMP data"),
        "cut header bmp.bmp": (bmp[:20], "truncated BMP data (the header is cut off)"),
        "truncated webp.webp": (webp[: len(webp) // 2], "truncated WebP data"),
        "cut header webp.webp": (webp[:28], "truncated WebP data"),
        "truncated pdf.pdf": (pdf_pages(3)[:200], "damaged PDF"),
        "bad crc.png": (bytes(flipped), "corrupt PNG data (checksum mismatch in the IDAT chunk"),
        "zero size.png": (png_with_size(0, 0), "corrupt PNG data (IHDR claims 0x0 pixels)"),
        "no frame.jpg": (b"\xff\xd8\xff\xd9", "corrupt or truncated JPEG data"),
        "zero pages.pdf": (zero_pages, "PDF has no pages"),
        "encrypted.pdf": (encrypted, "PDF is encrypted; pass --password"),
        "bomb png.png": (png_with_size(BOMB, BOMB), too_large),
        "bomb jpg.jpg": (jpeg_bomb(BOMB), too_large),
        "bomb tif.tif": (tiff_bomb(BOMB), too_large),
        "bomb bmp.bmp": (bmp_bomb(BOMB), too_large),
        "bomb webp.webp": (webp_bomb(BOMB), too_large),
        "bomb page.pdf": (pdf_pages(1, b"[0 0 14400 14400]"), "page 1 would be 28800x28800 pixels"),
    }


def write_small(dest):
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    corpus = small_corpus()
    for name, (data, _) in corpus.items():
        (dest / name).write_bytes(data)
    expected = {name: text for name, (_, text) in sorted(corpus.items())}
    (dest / "expected.json").write_text(json.dumps(expected, indent=1, ensure_ascii=False) + "\n")


# --- made at test time ----------------------------------------------------------------------------

# Inputs whose names are odd, all with broken contents: (name as bytes, expected error text).
ODD_NAMES = [
    (b"line\nbreak.png", "truncated PNG data"),
    (b"carriage\rreturn\ttab.png", "truncated PNG data"),
    (b"latin1 caf\xe9.png", "truncated PNG data"),
    (b"  leading and trailing spaces  .png", "truncated PNG data"),
]


def write_odd_names(dest, broken_png):
    """Files with newline, tab, CR and non-UTF-8 bytes in their names; returns their paths (bytes)."""
    dest = os.fsencode(dest)
    os.makedirs(dest, exist_ok=True)
    paths = []
    for name, _ in ODD_NAMES:
        p = os.path.join(dest, name)
        with open(p, "wb") as f:
            f.write(broken_png)
        paths.append(p)
    return paths


def write_symlink_loops(dest):
    """A folder with a loop back to itself, a symlink to itself and one to a missing file."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    os.symlink(".", dest / "loop")
    os.symlink("..", dest / "up")
    os.symlink("self.png", dest / "self.png")
    os.symlink("missing.png", dest / "dangling.png")


def write_many_pages(path, n_pages):
    Path(path).write_bytes(pdf_pages(n_pages))


def main(argv):
    if len(argv) != 3 or argv[1] not in ("small", "large"):
        print(__doc__)
        return 2
    if argv[1] == "small":
        write_small(argv[2])
    else:
        dest = Path(argv[2])
        write_many_pages(dest / "many pages.pdf", 5000)
        write_odd_names(dest / "odd names", small_corpus()["truncated png.png"][0])
        write_symlink_loops(dest / "loops")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
