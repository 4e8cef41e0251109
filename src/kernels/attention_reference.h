// ocr::decode_attention (schema and semantics: src/kernels/ops.cpp): the plain-ATen reference
// (CPU kernel, the CUDA sweep's oracle and the "no fused kernels" baseline on CUDA, see
// use_reference_kernels() in kernels/reference.h) and the argument checks shared with the CUDA op.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace ocr::kernels {

// The CUDA kernel's limit on head_dim (and the checked one everywhere, so that CPU and CUDA accept
// the same arguments).
constexpr int64_t kDecodeAttentionMaxHeadDim = 256;

// q [B, 1, H, D], kv_cache [L, 2, S, M, H, D], slots [B] int64, positions [B, 1] int64, kv_len
// -> [B, 1, H, D] in q's dtype: fp32 gather of K and V, scores * 1/sqrt(D), keys j > p_b (and
// j >= kv_len) masked to -inf, softmax, matmul, one rounding at the end.
at::Tensor decode_attention_reference(const at::Tensor& q, const at::Tensor& kv_cache,
                                      int64_t layer, const at::Tensor& slots,
                                      const at::Tensor& positions, int64_t kv_len);

// Shapes, dtypes, devices, layer and kv_len; slot and position ranges only for CPU tensors (no
// host sync on CUDA: the caller guarantees 0 <= slots < S and 0 <= positions < M there).
void check_decode_attention_args(const at::Tensor& q, const at::Tensor& kv_cache, int64_t layer,
                                 const at::Tensor& slots, const at::Tensor& positions,
                                 int64_t kv_len);

}  // namespace ocr::kernels
