#!/usr/bin/env python3
"""The encoder's copy-free SAM attention/window code (scripts/ocr_modules.py) against the previous code
(kept behind OCR_ENCODER_LEGACY=1): bit-identical bf16 outputs on CPU, scripted as export.py scripts
it, for 640 tiles and a 1024 global view with random weights; windows with the explicit bias (head_dim
64) and with the folded rel-pos (tiny, head_dim 16). With --profile, also prints the CPU operator
counts/bytes of both for 2 tiles + 1 global view (the proxy for the GPU's copy kernels). On the GPU:
--device cuda (the same checks there), --device cuda --bench (time every variant in one process)."""
import argparse
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests"))
import ocr_modules  # noqa: E402
from checks import Checks  # noqa: E402
from make_checkpoint import PRESETS, dims  # noqa: E402

check = Checks("encoder_copies")


def build(d, legacy, seed, fold_v=False, bias=""):
    env = {"OCR_ENCODER_LEGACY": "1" if legacy else "0", "OCR_SAM_FOLD_V": "1" if fold_v else "0",
           "OCR_SAM_BIAS": bias}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        enc = ocr_modules.Encoder(d, torch.bfloat16)
    finally:
        for k, v in saved.items():
            if v is None:
                del os.environ[k]
            else:
                os.environ[k] = v
    g = torch.Generator().manual_seed(seed)
    for name, p in list(enc.named_parameters()):
        *path, leaf = name.split(".")
        owner = enc
        for part in path:
            owner = getattr(owner, part)
        shape = list(p.shape)
        t = torch.randn(shape, generator=g)
        if "norm" in name and leaf == "weight":
            t = 1.0 + 0.1 * t
        elif len(shape) >= 2 and "rel_pos" not in name and "pos_embed" not in name and "position" not in name:
            fan_in = 1
            for s in shape[1:]:
                fan_in *= s
            t = t / fan_in ** 0.5
        elif "rel_pos" in name:
            t = 0.5 * t
        else:
            t = 0.1 * t
        setattr(owner, leaf, torch.nn.Parameter(t.to(torch.bfloat16), requires_grad=False))
    return torch.jit.script(enc.eval()).to(DEVICE)


def enc_dims(preset):
    d = dims(preset)
    d["sam_eps"] = 1e-6
    d["clip_eps"] = 1e-5
    return d


def configs():
    tiny = enc_dims(PRESETS["tiny"])  # head_dim 16: windows take the folded rel-pos path too
    mid = enc_dims(dict(PRESETS["tiny"], sam_width=128, sam_heads=2, sam_mlp_hidden=256))  # head_dim 64 (real)
    return [("tiny_hd16", tiny), ("hd64", mid)]


DEVICE = "cpu"


def run(enc, pixels):
    pixels = pixels.to(DEVICE)
    with torch.no_grad():
        out = enc.stages(pixels)
        out = enc.stages(pixels)  # the profiling executor's second run: the optimised graph
    return out


def exactness():
    torch.manual_seed(0)
    for label, d in configs():
        old = build(d, True, 1)
        variants = [("", build(d, False, 1, fold_v=True)), (" bias=add", build(d, False, 1, bias="add")),
                    (" bias=contig", build(d, False, 1, bias="contig")),
                    (" bias=gemm", build(d, False, 1, bias="gemm")), (" fold_v", build(d, False, 1, fold_v=True))]
        for side, n in [(640, 2), (1024, 1)]:
            pixels = torch.randn(n, 3, side, side)
            a = run(old, pixels)
            for name, new in variants:
                b = run(new, pixels)
                for what, x, y in zip(["sam", "clip", "proj"], a, b):
                    same = (x.shape == y.shape and x.dtype == y.dtype and
                            torch.equal(x.view(torch.int16), y.view(torch.int16)))
                    diff = (x.float() - y.float()).abs().max().item() if x.shape == y.shape else float("inf")
                    # fold_v: CUDA only (cuDNN takes d_v != d_qk); on CPU the module keeps v padded,
                    # so every variant must give the legacy bits on either device.
                    check(f"{label}{name} {side} {what} bit-identical", same, f"max |diff| {diff}")
        # Deterministic: the same call twice gives the same bits.
        pixels = torch.randn(1, 3, 1024, 1024)
        for name, new in variants:
            check(f"{label}{name} deterministic", torch.equal(run(new, pixels)[2], run(new, pixels)[2]))


def profile(d):
    """Every aten op the scripted encoder dispatches (TorchDispatchMode sees below TorchScript and
    the composite ops): count and bytes written, views excluded. CPU ops map ~1:1 to GPU kernels
    here, except the elementwise chains the GPU's TorchScript fuser merges (both versions alike)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    def nbytes(t):
        return t.numel() * t.element_size() if isinstance(t, torch.Tensor) else 0

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.stats = {}

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            schema = func._schema
            rets = schema.returns
            if rets and all(r.alias_info is not None and not r.alias_info.is_write for r in rets):
                return out  # a view
            if func.__name__.split(".")[0] in ("empty", "empty_like", "new_empty", "empty_strided", "_unsafe_view"):
                return out  # no kernel: an allocation, or a view in all but name
            written = 0
            if "out" in kwargs:
                written = nbytes(kwargs["out"])
            elif schema.is_mutable:
                written = nbytes(args[0])
            else:
                for t in (out if isinstance(out, (tuple, list)) else [out]):
                    written += nbytes(t)
            name = func.__name__
            c, b = self.stats.get(name, (0, 0))
            self.stats[name] = (c + 1, b + written)
            return out

    rows = {}
    tiles = torch.randn(2, 3, 640, 640)
    glob = torch.randn(1, 3, 1024, 1024)
    for legacy in (True, False):
        enc = build(d, legacy, 1)
        run(enc, tiles)
        run(enc, glob)
        with torch.no_grad(), Count() as cnt:
            enc.stages(tiles)
            enc.stages(glob)
        rows["legacy" if legacy else "new"] = cnt.stats
    names = sorted(set(rows["legacy"]) | set(rows["new"]),
                   key=lambda n: -max(rows["legacy"].get(n, (0, 0))[1], rows["new"].get(n, (0, 0))[1]))
    print(f"{'aten op (bytes written)':34s} {'legacy n':>9s} {'legacy MB':>10s} {'new n':>7s} {'new MB':>9s}")
    tot = {"legacy": [0, 0], "new": [0, 0]}
    for name in names:
        lc, lb = rows["legacy"].get(name, (0, 0))
        nc, nb = rows["new"].get(name, (0, 0))
        tot["legacy"][0] += lc
        tot["legacy"][1] += lb
        tot["new"][0] += nc
        tot["new"][1] += nb
        print(f"{name:34s} {lc:9d} {lb / 1e6:10.1f} {nc:7d} {nb / 1e6:9.1f}")
    (lc, lb), (nc, nb) = tot["legacy"], tot["new"]
    print(f"{'total':34s} {lc:9d} {lb / 1e6:10.1f} {nc:7d} {nb / 1e6:9.1f}")


def bench(args):
    """GPU A/B of every variant in one process (the env switches are read when a module is built):
    the real SAM-B + CLIP-L widths, random weights, one stages() call on the tiles and one on the
    global views per iteration, synchronised wall time, and bit-identity against the legacy code."""
    d = enc_dims(PRESETS[args.preset])
    dev = torch.device(DEVICE)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    g = torch.Generator().manual_seed(0)
    tiles = torch.randn(args.tiles, 3, 640, 640, generator=g).to(dev)
    glob = torch.randn(args.globals, 3, 1024, 1024, generator=g).to(dev)
    variants = [("legacy", True, False, ""), ("new", False, False, ""), ("new bias=contig", False, False, "contig"),
                ("new bias=gemm", False, False, "gemm"), ("new fold_v", False, True, ""),
                ("new fold_v bias=gemm", False, True, "gemm")]
    ref = None
    for name, legacy, fold_v, bias in variants:
        enc = build(d, legacy, 1, fold_v=fold_v, bias=bias)
        with torch.no_grad():
            for _ in range(3):
                outs = [enc.stages(tiles), enc.stages(glob)]
            sync()
            t0 = time.perf_counter()
            for _ in range(args.reps):
                enc.stages(tiles)
                enc.stages(glob)
            sync()
        ms = (time.perf_counter() - t0) * 1e3 / args.reps
        flat = [t for o in outs for t in o]
        if ref is None:
            ref = flat
        same = all(torch.equal(x, y) for x, y in zip(ref, flat))
        diff = max((x.float() - y.float()).abs().max().item() for x, y in zip(ref, flat))
        print(f"{name:24s} {ms:9.2f} ms/iter  bit-identical to legacy: {same} (max |diff| {diff:.3g})", flush=True)
        del enc, outs
        if dev.type == "cuda":
            torch.cuda.empty_cache()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", action="store_true", help="print the op table (full SAM-B widths)")
    ap.add_argument("--depth", type=int, default=12)
    ap.add_argument("--clip-layers", type=int, default=24)
    ap.add_argument("--device", default="cpu", help="cuda: the same checks on the GPU's kernels")
    ap.add_argument("--bench", action="store_true", help="time every variant (needs --device cuda)")
    ap.add_argument("--tiles", type=int, default=96)
    ap.add_argument("--globals", type=int, default=16)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--preset", default="full", help="bench widths: full (real) or tiny (a smoke run)")
    args = ap.parse_args()
    global DEVICE
    DEVICE = args.device
    if args.bench:
        bench(args)
        return
    torch.set_num_threads(min(2, torch.get_num_threads()))
    if args.profile:
        full = enc_dims(PRESETS["full"])
        full["sam_depth"] = args.depth
        full["sam_global_blocks"] = [i for i in full["sam_global_blocks"] if i < args.depth]
        full["clip_layers"] = args.clip_layers
        profile(full)
        return
    exactness()
    check.finish()


if __name__ == "__main__":
    main()
