// Reference (plain ATen) implementations of the fused decode-step ops, usable on any device: the
// CPU kernels, the oracle of the CUDA sweep, and the "no fused kernels" baseline on CUDA (see
// use_reference_kernels() in kernels/reference.h). Schemas and semantics: src/kernels/ops.cpp.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

namespace ocr::kernels {

// x [..., dim], weight [dim] -> [..., dim]: the decoder's RMSNorm module, op for op.
at::Tensor rms_norm_reference(const at::Tensor& x, const at::Tensor& weight, double eps);

// x, residual [..., dim] -> (x + residual, rms_norm(x + residual)); the norm sees the rounded sum.
std::tuple<at::Tensor, at::Tensor> add_rms_norm_reference(const at::Tensor& x,
                                                          const at::Tensor& residual,
                                                          const at::Tensor& weight, double eps);

// qkv [n_b, n_t, 3 * n_heads * head_dim], cos/sin [n_b, n_t, (1,) head_dim], kv_cache
// [n_layers, 2, n_slots, max_len, n_heads, head_dim] (written), slots [n_b], positions [n_b, n_t]
// -> rope(q) [n_b, n_t, n_heads, head_dim]. Slot and position ranges are checked on the CPU only.
at::Tensor rope_kv_write_reference(const at::Tensor& qkv, const at::Tensor& cos,
                                   const at::Tensor& sin, const at::Tensor& kv_cache, int64_t layer,
                                   const at::Tensor& slots, const at::Tensor& positions);

// x [n_tokens, hidden], router [n_experts, hidden] -> topk_weights [n_tokens, top_k] float32,
// topk_ids [n_tokens, top_k] int32: fp32 logits, then moe_topk_softmax_reference.
std::tuple<at::Tensor, at::Tensor> moe_route_reference(const at::Tensor& x,
                                                       const at::Tensor& router, int64_t top_k,
                                                       bool renormalize);

// Shape and dtype checks shared with the CUDA kernels (messages name the op and the actual values).
void check_rms_norm_args(const char* op, const at::Tensor& x, const at::Tensor& weight);
// Returns n_heads.
int64_t check_rope_kv_write_args(const at::Tensor& qkv, const at::Tensor& cos,
                                 const at::Tensor& sin, const at::Tensor& kv_cache, int64_t layer,
                                 const at::Tensor& slots, const at::Tensor& positions);
void check_moe_route_args(const at::Tensor& x, const at::Tensor& router, int64_t top_k);

}  // namespace ocr::kernels
