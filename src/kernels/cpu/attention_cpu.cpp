// ocr::decode_attention with plain ATen in fp32: the CPU kernel, the oracle of the CUDA sweep
// (tests/kernels/test_attention_sweep.py) and the CUDA registration's reference path.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cmath>
#include <limits>

#include "kernels/attention_reference.h"

namespace ocr::kernels {

void check_decode_attention_args(const at::Tensor& q, const at::Tensor& kv_cache, int64_t layer,
                                 const at::Tensor& slots, const at::Tensor& positions,
                                 int64_t kv_len) {
  TORCH_CHECK(q.dim() == 4 && q.size(1) == 1,
              "decode_attention: q must be [B, 1, n_heads, head_dim], got ", q.sizes());
  TORCH_CHECK(q.scalar_type() == at::kFloat || q.scalar_type() == at::kBFloat16,
              "decode_attention: q must be float32 or bfloat16, got ", q.scalar_type());
  TORCH_CHECK(q.is_contiguous(), "decode_attention: q must be contiguous, got strides ",
              q.strides());
  const int64_t n_b = q.size(0), n_heads = q.size(2), head_dim = q.size(3);
  TORCH_CHECK(n_heads >= 1, "decode_attention: n_heads must be >= 1, got q ", q.sizes());
  TORCH_CHECK(head_dim >= 2 && head_dim % 2 == 0 && head_dim <= kDecodeAttentionMaxHeadDim,
              "decode_attention: head_dim must be even and in [2, ", kDecodeAttentionMaxHeadDim,
              "], got ", head_dim);
  TORCH_CHECK(kv_cache.dim() == 6 && kv_cache.size(1) == 2 && kv_cache.size(4) == n_heads &&
                  kv_cache.size(5) == head_dim,
              "decode_attention: kv_cache must be [n_layers, 2, n_slots, max_len, ", n_heads, ", ",
              head_dim, "], got ", kv_cache.sizes());
  TORCH_CHECK(kv_cache.scalar_type() == q.scalar_type(), "decode_attention: kv_cache is ",
              kv_cache.scalar_type(), ", q is ", q.scalar_type());
  // Any strides for layers, k/v and slots (the engine passes narrowed views of its cache); the
  // keys of one slot are contiguous [max_len, n_heads, head_dim] rows.
  TORCH_CHECK(kv_cache.stride(5) == 1 && kv_cache.stride(4) == kv_cache.size(5) &&
                  kv_cache.stride(3) == kv_cache.size(4) * kv_cache.size(5),
              "decode_attention: kv_cache's [max_len, n_heads, head_dim] blocks must be contiguous, got strides ",
              kv_cache.strides());
  TORCH_CHECK(layer >= 0 && layer < kv_cache.size(0), "decode_attention: layer ", layer,
              " out of range [0, ", kv_cache.size(0), ")");
  TORCH_CHECK(kv_len >= 1 && kv_len <= kv_cache.size(3), "decode_attention: kv_len ", kv_len,
              " out of range [1, max_len = ", kv_cache.size(3), "]");
  TORCH_CHECK(slots.dim() == 1 && slots.size(0) == n_b && slots.scalar_type() == at::kLong,
              "decode_attention: slots must be int64 [", n_b, "], got ", slots.scalar_type(), " ",
              slots.sizes());
  TORCH_CHECK(positions.dim() == 2 && positions.size(0) == n_b && positions.size(1) == 1 &&
                  positions.scalar_type() == at::kLong,
              "decode_attention: positions must be int64 [", n_b, ", 1], got ",
              positions.scalar_type(), " ", positions.sizes());
  for (const at::Tensor* t : {&kv_cache, &slots, &positions})
    TORCH_CHECK(t->device() == q.device(), "decode_attention: all tensors must be on ", q.device(),
                ", got one on ", t->device());
  // Value ranges need the data: checked on the CPU; on CUDA the caller guarantees them (no sync).
  if (q.is_cpu() && n_b > 0) {
    const int64_t smin = slots.min().item<int64_t>(), smax = slots.max().item<int64_t>();
    TORCH_CHECK(smin >= 0 && smax < kv_cache.size(2), "decode_attention: slots in [", smin, ", ",
                smax, "] out of range [0, ", kv_cache.size(2), ")");
    const int64_t pmin = positions.min().item<int64_t>(), pmax = positions.max().item<int64_t>();
    TORCH_CHECK(pmin >= 0 && pmax < kv_cache.size(3), "decode_attention: positions in [", pmin,
                ", ", pmax, "] out of range [0, max_len = ", kv_cache.size(3), ")");
  }
}

at::Tensor decode_attention_reference(const at::Tensor& q, const at::Tensor& kv_cache,
                                      int64_t layer, const at::Tensor& slots,
                                      const at::Tensor& positions, int64_t kv_len) {
  check_decode_attention_args(q, kv_cache, layer, slots, positions, kv_len);
  const int64_t n_b = q.size(0), head_dim = q.size(3);
  const auto cache = kv_cache.select(0, layer);  // [2, S, M, H, D]
  // [B, kv_len, H, D] in fp32, the rows of the slots.
  const auto k = cache.select(0, 0).index_select(0, slots).narrow(1, 0, kv_len).to(at::kFloat);
  const auto v = cache.select(0, 1).index_select(0, slots).narrow(1, 0, kv_len).to(at::kFloat);
  const auto qf = q.to(at::kFloat).transpose(1, 2);  // [B, H, 1, D]
  auto scores = at::matmul(qf, k.permute({0, 2, 3, 1})) *
                (1.0 / std::sqrt(static_cast<double>(head_dim)));  // [B, H, 1, kv_len]
  const auto key_pos = at::arange(kv_len, positions.options());    // [kv_len]
  const auto future = key_pos.view({1, 1, 1, kv_len}) > positions.view({n_b, 1, 1, 1});
  scores.masked_fill_(future, -std::numeric_limits<double>::infinity());
  const auto probs = at::softmax(scores, -1);
  const auto out = at::matmul(probs, v.permute({0, 2, 1, 3}));  // [B, H, 1, D]
  return out.transpose(1, 2).to(q.scalar_type()).contiguous();  // [B, 1, H, D]
}

TORCH_LIBRARY_IMPL(ocr, CPU, m) { m.impl("decode_attention", &decode_attention_reference); }

}  // namespace ocr::kernels
