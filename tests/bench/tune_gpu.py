#!/usr/bin/env python3
"""Tuning timings of our CUDA ops at the shapes of the 256-page throughput run (dev tool, GPU machine).

    tests/bench/tune_gpu.py OPS_LIB [--only attn,moe] [--chunks 0,32,64,128,256]

attn: ocr::decode_attention on the real decoder's heads (10 x 128, bf16) at B = 256 with positions
uniform in [900, 1900) (a Gundam page's 913 prompt tokens plus up to 1000 generated), kv_len 2048,
and at B = 1 / 16 / 64; one process per OCR_DECODE_ATTENTION_CHUNK value (the op reads it once);
device time per call from a CUDA graph of 12 calls on 12 layers (HBM, not L2), with GB/s on the
keys really read. moe: ocr::moe_experts at the real layer (64 experts of 896, hidden 1280, top-6)
for 256 tokens (a decoding step) and 14608 tokens (a prefill of 16 prompts), per forced tile path.
Prints one JSON line per measurement.
"""
import argparse
import json
import os
import subprocess
import sys

import torch


def graph_us(fn, reps=12, tries=5):
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            fn(0)
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for i in range(reps):
            fn(i)
    g.replay()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(tries):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        g.replay()
        e1.record()
        e1.synchronize()
        best = min(best, e0.elapsed_time(e1) * 1e3 / reps)
    return best


def attn(chunk_label):
    dev, dt = "cuda", torch.bfloat16
    layers, heads, hd = 12, 10, 128
    g = torch.Generator(device="cpu").manual_seed(0)
    for B, lo, hi, K in [(256, 900, 1900, 2048), (64, 900, 1900, 2048), (16, 900, 1900, 2048), (1, 1000, 1001, 1024)]:
        cache = torch.empty(layers, 2, B, K, heads, hd, device=dev, dtype=dt).normal_(0, 0.5)
        q = torch.randn(B, 1, heads, hd, device=dev, dtype=dt)
        slots = torch.randperm(B, generator=g).to(dev)
        pos = torch.randint(lo, hi, (B, 1), generator=g).to(dev)

        def fn(i):
            return torch.ops.ocr.decode_attention(q, cache, i % layers, slots, pos, K)
        us = graph_us(fn)
        real = float((pos + 1).sum()) * heads * hd * 2 * 2
        print(json.dumps({"op": "decode_attention", "chunk": chunk_label, "B": B, "positions": [lo, hi], "kv_len": K,
                          "us": round(us, 2), "GBps": round(real / us / 1e3, 1)}), flush=True)
        del cache
        torch.cuda.empty_cache()


def moe():
    dev, dt = "cuda", torch.bfloat16
    hidden, inter, n_exp, top_k = 1280, 896, 64, 6
    layers = 4  # distinct weights per call: the timing reads HBM
    wgu = [torch.randn(n_exp, 2 * inter, hidden, device=dev, dtype=dt) * 0.02 for _ in range(layers)]
    wd = [torch.randn(n_exp, hidden, inter, device=dev, dtype=dt) * 0.02 for _ in range(layers)]
    for n in (256, 1024, 14608):
        x = torch.randn(n, hidden, device=dev, dtype=dt)
        logits = torch.randn(n, n_exp, device=dev)
        w, ids = torch.topk(torch.softmax(logits, -1), top_k, -1)
        ids = ids.int()
        for path in ("auto", "small", "medium", "large64", "large"):
            if path == "auto":
                os.environ.pop("OCR_MOE_GEMM", None)
            else:
                os.environ["OCR_MOE_GEMM"] = path

            def fn(i):
                return torch.ops.ocr.moe_experts(x, w, ids, wgu[i % layers], wd[i % layers])
            us = graph_us(fn, reps=layers * 2)
            used = int(ids.unique().numel())
            wbytes = used * 3 * inter * hidden * 2
            flops = 2 * n * top_k * 3 * inter * hidden
            print(json.dumps({"op": "moe_experts", "tokens": n, "path": path, "us": round(us, 1),
                              "weight_GBps": round(wbytes / us / 1e3, 1), "TFLOPs": round(flops / us / 1e6, 1)}),
                  flush=True)
        os.environ.pop("OCR_MOE_GEMM", None)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("lib")
    ap.add_argument("--only", default="attn,moe")
    ap.add_argument("--chunks", default="0,32,64,128,256")
    ap.add_argument("--child-attn", default=None)
    a = ap.parse_args()
    torch.ops.load_library(a.lib)
    if a.child_attn is not None:
        attn(a.child_attn)
        return
    only = set(a.only.split(","))
    if "attn" in only:
        for c in a.chunks.split(","):
            env = dict(os.environ)
            if c != "0":
                env["OCR_DECODE_ATTENTION_CHUNK"] = c
            else:
                env.pop("OCR_DECODE_ATTENTION_CHUNK", None)
            subprocess.run([sys.executable, __file__, a.lib, "--child-attn", c if c != "0" else "auto"], env=env,
                           check=False)
    if "moe" in only:
        moe()


if __name__ == "__main__":
    main()
