#!/usr/bin/env python3
"""Pillow parity of the C++ image path, through tests/tools/preprocess_probe.

Compares, pixel for pixel, against the installed Pillow:
  - Image.resize(size, BICUBIC) over a table of sizes and scale factors (up, down, mixed, 1-px,
    extreme ratios, both pass orders of Pillow's separable resampler);
  - ImageOps.pad(img, (S, S), BICUBIC, color, centering=(0.5, 0.5)) including contain()'s rounding;
  - the official views (global view + tiles) of every mode against a Python rendition of the
    official preprocessing, and against the committed views of shared/fixtures/parity-a;
  - tiling candidate orders (CPython set order) and tiling choices against the upstream code;
  - decoding (PIL ImageOps.exif_transpose + convert("RGB")) for the formats we accept, and the
    error messages for broken inputs.
Exits non-zero when any check fails; the last line is "pillow_parity: N passed, M failed".
"""

import json
import os
import struct
import subprocess
import sys
import tempfile
import zlib

import numpy as np
from PIL import Image, ImageOps

TOOLS_DIR = os.environ.get("OCR_TOOLS_DIR", "")
SHARED_DIR = os.environ.get("OCR_SHARED_DIR", "")
PROBE = os.path.join(TOOLS_DIR, "preprocess_probe")
FIXTURE = os.path.join(SHARED_DIR, "fixtures", "parity-a")
PAD_FILL = 127  # int(0.5 * 255), the official letterbox colour
EXIT_INPUT_ERROR = 3

passed = 0
failed = 0


def check(ok, what):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
        print(f"FAIL: {what}", flush=True)


def probe(*args, stdin=None):
    return subprocess.run([PROBE, *map(str, args)], input=stdin, capture_output=True, timeout=300)


def probe_batch(commands):
    """Runs the commands in one probe process: [(rc, output, error message)] in command order."""
    stdin = "".join(" ".join(map(str, c)) + "\n" for c in commands).encode()
    r = subprocess.run([PROBE, "batch"], input=stdin, capture_output=True, timeout=900)
    results, lines = [], []
    for line in r.stdout.decode().split("\n"):
        if line.startswith("@@end "):
            rc, _, error = line[len("@@end "):].partition(" ")
            results.append((int(rc), "\n".join(lines), error))
            lines = []
        elif line:
            lines.append(line)
    # A crash part-way leaves the remaining commands without a result.
    results += [(-1, "", f"no result (probe exit {r.returncode})")] * (len(commands) - len(results))
    return results


def load_rgb(path):
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def same_pixels(got, ref):
    return got.shape == ref.shape and np.array_equal(got, ref)


def describe_diff(got, ref):
    if got.shape != ref.shape:
        return f"shape {got.shape} vs {ref.shape}"
    d = np.abs(got.astype(int) - ref.astype(int))
    return f"max diff {d.max()}, {(d > 0).sum()} values differ"


# ------------------------------------------------------------------------------------------------
# Official preprocessing in Python (HF infer() / vLLM process/image_process.py), for the views.

def official_target_ratios(min_num, max_num):
    target_ratios = set(
        (i, j) for n in range(min_num, max_num + 1) for i in range(1, n + 1)
        for j in range(1, n + 1) if i * j <= max_num and i * j >= min_num)
    return sorted(target_ratios, key=lambda x: x[0] * x[1])


def official_closest_aspect_ratio(aspect_ratio, target_ratios, width, height, image_size):
    best_ratio_diff = float("inf")
    best_ratio = (1, 1)
    area = width * height
    for ratio in target_ratios:
        target_aspect_ratio = ratio[0] / ratio[1]
        ratio_diff = abs(aspect_ratio - target_aspect_ratio)
        if ratio_diff < best_ratio_diff:
            best_ratio_diff = ratio_diff
            best_ratio = ratio
        elif ratio_diff == best_ratio_diff:
            if area > 0.5 * image_size * image_size * ratio[0] * ratio[1]:
                best_ratio = ratio
    return best_ratio


MODES = {  # name: (base_size, image_size, crop_mode)
    "tiny": (512, 512, False),
    "small": (640, 640, False),
    "base": (1024, 1024, False),
    "large": (1280, 1280, False),
    "gundam": (1024, 640, True),
}


def official_views(image, mode, max_num=9, min_num=2):
    base_size, image_size, crop_mode = MODES[mode]
    color = (PAD_FILL,) * 3
    tiles, crop = [], (1, 1)
    if crop_mode:
        w, h = image.size
        if not (w <= 640 and h <= 640):
            ratios = official_target_ratios(min_num, max_num)
            crop = official_closest_aspect_ratio(w / h, ratios, w, h, image_size)
            resized = image.resize((image_size * crop[0], image_size * crop[1]))
            for k in range(crop[0] * crop[1]):
                x, y = (k % crop[0]) * image_size, (k // crop[0]) * image_size
                tiles.append(resized.crop((x, y, x + image_size, y + image_size)))
        global_view = ImageOps.pad(image, (base_size, base_size), color=color)
    else:
        if image_size <= 640:
            image = image.resize((image_size, image_size))
        global_view = ImageOps.pad(image, (image_size, image_size), color=color)
    return global_view, tiles, crop


def official_token_count(mode, crop, has_tiles):
    base_size, image_size, crop_mode = MODES[mode]
    n = image_size // 64
    if not crop_mode:
        return n * (n + 1) + 1
    n_b = base_size // 64
    count = n_b * (n_b + 1) + 1
    if has_tiles and (crop[0] > 1 or crop[1] > 1):
        count += (n * crop[0] + 1) * (n * crop[1])
    return count


# ------------------------------------------------------------------------------------------------

def random_image(rng, w, h):
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def document_like(rng, w, h):
    """White page with dark strokes: the content the engine actually sees."""
    a = np.full((h, w, 3), 250, np.uint8)
    for _ in range(max(1, (w * h) // 4000)):
        x, y = rng.integers(0, w), rng.integers(0, h)
        a[y:y + rng.integers(1, 4), x:x + rng.integers(1, 60)] = rng.integers(0, 80, 3)
    return Image.fromarray(a)


def test_resize(tmp, rng):
    cases = [
        # upscaling
        (37, 23, 100, 50), (1, 1, 5, 7), (1, 1, 640, 640), (3, 2, 1280, 1920), (91, 67, 92, 68),
        (500, 380, 512, 512), (800, 600, 1024, 768), (1224, 1584, 1280, 1920),
        (1191, 1684, 1280, 1920),
        # downscaling
        (1224, 1584, 791, 1024), (1584, 1224, 640, 640), (1000, 17, 33, 1), (300, 2, 1, 1),
        (2, 2, 1, 1), (640, 480, 1, 1), (1500, 1500, 7, 7), (257, 255, 128, 127),
        # mixed, and the vertical-first order (height shrinks by > 2x the width's shrink)
        (5, 300, 640, 2), (300, 5, 2, 640), (1000, 3000, 341, 1024), (3000, 1000, 1024, 341),
        (50, 40, 20, 100), (40, 50, 100, 20), (64, 64, 48, 16), (64, 64, 16, 48),
        (12, 37, 5, 19), (14, 68, 11, 59), (60, 61, 30, 27),
        # 1-pixel sides
        (1, 300, 1, 17), (300, 1, 17, 1), (1, 1, 1, 9), (1, 9, 1, 1), (1, 50, 70, 1),
        (7, 1, 1, 640),
        # extreme ratios
        (4000, 10, 640, 640), (10, 4000, 640, 640), (2000, 3, 1, 1000), (3, 2000, 1000, 1),
        # one axis only, and the identity
        (123, 45, 123, 90), (123, 45, 61, 45), (123, 45, 123, 45),
    ]
    # A sweep of scale factors on an odd-sized image, both directions.
    for fx in (0.1, 0.33, 0.5, 0.77, 1.0, 1.01, 1.5, 2.0, 3.3, 7.0):
        for fy in (0.25, 1.0, 2.5):
            cases.append((97, 61, max(1, round(97 * fx)), max(1, round(61 * fy))))
    commands, refs = [], []
    for k, (w, h, ow, oh) in enumerate(cases):
        im = random_image(rng, w, h) if (w * h) % 2 == 0 else document_like(rng, w, h)
        src_path = os.path.join(tmp, f"resize_in_{k}.png")
        im.save(src_path, compress_level=1)
        refs.append(np.asarray(im.resize((ow, oh), Image.BICUBIC)))
        commands.append(("resize", src_path, ow, oh, os.path.join(tmp, f"resize_out_{k}.png")))
    for (w, h, ow, oh), cmd, ref, (rc, _, error) in zip(cases, commands, refs, probe_batch(commands)):
        if rc != 0:
            check(False, f"resize {w}x{h} -> {ow}x{oh}: probe failed: {error}")
            continue
        got = load_rgb(cmd[-1])
        check(same_pixels(got, ref), f"resize {w}x{h} -> {ow}x{oh}: {describe_diff(got, ref)}")
    return len(cases)


def test_pad(tmp, rng):
    cases = [  # (w, h, size, fill)
        (800, 600, 1024, 127), (600, 800, 1024, 127), (1224, 1584, 1024, 127),
        (1584, 1224, 1280, 127), (1000, 1000, 1024, 127), (640, 640, 1024, 127),
        (1000, 3000, 1024, 127), (3000, 1000, 1024, 127),
        (1, 3000, 1024, 127),  # contained width rounds to 0: all fill
        (3000, 1, 64, 127),
        (4, 2, 5, 127),    # round(2.5) = 2 (half to even), offset round(1.5) = 2
        (2, 1, 9, 127),    # round(4.5) = 4, offset round(2.5) = 2
        (1, 2, 9, 127), (3, 2, 7, 127), (6, 2, 5, 127), (10, 4, 5, 127),
        (1025, 1024, 1024, 127), (1024, 1023, 1024, 127), (1023, 1024, 1024, 127),
        (333, 777, 33, 0), (777, 333, 33, 255), (5, 5, 1, 127), (1, 1, 1024, 127),
    ]
    commands, refs = [], []
    for k, (w, h, size, fill) in enumerate(cases):
        im = random_image(rng, w, h)
        src_path = os.path.join(tmp, f"pad_in_{k}.png")
        im.save(src_path, compress_level=1)
        try:
            refs.append(np.asarray(ImageOps.pad(im, (size, size), method=Image.BICUBIC,
                                                color=(fill,) * 3, centering=(0.5, 0.5))))
        except ValueError:
            # Pillow < 13 raises when a contained side rounds to 0; we give an all-fill view,
            # as Pillow 13 does.
            refs.append(np.full((size, size, 3), fill, dtype=np.uint8))
        commands.append(("pad", src_path, size, os.path.join(tmp, f"pad_out_{k}.png"), fill))
    for (w, h, size, fill), cmd, ref, (rc, _, error) in zip(cases, commands, refs,
                                                            probe_batch(commands)):
        if rc != 0:
            check(False, f"pad {w}x{h} -> {size}: probe failed: {error}")
            continue
        got = load_rgb(cmd[3])
        check(same_pixels(got, ref), f"pad {w}x{h} -> {size} fill {fill}: {describe_diff(got, ref)}")
    return len(cases)


def test_candidates():
    ranges = [(lo, hi) for lo in (1, 2, 3) for hi in list(range(lo, 13)) + [16, 20, 25, 30, 36]]
    for (lo, hi), (rc, out, error) in zip(ranges, probe_batch([("candidates", lo, hi) for lo, hi in ranges])):
        got = [tuple(p) for p in json.loads(out)] if rc == 0 else error
        ref = official_target_ratios(lo, hi)
        check(got == ref, f"candidates {lo}..{hi}: got {got}, expected {ref}")
    n = len(ranges)
    # The lists written in the spec (4.3) for the official settings.
    spec = {
        9: [(1, 2), (2, 1), (3, 1), (1, 3), (2, 2), (4, 1), (1, 4), (5, 1), (1, 5), (1, 6), (6, 1),
            (3, 2), (2, 3), (7, 1), (1, 7), (4, 2), (2, 4), (1, 8), (8, 1), (1, 9), (3, 3), (9, 1)],
        6: [(1, 2), (2, 1), (3, 1), (1, 3), (4, 1), (1, 4), (2, 2), (1, 5), (5, 1), (6, 1), (2, 3),
            (1, 6), (3, 2)],
    }
    for max_num, order in spec.items():
        check(official_target_ratios(2, max_num) == order,
              f"this Python's set order for max {max_num} differs from the spec's list")
        n += 1
    return n


def test_tiling(rng):
    sizes = [(int(w), int(h)) for w, h in rng.integers(1, 4001, (400, 2))]
    sizes += [(int(w), int(h)) for w, h in rng.integers(600, 1400, (200, 2))]
    sizes += [  # exact aspect ties between grids, on both sides of the area rule
        (1000, 1000), (1280, 1280), (1281, 1281), (900, 900), (2000, 2000), (1, 1), (640, 640),
        (2000, 1000), (1280, 640), (1281, 640), (1000, 2000), (640, 1280), (1920, 1280),
        (1224, 1584), (1191, 1684), (1584, 1224), (800, 600), (600, 400), (3000, 1000),
        (1000, 3000), (5000, 1), (1, 5000), (1810, 905), (905, 1810), (1811, 1811),
    ]
    stdin = "".join(f"{w} {h}\n" for w, h in sizes).encode()
    n = 0
    for max_num in range(2, 13):
        r = probe("tiling", 2, max_num, 640, stdin=stdin)
        lines = r.stdout.decode().split("\n") if r.returncode == 0 else []
        ratios = official_target_ratios(2, max_num)
        bad = []
        for k, (w, h) in enumerate(sizes):
            ref = official_closest_aspect_ratio(w / h, ratios, w, h, 640)
            got = tuple(map(int, lines[k].split())) if k < len(lines) and lines[k] else None
            if got != ref:
                bad.append(f"{w}x{h}: got {got}, expected {ref}")
        check(not bad, f"tiling max {max_num}: {len(bad)} of {len(sizes)} differ: {bad[:5]}")
        n += 1
    return n


def compare_views(tag, outdir, global_ref, tiles_ref):
    got = load_rgb(os.path.join(outdir, "view_global.png"))
    check(same_pixels(got, global_ref), f"{tag}: global view {describe_diff(got, global_ref)}")
    for k, ref in enumerate(tiles_ref):
        path = os.path.join(outdir, f"view_tile_{k:02d}.png")
        if not os.path.exists(path):
            check(False, f"{tag}: tile {k} missing")
            continue
        got = load_rgb(path)
        check(same_pixels(got, ref), f"{tag}: tile {k} {describe_diff(got, ref)}")
    extra = os.path.join(outdir, f"view_tile_{len(tiles_ref):02d}.png")
    check(not os.path.exists(extra), f"{tag}: more tiles than expected")


def test_fixture_views(tmp):
    with open(os.path.join(FIXTURE, "cases.json")) as f:
        cases = json.load(f)["cases"]
    for case in cases:
        outdir = os.path.join(tmp, "fx_" + case["id"])
        os.makedirs(outdir, exist_ok=True)
        check(MODES[case["mode"]] == (case["base_size"], case["image_size"], case["crop_mode"]),
              f"{case['id']}: mode table differs from the fixture's arguments")
        r = probe("views", os.path.join(FIXTURE, case["image"]), case["mode"], outdir)
        if r.returncode != 0:
            check(False, f"{case['id']}: probe failed: {r.stderr.decode().strip()}")
            continue
        info = json.loads(r.stdout)
        views = case["views"]
        global_ref = load_rgb(os.path.join(FIXTURE, views[0]["file"]))
        tiles_ref = [load_rgb(os.path.join(FIXTURE, v["file"])) for v in views[1:]]
        check(views[0]["kind"] == "global" and all(v["kind"] != "global" for v in views[1:]),
              f"{case['id']}: unexpected view order in cases.json")
        compare_views(case["id"], outdir, global_ref, tiles_ref)
        check([info["tiles_w"], info["tiles_h"]] == case["images_spatial_crop"],
              f"{case['id']}: tiles {info['tiles_w']}x{info['tiles_h']}, "
              f"expected {case['images_spatial_crop']}")
        check(info["n_tiles"] == case["n_tiles"], f"{case['id']}: n_tiles {info['n_tiles']}")
        check(info["image_tokens"] == case["n_image_tokens"],
              f"{case['id']}: image tokens {info['image_tokens']}, expected {case['n_image_tokens']}")
    return len(cases)


def test_synthetic_views(tmp, rng):
    cases = [  # (w, h, mode, max_tiles)
        (1000, 3000, "gundam", 9), (3000, 1000, "gundam", 9), (2000, 1000, "gundam", 6),
        (2000, 1000, "gundam", 9), (2000, 2000, "gundam", 6), (641, 100, "gundam", 9),
        (600, 400, "gundam", 9), (640, 641, "gundam", 9), (1, 700, "gundam", 9),
        (300, 200, "tiny", 9), (300, 200, "small", 9), (300, 200, "base", 9),
        (300, 200, "large", 9), (1000, 3000, "base", 9), (1000, 3000, "tiny", 9),
    ]
    commands, images = [], []
    for k, (w, h, mode, max_num) in enumerate(cases):
        im = document_like(rng, w, h)
        src_path = os.path.join(tmp, f"views_in_{k}.png")
        im.save(src_path, compress_level=1)
        outdir = os.path.join(tmp, f"sv_{k}")
        os.makedirs(outdir, exist_ok=True)
        images.append(im)
        commands.append(("views", src_path, mode, outdir, max_num))
    for (w, h, mode, max_num), im, cmd, (rc, out, error) in zip(cases, images, commands,
                                                                probe_batch(commands)):
        tag = f"views {w}x{h} {mode} max {max_num}"
        if rc != 0:
            check(False, f"{tag}: probe failed: {error}")
            continue
        info = json.loads(out)
        global_view, tiles, crop = official_views(im, mode, max_num=max_num)
        compare_views(tag, cmd[3], np.asarray(global_view), [np.asarray(t) for t in tiles])
        check((info["tiles_w"], info["tiles_h"]) == crop, f"{tag}: tiles {info}, expected {crop}")
        check(info["image_tokens"] == official_token_count(mode, crop, bool(tiles)),
              f"{tag}: image tokens {info['image_tokens']}")
    return len(cases)


# ------------------------------------------------------------------------------------------------
# Decoding.

def png_bytes(width, height, bit_depth, color_type, raw_rows):
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    idat = zlib.compress(b"".join(b"\x00" + row for row in raw_rows))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def exif_orientation(value):
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


def test_decode(tmp, rng):
    noise = rng.integers(0, 256, (67, 91, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:67, 0:91]
    smooth = np.stack([(xx * 2.7) % 256, (yy * 3.1) % 256, ((xx + yy) * 1.3) % 256], -1).astype(np.uint8)
    files = {}

    def save(name, im, **kw):
        path = os.path.join(tmp, name)
        im.save(path, **kw)
        files[name] = path

    im = Image.fromarray(noise)
    save("rgb.png", im)
    save("rgba.png", Image.fromarray(np.dstack([noise, noise[:, :, :1] ^ 0x5a])))
    save("l.png", im.convert("L"))
    save("la.png", im.convert("LA"))
    save("p.png", im.convert("P"))
    save("1bit.png", im.convert("1"))
    save("rgb.bmp", im)
    save("rgb.tif", im)
    save("lzw.tif", im, compression="tiff_lzw")
    save("lossless.webp", im, lossless=True)
    save("lossy.webp", Image.fromarray(smooth), quality=80)
    save("baseline.jpg", Image.fromarray(smooth), quality=90)
    save("progressive.jpg", Image.fromarray(smooth), quality=85, progressive=True)
    save("grey.jpg", Image.fromarray(smooth).convert("L"))
    save("444.jpg", Image.fromarray(smooth), subsampling=0)
    save("rgb.ppm", im)
    # Multi-page TIFF: the first page, as Image.open() gives it.
    save("multipage.tif", im, save_all=True,
         append_images=[Image.fromarray(smooth), Image.fromarray(255 - noise)])
    for o in range(1, 9):
        save(f"orient{o}.jpg", Image.fromarray(smooth), exif=exif_orientation(o), quality=95)
        save(f"orient{o}.png", im, exif=exif_orientation(o))
        save(f"orient{o}.webp", im, lossless=True, exif=exif_orientation(o))
        save(f"orient{o}.tif", im, exif=exif_orientation(o))
    rgb16 = rng.integers(0, 65536, (13, 17, 3)).astype(">u2")
    path16 = os.path.join(tmp, "rgb16.png")
    with open(path16, "wb") as f:
        f.write(png_bytes(17, 13, 16, 2, [row.tobytes() for row in rgb16]))
    files["rgb16.png"] = path16

    names = list(files)
    commands = [("decode", files[name], os.path.join(tmp, f"decoded_{k}.png"))
                for k, name in enumerate(names)]
    for name, cmd, (rc, _, error) in zip(names, commands, probe_batch(commands)):
        with Image.open(files[name]) as src:
            ref = np.asarray(ImageOps.exif_transpose(src).convert("RGB"))
        if rc != 0:
            check(False, f"decode {name}: {error}")
            continue
        got = load_rgb(cmd[2])
        check(same_pixels(got, ref), f"decode {name}: {describe_diff(got, ref)}")

    out_path = os.path.join(tmp, "decoded.png")
    # --no-exif keeps the stored orientation (JPEG, PNG, WebP), as PIL without exif_transpose.
    for name in ("orient6.jpg", "orient3.png", "orient8.webp"):
        ref = load_rgb(files[name])
        r = probe("decode", files[name], out_path, "--no-exif")
        got = load_rgb(out_path) if r.returncode == 0 else np.zeros(0)
        check(same_pixels(got, ref), f"decode {name} --no-exif: {describe_diff(got, ref)}")

    # 16-bit grey: PIL's I;16 -> RGB clips to 255; we take the high byte like for 16-bit RGB.
    grey16 = rng.integers(0, 65536, (9, 11)).astype(">u2")
    path = os.path.join(tmp, "grey16.png")
    with open(path, "wb") as f:
        f.write(png_bytes(11, 9, 16, 0, [row.tobytes() for row in grey16]))
    r = probe("decode", path, out_path)
    got = load_rgb(out_path) if r.returncode == 0 else np.zeros(0)
    ref = np.repeat((grey16.astype(np.uint16) >> 8).astype(np.uint8)[:, :, None], 3, axis=2)
    check(same_pixels(got, ref), f"decode grey16.png: {describe_diff(got, ref)}")

    # stdin
    with open(files["baseline.jpg"], "rb") as f:
        r = probe("decode", "-", out_path, stdin=f.read())
    with Image.open(files["baseline.jpg"]) as src:
        ref = np.asarray(src.convert("RGB"))
    got = load_rgb(out_path) if r.returncode == 0 else np.zeros(0)
    check(same_pixels(got, ref), f"decode stdin: {describe_diff(got, ref)}")
    return len(files) + 5


def test_decode_errors(tmp, rng):
    def write(name, data):
        path = os.path.join(tmp, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    big = Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8))
    big.save(os.path.join(tmp, "big.jpg"), quality=90)
    big.save(os.path.join(tmp, "big.png"))
    jpg = open(os.path.join(tmp, "big.jpg"), "rb").read()
    png = open(os.path.join(tmp, "big.png"), "rb").read()

    def sof_jpeg(w, h):  # SOI, SOF0 for w x h, EOI: enough for the header check
        sof = struct.pack(">BBHBHHB", 0xFF, 0xC0, 11, 8, h, w, 1) + b"\x01\x11\x00"
        return b"\xff\xd8" + sof + b"\xff\xd9"

    def bmp_header(w, h):
        return b"BM" + struct.pack("<IHHI", 54, 0, 0, 54) + struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, 0, 0, 0, 0, 0)

    def tiff_header(w, h):
        entries = [(256, 4, 1, w), (257, 4, 1, h)]
        ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries)
        return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\x00\x00\x00\x00"

    def webp_vp8x(w, h):
        payload = b"\x00\x00\x00\x00" + (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little")
        return b"RIFF" + struct.pack("<I", 4 + 8 + len(payload)) + b"WEBP" + b"VP8X" + struct.pack("<I", len(payload)) + payload

    cases = [  # (file name, bytes, extra args, expected message part)
        ("empty.png", b"", (), "empty file"),
        ("random.bin", rng.integers(0, 256, 3000, dtype=np.uint8).tobytes(), (), "not a supported image"),
        ("truncated.jpg", jpg[: len(jpg) // 2], (), "truncated JPEG"),
        ("truncated.png", png[: len(png) // 2], (), "truncated PNG"),
        ("bomb.png", png_bytes(50000, 50000, 8, 2, []), (), "image is 50000x50000 pixels, over the --max-pixels limit of 200000000"),
        ("bomb.jpg", sof_jpeg(60000, 60000), (), "image is 60000x60000 pixels"),
        ("bomb.bmp", bmp_header(40000, -40000), (), "image is 40000x40000 pixels"),
        ("bomb.tif", tiff_header(100000, 3000), (), "image is 100000x3000 pixels"),
        ("bomb.webp", webp_vp8x(16000000, 16000), (), "image is 16000000x16000 pixels"),
        ("small_limit.png", png, ("--max-pixels", 1000), "image is 400x300 pixels, over the --max-pixels limit of 1000"),
    ]
    out_path = os.path.join(tmp, "error_out.png")
    for name, data, extra, expected in cases:
        path = write(name, data)
        r = probe("decode", path, out_path, *extra)
        msg = r.stderr.decode().strip()
        last = msg.split("\n")[-1] if msg else ""
        check(r.returncode == EXIT_INPUT_ERROR and last.startswith(path + ": ") and expected in last,
              f"decode error {name}: rc {r.returncode}, stderr {msg!r}, expected {expected!r}")
    r = probe("decode", os.path.join(tmp, "does_not_exist.png"), out_path)
    check(r.returncode == EXIT_INPUT_ERROR and b"cannot open" in r.stderr, f"missing file: {r.stderr!r}")
    r = probe("decode", tmp, out_path)
    check(r.returncode == EXIT_INPUT_ERROR and b"is a directory" in r.stderr, f"directory: {r.stderr!r}")
    r = probe("decode", "-", out_path, stdin=b"")
    check(r.returncode == EXIT_INPUT_ERROR and r.stderr.strip() == b"stdin: empty input",
          f"empty stdin: {r.stderr!r}")
    return len(cases) + 3


def main():
    if not os.path.exists(PROBE):
        print(f"preprocess_probe not found in OCR_TOOLS_DIR={TOOLS_DIR!r}")
        return 1
    if not os.path.exists(os.path.join(FIXTURE, "cases.json")):
        print(f"fixture not found under OCR_SHARED_DIR={SHARED_DIR!r}")
        return 1
    print(f"Pillow {Image.__version__}, numpy {np.__version__}", flush=True)
    rng = np.random.default_rng(20251128)
    with tempfile.TemporaryDirectory(prefix="pillow_parity_") as tmp:
        for name, fn in [("resize", lambda: test_resize(tmp, rng)),
                         ("pad", lambda: test_pad(tmp, rng)),
                         ("candidates", test_candidates),
                         ("tiling", lambda: test_tiling(rng)),
                         ("fixture views", lambda: test_fixture_views(tmp)),
                         ("synthetic views", lambda: test_synthetic_views(tmp, rng)),
                         ("decode", lambda: test_decode(tmp, rng)),
                         ("decode errors", lambda: test_decode_errors(tmp, rng))]:
            before = failed
            n = fn()
            print(f"{name}: {n} cases, {failed - before} failed checks", flush=True)
    print(f"pillow_parity: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
