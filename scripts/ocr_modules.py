"""TorchScript-able modules of DeepSeek-OCR, written from the spec (shared/spec/deepseek-ocr.md).

Every size is a constructor argument (export.py derives them from config.json and the tensor
shapes); nothing here knows the real model's dimensions. The decoder's MoE calls our own custom
ops (torch.ops.ocr.*), so the library that defines them must be loaded before scripting.

Numerics follow the official code: LayerNorms/softmax as the modules do them, position tables
resized in float32 (bicubic with antialias for SAM and CLIP, linear for rel-pos), RMSNorm and the
router in float32, expert outputs combined in float32.
"""
import os
from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _param(shape: List[int], dtype: torch.dtype) -> nn.Parameter:
    # Allocated on the meta device: the exporter materialises and fills each tensor once.
    return nn.Parameter(torch.empty(shape, dtype=dtype, device="meta"), requires_grad=False)


class Linear(nn.Module):
    def __init__(self, n_in: int, n_out: int, bias: bool, dtype: torch.dtype):
        super().__init__()
        self.weight = _param([n_out, n_in], dtype)
        self.bias = _param([n_out], dtype) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)


class LayerNorm(nn.Module):
    def __init__(self, dim: int, eps: float, dtype: torch.dtype):
        super().__init__()
        self.weight = _param([dim], dtype)
        self.bias = _param([dim], dtype)
        self.eps = eps
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, [self.dim], self.weight, self.bias, self.eps)


class LayerNorm2d(nn.Module):
    """Normalises over channels at each pixel (biased variance), NCHW."""

    def __init__(self, dim: int, eps: float, dtype: torch.dtype):
        super().__init__()
        self.weight = _param([dim], dtype)
        self.bias = _param([dim], dtype)
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class Conv2d(nn.Module):
    """channels_last: input and weight in NHWC memory order (cuDNN's fast implicit-GEMM kernels take
    it without layout conversions; SAM's neck gets its input NHWC anyway)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, bias: bool,
                 dtype: torch.dtype, channels_last: bool = False):
        super().__init__()
        self.weight = _param([c_out, c_in, kernel, kernel], dtype)
        self.bias = _param([c_out], dtype) if bias else None
        self.stride = stride
        self.padding = padding
        self.channels_last = channels_last

    def forward(self, x: Tensor) -> Tensor:
        if self.channels_last:
            return F.conv2d(x.contiguous(memory_format=torch.channels_last),
                            self.weight.contiguous(memory_format=torch.channels_last), self.bias, self.stride,
                            self.padding)
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)


# ---------------------------------------------------------------------------------------------
# SAM ViT-B (spec 2.1)


def resize_rel_pos(rel_pos: Tensor, size: int) -> Tensor:
    """Rel-pos table [rows, head_dim] -> [2*size-1, head_dim]; 1-D linear, align_corners=False."""
    n_rows = 2 * size - 1
    if rel_pos.shape[0] == n_rows:
        return rel_pos
    resized = F.interpolate(rel_pos.to(torch.float32).reshape(1, rel_pos.shape[0], -1).permute(0, 2, 1),
                            size=[n_rows], mode="linear", align_corners=False)
    return resized.reshape(-1, n_rows).permute(1, 0).to(rel_pos.dtype)


def rel_pos_table(rel_pos: Tensor, size: int) -> Tensor:
    """[size, size, head_dim] with entry (i, j) = resized[i - j + size - 1]."""
    table = resize_rel_pos(rel_pos, size)
    coords = torch.arange(size, device=rel_pos.device)
    idx = coords[:, None] - coords[None, :] + (size - 1)
    return table[idx]


def _legacy_encoder() -> bool:
    """OCR_ENCODER_LEGACY=1 at export time: the previous SAM attention/window code (copy-heavy), kept
    for A/B timing and as the reference of tests/model/test_encoder_copies.py."""
    return os.environ.get("OCR_ENCODER_LEGACY", "") not in ("", "0")


def _fold_v_unpadded() -> bool:
    """Default on (OCR_SAM_FOLD_V=0 at export time: off), CUDA only: the folded (global-block)
    attention gets v as the strided view of the qkv output ([n, d], not zero-padded to q'/k''s width)
    and q'/k' token-major, so SDPA writes [n_b, n, heads, d] and the proj GEMM reads it as it is: no
    v' build, no output copy, and the P.V half of the attention at width d instead of d + h + w.
    cuDNN takes d_v != d_qk; measured bit-identical to the padded form on the H200 (bf16). The CPU's
    flash kernel refuses d_v != d_qk and its fallback rounds differently, so CPU keeps v padded."""
    return os.environ.get("OCR_SAM_FOLD_V", "") != "0"


def _window_bias_mode() -> int:
    """OCR_SAM_BIAS at export time, how the windows' [n, n] rel-pos bias (bf16(rel_h + rel_w), the
    same values in every mode) is written: 0 ("add") one broadcast add reading rel_h/rel_w as skewed
    views of the rel-pos GEMM output (6-D index math per element); 1 ("contig") rel_h/rel_w copied
    contiguous first (small) so the add iterates in 3-D; 2 ("gemm", the default) a GEMM
    [rel_h | rel_w | 0] @ one-hot, which writes the bias from the GEMM epilogue (exact: each output is
    one fp32 sum of two bf16 values, the other products are exact zeros, rounded once to bf16 as the
    add does). H200, 16 Gundam pages (96 tiles + 16 globals), encoder stages: legacy code 242 ms,
    add 197, contig 193, gemm 190, gemm with the unpadded v of the global blocks 181 (all
    bit-identical to legacy)."""
    v = os.environ.get("OCR_SAM_BIAS", "")
    if v in ("0", "add"):
        return 0
    if v in ("1", "contig"):
        return 1
    return 2


def _window_spans(n: int, ws: int) -> List[List[int]]:
    """[0, n) cut at window boundaries into at most two pieces that are rectangular in window
    coordinates: [first window, end window, first row in window, end row, first source row, end]."""
    full = n // ws
    spans: List[List[int]] = []
    if full > 0:
        spans.append([0, full, 0, ws, 0, full * ws])
    if n > full * ws:
        spans.append([full, full + 1, 0, n - full * ws, full * ws, n])
    return spans


class SamAttention(nn.Module):
    def __init__(self, dim: int, n_heads: int, rel_rows: int, dtype: torch.dtype):
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = dim // n_heads
        self.qkv = Linear(dim, 3 * dim, True, dtype)
        self.proj = Linear(dim, dim, True, dtype)
        self.rel_pos_h = _param([rel_rows, self.head_dim], dtype)
        self.rel_pos_w = _param([rel_rows, self.head_dim], dtype)
        self.legacy = _legacy_encoder()
        self.fold_v_unpadded = _fold_v_unpadded()
        self.bias_mode = _window_bias_mode()

    def forward(self, x: Tensor) -> Tensor:
        if self.legacy:
            return self._forward_legacy(x)
        n_b, h, w, c = x.shape  # [n_b, h, w, dim]
        n = h * w
        n_h = self.n_heads
        d = self.head_dim
        # q/k/v stay strided views of the qkv GEMM output ([n_b, n, 3, heads, d]); SDPA takes them
        # as they are, and cuDNN allocates its output in q's (token-major) layout, so the transpose
        # back to [n_b, h, w, dim] below is a view there.
        qkv = self.qkv(x).view(n_b, n, 3, n_h, d)
        q = qkv[:, :, 0].transpose(1, 2)  # [n_b, heads, n, d]
        k = qkv[:, :, 1].transpose(1, 2)
        v = qkv[:, :, 2].transpose(1, 2)
        rel_h, rel_w = self._rel_terms(qkv[:, :, 0], h, w)  # [n_b, heads, h, w, h] / [.., w]
        if n > 4 * (d + h + w):  # the same choice as _forward_legacy
            out = self._folded(q, k, v, rel_h, rel_w, h, w)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=self._window_bias(rel_h, rel_w))
        return self.proj(out.transpose(1, 2).reshape(n_b, h, w, c))

    def _window_bias(self, rel_h: Tensor, rel_w: Tensor) -> Tensor:
        """bias[b, i, (y, x), (ky, kx)] = rel_h[b, i, y, x, ky] + rel_w[b, i, y, x, kx], rounded once."""
        n_b, n_h, h, w, _ = rel_h.shape
        n = h * w
        if self.bias_mode == 2:
            k = (h + w + 7) // 8 * 8
            r = torch.empty([n_b, n_h, h, w, k], dtype=rel_h.dtype, device=rel_h.device)
            r[:, :, :, :, :h].copy_(rel_h)
            r[:, :, :, :, h:h + w].copy_(rel_w)
            if k > h + w:
                r[:, :, :, :, h + w:].zero_()
            key = torch.arange(n, device=rel_h.device)
            rows = torch.arange(k, device=rel_h.device)
            onehot = ((rows.view(-1, 1) == (key // w).view(1, -1)) |
                      (rows.view(-1, 1) == (key % w + h).view(1, -1))).to(rel_h.dtype)  # [k, n]
            return torch.mm(r.view(-1, k), onehot).view(n_b, n_h, n, n)
        bias = torch.empty([n_b, n_h, h, w, h, w], dtype=rel_h.dtype, device=rel_h.device)
        if self.bias_mode == 1:
            torch.add(rel_h.contiguous().unsqueeze(-1), rel_w.contiguous().unsqueeze(-2), out=bias)
        else:
            torch.add(rel_h.unsqueeze(-1), rel_w.unsqueeze(-2), out=bias)
        return bias.view(n_b, n_h, n, n)

    def _rel_terms(self, q_tok: Tensor, h: int, w: int) -> Tuple[Tensor, Tensor]:
        """rel_h[b, i, y, x, ky] = q[b, i, y, x] . Rh[y - ky + h - 1] (and rel_w likewise on x), each
        a bf16 dot product over head_dim as the einsums of _forward_legacy. One batched GEMM of the
        unscaled q (a strided view, [n_b, n, heads, d]) against both flipped tables gives every
        table row for every query, P[i, t, :] = [q.Rh[2h-2-j] | q.Rw[2w-2-j]]; rel_h/rel_w are then
        skewed views of P (column h-1-y+ky, resp. 2h-1 + w-1-x+kx), no copy."""
        n_b, n, n_h, d = q_tok.shape
        t_h = resize_rel_pos(self.rel_pos_h, h).flip(0)
        t_w = resize_rel_pos(self.rel_pos_w, w).flip(0)
        rows = t_h.shape[0] + t_w.shape[0]  # 2h-1 + 2w-1
        r = (rows + 7) // 8 * 8  # P's rows 16-byte aligned for the GEMM epilogue; the pad is unused
        table = torch.cat([t_h, t_w, t_h.new_zeros([r - rows, d])], dim=0).to(q_tok.dtype)  # [r, d]
        a = q_tok.permute(2, 0, 1, 3).reshape(n_h, n_b * n, d)  # a view: tokens share one stride
        p = torch.bmm(a, table.t().unsqueeze(0).expand(n_h, d, r))  # [heads, n_b*n, r]
        s_i = n_b * n * r
        s_b = n * r
        o = p.storage_offset()
        rel_h = torch.as_strided(p, [n_h, n_b, h, w, h], [s_i, s_b, w * r - 1, r, 1], o + h - 1)
        rel_w = torch.as_strided(p, [n_h, n_b, h, w, w], [s_i, s_b, w * r, r - 1, 1], o + 2 * h - 1 + w - 1)
        return rel_h.transpose(0, 1), rel_w.transpose(0, 1)

    def _folded(self, q: Tensor, k: Tensor, v: Tensor, rel_h: Tensor, rel_w: Tensor, h: int,
                w: int) -> Tensor:
        """_folded_rel_pos with q', k', v' written in place into preallocated tensors (no cat/pad);
        the same products and sums. Returns [n_b, heads, n, d] (any strides)."""
        n_b, n_h, n, d = q.shape
        extra = h + w
        width = (d + extra + 7) // 8 * 8
        fold_v = self.fold_v_unpadded and q.is_cuda
        if fold_v:
            # Token-major q'/k' ([n_b, n, heads, width] in memory): SDPA's output follows q's layout.
            q_ext = torch.empty([n_b, n, n_h, width], dtype=q.dtype, device=q.device).transpose(1, 2)
            k_ext = torch.empty([n_b, n, n_h, width], dtype=q.dtype, device=q.device).transpose(1, 2)
        else:
            q_ext = torch.empty([n_b, n_h, n, width], dtype=q.dtype, device=q.device)
            k_ext = torch.empty([n_b, n_h, n, width], dtype=q.dtype, device=q.device)
        torch.mul(q, 1.0 / (d ** 0.5), out=q_ext[:, :, :, :d])
        q_ext[:, :, :, d:d + h].view(n_b, n_h, h, w, h).copy_(rel_h)
        q_ext[:, :, :, d + h:d + extra].view(n_b, n_h, h, w, w).copy_(rel_w)
        if width > d + extra:
            q_ext[:, :, :, d + extra:].zero_()
        key = torch.arange(n, device=q.device)
        cols = torch.arange(width - d, device=q.device)
        onehot = ((cols.view(1, -1) == (key // w).view(-1, 1)) |
                  (cols.view(1, -1) == (key % w + h).view(-1, 1))).to(q.dtype)  # [n, width - d]
        k_ext[:, :, :, :d].copy_(k)
        k_ext[:, :, :, d:].copy_(onehot.view(1, 1, n, width - d).expand(n_b, n_h, n, width - d))
        if fold_v:
            return F.scaled_dot_product_attention(q_ext, k_ext, v, scale=1.0)
        v_ext = torch.empty([n_b, n_h, n, width], dtype=q.dtype, device=q.device)
        v_ext[:, :, :, :d].copy_(v)
        v_ext[:, :, :, d:].zero_()
        return F.scaled_dot_product_attention(q_ext, k_ext, v_ext, scale=1.0)[:, :, :, :d]

    def _forward_legacy(self, x: Tensor) -> Tensor:
        n_b, h, w, _ = x.shape  # [n_b, h, w, dim]
        qkv = self.qkv(x).reshape(n_b, h * w, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, n_b * self.n_heads, h * w, self.head_dim).unbind(0)
        r_h = rel_pos_table(self.rel_pos_h, h)  # [h, h, hd]
        r_w = rel_pos_table(self.rel_pos_w, w)  # [w, w, hd]
        r_q = q.reshape(n_b * self.n_heads, h, w, self.head_dim)
        rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, r_h)  # unscaled q, as the reference
        rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, r_w)
        q = q.view(n_b, self.n_heads, h * w, self.head_dim)
        k = k.view(n_b, self.n_heads, h * w, self.head_dim)
        v = v.view(n_b, self.n_heads, h * w, self.head_dim)
        # Global blocks (n = h*w large): fold the rel-pos bias into the dot product instead of
        # materialising an [n, n] bias per head (measured 2-2.5x faster at n = 1600 and 4096 on the
        # H200); windows (n = 196) keep the explicit bias, which is faster there.
        if h * w > 4 * (self.head_dim + h + w):
            out = self._folded_rel_pos(q, k, v, rel_h, rel_w, h, w)
        else:
            bias = (rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]).reshape(n_b, self.n_heads, h * w, h * w)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        out = out.view(n_b, self.n_heads, h, w, self.head_dim).permute(0, 2, 3, 1, 4).reshape(n_b, h, w, -1)
        return self.proj(out)

    def _folded_rel_pos(self, q: Tensor, k: Tensor, v: Tensor, rel_h: Tensor, rel_w: Tensor, h: int,
                        w: int) -> Tensor:
        """softmax(q k^T / sqrt(d) + rel_h[q, row(k)] + rel_w[q, col(k)]) v without the [n, n] bias:
        the bias terms ride in the dot product as extra dims, q' = [q / sqrt(d), rel_h, rel_w] and
        k' = [k, onehot(row), onehot(col)] (one-hot products are exact), scale 1, v zero-padded to
        the same width (flash attention needs equal widths; the pad columns are dropped)."""
        n_b, n_h, n, d = q.shape
        extra = h + w
        width = (d + extra + 7) // 8 * 8
        pad = width - d - extra
        key = torch.arange(n, device=q.device)
        cols = torch.arange(extra + pad, device=q.device)
        onehot = ((cols.view(1, -1) == (key // w).view(-1, 1)) |
                  (cols.view(1, -1) == (key % w + h).view(-1, 1))).to(q.dtype)  # [n, extra + pad]
        parts = [q * (1.0 / (d ** 0.5)), rel_h.reshape(n_b, n_h, n, h), rel_w.reshape(n_b, n_h, n, w)]
        if pad > 0:
            parts.append(q.new_zeros([n_b, n_h, n, pad]))
        q_ext = torch.cat(parts, dim=-1)
        k_ext = torch.cat([k, onehot.view(1, 1, n, extra + pad).expand(n_b, n_h, n, extra + pad)], dim=-1)
        v_ext = F.pad(v, [0, width - d])
        return F.scaled_dot_product_attention(q_ext, k_ext, v_ext, scale=1.0)[..., :d]


class SamBlock(nn.Module):
    def __init__(self, dim: int, n_heads: int, mlp_hidden: int, window: int, rel_rows: int, eps: float,
                 dtype: torch.dtype):
        super().__init__()
        self.window = window  # 0: global attention
        self.norm1 = LayerNorm(dim, eps, dtype)
        self.attn = SamAttention(dim, n_heads, rel_rows, dtype)
        self.norm2 = LayerNorm(dim, eps, dtype)
        self.lin1 = Linear(dim, mlp_hidden, True, dtype)
        self.lin2 = Linear(mlp_hidden, dim, True, dtype)
        self.legacy = _legacy_encoder()

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.window > 0 and not self.legacy:
            x = self._windowed(shortcut, x)
        elif self.window > 0:
            n_b, h, w, c = x.shape
            ws = self.window
            pad_h = (ws - h % ws) % ws
            pad_w = (ws - w % ws) % ws
            # Zero padding after norm1, no mask: pad tokens are real keys (spec 2.1).
            x = F.pad(x, [0, 0, 0, pad_w, 0, pad_h])
            hp = h + pad_h
            wp = w + pad_w
            x = x.view(n_b, hp // ws, ws, wp // ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws, ws, c)
            x = self.attn(x)
            x = x.view(n_b, hp // ws, wp // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(n_b, hp, wp, c)
            x = shortcut + x[:, :h, :w, :].contiguous()
        else:
            x = shortcut + self.attn(x)
        return x + self.lin2(F.gelu(self.lin1(self.norm2(x))))

    def _windowed(self, shortcut: Tensor, y: Tensor) -> Tensor:
        """shortcut + unpartition(attn(partition(pad(y)))) cropped, with one pass over the data each
        way: y (norm1's output) is copied straight into the window layout [n_b, nH, nW, ws, ws, c]
        through a view of it as the padded grid (at most 4 rectangular pieces, the pad zero-filled),
        and the residual add reads attn's output through the same view (same sums, no crop copy)."""
        n_b, h, w, c = y.shape
        ws = self.window
        n_wh = (h + ws - 1) // ws
        n_ww = (w + ws - 1) // ws
        win = torch.empty([n_b, n_wh, n_ww, ws, ws, c], dtype=y.dtype, device=y.device)
        grid = win.permute(0, 1, 3, 2, 4, 5)  # [n_b, nH, ws, nW, ws, c]: the padded image
        # Zero padding after norm1, no mask: pad tokens are real keys (spec 2.1).
        if n_wh * ws > h:
            grid[:, n_wh - 1:, h - (n_wh - 1) * ws:].zero_()
        if n_ww * ws > w:
            grid[:, :, :, n_ww - 1:, w - (n_ww - 1) * ws:].zero_()
        rows = _window_spans(h, ws)
        cols = _window_spans(w, ws)
        for r in rows:
            for s in cols:
                src = y[:, r[4]:r[5], s[4]:s[5]].view(n_b, r[1] - r[0], r[3] - r[2], s[1] - s[0], s[3] - s[2], c)
                grid[:, r[0]:r[1], r[2]:r[3], s[0]:s[1], s[2]:s[3]].copy_(src)
        a = self.attn(win.view(-1, ws, ws, c)).view(n_b, n_wh, n_ww, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
        x = torch.empty_like(shortcut)
        for r in rows:
            for s in cols:
                shape = [n_b, r[1] - r[0], r[3] - r[2], s[1] - s[0], s[3] - s[2], c]
                piece = a[:, r[0]:r[1], r[2]:r[3], s[0]:s[1], s[2]:s[3]]
                torch.add(shortcut[:, r[4]:r[5], s[4]:s[5]].view(shape), piece,
                          out=x[:, r[4]:r[5], s[4]:s[5]].view(shape))
        return x


class Sam(nn.Module):
    def __init__(self, d: dict, dtype: torch.dtype):
        super().__init__()
        width = d["sam_width"]
        self.patch = d["sam_patch"]
        self.pos_grid = d["sam_pos_grid"]
        self.patch_embed = Conv2d(3, width, self.patch, self.patch, 0, True, dtype)
        self.pos_embed = _param([1, self.pos_grid, self.pos_grid, width], dtype)
        blocks = []
        for i in range(d["sam_depth"]):
            is_global = i in d["sam_global_blocks"]
            window = 0 if is_global else d["sam_window"]
            rel_rows = 2 * self.pos_grid - 1 if is_global else 2 * d["sam_window"] - 1
            blocks.append(SamBlock(width, d["sam_heads"], d["sam_mlp_hidden"], window, rel_rows,
                                   d["sam_eps"], dtype))
        self.blocks = nn.ModuleList(blocks)
        self.legacy = _legacy_encoder()
        nc = d["sam_neck"]
        self.neck0 = Conv2d(width, nc, 1, 1, 0, False, dtype, True)
        self.neck1 = LayerNorm2d(nc, d["sam_eps"], dtype)
        self.neck2 = Conv2d(nc, nc, 3, 1, 1, False, dtype, True)
        self.neck3 = LayerNorm2d(nc, d["sam_eps"], dtype)
        self.net_2 = Conv2d(nc, d["sam_net2"], 3, 2, 1, False, dtype, True)
        self.net_3 = Conv2d(d["sam_net2"], d["sam_net3"], 3, 2, 1, False, dtype, True)

    def forward(self, x: Tensor) -> Tensor:
        # The patch embedding (a conv with kernel = stride = patch) as one GEMM over unfolded patches:
        # same sums, straight into [n, g, g, width] (cuDNN ran the strided conv on a slow kernel).
        n_v, c, side, _ = x.shape
        p = self.patch
        g = side // p
        dtype = self.patch_embed.weight.dtype
        patches = x[:, :, :g * p, :g * p].reshape(n_v, c, g, p, g, p).permute(0, 2, 4, 1, 3, 5)
        if self.legacy or x.dtype == dtype:
            patches = patches.to(dtype).reshape(n_v, g, g, c * p * p)
        else:
            # The cast to the weights' dtype (Encoder.stages' .to) and the unfold in one copy.
            patches = torch.empty([n_v, g, g, c, p, p], dtype=dtype, device=x.device).copy_(patches)
        x = F.linear(patches.reshape(n_v, g, g, c * p * p), self.patch_embed.weight.reshape(-1, c * p * p),
                     self.patch_embed.bias)  # [n, g, g, width]
        pos = self.pos_embed
        if g != self.pos_grid:
            pos = F.interpolate(pos.permute(0, 3, 1, 2).to(torch.float32), size=[g, g], mode="bicubic",
                                align_corners=False, antialias=True).to(x.dtype).permute(0, 2, 3, 1)
        x = x + pos
        for blk in self.blocks:
            x = blk(x)
        x = self.neck3(self.neck2(self.neck1(self.neck0(x.permute(0, 3, 1, 2)))))
        return self.net_3(self.net_2(x))  # [n, net3, S/64, S/64]


# ---------------------------------------------------------------------------------------------
# CLIP-L on SAM features (spec 2.2)


class ClipLayer(nn.Module):
    def __init__(self, width: int, n_heads: int, ffn: int, eps: float, dtype: torch.dtype):
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = width // n_heads
        self.layer_norm1 = LayerNorm(width, eps, dtype)
        self.qkv_proj = Linear(width, 3 * width, True, dtype)
        self.out_proj = Linear(width, width, True, dtype)
        self.layer_norm2 = LayerNorm(width, eps, dtype)
        self.fc1 = Linear(width, ffn, True, dtype)
        self.fc2 = Linear(ffn, width, True, dtype)

    def forward(self, x: Tensor) -> Tensor:
        n_b, n_s, _ = x.shape
        qkv = self.qkv_proj(self.layer_norm1(x)).view(n_b, n_s, 3, self.n_heads, self.head_dim)
        q = qkv[:, :, 0].permute(0, 2, 1, 3)
        k = qkv[:, :, 1].permute(0, 2, 1, 3)
        v = qkv[:, :, 2].permute(0, 2, 1, 3)
        a = F.scaled_dot_product_attention(q, k, v)
        x = x + self.out_proj(a.permute(0, 2, 1, 3).reshape(n_b, n_s, -1))
        h = self.fc1(self.layer_norm2(x))
        h = h * torch.sigmoid(1.702 * h)  # quick_gelu
        return x + self.fc2(h)


class Clip(nn.Module):
    def __init__(self, d: dict, dtype: torch.dtype):
        super().__init__()
        width = d["clip_width"]
        self.pos_grid = d["clip_pos_grid"]
        self.class_embedding = _param([width], dtype)
        self.position_embedding = _param([self.pos_grid * self.pos_grid + 1, width], dtype)
        self.pre_layrnorm = LayerNorm(width, d["clip_eps"], dtype)
        self.layers = nn.ModuleList([ClipLayer(width, d["clip_heads"], d["clip_ffn"], d["clip_eps"], dtype)
                                     for _ in range(d["clip_layers"])])

    def forward(self, sam_features: Tensor) -> Tensor:
        n_b, c, g, _ = sam_features.shape
        patches = sam_features.flatten(2).transpose(1, 2)  # SAM features are the patch embeddings
        x = torch.cat([self.class_embedding.expand(n_b, 1, c), patches], dim=1)
        pos = self.position_embedding
        if g != self.pos_grid:
            grid = pos[1:].view(1, self.pos_grid, self.pos_grid, c).permute(0, 3, 1, 2).contiguous()
            grid = F.interpolate(grid.to(torch.float32), size=[g, g], mode="bicubic", align_corners=False,
                                 antialias=True).to(pos.dtype)
            pos = torch.cat([pos[:1], grid.permute(0, 2, 3, 1).reshape(g * g, c)], dim=0)
        x = self.pre_layrnorm(x + pos.unsqueeze(0))
        for layer in self.layers:
            x = layer(x)
        return x  # [n, g*g+1, width], no final norm


class Encoder(nn.Module):
    """Pixels of one view size -> visual embeddings; plus the tile/global layout of spec 2.5-2.6."""

    def __init__(self, d: dict, dtype: torch.dtype):
        super().__init__()
        self.sam = Sam(d, dtype)
        self.clip = Clip(d, dtype)
        self.projector = Linear(d["clip_width"] + d["sam_net3"], d["hidden"], True, dtype)
        self.image_newline = _param([d["hidden"]], dtype)
        self.view_seperator = _param([d["hidden"]], dtype)
        self.legacy = _legacy_encoder()

    @torch.jit.export
    def stages(self, pixels: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """pixels [n, 3, S, S] float -> (sam [n, C3, g, g], clip [n, g*g+1, Cc], proj [n, g*g, H])."""
        dtype = self.projector.weight.dtype
        # Sam casts while unfolding the patches (one pass over the pixels instead of two).
        sam = self.sam(pixels.to(dtype) if self.legacy else pixels)
        clip = self.clip(sam)
        fused = torch.cat([clip[:, 1:], sam.flatten(2).permute(0, 2, 1)], dim=-1)  # [CLIP || SAM]
        return sam, clip, self.projector(fused)

    def forward(self, pixels: Tensor) -> Tensor:
        return self.stages(pixels)[2]

    @torch.jit.export
    def layout(self, global_proj: Tensor, tiles_proj: Tensor, tiles_w: int, tiles_h: int) -> Tensor:
        """global_proj [1, g*g, H], tiles_proj [tiles_w*tiles_h, n*n, H] (or empty) -> [N, H]."""
        hidden = global_proj.shape[-1]
        g = int(round(global_proj.shape[1] ** 0.5))
        newline = self.image_newline.to(global_proj.dtype)
        glob = torch.cat([global_proj.view(g, g, hidden), newline.view(1, 1, hidden).expand(g, 1, hidden)], dim=1)
        parts: List[Tensor] = []
        if tiles_proj.numel() > 0:
            n = int(round(tiles_proj.shape[1] ** 0.5))
            grid = tiles_proj.view(tiles_h, tiles_w, n, n, hidden).permute(0, 2, 1, 3, 4)
            grid = grid.reshape(tiles_h * n, tiles_w * n, hidden)
            rows = tiles_h * n
            parts.append(torch.cat([grid, newline.view(1, 1, hidden).expand(rows, 1, hidden)], dim=1).view(-1, hidden))
        parts.append(glob.view(-1, hidden))
        parts.append(self.view_seperator.to(global_proj.dtype).view(1, hidden))
        return torch.cat(parts, dim=0)


# ---------------------------------------------------------------------------------------------
# DeepSeek-MoE decoder (spec 7)


class RMSNorm(nn.Module):
    """weight * (x.float() * rsqrt(mean(x^2) + eps)).to(x.dtype), one fused op (ocr::rms_norm)."""

    def __init__(self, dim: int, eps: float, dtype: torch.dtype):
        super().__init__()
        self.weight = _param([dim], dtype)
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return torch.ops.ocr.rms_norm(x, self.weight, self.eps)

    def add_forward(self, x: Tensor, r: Tensor) -> Tuple[Tensor, Tensor]:
        """(x + r, norm(x + r)) in one op (ocr::add_rms_norm): the residual add fused with the norm."""
        return torch.ops.ocr.add_rms_norm(x, r, self.weight, self.eps)


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)); gate and up stored stacked as one [2*inter, hidden] weight."""

    def __init__(self, hidden: int, inter: int, dtype: torch.dtype):
        super().__init__()
        self.inter = inter
        self.gate_up = _param([2 * inter, hidden], dtype)
        self.down = _param([hidden, inter], dtype)

    def forward(self, x: Tensor) -> Tensor:
        gu = F.linear(x, self.gate_up)
        return F.linear(F.silu(gu[..., :self.inter]) * gu[..., self.inter:], self.down)


class MoE(nn.Module):
    def __init__(self, hidden: int, n_experts: int, top_k: int, inter: int, shared_inter: int,
                 renormalize: bool, scaling: float, dtype: torch.dtype):
        super().__init__()
        self.top_k = top_k
        self.renormalize = renormalize
        self.scaling = scaling
        self.router = _param([n_experts, hidden], dtype)
        self.w_gate_up = _param([n_experts, 2 * inter, hidden], dtype)  # [n_experts, 2*inter, hidden]
        self.w_down = _param([n_experts, hidden, inter], dtype)         # [n_experts, hidden, inter]
        self.has_shared = shared_inter > 0
        self.shared = SwiGLU(hidden, max(shared_inter, 1), dtype) if shared_inter > 0 else None

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        xf = x.reshape(-1, shape[-1])  # [n_tokens, hidden]
        # fp32 router logits (x.float() @ router.float().T), softmax and top-k in one op.
        weights, ids = torch.ops.ocr.moe_route(xf, self.router, self.top_k, self.renormalize)
        if not self.renormalize and self.scaling != 1.0:
            weights = weights * self.scaling
        y = torch.ops.ocr.moe_experts(xf, weights, ids, self.w_gate_up, self.w_down)
        shared = self.shared
        if shared is not None:
            y = y + shared(xf)
        return y.view(shape)


class Attention(nn.Module):
    def __init__(self, hidden: int, n_heads: int, rope_theta: float, dtype: torch.dtype):
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = hidden // n_heads
        self.rope_theta = rope_theta
        self.qkv_proj = Linear(hidden, 3 * hidden, False, dtype)  # q_proj, k_proj, v_proj stacked
        self.o_proj = Linear(hidden, hidden, False, dtype)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, kv_cache: Tensor, layer: int, slots: Tensor,
                positions: Tensor, kv_len: int, mask: Tensor) -> Tensor:
        n_b, n_t, hidden = x.shape
        # Rotary embedding of q and k, and the cache write of k and v, in one op (ocr::rope_kv_write).
        # The engine owns the cache: kv_cache [n_layers, 2, n_slots, max_len, n_heads, head_dim].
        q = torch.ops.ocr.rope_kv_write(self.qkv_proj(x), cos, sin, kv_cache, layer, slots, positions)
        if n_t == 1:
            # A decoding step: split-K attention over each row's own keys 0..position (ocr::decode_attention),
            # no mask, no padding to kv_len read.
            out = torch.ops.ocr.decode_attention(q, kv_cache, layer, slots, positions, kv_len)
            return self.o_proj(out.reshape(n_b, 1, hidden))
        k_cache = kv_cache[layer, 0]
        v_cache = kv_cache[layer, 1]
        if n_b == k_cache.shape[0]:
            # Slots are unique and ascending (engine contract), so all of them means 0..n-1:
            # attend the cache in place instead of gathering a copy.
            keys = k_cache[:, :kv_len].to(q.dtype).transpose(1, 2)
            values = v_cache[:, :kv_len].to(q.dtype).transpose(1, 2)
        else:
            keys = k_cache.index_select(0, slots)[:, :kv_len].to(q.dtype).transpose(1, 2)
            values = v_cache.index_select(0, slots)[:, :kv_len].to(q.dtype).transpose(1, 2)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), keys, values, attn_mask=mask)
        return self.o_proj(out.transpose(1, 2).reshape(n_b, n_t, hidden))


class DecoderLayer(nn.Module):
    def __init__(self, d: dict, is_moe: bool, dtype: torch.dtype):
        super().__init__()
        hidden = d["hidden"]
        self.input_layernorm = RMSNorm(hidden, d["rms_eps"], dtype)
        self.self_attn = Attention(hidden, d["n_heads"], d["rope_theta"], dtype)
        self.post_attention_layernorm = RMSNorm(hidden, d["rms_eps"], dtype)
        if is_moe:
            self.mlp = MoE(hidden, d["n_experts"], d["top_k"], d["moe_inter"], d["shared_inter"],
                           d["norm_topk_prob"], d["routed_scaling"], dtype)
        else:
            self.mlp = SwiGLU(hidden, d["dense_inter"], dtype)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, kv_cache: Tensor, layer: int, slots: Tensor,
                positions: Tensor, kv_len: int, mask: Tensor) -> Tensor:
        a = self.self_attn(self.input_layernorm(x), cos, sin, kv_cache, layer, slots, positions, kv_len, mask)
        x, h = self.post_attention_layernorm.add_forward(x, a)
        return x + self.mlp(h)


class Decoder(nn.Module):
    """Token embeddings, 12 (n) decoder layers over an engine-owned KV cache, final norm, lm_head."""

    def __init__(self, d: dict, dtype: torch.dtype):
        super().__init__()
        self.n_heads = d["n_heads"]
        self.head_dim = d["hidden"] // d["n_heads"]
        self.rope_theta = d["rope_theta"]
        self.embed_tokens = _param([d["vocab"], d["hidden"]], dtype)
        self.layers = nn.ModuleList([DecoderLayer(d, i >= d["first_dense"], dtype) for i in range(d["n_layers"])])
        self.norm = RMSNorm(d["hidden"], d["rms_eps"], dtype)
        self.lm_head = _param([d["vocab"], d["hidden"]], dtype)

    @torch.jit.export
    def embed(self, ids: Tensor) -> Tensor:
        """ids [n_b, n_t] int64 -> [n_b, n_t, hidden]."""
        return F.embedding(ids, self.embed_tokens)

    def forward(self, h: Tensor, positions: Tensor, kv_cache: Tensor, slots: Tensor, kv_len: int,
                last_idx: Tensor, return_hidden: bool) -> Tuple[Tensor, Tensor]:
        """h [n_b, n_t, hidden] input embeddings; positions [n_b, n_t] int64 (cache rows written);
        slots [n_b] int64 cache slots, unique and ascending; keys 0..kv_len-1 of each slot are attended causally by
        position; last_idx [n_b] int64 index in n_t whose logits are returned.
        -> (logits [n_b, vocab] float32, hidden states at last_idx [n_layers+1, n_b, hidden] float32
        when return_hidden: each layer's input, then the final norm's output; else empty)."""
        n_b, n_t, _ = h.shape
        inv_freq = 1.0 / (self.rope_theta ** (torch.arange(0, self.head_dim, 2, device=h.device).float()
                                              / self.head_dim))
        freqs = positions.to(torch.float32).unsqueeze(-1) * inv_freq  # [n_b, n_t, head_dim/2]
        emb = torch.cat([freqs, freqs], dim=-1)
        cos = emb.cos().to(h.dtype)  # [n_b, n_t, head_dim]
        sin = emb.sin().to(h.dtype)
        key_pos = torch.arange(kv_len, device=h.device)
        # Causal by position, as an additive mask made once for all layers: 0 where key <= query, -inf after.
        # (A decoding step, n_t == 1, attends by position inside ocr::decode_attention: no mask.)
        mask = torch.empty([0], dtype=h.dtype, device=h.device)
        if n_t > 1:
            future = key_pos.view(1, 1, 1, kv_len) > positions.view(n_b, 1, n_t, 1)  # [n_b, 1, n_t, kv_len]
            mask = torch.zeros(future.shape, dtype=h.dtype, device=h.device).masked_fill_(future, float("-inf"))
        gather = last_idx.view(n_b, 1, 1).expand(n_b, 1, h.shape[2])
        hidden_states: List[Tensor] = []
        for i, layer in enumerate(self.layers):
            if return_hidden:
                hidden_states.append(h.gather(1, gather).squeeze(1).to(torch.float32))
            h = layer(h, cos, sin, kv_cache, i, slots, positions, kv_len, mask)
        last = self.norm(h.gather(1, gather).squeeze(1))  # [n_b, hidden]
        if return_hidden:
            hidden_states.append(last.to(torch.float32))
        logits = F.linear(last, self.lm_head).to(torch.float32)
        if return_hidden:
            return logits, torch.stack(hidden_states, 0)
        return logits, torch.empty([0], device=h.device)
