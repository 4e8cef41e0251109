#!/usr/bin/env python3
"""ocr::decode_attention (split-K flash-decoding, src/kernels/cuda/decode_attention.cu) on CUDA against
its CPU reference (schema in src/kernels/ops.cpp).

    python3 tests/kernels/test_attention_sweep.py LIB [--json OUT] [--quick] [--no-timing] [--self-test-cpu]
        [--impls v1,v2] [--timing-only]

Cases: B in {1, 3, 17, 256} x kv_len in {1, 7, 256, 1024, 2048} x (n_heads, head_dim) in {(10, 128), (4, 16),
(2, 64)} x fp32/bf16; slots a random subset in random order, max_len = kv_len + 9 and positions per row a mix
of 0..3, uniform below kv_len and kv_len - 1 .. max_len - 1 (clipped to kv_len - 1). Each case runs the op on
the CPU and on CUDA with the same inputs; tolerance: fp32 1e-5 abs + 1e-5 rel (only the fp32 summation order
and exp vs exp2 differ); bf16 2e-2 abs + 1e-2 rel: both sides round an fp32 value once, so they differ by at most
one bf16 ulp (2^-8..2^-7 relative; values here are ~1). Every case also runs twice on CUDA (bit-identical) and
under torch.cuda.set_sync_debug_mode("error") (no host sync). Then the op is captured in a CUDA graph and
replayed (== eager bit for bit), also after new positions and slots are copied into the captured inputs (the
continuous-batching step); the CUDA registration's reference path (ocr_ops_use_reference_kernels(1)) is checked
on a few cases. Last (not an assertion): device time of the op vs F.scaled_dot_product_attention with the
decoder's additive mask over the padded keys (the decoder's code before the op), at (B=1, K=1024, p=1000),
(B=16, 64 and 256, K=2048), p_b uniform in [K/2, K) for those three, bf16, 10 heads of 128, with the
achieved GB/s on the real bytes (sum over rows of (p_b + 1) * H * D * 2 (K and V) * 2 bytes); small caches are
spread over several layers (one per call) so that the timing reads HBM, not L2.
On CUDA all of the above runs once per implementation in --impls (default v1,v2: the environment variable
OCR_DECODE_ATTENTION_IMPL is set before each pass; case names start with [impl], timing keys with impl_); v2 also
runs extra head shapes (fp32 D = 256, D = 80, an odd number of heads, D = 8) and forced tuning knobs
(OCR_DECODE_ATTENTION_V2_HEADS / _STREAMS / _CHUNK / _SORT).
The last line is "attention_sweep: N/M passed"; exit 1 on any failure. Without a CUDA device: exits 77 (ctest:
skipped). --self-test-cpu compares the CPU op with the decoder's formula (SDPA with the mask on the gathered
keys) instead, to check the harness on a machine without a GPU (cases above 2^24 elements skipped).
"""
import argparse
import contextlib
import ctypes
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

TOL = {torch.float32: (1e-5, 1e-5), torch.bfloat16: (2e-2, 1e-2)}  # (atol, rtol)
DTYPES = (torch.float32, torch.bfloat16)
SHORT = {torch.float32: "fp32", torch.bfloat16: "bf16"}
BATCHES = (1, 3, 17, 256)
KV_LENS = (1, 7, 256, 1024, 2048)
HEADS = ((10, 128), (4, 16), (2, 64))
HEAVY = 1 << 24  # B * kv_len * H * D above which --quick and --self-test-cpu skip a case
MAX_LEN_PAD = 9
IMPL_ENV = "OCR_DECODE_ATTENTION_IMPL"
V2_KNOBS = ("OCR_DECODE_ATTENTION_V2_HEADS", "OCR_DECODE_ATTENTION_V2_STREAMS", "OCR_DECODE_ATTENTION_V2_CHUNK",
            "OCR_DECODE_ATTENTION_V2_SORT")
# v2 only: (n_heads, head_dim) x (B, kv_len) beyond HEADS, and forced knob settings (heads, streams, chunk, sort).
EXTRA_HEADS = ((3, 256), (5, 80), (7, 8))
EXTRA_SIZES = ((1, 1024), (5, 300), (64, 257))
KNOB_SETTINGS = (("3", "3", "40", "-1"), ("10", "1", "0", "0"), ("10", "3", "0", "-1"), ("1", "8", "2048", "1"),
                 ("2", "2", "16", "0"))


class Results:
    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.failures = []
        self.worst = {}

    def check(self, name, ok, detail=""):
        print(f"{'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}", flush=True)
        if ok:
            self.passed += 1
        else:
            self.failed += 1
            self.failures.append(f"{name}: {detail}")

    def note(self, key, value):
        self.worst[key] = max(self.worst.get(key, 0.0), value)


def close(got, want, atol, rtol):
    """(ok, max abs diff, fraction of bit-identical elements)."""
    if got.shape != want.shape or got.dtype != want.dtype:
        return False, float("inf"), 0.0
    if want.numel() == 0:
        return True, 0.0, 1.0
    g, w = got.double(), want.double()
    diff = (g - w).abs()
    ok = bool((diff <= atol + rtol * w.abs()).all()) and bool(torch.isfinite(g).all())
    return ok, float(diff.max()), float((got == want).double().mean())


@contextlib.contextmanager
def no_sync(enabled):
    if enabled:
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        if enabled:
            torch.cuda.set_sync_debug_mode(0)


def op(q, kv_cache, layer, slots, positions, kv_len):
    return torch.ops.ocr.decode_attention(q, kv_cache, layer, slots, positions, kv_len)


def module_attention(q, kv_cache, layer, slots, positions, kv_len):
    """The decoder before the op (scripts/ocr_modules.py): gathered keys, additive 0/-inf mask, SDPA;
    in fp32 on fp32 copies, rounded once to q's dtype."""
    n_b = q.shape[0]
    keys = kv_cache[layer, 0].index_select(0, slots)[:, :kv_len].float().transpose(1, 2)
    values = kv_cache[layer, 1].index_select(0, slots)[:, :kv_len].float().transpose(1, 2)
    future = torch.arange(kv_len).view(1, 1, 1, kv_len) > positions.view(n_b, 1, 1, 1)
    mask = torch.zeros(future.shape).masked_fill_(future, float("-inf"))
    out = F.scaled_dot_product_attention(q.float().transpose(1, 2), keys, values, attn_mask=mask)
    return out.transpose(1, 2).to(q.dtype)


# ---- cases ----------------------------------------------------------------------------------------

def random_positions(g, n_b, kv_len, max_len, device="cpu"):
    """A mix per row: 0..3, uniform in [0, kv_len), and kv_len - 1 .. max_len - 1 (clipped by the op)."""
    kind = torch.randint(0, 4, (n_b,), generator=g)
    tiny = torch.randint(0, 4, (n_b,), generator=g)
    below = (torch.rand(n_b, generator=g) * kv_len).long()
    above = kv_len - 1 + torch.randint(0, max_len - kv_len + 1, (n_b,), generator=g)
    p = torch.where(kind == 0, tiny, torch.where(kind == 3, above, below)).clamp(0, max_len - 1)
    return p.view(n_b, 1).to(device)


def make_case(g, n_b, kv_len, n_heads, head_dim, dtype, device):
    """Inputs on device (the cache drawn there: the large ones are GBs)."""
    max_len = kv_len + MAX_LEN_PAD
    n_slots = n_b + 3
    big = n_b * kv_len * n_heads * head_dim > HEAVY
    n_layers = 1 if big else 2
    layer = n_layers - 1
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=g))
    dg = torch.Generator(device=device).manual_seed(seed)
    cache = torch.randn(n_layers, 2, n_slots, max_len, n_heads, head_dim, generator=dg, device=device).to(dtype)
    q = (torch.randn(n_b, 1, n_heads, head_dim, generator=dg, device=device) * 2).to(dtype)
    slots = torch.randperm(n_slots, generator=g)[:n_b].contiguous().to(device)
    positions = random_positions(g, n_b, kv_len, max_len, device)
    return [q, cache, layer, slots, positions, kv_len]


def cases(g, quick, self_test):
    for dtype in DTYPES:
        for n_heads, head_dim in HEADS:
            for kv_len in KV_LENS:
                for n_b in BATCHES:
                    if (quick or self_test) and n_b * kv_len * n_heads * head_dim > HEAVY:
                        continue
                    name = f"{SHORT[dtype]} B={n_b} kv_len={kv_len} H={n_heads} D={head_dim}"
                    yield name, dtype, (n_b, kv_len, n_heads, head_dim, dtype)


def compare(res, name, want, got, dtype):
    atol, rtol = TOL[dtype]
    ok, diff, exact = close(got, want, atol, rtol)
    ok = ok and got.is_contiguous()
    res.note(f"{SHORT[dtype]} max abs diff", diff)
    res.check(f"decode_attention {name}", ok, f"max abs diff {diff:.3g}, {100 * exact:.2f}% bit-identical")


def cpu_args(args):
    return [a.cpu() if isinstance(a, torch.Tensor) else a for a in args]


def sweep(res, dev, g, quick, prefix=""):
    self_test = dev == "cpu"
    synced, differing, n_cases = [], [], 0
    for name, dtype, spec in cases(g, quick, self_test):
        name = prefix + name
        args = make_case(g, *spec, device=dev)
        n_cases += 1
        if self_test:
            want = module_attention(*args)
            got = op(*args)
        else:
            want = op(*cpu_args(args))
            try:
                with no_sync(True):
                    got = op(*args)
            except RuntimeError as e:  # a host sync, or an argument check
                synced.append(f"{name}: {str(e).splitlines()[0]}")
                got = op(*args)
            if not torch.equal(got, op(*args)):
                differing.append(name)
            got = got.cpu()
        compare(res, name, want, got, dtype)
        del args
    # The engine passes narrowed views of its cache (the first B slots, the first K positions).
    for dtype in DTYPES:
        for n_b, kv_len in [(4, 300), (1, 1000)]:
            q, cache, layer, slots, positions, _ = make_case(g, n_b + 2, kv_len + 40, 10, 128, dtype, dev)
            q = q[:n_b].contiguous()
            view = cache.narrow(2, 0, n_b + 1).narrow(3, 0, kv_len + 8)
            slots = torch.randperm(n_b + 1, generator=g)[:n_b].to(dev)
            positions = random_positions(g, n_b, kv_len, kv_len + 8, dev)
            want = module_attention(*cpu_args([q, view, layer, slots, positions, kv_len]))
            got = op(q, view, layer, slots, positions, kv_len).cpu()
            compare(res, f"{prefix}{SHORT[dtype]} B={n_b} kv_len={kv_len} narrowed cache view", want, got, dtype)
    if not self_test:
        res.check(f"{prefix}no host sync ({n_cases} cases, sync debug mode 'error')", not synced, "; ".join(synced[:3]))
        res.check(f"{prefix}deterministic ({n_cases} cases, two runs bit-identical)", not differing,
                  ", ".join(differing[:5]))


def v2_extra_checks(res, g, prefix):
    """v2 only: more head shapes, and forced knob settings (partial head tiles, odd streams, chunks)."""
    for dtype in DTYPES:
        for n_heads, head_dim in EXTRA_HEADS:
            for n_b, kv_len in EXTRA_SIZES:
                args = make_case(g, n_b, kv_len, n_heads, head_dim, dtype, "cuda")
                name = f"{prefix}{SHORT[dtype]} B={n_b} kv_len={kv_len} H={n_heads} D={head_dim}"
                got = op(*args)
                res.check(f"deterministic {name}", torch.equal(got, op(*args)))
                compare(res, name, op(*cpu_args(args)), got.cpu(), dtype)
    saved = {name: os.environ.get(name) for name in V2_KNOBS}  # the caller's knobs, restored below
    for knobs in KNOB_SETTINGS:
        for name, value in zip(V2_KNOBS, knobs):
            os.environ[name] = value
        try:
            for dtype in DTYPES:
                for n_b, kv_len, n_heads, head_dim in ((3, 1024, 10, 128), (17, 300, 10, 128), (5, 77, 4, 16),
                                                       (2, 513, 3, 64)):
                    args = make_case(g, n_b, kv_len, n_heads, head_dim, dtype, "cuda")
                    compare(res, f"{prefix}knobs heads/streams/chunk/sort={'/'.join(knobs)} {SHORT[dtype]} B={n_b} "
                            f"kv_len={kv_len} H={n_heads} D={head_dim}", op(*cpu_args(args)), op(*args).cpu(), dtype)
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def graph_checks(res, g, prefix=""):
    """Captured once, replayed: == eager; then new positions / slots copied into the captured inputs."""
    for dtype in DTYPES:
        for n_b, kv_len, n_heads, head_dim in ((3, 1024, 10, 128), (1, 7, 10, 128), (256, 2048, 4, 16),
                                                (17, 256, 2, 64)):
            args = make_case(g, n_b, kv_len, n_heads, head_dim, dtype, "cuda")
            name = f"{prefix}{SHORT[dtype]} B={n_b} kv_len={kv_len} H={n_heads} D={head_dim}"
            eager = op(*args).clone()
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up outside the capture, as torch.cuda.graph asks
                op(*args)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(graph):
                    out = op(*args)
                graph.replay()
                torch.cuda.synchronize()
                ok = torch.equal(out, eager)
                res.check(f"graph replay {name}", ok, "" if ok else "replay differs from eager")
                # Next step: other lengths and slots in the same buffers.
                q, cache, layer, slots, positions, _ = args
                max_len = cache.shape[3]
                positions.copy_(random_positions(g, n_b, kv_len, max_len, "cuda"))
                slots.copy_(torch.randperm(cache.shape[2], generator=g)[:n_b].cuda())
                graph.replay()
                torch.cuda.synchronize()
                want = op(*args)
                ok = torch.equal(out, want)
                res.check(f"graph replay new positions/slots {name}", ok, "" if ok else "replay differs from eager")
            except RuntimeError as e:
                res.check(f"graph capture {name}", False, f"capture failed: {e}")


def reference_path_checks(res, lib, g):
    """ocr_ops_use_reference_kernels(1): the CUDA registration runs the plain-ATen reference."""
    try:
        switch = ctypes.CDLL(lib).ocr_ops_use_reference_kernels
    except (OSError, AttributeError) as e:
        res.check("reference path", False, f"no ocr_ops_use_reference_kernels in {lib}: {e}")
        return
    switch(1)
    try:
        for dtype in DTYPES:
            for n_b, kv_len, n_heads, head_dim in ((3, 256, 10, 128), (17, 7, 4, 16)):
                args = make_case(g, n_b, kv_len, n_heads, head_dim, dtype, "cuda")
                compare(res, f"reference path {SHORT[dtype]} B={n_b} kv_len={kv_len} H={n_heads} D={head_dim}",
                        op(*cpu_args(args)), op(*args).cpu(), dtype)
    finally:
        switch(0)


def timing(g, impl="", with_sdpa=True):
    """Device time per call, the op vs SDPA with the decoder's additive mask (CUDA-graph replay)."""
    out = {}
    n_heads, head_dim, dtype = 10, 128, torch.bfloat16
    elt = torch.tensor([], dtype=dtype).element_size()
    for n_b, kv_len in ((1, 1024), (16, 2048), (64, 2048), (256, 2048)):
        if n_b == 1:
            positions = torch.full((1, 1), 1000, dtype=torch.long)
        else:  # uniform in [K/2, K)
            positions = torch.randint(kv_len // 2, kv_len, (n_b, 1), generator=g)
        per_layer = 2 * n_b * kv_len * n_heads * head_dim * elt
        n_layers = max(1, min(64, math.ceil((256 << 20) / per_layer)))  # > L2 in all
        cache = torch.randn(n_layers, 2, n_b, kv_len, n_heads, head_dim, device="cuda", dtype=dtype)
        q = torch.randn(n_b, 1, n_heads, head_dim, device="cuda", dtype=dtype)
        slots = torch.arange(n_b, device="cuda")
        positions = positions.cuda()
        real_bytes = int(((positions.clamp(max=kv_len - 1) + 1).sum()) * n_heads * head_dim * 2 * elt)
        # The decoder's mask and SDPA call (all slots of the cache: attended in place, no gather).
        future = torch.arange(kv_len, device="cuda").view(1, 1, 1, kv_len) > positions.view(n_b, 1, 1, 1)
        mask = torch.zeros(future.shape, dtype=dtype, device="cuda").masked_fill_(future, float("-inf"))

        def fused(layer):
            return op(q, cache, layer, slots, positions, kv_len)

        def sdpa(layer):
            keys = cache[layer, 0][:, :kv_len].transpose(1, 2)
            values = cache[layer, 1][:, :kv_len].transpose(1, 2)
            return F.scaled_dot_product_attention(q.transpose(1, 2), keys, values, attn_mask=mask)

        key = f"{impl}_B{n_b}_K{kv_len}" if impl else f"B{n_b}_K{kv_len}"
        line = [f"time{' ' + impl if impl else ''} B={n_b} K={kv_len} ({real_bytes / 1e6:.1f} MB real K+V):"]
        for label, fn in (("fused", fused), ("sdpa_mask", sdpa))[:2 if with_sdpa else 1]:
            calls = max(n_layers, 8)
            for i in range(3):
                fn(i % n_layers)
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                for i in range(calls):
                    fn(i % n_layers)
            graph.replay()
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            reps = 10
            start.record()
            for _ in range(reps):
                graph.replay()
            end.record()
            torch.cuda.synchronize()
            us = 1000 * start.elapsed_time(end) / (reps * calls)
            out[f"{key}_{label}_us"] = round(us, 2)
            out[f"{key}_{label}_GBps"] = round(real_bytes / (us * 1e3), 1)
            line.append(f"{label} {us:.2f} us ({real_bytes / (us * 1e3):.0f} GB/s)")
            del graph
        print(" ".join(line), flush=True)
        del cache, mask, future
        torch.cuda.empty_cache()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("lib")
    ap.add_argument("--json")
    ap.add_argument("--quick", action="store_true", help=f"cases up to {HEAVY} elements only")
    ap.add_argument("--no-timing", action="store_true")
    ap.add_argument("--self-test-cpu", action="store_true")
    ap.add_argument("--impls", default="v1,v2", help=f"values of {IMPL_ENV} to test on CUDA, in order")
    ap.add_argument("--timing-only", action="store_true", help="CUDA: no checks, the timing section only")
    a = ap.parse_args()
    torch.ops.load_library(a.lib)
    dev = "cpu" if a.self_test_cpu else "cuda"
    if dev == "cuda" and not torch.cuda.is_available():
        print("attention_sweep: skipped (no CUDA device)")
        return 77
    res = Results()
    t0 = time.time()
    result = {"device": dev}
    if dev == "cpu":
        sweep(res, dev, torch.Generator().manual_seed(17), a.quick)
    else:
        result["gpu"] = torch.cuda.get_device_name()
        impls = [i for i in a.impls.split(",") if i]
        g = torch.Generator().manual_seed(17)
        saved = os.environ.get(IMPL_ENV)
        try:
            for impl in [] if a.timing_only else impls:
                os.environ[IMPL_ENV] = impl
                prefix = f"[{impl}] "
                g = torch.Generator().manual_seed(17)  # the same cases for every impl
                sweep(res, dev, g, a.quick, prefix)
                if impl != "v1":
                    v2_extra_checks(res, g, prefix)
                graph_checks(res, g, prefix)
            if not a.timing_only:
                reference_path_checks(res, a.lib, g)
            if not a.no_timing:
                result["timing"] = {}
                for n, impl in enumerate(impls):
                    os.environ[IMPL_ENV] = impl
                    try:
                        # The same positions for every impl.
                        result["timing"].update(timing(torch.Generator().manual_seed(18), impl, with_sdpa=n == 0))
                    except RuntimeError as e:  # informational only
                        print(f"timing {impl} failed:", e)
        finally:
            if saved is None:
                os.environ.pop(IMPL_ENV, None)
            else:
                os.environ[IMPL_ENV] = saved
    result.update(passed=res.passed, failed=res.failed, worst={k: float(f"{v:.3g}") for k, v in res.worst.items()},
                  failures=res.failures[:50], seconds=round(time.time() - t0, 1))
    print("attention_sweep:", json.dumps(result))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)
    print(f"attention_sweep: {res.passed}/{res.passed + res.failed} passed")
    return 1 if res.failed else 0


if __name__ == "__main__":
    sys.exit(main())
