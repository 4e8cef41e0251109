#!/usr/bin/env python3
"""GPU sweep of the CUDA MoE ops (ocr::moe_topk_softmax, ocr::moe_experts) against their CPU references.

    OCR_OPS_LIB=build-cuda/libocr_ops.so python3 tests/kernels/test_moe_sweep.py [LIB] [--json OUT]
        [--quick] [--no-timing] [--only SECTIONS] [--self-test-cpu]

Checks (tolerances and their reasons: tests/kernels/README.md):
  paths   every GEMM path forced (OCR_MOE_GEMM, see GEMM_PATHS) against the CPU reference; both
          alignment kernels (OCR_MOE_ALIGN=single|multi) bit-identical; ocr::moe_route with each
          kernel forced (OCR_MOE_ROUTE=warp|mma) within test_decode_sweep.py's tolerances;
  router  ids identical to the CPU reference (a differing rank is accepted only as a near-tie swap:
          the CPU scores of both picks within 1e-6 relative), weights within 1e-6, bit-identical reruns;
  experts max|gpu - ref| / max|ref| <= 1e-5 (float32) or 2e-2 (bfloat16), bit-identical reruns;
  both    no host synchronisation (torch.cuda.set_sync_debug_mode("error")) and CUDA-graph capture
          with bit-identical replays.
Then times moe_experts at the real model's sizes (not an assertion) and writes everything into one
JSON line. Without a CUDA device: prints "moe_sweep: skipped (no CUDA device)" and exits 77 (ctest: skipped).
--self-test-cpu runs the harness with the CPU op on both sides (small sizes) to check the script.
"""
import argparse
import contextlib
import json
import math
import os
import sys
import time
import traceback

import torch
import torch.nn.functional as F

TOL_F32 = 1e-5          # relative to max |ref|
TOL_BF16 = 2e-2         # relative to max |ref|: ~5 bf16 ulps (2^-8 each), see README
TOL_ROUTER_W = 1e-6     # absolute, on probabilities
NEAR_TIE_RTOL = 1e-6    # two CPU scores this close may legitimately swap ranks
MAX_CPU_ROWS = 257      # the CPU reference checks at most this many tokens per case (sampled)
HBM_BYTES_PER_S = 4.3e12  # H200 device-to-device copy rate measured on the GPU machine

# The real decoder (DeepSeek-OCR): hidden 1280, inter 896, 64 routed experts, top-6.
REAL = dict(hidden=1280, inter=896, n_experts=64, top_k=6)


class Results:
    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.failures = []

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
        else:
            self.failed += 1
            self.failures.append(f"{name}: {detail}")
            print(f"FAIL {name}: {detail}", flush=True)
        return ok


def find_lib(arg):
    candidates = [arg, os.environ.get("OCR_OPS_LIB")]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for build in ("build-cuda", "build-ops", "build"):
        candidates.append(os.path.join(root, build, "libocr_ops.so"))
    for c in candidates:
        if c and os.path.exists(c):
            return c
    raise SystemExit("moe_sweep: libocr_ops.so not found: pass its path or set OCR_OPS_LIB")


@contextlib.contextmanager
def no_host_sync(enabled):
    """Any synchronising CUDA call inside raises (the ops must be capturable in CUDA graphs)."""
    if not enabled:
        yield
        return
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


def router_op(logits, top_k, renorm):
    return torch.ops.ocr.moe_topk_softmax(logits, top_k, renorm)


def experts_op(x, w, ids, wgu, wd):
    return torch.ops.ocr.moe_experts(x, w, ids, wgu, wd)


def sample_rows(n_tokens, gen):
    """All rows up to MAX_CPU_ROWS, else a sorted random sample that keeps the first and last."""
    if n_tokens <= MAX_CPU_ROWS:
        return torch.arange(n_tokens)
    inner = torch.randperm(n_tokens - 2, generator=gen)[: MAX_CPU_ROWS - 2] + 1
    return torch.cat([torch.tensor([0, n_tokens - 1]), inner]).sort().values


# ---- router ------------------------------------------------------------------------------------
def router_case(res, dev, sync_check, n_tokens, n_experts, top_k, renorm, gen, ties, stats):
    name = f"router T={n_tokens} E={n_experts} k={top_k} renorm={int(renorm)} ties={int(ties)}"
    logits = torch.randn(n_tokens, n_experts, generator=gen) * 2.0
    if ties:
        rows = torch.arange(n_tokens)
        src = torch.randint(0, n_experts, (n_tokens,), generator=gen)
        logits[rows, (src + 1) % n_experts] = logits[rows, src]      # one exact tie per row
        logits[rows, (src + 3) % n_experts] = logits[rows, src]      # and a triple
        logits[0] = 0.25                                             # all equal: ids 0..k-1
    ref_w, ref_id = router_op(logits, top_k, renorm)
    try:
        d_logits = logits.to(dev)
        with no_host_sync(sync_check):
            w1, id1 = router_op(d_logits, top_k, renorm)
            w2, id2 = router_op(d_logits, top_k, renorm)
        w1, id1, w2, id2 = w1.cpu(), id1.cpu(), w2.cpu(), id2.cpu()
    except Exception as e:  # noqa: BLE001 - any failure of the op is a test failure
        return res.check(name, False, f"raised {type(e).__name__}: {e}")
    ok = res.check(name + " deterministic", torch.equal(w1, w2) and torch.equal(id1, id2), "reruns differ")
    ok &= res.check(name + " shape/dtype", id1.dtype == torch.int32 and w1.dtype == torch.float32
                    and id1.shape == (n_tokens, top_k), f"{id1.dtype} {w1.dtype} {tuple(id1.shape)}")
    sorted_ids = id1.sort(1).values
    ok &= res.check(name + " distinct ids", bool((sorted_ids[:, 1:] != sorted_ids[:, :-1]).all())
                    and int(id1.min()) >= 0 and int(id1.max()) < n_experts, "repeated or out-of-range id")
    near = 0
    ids_ok = torch.equal(id1, ref_id)
    if not ids_ok:
        scores = logits.softmax(-1)
        ids_ok = True
        for r in (id1 != ref_id).any(1).nonzero().flatten().tolist():
            s_gpu = scores[r, id1[r].long()]
            s_ref = scores[r, ref_id[r].long()]
            if not torch.allclose(s_gpu, s_ref, rtol=NEAR_TIE_RTOL, atol=0.0):
                ids_ok = False
            near += 1
    stats["near_tie_rows"] += near
    ok &= res.check(name + " ids", ids_ok, f"ids differ from the CPU reference beyond near-ties ({near} rows)")
    w_err = float((w1 - ref_w).abs().max()) if w1.numel() else 0.0
    stats["max_weight_err"] = max(stats["max_weight_err"], w_err)
    ok &= res.check(name + " weights", w_err <= TOL_ROUTER_W, f"max |w - ref| = {w_err:.3g}")
    stats["cases"] += 1
    return ok


def run_router_sweep(res, dev, sync_check, quick, gen):
    stats = {"cases": 0, "max_weight_err": 0.0, "near_tie_rows": 0}
    tokens = [1, 3, 64, 257] if quick else [1, 3, 64, 257, 4096]
    for n_tokens in tokens:
        for n_experts in (8, 64):
            for top_k in (1, 6):
                for renorm in (False, True):
                    router_case(res, dev, sync_check, n_tokens, n_experts, top_k, renorm, gen, False, stats)
            router_case(res, dev, sync_check, n_tokens, n_experts, 6, True, gen, True, stats)
    # Limits and odd sizes: k = n_experts, the 256-expert maximum, a non-power-of-two count.
    for n_experts, top_k in ((256, 256), (256, 8), (3, 3), (100, 7), (1, 1), (33, 32)):
        router_case(res, dev, sync_check, 67, n_experts, top_k, True, gen, True, stats)
        router_case(res, dev, sync_check, 67, n_experts, top_k, False, gen, False, stats)
    return stats


# ---- experts -----------------------------------------------------------------------------------
def make_expert_weights(n_experts, hidden, inter, dev, seed):
    g = torch.Generator(device=dev).manual_seed(seed)
    wgu = torch.randn(n_experts, 2 * inter, hidden, device=dev, generator=g) / math.sqrt(hidden)
    wd = torch.randn(n_experts, hidden, inter, device=dev, generator=g) / math.sqrt(inter)
    return wgu, wd


def experts_case(res, dev, sync_check, stats, name, x, w, ids, wgu, wd, wgu_cpu, wd_cpu, gen):
    dtype = x.dtype
    n_tokens = x.shape[0]
    try:
        with no_host_sync(sync_check):
            out1 = experts_op(x, w, ids, wgu, wd)
            out2 = experts_op(x, w, ids, wgu, wd)
        if dev != "cpu":
            torch.cuda.synchronize()
    except Exception as e:  # noqa: BLE001
        return res.check(name, False, f"raised {type(e).__name__}: {e}"), None
    ok = res.check(name + " deterministic", torch.equal(out1, out2), "reruns differ")
    ok &= res.check(name + " shape/dtype", out1.shape == x.shape and out1.dtype == dtype,
                    f"{tuple(out1.shape)} {out1.dtype}")
    rows = sample_rows(n_tokens, gen)
    rows_dev = rows.to(x.device)
    ref = experts_op(x.index_select(0, rows_dev).cpu(), w.index_select(0, rows_dev).cpu(),
                     ids.index_select(0, rows_dev).cpu(), wgu_cpu, wd_cpu).float()
    got = out1.index_select(0, rows_dev).cpu().float()
    scale = float(ref.abs().max()) or 1.0
    err = float((got - ref).abs().max()) / scale
    tol = TOL_F32 if dtype == torch.float32 else TOL_BF16
    key = "f32" if dtype == torch.float32 else "bf16"
    stats[f"max_rel_err_{key}"] = max(stats[f"max_rel_err_{key}"], err)
    if dtype == torch.bfloat16:
        stats["bf16_elems"] += got.numel()
        stats["bf16_elems_differing"] += int((got != ref).sum())
    ok &= res.check(name + " vs CPU", err <= tol and math.isfinite(err), f"max rel err {err:.3g} > {tol:g}")
    stats["cases"] += 1
    return ok, err


def run_experts_sweep(res, dev, sync_check, quick, gen):
    stats = {"cases": 0, "max_rel_err_f32": 0.0, "max_rel_err_bf16": 0.0, "bf16_elems": 0,
             "bf16_elems_differing": 0, "table": []}
    tokens = [1, 3, 64, 257] if quick else [1, 3, 64, 257, 4096]
    shapes = [(64, 48), (64, 45), (64, 40), (1280, 896), (1280, 897)]
    if quick:
        shapes = [(64, 48), (64, 45), (64, 40), (256, 176)]
    seed = 1
    for hidden, inter in shapes:
        for n_experts in (8, 64):
            seed += 1
            wgu32, wd32 = make_expert_weights(n_experts, hidden, inter, dev, seed)
            for dtype in (torch.bfloat16, torch.float32):
                wgu, wd = wgu32.to(dtype), wd32.to(dtype)
                wgu_cpu, wd_cpu = wgu.cpu(), wd.cpu()
                for top_k in (1, 6):
                    for n_tokens in tokens:
                        t0 = time.time()
                        x = torch.randn(n_tokens, hidden, generator=gen).to(dev, dtype)
                        logits = torch.randn(n_tokens, n_experts, generator=gen).to(dev)
                        w, ids = router_op(logits, top_k, top_k > 1)
                        name = (f"experts {str(dtype)[6:]} H={hidden} I={inter} E={n_experts} "
                                f"k={top_k} T={n_tokens}")
                        ok, err = experts_case(res, dev, sync_check, stats, name, x, w, ids, wgu, wd,
                                               wgu_cpu, wd_cpu, gen)
                        stats["table"].append([str(dtype)[6:], hidden, inter, n_experts, top_k, n_tokens,
                                               None if err is None else float(f"{err:.3g}"), bool(ok),
                                               round(time.time() - t0, 2)])
                del wgu_cpu, wd_cpu
    # Inputs the runtime may pass: int64 ids, non-contiguous hidden, odd hidden (SIMT path); the
    # 256-expert maximum with several 1024-slot chunks in the alignment.
    for dtype in (torch.bfloat16, torch.float32):
        wgu32, wd32 = make_expert_weights(256, 64, 48, dev, 97)
        wgu, wd = wgu32.to(dtype), wd32.to(dtype)
        x = torch.randn(300, 64, generator=gen).to(dev, dtype)
        w, ids = router_op(torch.randn(300, 256, generator=gen).to(dev), 8, True)
        experts_case(res, dev, sync_check, stats, f"experts {str(dtype)[6:]} 256 experts k=8", x, w, ids,
                     wgu, wd, wgu.cpu(), wd.cpu(), gen)
        wgu32, wd32 = make_expert_weights(8, 36, 20, dev, 99)
        wgu, wd = wgu32.to(dtype), wd32.to(dtype)
        x = torch.randn(70, 36, generator=gen).to(dev, dtype)
        w, ids = router_op(torch.randn(70, 8, generator=gen).to(dev), 3, False)
        experts_case(res, dev, sync_check, stats, f"experts {str(dtype)[6:]} odd hidden 36", x, w, ids,
                     wgu, wd, wgu.cpu(), wd.cpu(), gen)
        wgu32, wd32 = make_expert_weights(8, 64, 48, dev, 98)
        wgu, wd = wgu32.to(dtype), wd32.to(dtype)
        x_wide = torch.randn(33, 128, generator=gen).to(dev, dtype)
        w, ids = router_op(torch.randn(33, 8, generator=gen).to(dev), 2, False)
        experts_case(res, dev, sync_check, stats, f"experts {str(dtype)[6:]} non-contiguous hidden",
                     x_wide[:, ::2], w, ids, wgu, wd, wgu.cpu(), wd.cpu(), gen)
        experts_case(res, dev, sync_check, stats, f"experts {str(dtype)[6:]} int64 ids",
                     x_wide[:, :64].contiguous(), w, ids.long(), wgu, wd, wgu.cpu(), wd.cpu(), gen)
    return stats


GEMM_PATHS = ("small", "medium", "wide", "stream", "stream2", "large", "large64", "large128", "large128k64",
              "large256", "large256k64")


def run_forced_paths(res, dev, sync_check, gen):
    """Every GEMM path (the GEMM_PATHS tensor-core tiles, SIMT) on the same bf16 problems; both
    alignment kernels (OCR_MOE_ALIGN=single|multi) give bit-identical results."""
    stats = {"cases": 0, "max_rel_err_f32": 0.0, "max_rel_err_bf16": 0.0, "bf16_elems": 0,
             "bf16_elems_differing": 0}
    errs = {}
    for hidden, inter, n_experts, top_k, n_tokens in ((1280, 896, 64, 6, 257), (64, 40, 8, 6, 100),
                                                      (1280, 896, 64, 6, 4096)):
        wgu32, wd32 = make_expert_weights(n_experts, hidden, inter, dev, 7 + hidden)
        wgu, wd = wgu32.bfloat16(), wd32.bfloat16()
        wgu_cpu, wd_cpu = wgu.cpu(), wd.cpu()
        x = torch.randn(n_tokens, hidden, generator=gen).to(dev, torch.bfloat16)
        w, ids = router_op(torch.randn(n_tokens, n_experts, generator=gen).to(dev), top_k, False)
        for path in GEMM_PATHS + ("simt",):
            os.environ["OCR_MOE_GEMM"] = path
            try:
                _, err = experts_case(res, dev, sync_check, stats,
                                      f"path={path} H={hidden} I={inter} E={n_experts} k={top_k} T={n_tokens}",
                                      x, w, ids, wgu, wd, wgu_cpu, wd_cpu, gen)
                outs = {}
                for align in ("single", "multi"):
                    os.environ["OCR_MOE_ALIGN"] = align
                    with no_host_sync(sync_check):
                        outs[align] = experts_op(x, w, ids, wgu, wd)
                res.check(f"path={path} H={hidden} T={n_tokens} align single == multi",
                          torch.equal(outs["single"], outs["multi"]), "the two alignment kernels differ")
            except Exception as e:  # noqa: BLE001
                res.check(f"path={path} H={hidden} T={n_tokens} align", False, f"raised {type(e).__name__}: {e}")
            finally:
                os.environ.pop("OCR_MOE_GEMM", None)
                os.environ.pop("OCR_MOE_ALIGN", None)
            errs[f"{path} H={hidden} T={n_tokens}"] = err
    stats["errs"] = errs
    return stats


def run_route_paths(res, dev, sync_check, gen):
    """ocr::moe_route with each CUDA kernel forced (OCR_MOE_ROUTE=warp|mma) against the CPU reference,
    with the tolerances of tests/kernels/test_decode_sweep.py (fp32 logits in another summation order)."""
    stats = {"cases": 0, "max_weight_err": 0.0}
    atol, rtol = 2e-5, 1e-4
    for hidden, n_experts, top_k in ((1280, 64, 6), (64, 8, 2), (40, 64, 64), (1280, 1, 1)):
        for n_tokens in (1, 3, 65, 1027):
            x = torch.randn(n_tokens, hidden, generator=gen).bfloat16()
            router = (torch.randn(n_experts, hidden, generator=gen) * 0.05).bfloat16()
            if n_experts >= 4:  # experts 1 and 3 identical: exact ties on the even rows, lower id first
                router[3] = router[1]
                x[::2] = router[1].float().sign().bfloat16()
            ref_w, ref_id = torch.ops.ocr.moe_route(x, router, top_k, True)
            scores = torch.softmax(F.linear(x.float(), router.float()), -1)
            for kernel in ("warp", "mma"):
                name = f"route={kernel} T={n_tokens} H={hidden} E={n_experts} k={top_k}"
                os.environ["OCR_MOE_ROUTE"] = kernel
                try:
                    xd, rd = x.to(dev), router.to(dev)
                    with no_host_sync(sync_check):
                        w1, id1 = torch.ops.ocr.moe_route(xd, rd, top_k, True)
                        w2, id2 = torch.ops.ocr.moe_route(xd, rd, top_k, True)
                    w1, id1, w2, id2 = w1.cpu(), id1.cpu(), w2.cpu(), id2.cpu()
                except Exception as e:  # noqa: BLE001
                    res.check(name, False, f"raised {type(e).__name__}: {e}")
                    continue
                finally:
                    del os.environ["OCR_MOE_ROUTE"]
                res.check(name + " deterministic", torch.equal(w1, w2) and torch.equal(id1, id2), "reruns differ")
                err = float((w1 - ref_w).abs().max())
                stats["max_weight_err"] = max(stats["max_weight_err"], err)
                w_ok = bool(((w1 - ref_w).abs() <= atol + rtol * ref_w.abs()).all())
                ids = id1.long()
                in_range = bool(((ids >= 0) & (ids < n_experts)).all())
                picks = scores.gather(1, ids.clamp(0, n_experts - 1))
                want = scores.gather(1, ref_id.long())
                picks_ok = in_range and bool(((picks - want).abs() <= atol + rtol * want.abs()).all())
                ties = w1[:, 1:] == w1[:, :-1]
                tie_order = bool((ids[:, 1:] > ids[:, :-1])[ties].all())
                res.check(name, w_ok and picks_ok and tie_order,
                          f"max weight err {err:.3g}, picks {picks_ok}, tie order {tie_order}")
                stats["cases"] += 1
    return stats


def run_error_checks(res, dev):
    """Bad arguments raise a RuntimeError naming the op and quoting the offending values (the numbers
    too: a build that linked a private static libstdc++ printed messages without them, or crashed)."""
    x = torch.randn(4, 64, device=dev, dtype=torch.bfloat16)
    w, ids = router_op(torch.randn(4, 8, device=dev), 2, False)
    wgu = torch.randn(8, 96, 64, device=dev, dtype=torch.bfloat16)
    wd = torch.randn(8, 64, 48, device=dev, dtype=torch.bfloat16)
    if dev == "cpu":  # the CPU reference ops (--self-test-cpu): their own messages
        bad = {"w_down shape": ((x, w, ids, wgu, wd[:, :, :40]), "w_down [8, 64, 40]"),
               "topk shape": ((x, w[:3], ids[:3], wgu, wd), "got [3, 2]")}
    else:
        bad = {
            "weights on CPU": ((x, w, ids, wgu.cpu(), wd), "cpu"),
            "dtype mismatch": ((x, w, ids, wgu.float(), wd), "Float"),
            "float16 hidden": ((x.half(), w, ids, wgu.half(), wd.half()), "Half"),
            "w_down shape": ((x, w, ids, wgu, wd[:, :, :40]), "[8, 64, 40]"),
            "topk shape": ((x, w[:3], ids[:3], wgu, wd), "n_tokens = 4"),
        }
    for what, (args, quoted) in bad.items():
        try:
            experts_op(*args)
            res.check(f"error check: {what}", False, "no error raised")
        except RuntimeError as e:
            res.check(f"error check: {what}", "moe_experts" in str(e) and quoted in str(e),
                      f"unclear message (wanted the op's name and {quoted!r}): {e}")
    router_bad = {"float64 logits": ((torch.randn(3, 8, device=dev, dtype=torch.float64), 2, False), "Double"),
                  "top_k > n_experts": ((torch.randn(3, 8, device=dev), 9, False), "top_k 9 out of range for 8")}
    if dev != "cpu":  # the CPU reference takes any number of experts
        router_bad["257 experts"] = ((torch.randn(3, 257, device=dev), 2, False), "got 257")
    for what, (args, quoted) in router_bad.items():
        try:
            router_op(*args)
            res.check(f"error check: {what}", False, "no error raised")
        except RuntimeError as e:
            res.check(f"error check: {what}", "moe_topk_softmax" in str(e) and quoted in str(e),
                      f"unclear message (wanted the op's name and {quoted!r}): {e}")


def run_error_checks_isolated(res, dev, lib):
    """run_error_checks in a child process: a crash there (it happened: SIGSEGV while formatting a
    message) fails these checks by name instead of ending the sweep and losing the other sections."""
    import signal
    import subprocess
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), lib, "--errors-child"] +
                          (["--self-test-cpu"] if dev == "cpu" else []),
                          capture_output=True, text=True, timeout=300)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("errors-child ")), None)
    if proc.returncode == 0 and line:
        child = json.loads(line[len("errors-child "):])
        res.passed += child["passed"]
        for failure in child["failures"]:
            name, _, detail = failure.partition(": ")
            res.check(name, False, detail)
        return {"passed": child["passed"], "failed": len(child["failures"])}
    how = (f"signal {signal.Signals(-proc.returncode).name}" if proc.returncode < 0
           else f"exit code {proc.returncode}")
    res.check("error checks", False, f"the child process died ({how}); its stderr ends: {proc.stderr[-400:]}")
    return {"passed": 0, "failed": 1, "died": how}


def run_graph_checks(res, gen):
    """Router + experts captured in one CUDA graph; replays on new inputs equal eager bit for bit."""
    out = {}
    for dtype, n_tokens in ((torch.bfloat16, 8), (torch.bfloat16, 256), (torch.float32, 8)):
        name = f"cuda graph {str(dtype)[6:]} T={n_tokens}"
        try:
            wgu32, wd32 = make_expert_weights(REAL["n_experts"], REAL["hidden"], REAL["inter"], "cuda", 5)
            wgu, wd = wgu32.to(dtype), wd32.to(dtype)
            s_logits = torch.randn(n_tokens, REAL["n_experts"], device="cuda")
            s_x = torch.randn(n_tokens, REAL["hidden"], device="cuda").to(dtype)

            def step():
                w, ids = router_op(s_logits, REAL["top_k"], False)
                return experts_op(s_x, w, ids, wgu, wd)

            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):
                    step()
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                s_out = step()
            same = True
            for _ in range(3):
                s_logits.copy_(torch.randn(n_tokens, REAL["n_experts"], generator=gen).cuda())
                s_x.copy_(torch.randn(n_tokens, REAL["hidden"], generator=gen).cuda().to(dtype))
                graph.replay()
                torch.cuda.synchronize()
                same &= torch.equal(s_out, step())
            out[name] = same
            res.check(name, same, "replay differs from eager")
        except Exception as e:  # noqa: BLE001
            res.check(name, False, f"raised {type(e).__name__}: {e}")
    return out


# ---- timing ------------------------------------------------------------------------------------
def eager_experts(x, w, ids, wgu, wd):
    """The reference algorithm in plain eager torch on the same device (host syncs per expert)."""
    n_tokens, hidden = x.shape
    top_k = ids.shape[1]
    inter = wd.shape[2]
    flat = ids.reshape(-1).long()
    flat_w = w.reshape(-1)
    per_slot = torch.zeros(n_tokens * top_k, hidden, device=x.device, dtype=torch.float32)
    for e in range(wgu.shape[0]):
        slots = (flat == e).nonzero().squeeze(1)
        if slots.numel() == 0:
            continue
        xe = x.index_select(0, torch.div(slots, top_k, rounding_mode="floor"))
        gu = xe @ wgu[e].t()
        act = F.silu(gu[:, :inter]) * gu[:, inter:]
        y = act @ wd[e].t()
        per_slot.index_copy_(0, slots, y.float() * flat_w.index_select(0, slots).unsqueeze(1))
    return per_slot.view(n_tokens, top_k, hidden).sum(1).to(x.dtype)


def time_graph(fn, reps):
    """Device time per call: `reps` calls captured in one CUDA graph, replayed."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(reps):
            fn()
    graph.replay()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(5):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end) * 1e3 / reps)
    del graph
    return best


def time_eager(fn, iters):
    for _ in range(2):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1e6 / iters


def kernel_breakdown(fn, calls=10):
    """Mean device µs per call of each kernel, from the PyTorch profiler (CUPTI)."""
    from torch.profiler import ProfilerActivity, profile
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    out = {}
    for ev in prof.key_averages():
        t = getattr(ev, "device_time_total", None)
        if t is None:
            t = getattr(ev, "cuda_time_total", 0.0)
        if t > 0:
            name = ev.key
            for short in ("moe_align", "moe_gemm_mma", "moe_gemm_simt", "moe_combine", "topk_softmax",
                          "moe_route"):
                if short in name:
                    name = short + name[name.find(short) + len(short):][:40]
                    break
            out[name[:90]] = round(t / calls, 2)
    return out


def run_timing(gen):
    hidden, inter, n_experts, top_k = REAL["hidden"], REAL["inter"], REAL["n_experts"], REAL["top_k"]
    wgu32, wd32 = make_expert_weights(n_experts, hidden, inter, "cuda", 11)
    wgu, wd = wgu32.bfloat16(), wd32.bfloat16()
    del wgu32, wd32
    expert_bytes = (2 * inter * hidden + hidden * inter) * 2
    rows = []
    for n_tokens in (1, 8, 64, 128, 256, 512, 1024, 4096, 14608):
        x = torch.randn(n_tokens, hidden, generator=gen).cuda().bfloat16()
        logits = torch.randn(n_tokens, n_experts, generator=gen).cuda()
        w, ids = router_op(logits, top_k, False)
        used = int(ids.unique().numel())
        reps = 3 if n_tokens > 4096 else 10 if n_tokens >= 4096 else 50
        row = {"tokens": n_tokens, "experts_used": used}
        row["fused_us"] = round(time_graph(lambda: experts_op(x, w, ids, wgu, wd), reps), 2)
        row["fused_eager_launch_us"] = round(time_eager(lambda: experts_op(x, w, ids, wgu, wd), reps), 2)
        for path in GEMM_PATHS:
            os.environ["OCR_MOE_GEMM"] = path
            try:
                row[f"fused_{path}_us"] = round(time_graph(lambda: experts_op(x, w, ids, wgu, wd), reps), 2)
            finally:
                del os.environ["OCR_MOE_GEMM"]
        for align in ("single", "multi"):
            os.environ["OCR_MOE_ALIGN"] = align
            try:
                row[f"fused_align_{align}_us"] = round(time_graph(lambda: experts_op(x, w, ids, wgu, wd), reps), 2)
            finally:
                del os.environ["OCR_MOE_ALIGN"]
        xr = x.float().bfloat16()
        router = (torch.randn(n_experts, hidden, generator=gen) * 0.05).cuda().bfloat16()
        for kernel in ("warp", "mma"):
            os.environ["OCR_MOE_ROUTE"] = kernel
            try:
                row[f"moe_route_{kernel}_us"] = round(
                    time_graph(lambda: torch.ops.ocr.moe_route(xr, router, top_k, False), reps), 2)
            finally:
                del os.environ["OCR_MOE_ROUTE"]
        row["router_us"] = round(time_graph(lambda: router_op(logits, top_k, False), reps), 2)
        row["eager_torch_us"] = round(time_eager(lambda: eager_experts(x, w, ids, wgu, wd),
                                                 3 if n_tokens >= 4096 else 10), 2)
        row["speedup_vs_eager"] = round(row["eager_torch_us"] / row["fused_us"], 1)
        weight_bytes = used * expert_bytes
        row["weight_bytes"] = weight_bytes
        row["hbm_fraction"] = round(weight_bytes / (row["fused_us"] * 1e-6) / HBM_BYTES_PER_S, 3)
        flops = 2 * n_tokens * top_k * 3 * inter * hidden
        row["tflops"] = round(flops / (row["fused_us"] * 1e-6) / 1e12, 1)
        try:
            row["kernels_us"] = kernel_breakdown(lambda: experts_op(x, w, ids, wgu, wd))
        except Exception as e:  # noqa: BLE001 - the breakdown is informative only
            row["kernels_us"] = f"profiler failed: {type(e).__name__}: {e}"
        print("timing", json.dumps(row), flush=True)
        rows.append(row)
    return {"dims": REAL, "dtype": "bfloat16", "hbm_ceiling_bytes_per_s": HBM_BYTES_PER_S,
            "note": "fused_us: device time per call from CUDA-graph replay; eager_torch_us: the "
                    "reference algorithm in eager torch on the GPU (wall time, host syncs included)",
            "rows": rows}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("lib", nargs="?", help="path of libocr_ops.so (else $OCR_OPS_LIB)")
    ap.add_argument("--json", help="also write the JSON summary to this file")
    ap.add_argument("--quick", action="store_true", help="smaller sweep (no 4096-token cases)")
    ap.add_argument("--no-timing", action="store_true", help="skip the timing section")
    ap.add_argument("--only", help="comma-separated sections to run (router,experts,paths,route,errors,graphs,timing)")
    ap.add_argument("--errors-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--self-test-cpu", action="store_true",
                    help="check the harness itself: CPU op on both sides, small sizes")
    args = ap.parse_args()

    self_test = args.self_test_cpu
    if not self_test and not torch.cuda.is_available():
        print("moe_sweep: skipped (no CUDA device)")
        return 77  # ctest SKIP_RETURN_CODE
    lib = find_lib(args.lib)
    torch.ops.load_library(lib)
    dev = "cpu" if self_test else "cuda"
    if args.errors_child:  # run_error_checks_isolated's child
        child = Results()
        run_error_checks(child, dev)
        print("errors-child " + json.dumps({"passed": child.passed, "failures": child.failures}), flush=True)
        return 0
    if not self_test and not torch._C._dispatch_has_kernel_for_dispatch_key("ocr::moe_experts", "CUDA"):
        print("moe_sweep: the library has no CUDA kernels (built without OCR_WITH_CUDA?)")
        print("moe_sweep: 0 passed, 1 failed")
        return 1
    sync_check = not self_test
    quick = args.quick or self_test
    res = Results()
    gen = torch.Generator().manual_seed(1234)
    summary = {"device": "cpu (self-test)" if self_test else torch.cuda.get_device_name(),
               "torch": torch.__version__,
               "tolerances": {"f32_rel": TOL_F32, "bf16_rel": TOL_BF16, "router_weight_abs": TOL_ROUTER_W,
                              "near_tie_rtol": NEAR_TIE_RTOL, "cpu_rows_per_case": MAX_CPU_ROWS}}
    t_start = time.time()
    sections = [("router", lambda: run_router_sweep(res, dev, sync_check, quick, gen)),
                ("experts", lambda: run_experts_sweep(res, dev, sync_check, quick, gen))]
    if self_test:
        sections.append(("errors", lambda: run_error_checks_isolated(res, dev, lib)))
    else:
        sections += [("paths", lambda: run_forced_paths(res, dev, sync_check, gen)),
                     ("route", lambda: run_route_paths(res, dev, sync_check, gen)),
                     ("errors", lambda: run_error_checks_isolated(res, dev, lib)),
                     ("graphs", lambda: run_graph_checks(res, gen))]
        if not args.no_timing:
            sections.append(("timing", lambda: run_timing(gen)))
    if args.only:
        wanted = args.only.split(",")
        unknown = set(wanted) - {key for key, _ in sections}
        if unknown:
            ap.error(f"--only: unknown or unavailable section(s): {', '.join(sorted(unknown))}")
        sections = [(key, fn) for key, fn in sections if key in wanted]
    for key, fn in sections:
        t0 = time.time()
        try:
            summary[key] = fn()
        except Exception as e:  # noqa: BLE001 - report and carry on with the other sections
            traceback.print_exc()
            if key == "timing":
                summary[key] = f"failed: {type(e).__name__}: {e}"
            else:
                res.check(f"section {key}", False, f"raised {type(e).__name__}: {e}")
        print(f"moe_sweep: section {key} done in {time.time() - t0:.1f} s "
              f"({res.passed} passed, {res.failed} failed so far)", flush=True)
    summary["passed"] = res.passed
    summary["failed"] = res.failed
    summary["failures"] = res.failures[:50]
    summary["seconds"] = round(time.time() - t_start, 1)
    line = json.dumps(summary)
    print(line)
    if args.json:
        with open(args.json, "w") as f:
            f.write(line + "\n")
    print(f"moe_sweep: {res.passed} passed, {res.failed} failed")
    return 0 if res.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
