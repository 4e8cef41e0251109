#!/usr/bin/env python3
"""Where the GPU time goes: kernel tables of the exported modules (dev tool, GPU machine).

    tests/bench/profile_gpu.py OPS_LIB MODEL_DIR OUT_DIR [--only decode1,decode256,prefill,attn,encoder,sam]

Loads encoder.pt / decoder.pt of an exported model (export.py) with our custom ops and writes
OUT_DIR/profile.txt: per-kernel CUDA time of a batch-1 and a batch-256 decoding step (eager, with
their CUDA-graph replay times), of a prefill of 16 prompts of 913 tokens, of an encoder batch of Gundam views, and timings of candidate
attention backends for the decoder and for SAM's rel-pos attention.
"""
import argparse
import json
import math
import time

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

P = print
LOG = []


def log(*a):
    s = " ".join(str(x) for x in a)
    LOG.append(s)
    P(s, flush=True)


def cuda_ms(fn, iters=20, warm=3):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    e0.record()
    for _ in range(iters):
        fn()
    e1.record()
    torch.cuda.synchronize()
    return e0.elapsed_time(e1) / iters


def graph_ms(fn, iters=50):
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    return cuda_ms(g.replay, iters)


def kernel_table(fn, steps, title, rows=40):
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            fn()
        torch.cuda.synchronize()
    evs = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    agg = {}
    for e in evs:
        a = agg.setdefault(e.name, [0, 0.0])
        a[0] += 1
        a[1] += e.device_time_total if hasattr(e, "device_time_total") else e.cuda_time_total
    total = sum(v[1] for v in agg.values())
    log(f"\n== {title}: {sum(v[0] for v in agg.values()) / steps:.0f} kernels/step, "
        f"{total / steps / 1000:.3f} ms kernel time/step")
    for name, (n, t) in sorted(agg.items(), key=lambda kv: -kv[1][1])[:rows]:
        log(f"  {t / steps / 1000:8.4f} ms {n / steps:6.1f}x  {name[:150]}")


def decode_setup(dec, d, B, K, dev, dt, spread):
    n_layers, n_heads = d["n_layers"], d["n_heads"]
    hd = d["hidden"] // n_heads
    cache = torch.randn(n_layers, 2, B, K, n_heads, hd, device=dev, dtype=dt) * 0.5
    if spread:
        pos = torch.randint(K // 2, K - 1, (B, 1), device=dev)
    else:
        pos = torch.full((B, 1), K - 24, device=dev, dtype=torch.long)
    ids = torch.randint(0, 1000, (B, 1), device=dev)
    slots = torch.arange(B, device=dev)
    last = torch.zeros(B, dtype=torch.long, device=dev)

    def step():
        h = dec.embed(ids)
        return dec.forward(h, pos, cache, slots, K, last, False)[0]
    return step, cache, pos


def decode_profile(dec, d, B, K, dev, dt, spread):
    with torch.no_grad():
        step, cache, pos = decode_setup(dec, d, B, K, dev, dt, spread)
        eager = cuda_ms(step, 10)
        g = graph_ms(step)
        kv_read = float((pos + 1).sum()) * d["n_layers"] * 2 * d["hidden"] * 2
        log(f"\n#### decode B={B} K={K}: eager {eager:.3f} ms/step, graph {g:.3f} ms/step "
            f"({B / g * 1000:.0f} tok/s); exact KV bytes {kv_read / 1e9:.2f} GB "
            f"(K-bucket {B * K * d['n_layers'] * 2 * d['hidden'] * 2 / 1e9:.2f} GB)")
        kernel_table(step, 5, f"decode B={B} K={K} eager kernels")
        del cache
        torch.cuda.empty_cache()


def prefill_profile(dec, d, B, T, dev, dt):
    """Prefill of B prompts of T tokens (the engine's admission group), kernel table."""
    with torch.no_grad():
        cache = torch.zeros(d["n_layers"], 2, B, T, d["n_heads"], d["hidden"] // d["n_heads"], device=dev, dtype=dt)
        h = torch.randn(B, T, d["hidden"], device=dev, dtype=dt)
        pos = torch.arange(T, device=dev).unsqueeze(0).expand(B, T).contiguous()
        slots = torch.arange(B, device=dev)
        last = torch.full((B,), T - 1, device=dev, dtype=torch.long)

        def run():
            return dec.forward(h, pos, cache, slots, T, last, False)[0]
        ms = cuda_ms(run, 5, 2)
        log(f"\n#### prefill B={B} T={T}: {ms:.2f} ms = {B * T / ms * 1000:.0f} tokens/s")
        kernel_table(run, 2, f"prefill B={B} T={T} kernels", rows=30)
        del cache
        torch.cuda.empty_cache()


def attn_candidates(d, dev, dt):
    n_heads = d["n_heads"]
    hd = d["hidden"] // n_heads
    for B, K in [(1, 1024), (1, 2048), (64, 2048), (256, 2048)]:
        with torch.no_grad():
            kc = torch.randn(B, K, n_heads, hd, device=dev, dtype=dt)
            vc = torch.randn(B, K, n_heads, hd, device=dev, dtype=dt)
            q = torch.randn(B, 1, n_heads, hd, device=dev, dtype=dt)
            lens = torch.randint(K // 2, K, (B,), device=dev, dtype=torch.int32)
            mask = torch.arange(K, device=dev).view(1, 1, 1, K) < lens.view(B, 1, 1, 1)

            def sdpa():
                return F.scaled_dot_product_attention(q.transpose(1, 2), kc.transpose(1, 2), vc.transpose(1, 2),
                                                      attn_mask=mask)
            cu_q = torch.arange(B + 1, device=dev, dtype=torch.int32)
            cu_k = torch.arange(B + 1, device=dev, dtype=torch.int32) * K
            kf = kc.view(B * K, n_heads, hd)
            vf = vc.view(B * K, n_heads, hd)
            qf = q.view(B, n_heads, hd)

            def flash():
                return torch.ops.aten._flash_attention_forward(qf, kf, vf, cu_q, cu_k, 1, K, 0.0, False, False,
                                                               seqused_k=lens)[0]

            def eff():
                return torch.ops.aten._efficient_attention_forward(q, kc, vc, None, None, None, 1, K, 0.0, 0, False,
                                                                   seqlen_k=lens)[0]
            ref = sdpa().transpose(1, 2).reshape(B, n_heads, hd).float()
            line = f"attn B={B} K={K}: sdpa+mask {cuda_ms(sdpa):.4f} ms"
            for name, fn in [("flash varlen seqused_k", flash), ("efficient seqlen_k", eff)]:
                try:
                    o = fn().reshape(B, n_heads, hd).float()
                    err = (o - ref).abs().max().item()
                    line += f"; {name} {cuda_ms(fn):.4f} ms (max err {err:.2e})"
                except Exception as e:  # noqa: BLE001
                    line += f"; {name} failed: {str(e).splitlines()[0][:160]}"
            bytes_ = float(lens.sum()) * n_heads * hd * 2 * 2
            line += f"; exact bytes at 4.3 TB/s {bytes_ / 4.3e12 * 1e3:.4f} ms"
            log(line)


def sam_attention_candidates(d, dev, dt):
    nh = d["sam_heads"]
    hd = d["sam_width"] // nh
    for label, nb, g in [("global 1024 x16", 16, 64), ("global 640 x96", 96, 40), ("window 14 x(96*9)", 96 * 9, 14)]:
        with torch.no_grad():
            n = g * g
            q = torch.randn(nb, nh, n, hd, device=dev, dtype=dt)
            k = torch.randn(nb, nh, n, hd, device=dev, dtype=dt)
            v = torch.randn(nb, nh, n, hd, device=dev, dtype=dt)
            rh = torch.randn(nb, nh, g, g, g, device=dev, dtype=dt) * 0.1  # [.., qh, qw, kh]
            rw = torch.randn(nb, nh, g, g, g, device=dev, dtype=dt) * 0.1  # [.., qh, qw, kw]

            def bias_full():
                return (rh[..., :, None] + rw[..., None, :]).reshape(nb, nh, n, n)

            def current():
                return F.scaled_dot_product_attention(q, k, v, attn_mask=bias_full())
            ref = current().float()
            res = f"SAM {label} (n={n}): current {cuda_ms(current, 5):.3f} ms"
            bias = bias_full()

            def sdpa_only():
                return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
            res += f", of which attention {cuda_ms(sdpa_only, 5):.3f} ms"

            def cudnn():
                return torch.ops.aten._scaled_dot_product_cudnn_attention(q, k, v, bias, False)[0]
            # Decomposed rel-pos folded into the dot product: q' = [q/sqrt(hd), rel_h, rel_w],
            # k' = [k, onehot(row), onehot(col)], scale 1; v zero-padded to q''s width.
            ext = hd + 2 * g
            ext_p = (ext + 7) // 8 * 8
            rows = torch.arange(n, device=dev) // g
            cols = torch.arange(n, device=dev) % g
            onehot = torch.zeros(n, ext_p - hd, device=dev, dtype=dt)
            onehot[torch.arange(n, device=dev), rows] = 1
            onehot[torch.arange(n, device=dev), g + cols] = 1

            def augmented():
                qa = torch.cat([q * (1.0 / math.sqrt(hd)), rh.reshape(nb, nh, n, g), rw.reshape(nb, nh, n, g),
                                q.new_zeros(nb, nh, n, ext_p - ext)], -1)
                ka = torch.cat([k, onehot.expand(nb, nh, n, ext_p - hd)], -1)
                va = F.pad(v, [0, ext_p - hd])
                return F.scaled_dot_product_attention(qa, ka, va, scale=1.0)[..., :hd]

            def flash_nobias():
                return F.scaled_dot_product_attention(q, k, v)
            for name, fn in [("cudnn+bias", cudnn), (f"augmented flash (d={ext_p})", augmented),
                             ("flash no bias (lower bound)", flash_nobias)]:
                try:
                    o = fn().float()
                    err = (o - ref).abs().max().item() if "lower" not in name else float("nan")
                    res += f"; {name} {cuda_ms(fn, 5):.3f} ms (err {err:.2e})"
                except Exception as e:  # noqa: BLE001
                    res += f"; {name} failed: {str(e).splitlines()[0][:160]}"
            log(res)
            del q, k, v, rh, rw, bias
            torch.cuda.empty_cache()


def encoder_profile(enc, dev, dt, pages):
    with torch.no_grad():
        tiles = torch.randn(6 * pages, 3, 640, 640, device=dev)
        globs = torch.randn(pages, 3, 1024, 1024, device=dev)

        def run():
            enc.forward(tiles)
            enc.forward(globs)
        ms = cuda_ms(run, 3, 1)
        log(f"\n#### encoder gundam x{pages}: {ms:.1f} ms = {pages / ms * 1000:.1f} pages/s "
            f"(tiles {cuda_ms(lambda: enc.forward(tiles), 3, 1):.1f} ms, "
            f"globals {cuda_ms(lambda: enc.forward(globs), 3, 1):.1f} ms)")
        kernel_table(run, 1, f"encoder gundam x{pages} kernels", rows=45)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ops_lib")
    ap.add_argument("model_dir")
    ap.add_argument("out_dir")
    ap.add_argument("--only", default="decode1,decode256,attn,sam,encoder")
    a = ap.parse_args()
    torch.ops.load_library(a.ops_lib)
    d = json.load(open(f"{a.model_dir}/manifest.json"))["dims"]
    dev, dt = "cuda", torch.bfloat16
    log(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, dims hidden={d['hidden']} heads={d['n_heads']}")
    only = set(a.only.split(","))
    t0 = time.time()
    try:
        if only & {"decode1", "decode256", "prefill"}:
            dec = torch.jit.load(f"{a.model_dir}/decoder.pt", map_location=dev)
            if "decode1" in only:
                decode_profile(dec, d, 1, 1024, dev, dt, False)
            if "decode256" in only:
                decode_profile(dec, d, 256, 2048, dev, dt, True)
            if "prefill" in only:
                prefill_profile(dec, d, 16, 913, dev, dt)
            del dec
            torch.cuda.empty_cache()
        if "attn" in only:
            attn_candidates(d, dev, dt)
        if "sam" in only:
            sam_attention_candidates(d, dev, dt)
        if "encoder" in only:
            enc = torch.jit.load(f"{a.model_dir}/encoder.pt", map_location=dev)
            encoder_profile(enc, dev, dt, 16)
    finally:
        log(f"\nprofile took {time.time() - t0:.0f} s")
        with open(f"{a.out_dir}/profile.txt", "w") as f:
            f.write("\n".join(LOG) + "\n")


if __name__ == "__main__":
    main()
