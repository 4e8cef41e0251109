#!/usr/bin/env python3
"""The fused decode-step ops on CUDA against their CPU references (ocr::rms_norm, add_rms_norm,
rope_kv_write, moe_route; schemas in src/kernels/ops.cpp).

    python3 tests/kernels/test_decode_sweep.py LIB [--json OUT] [--no-timing] [--self-test-cpu]

Each case runs the op on the CPU and on CUDA with the same inputs and prints one line:
  rms_norm      fp32/bf16 x rows {1, 3, 64, 4099} x dim {7, 64, 1024, 1025, 1280, 4096} x layouts
                (contiguous, column slice, misaligned slice, transposed leading dims):
                within 1e-5 (fp32) or 2e-2 (bf16, ~2 ulps) abs + rel; only the fp32 summation order differs;
  add_rms_norm  the same inputs plus a residual: the sum bit-identical, the norm within the same tolerance;
  rope_kv_write fp32/bf16 x (n_b, n_t, n_heads, head_dim) from decode to prefill, odd half head_dim,
                misaligned qkv, cos [n_b, n_t, head_dim] and [n_b, n_t, 1, head_dim]: q_rot and the whole
                KV cache bit-identical (every rounding is the reference's);
  moe_route     fp32/bf16 x tokens {1, 3, 5, 64, 1023, 1024, 1027, 16384} x (hidden, experts, top_k) incl.
                the real 1280/64/6 and planted exact ties: weights within 2e-5 abs + 1e-4 rel; the CPU
                scores of the CUDA picks equal those of the CPU picks within the same tolerance (a swap
                only between near-equal scores); ids distinct, in range, equal weights in ascending id order.
Every case also runs twice on CUDA (bit-identical) and under torch.cuda.set_sync_debug_mode("error")
(no host sync). Then each op is captured in a CUDA graph (torch.cuda.graph) and replayed: replay ==
eager bit for bit. The CUDA registrations' reference path (ocr_ops_use_reference_kernels(1)) is also
checked on a few cases. Last: times each op at the decode shapes against the module's ATen ops (not an
assertion). The last line is "decode_sweep: N/M passed"; exit 1 on any failure. Without a CUDA device:
exits 77 (ctest: skipped). --self-test-cpu compares the CPU op with the Python module formulas
(scripts/ocr_modules.py) instead, to check the harness on a machine without a GPU.
"""
import argparse
import contextlib
import ctypes
import json
import sys
import time

import torch
import torch.nn.functional as F

EPS = 1e-6
TOL = {torch.float32: (1e-5, 1e-5), torch.bfloat16: (2e-2, 2e-2)}  # (atol, rtol) of the norms
ROUTE_ATOL, ROUTE_RTOL = 2e-5, 1e-4  # router probabilities: fp32 logits in another summation order
DTYPES = (torch.float32, torch.bfloat16)
SHORT = {torch.float32: "fp32", torch.bfloat16: "bf16"}


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


# ---- the Python module formulas (scripts/ocr_modules.py), the CPU side of --self-test-cpu ------

def module_rms_norm(x, w, eps):
    xf = x.to(torch.float32)
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return w * xf.to(x.dtype)


def module_add_rms_norm(x, r, w, eps):
    s = x + r
    return s, module_rms_norm(s, w, eps)


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def module_rope_kv_write(qkv, cos, sin, kv_cache, layer, slots, positions):
    n_b, n_t, _ = qkv.shape
    head_dim = cos.shape[-1]
    n_heads = qkv.shape[-1] // (3 * head_dim)
    q, k, v = (t.reshape(n_b, n_t, n_heads, head_dim) for t in qkv.split(n_heads * head_dim, -1))
    c, s = cos.reshape(n_b, n_t, 1, head_dim), sin.reshape(n_b, n_t, 1, head_dim)
    q = q * c + rotate_half(q) * s
    k = k * c + rotate_half(k) * s
    rows = slots.view(n_b, 1).expand(n_b, n_t)
    kv_cache[layer, 0].index_put_((rows, positions), k)
    kv_cache[layer, 1].index_put_((rows, positions), v)
    return q


def module_moe_route(x, router, top_k, renormalize):
    logits = F.linear(x.to(torch.float32), router.to(torch.float32))
    return torch.ops.ocr.moe_topk_softmax(logits, top_k, renormalize)


# ---- the ops on one device ------------------------------------------------------------------------

def on(device, tensors):
    return [t.clone().to(device) if isinstance(t, torch.Tensor) else t for t in tensors]


def cpu(outs):
    return [o.cpu() for o in outs]


def call(op, args, device, module=False, check_sync=False):
    """Runs op on copies of args on device (under sync debug mode "error" when check_sync); returns
    its outputs (and the mutated KV cache) on the CPU."""
    a = on(device, args)
    with no_sync(check_sync):
        if op == "rms_norm":
            out = [module_rms_norm(*a) if module else torch.ops.ocr.rms_norm(*a)]
        elif op == "add_rms_norm":
            out = list(module_add_rms_norm(*a) if module else torch.ops.ocr.add_rms_norm(*a))
        elif op == "rope_kv_write":
            out = [module_rope_kv_write(*a) if module else torch.ops.ocr.rope_kv_write(*a), a[3]]
        else:
            out = list(module_moe_route(*a) if module else torch.ops.ocr.moe_route(*a))
    return cpu(out)


# ---- cases ----------------------------------------------------------------------------------------

def norm_input(g, rows, dim, dtype, layout):
    if layout == "contiguous":
        x = torch.randn(rows, dim, generator=g)
    elif layout == "slice":            # row stride dim + 8, 16-byte aligned when dim is
        x = torch.randn(rows, dim + 8, generator=g)[:, 8:]
    elif layout == "misaligned":       # starts one element in: the scalar path
        x = torch.randn(rows, dim + 1, generator=g)[:, 1:]
    else:                              # transposed leading dims [2, rows, dim] -> [rows, 2, dim]
        x = torch.randn(2, rows, dim, generator=g).transpose(0, 1)
    return (x * 2).to(dtype)


def norm_cases(g, quick):
    for dtype in DTYPES:
        for rows, dim, layout in [(1, 1280, "contiguous"), (1, 64, "contiguous"), (3, 7, "contiguous"),
                                  (3, 1024, "contiguous"), (3, 1025, "contiguous"), (64, 1280, "contiguous"),
                                  (64, 4096, "contiguous"), (4099, 1280, "contiguous"), (4099, 64, "contiguous"),
                                  (3, 1280, "slice"), (64, 64, "slice"), (3, 1280, "misaligned"),
                                  (64, 96, "misaligned"), (3, 1280, "transposed"), (5, 64, "transposed")]:
            if quick and rows > 64:
                continue
            x = norm_input(g, rows, dim, dtype, layout)
            r = (torch.randn(x.shape, generator=g) * 3).to(dtype)
            w = (torch.randn(dim, generator=g) * 0.5 + 1).to(dtype)
            yield f"{SHORT[dtype]} rows={rows} dim={dim} {layout}", dtype, x, r, w


def rope_cases(g, quick):
    shapes = [(1, 1, 10, 128), (256, 1, 10, 128), (1, 700, 10, 128), (3, 5, 4, 6), (2, 3, 1, 2), (4, 1, 16, 64),
              (2, 17, 3, 32)]
    for dtype in DTYPES:
        for n_b, n_t, n_heads, head_dim in shapes:
            if quick and n_b * n_t > 64:
                continue
            for unsqueezed in (True, False):
                for misaligned in ((False, True) if (n_b, n_t) == (2, 17) else (False,)):
                    width = n_heads * head_dim
                    qkv = torch.randn(n_b * n_t * 3 * width + 1, generator=g).to(dtype)
                    qkv = qkv[1:] if misaligned else qkv[:-1]
                    qkv = qkv.view(n_b, n_t, 3 * width)
                    angles = torch.rand(n_b, n_t, head_dim // 2, generator=g) * 100
                    emb = torch.cat([angles, angles], -1)
                    if unsqueezed:
                        emb = emb.unsqueeze(2)
                    n_layers, n_slots, max_len = 2, n_b + 3, n_t + 15
                    cache = torch.randn(n_layers, 2, n_slots, max_len, n_heads, head_dim, generator=g).to(dtype)
                    slots = torch.randperm(n_slots, generator=g)[:n_b].contiguous()
                    positions = torch.stack([torch.randperm(max_len, generator=g)[:n_t] for _ in range(n_b)])
                    layer = (n_b + n_t) % n_layers
                    name = (f"{SHORT[dtype]} n_b={n_b} n_t={n_t} heads={n_heads} head_dim={head_dim} "
                            f"cos={'[b,t,1,d]' if unsqueezed else '[b,t,d]'}{' misaligned' if misaligned else ''}")
                    yield name, [qkv, emb.cos().to(dtype), emb.sin().to(dtype), cache, layer, slots, positions]


def route_cases(g, quick):
    configs = [(1280, 64, 6), (64, 8, 2), (33, 7, 7), (1280, 1, 1), (64, 256, 8), (40, 64, 64)]
    tokens = (1, 3, 5, 64, 1023, 1024, 1027, 16384)
    for dtype in DTYPES:
        for hidden, n_experts, top_k in configs:
            for n in tokens:
                if (quick and n > 64) or (n == 16384 and hidden != 1280):
                    continue
                for renormalize in ((False, True) if n in (3, 1024) or hidden == 1280 else (False,)):
                    for ties in ((False, True) if n in (5, 1027) and n_experts >= 4 else (False,)):
                        x = torch.randn(n, hidden, generator=g).to(dtype)
                        router = (torch.randn(n_experts, hidden, generator=g) * 0.05).to(dtype)
                        if ties:  # experts 1 and 3 identical: exact ties, the lower id must come first
                            router[3] = router[1]
                            x[::2] = router[1].float().sign().to(dtype)  # make them the winners on even rows
                        name = (f"{SHORT[dtype]} tokens={n} hidden={hidden} experts={n_experts} top_k={top_k}"
                                f"{' renorm' if renormalize else ''}{' ties' if ties else ''}")
                        yield name, [x, router, top_k, renormalize]


# ---- comparisons --------------------------------------------------------------------------------

def compare_norm(res, name, want, got, dtype, add):
    atol, rtol = TOL[dtype]
    op = "add_rms_norm" if add else "rms_norm"
    if add:
        same = torch.equal(got[0], want[0]) and got[0].is_contiguous()
        res.check(f"{op} {name} sum", same, "" if same else f"max diff {close(got[0], want[0], 0, 0)[1]}")
    ok, diff, exact = close(got[-1], want[-1], atol, rtol)
    ok = ok and got[-1].is_contiguous()
    res.note(f"{op} {SHORT[dtype]} max abs diff", diff)
    res.check(f"{op} {name}", ok, f"max abs diff {diff:.3g}, {100 * exact:.2f}% bit-identical")


def compare_rope(res, name, want, got):
    same_q = torch.equal(got[0], want[0]) and got[0].is_contiguous()
    same_cache = torch.equal(got[1], want[1])
    detail = "" if same_q and same_cache else f"q_rot equal {same_q}, kv_cache equal {same_cache}"
    res.check(f"rope_kv_write {name}", same_q and same_cache, detail)


def compare_route(res, name, args, want, got):
    x, router, top_k, _ = args
    w_want, id_want = want
    w_got, id_got = got
    ok_shape = w_got.shape == w_want.shape and id_got.dtype == torch.int32 and w_got.dtype == torch.float32
    if not ok_shape:
        res.check(f"moe_route {name}", False, f"outputs {w_got.dtype} {tuple(w_got.shape)}, {id_got.dtype}")
        return
    ok_w, diff, _ = close(w_got, w_want, ROUTE_ATOL, ROUTE_RTOL)
    n_experts = router.shape[0]
    ids = id_got.long()
    in_range = bool(((ids >= 0) & (ids < n_experts)).all())
    distinct = in_range and bool((ids.sort(-1).values.diff(dim=-1) != 0).all()) if top_k > 1 else in_range
    # The CPU's scores of the experts each side picked agree rank by rank: a swap only between near-ties.
    scores = torch.softmax(F.linear(x.float(), router.float()), -1)
    picks_ok = in_range and close(scores.gather(1, ids.clamp(0, n_experts - 1)), scores.gather(1, id_want.long()),
                                  ROUTE_ATOL, ROUTE_RTOL)[0]
    # Equal weights are listed in ascending expert order.
    ties = w_got[:, 1:] == w_got[:, :-1]
    tie_order = bool((ids[:, 1:] > ids[:, :-1])[ties].all())
    swapped = int((id_got != id_want).any(-1).sum())
    res.note("moe_route max abs weight diff", diff)
    ok = ok_w and in_range and distinct and picks_ok and tie_order
    res.check(f"moe_route {name}", ok,
              f"max weight diff {diff:.3g}, rows with other ids {swapped}, distinct {distinct}, "
              f"picks {picks_ok}, tie order {tie_order} ({int(ties.sum())} ties)")


# ---- the sweep ----------------------------------------------------------------------------------

def sweep(res, dev, g, quick):
    self_test = dev == "cpu"

    def both(op, args):
        want = call(op, args, "cpu", module=self_test)
        if self_test:
            return want, call(op, args, dev)
        try:
            got = call(op, args, dev, check_sync=True)
        except RuntimeError as e:  # a host sync, or an argument check
            res.check(f"{op} no host sync", False, str(e).splitlines()[0])
            got = call(op, args, dev)
        again = call(op, args, dev)
        res.check(f"{op} deterministic", all(torch.equal(a, b) for a, b in zip(got, again)))
        return want, got

    for name, dtype, x, r, w in norm_cases(g, quick):
        want, got = both("rms_norm", [x, w, EPS])
        compare_norm(res, name, want, got, dtype, add=False)
        want, got = both("add_rms_norm", [x, r, w, EPS])
        compare_norm(res, name, want, got, dtype, add=True)
    for name, args in rope_cases(g, quick):
        want, got = both("rope_kv_write", args)
        compare_rope(res, name, want, got)
    for name, args in route_cases(g, quick):
        want, got = both("moe_route", args)
        compare_route(res, name, args, want, got)
    # The engine passes narrowed views of its cache (first B slots, first K positions): strided.
    for dtype in DTYPES:
        for n_b, n_t in [(4, 1), (2, 9)]:
            big = torch.randn(3, 2, 7, 40, 10, 128, generator=g).to(dtype)
            qkv = torch.randn(n_b, n_t, 3 * 1280, generator=g).to(dtype)
            angles = torch.rand(n_b, n_t, 64, generator=g) * 100
            emb = torch.cat([angles, angles], -1)
            slots = torch.arange(n_b)
            positions = torch.stack([torch.randperm(24, generator=g)[:n_t] for _ in range(n_b)])
            outs = []
            for device in ("cpu", dev):
                cache_all = big.clone().to(device)
                view = cache_all.narrow(2, 0, 5).narrow(3, 0, 24)
                a = [t.to(device) for t in (qkv, emb.cos().to(dtype), emb.sin().to(dtype))]
                q = torch.ops.ocr.rope_kv_write(a[0], a[1], a[2], view, 1, slots.to(device), positions.to(device))
                outs.append((q.cpu(), cache_all.cpu()))
            ok = torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
            res.check(f"rope_kv_write {SHORT[dtype]} n_b={n_b} n_t={n_t} narrowed cache view", ok,
                      "" if ok else "q or cache differ (strided cache)")


def decode_args(g, dtype):
    """The real decoder's decode-step shapes (batch 1): hidden 1280, 10 heads of 128, 64 experts top-6."""
    x = torch.randn(1, 1, 1280, generator=g).to(dtype)
    r = torch.randn(1, 1, 1280, generator=g).to(dtype)
    w = (torch.randn(1280, generator=g) * 0.5 + 1).to(dtype)
    qkv = torch.randn(1, 1, 3 * 1280, generator=g).to(dtype)
    emb = torch.rand(1, 1, 1, 64, generator=g).repeat(1, 1, 1, 2) * 100
    cache = torch.zeros(12, 2, 4, 64, 10, 128, dtype=dtype)
    slots = torch.tensor([2])
    positions = torch.tensor([[17]])
    router = (torch.randn(64, 1280, generator=g) * 0.05).to(dtype)
    return {
        "rms_norm": [x, w, EPS],
        "add_rms_norm": [x, r, w, EPS],
        "rope_kv_write": [qkv, emb.cos().to(dtype), emb.sin().to(dtype), cache, 5, slots, positions],
        "moe_route": [x.view(1, 1280), router, 6, False],
    }


def run_op(op, a):
    if op == "rope_kv_write":
        return [getattr(torch.ops.ocr, op)(*a), a[3]]
    out = getattr(torch.ops.ocr, op)(*a)
    return list(out) if isinstance(out, (tuple, list)) else [out]


def graph_checks(res, g):
    """Each op captured in a CUDA graph and replayed (inputs reset first) == eager, bit for bit."""
    for dtype in DTYPES:
        cases = decode_args(g, dtype)
        # Larger batches too: prefill-sized norm and router, a 64-slot decode step of rope_kv_write.
        cases["moe_route 4096"] = [torch.randn(4096, 1280, generator=g).to(dtype), cases["moe_route"][1], 6, True]
        cases["rms_norm 512x1280"] = [torch.randn(512, 1280, generator=g).to(dtype), cases["rms_norm"][1], EPS]
        for key, args in cases.items():
            op = key.split()[0]
            base = on("cuda", args)
            eager_in = [t.clone() if isinstance(t, torch.Tensor) else t for t in base]
            eager = [t.clone() for t in run_op(op, eager_in)]
            live = [t.clone() if isinstance(t, torch.Tensor) else t for t in base]
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up outside the capture, as torch.cuda.graph asks
                run_op(op, live)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(graph):
                    outs = run_op(op, live)
                for t, b in zip(live, base):  # reset the inputs (the KV cache) before the replay
                    if isinstance(t, torch.Tensor):
                        t.copy_(b)
                graph.replay()
                torch.cuda.synchronize()
                ok = all(torch.equal(o, e) for o, e in zip(outs, eager))
                detail = "" if ok else "replay differs from eager"
            except RuntimeError as e:
                ok, detail = False, f"capture failed: {e}"
            res.check(f"graph {key} {SHORT[dtype]}", ok, detail)


def reference_path_checks(res, lib, g):
    """ocr_ops_use_reference_kernels(1): the CUDA registrations run the plain-ATen references."""
    try:
        switch = ctypes.CDLL(lib).ocr_ops_use_reference_kernels
    except (OSError, AttributeError) as e:
        res.check("reference path", False, f"no ocr_ops_use_reference_kernels in {lib}: {e}")
        return
    switch(1)
    try:
        for dtype in DTYPES:
            for op, args in decode_args(g, dtype).items():
                want, got = call(op, args, "cpu"), call(op, args, "cuda")
                if op == "rope_kv_write":
                    compare_rope(res, f"reference path {SHORT[dtype]}", want, got)
                elif op == "moe_route":
                    compare_route(res, f"reference path {SHORT[dtype]}", args, want, got)
                else:
                    compare_norm(res, f"reference path {SHORT[dtype]}", want, got, dtype, add=op == "add_rms_norm")
    finally:
        switch(0)


def timing(g):
    """Device µs per call at the decode shapes, fused op vs the module's ATen ops (CUDA-graph replay)."""
    out = {}
    modules = {"rms_norm": module_rms_norm, "add_rms_norm": module_add_rms_norm,
               "rope_kv_write": module_rope_kv_write, "moe_route": module_moe_route}
    for op, args in decode_args(g, torch.bfloat16).items():
        a = on("cuda", args)
        for label, fn in (("fused", getattr(torch.ops.ocr, op)), ("aten", modules[op])):
            for _ in range(3):
                fn(*a)
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                for _ in range(20):
                    fn(*a)
            graph.replay()
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(20):
                graph.replay()
            torch.cuda.synchronize()
            out[f"{op}_{label}_us"] = round(1e6 * (time.perf_counter() - t0) / 400, 2)
        print(f"time {op}: fused {out[f'{op}_fused_us']} us, module ATen ops {out[f'{op}_aten_us']} us", flush=True)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("lib")
    ap.add_argument("--json")
    ap.add_argument("--quick", action="store_true", help="small cases only")
    ap.add_argument("--no-timing", action="store_true")
    ap.add_argument("--self-test-cpu", action="store_true")
    a = ap.parse_args()
    torch.ops.load_library(a.lib)
    dev = "cpu" if a.self_test_cpu else "cuda"
    if dev == "cuda" and not torch.cuda.is_available():
        print("decode_sweep: skipped (no CUDA device)")
        return 77
    g = torch.Generator().manual_seed(13)
    res = Results()
    t0 = time.time()
    sweep(res, dev, g, a.quick)
    result = {"device": dev}
    if dev == "cuda":
        graph_checks(res, g)
        reference_path_checks(res, a.lib, g)
        if not a.no_timing:
            try:
                result["timing"] = timing(g)
            except RuntimeError as e:  # informational only
                print("timing failed:", e)
    result.update(passed=res.passed, failed=res.failed, worst={k: float(f"{v:.3g}") for k, v in res.worst.items()},
                  failures=res.failures[:50], seconds=round(time.time() - t0, 1))
    print("decode_sweep:", json.dumps(result))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)
    print(f"decode_sweep: {res.passed}/{res.passed + res.failed} passed")
    return 1 if res.failed else 0


if __name__ == "__main__":
    sys.exit(main())
