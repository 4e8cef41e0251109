// Reference implementations of the fused decode-step ops (rms_norm, add_rms_norm, rope_kv_write,
// moe_route) with the very ATen calls of scripts/ocr_modules.py, so that on the CPU they are
// bit-identical to the modules they replace. They are also the CUDA sweep's oracle.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "kernels/decode_reference.h"
#include "kernels/reference.h"

namespace ocr::kernels {
namespace {

bool is_float_or_bf16(const at::Tensor& t) {
  return t.scalar_type() == at::kFloat || t.scalar_type() == at::kBFloat16;
}

// rotate_half(x) = cat(-x[..., d/2:], x[..., :d/2]).
at::Tensor rotate_half(const at::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

// x * cos + rotate_half(x) * sin as three ATen ops in x's dtype (two products, then their sum).
at::Tensor rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  return x * cos + rotate_half(x) * sin;
}

}  // namespace

void check_rms_norm_args(const char* op, const at::Tensor& x, const at::Tensor& weight) {
  TORCH_CHECK(x.dim() >= 1 && x.size(-1) >= 1, op, ": x must be [..., dim] with dim >= 1, got ",
              x.sizes());
  TORCH_CHECK(is_float_or_bf16(x), op, ": x must be float32 or bfloat16, got ", x.scalar_type());
  TORCH_CHECK(weight.dim() == 1 && weight.size(0) == x.size(-1), op, ": weight must be [",
              x.size(-1), "], got ", weight.sizes());
  TORCH_CHECK(weight.scalar_type() == x.scalar_type(), op, ": weight is ", weight.scalar_type(),
              ", x is ", x.scalar_type());
  TORCH_CHECK(weight.device() == x.device(), op, ": weight on ", weight.device(), ", x on ",
              x.device());
}

int64_t check_rope_kv_write_args(const at::Tensor& qkv, const at::Tensor& cos,
                                 const at::Tensor& sin, const at::Tensor& kv_cache, int64_t layer,
                                 const at::Tensor& slots, const at::Tensor& positions) {
  TORCH_CHECK(qkv.dim() == 3, "rope_kv_write: qkv must be [n_b, n_t, 3 * n_heads * head_dim], got ",
              qkv.sizes());
  TORCH_CHECK(is_float_or_bf16(qkv), "rope_kv_write: qkv must be float32 or bfloat16, got ",
              qkv.scalar_type());
  TORCH_CHECK(qkv.is_contiguous(), "rope_kv_write: qkv must be contiguous, got strides ",
              qkv.strides());
  const int64_t n_b = qkv.size(0), n_t = qkv.size(1);
  TORCH_CHECK(cos.dim() >= 3 && cos.size(0) == n_b && cos.size(1) == n_t,
              "rope_kv_write: cos must be [n_b, n_t, (1,) head_dim] = [", n_b, ", ", n_t,
              ", ..., head_dim], got ", cos.sizes());
  for (int64_t d = 2; d + 1 < cos.dim(); ++d)
    TORCH_CHECK(cos.size(d) == 1,
                "rope_kv_write: cos may only have size-1 dims between n_t and head_dim, got ",
                cos.sizes());
  TORCH_CHECK(sin.sizes() == cos.sizes(), "rope_kv_write: sin ", sin.sizes(), " differs from cos ",
              cos.sizes());
  TORCH_CHECK(cos.scalar_type() == qkv.scalar_type() && sin.scalar_type() == qkv.scalar_type(),
              "rope_kv_write: cos/sin are ", cos.scalar_type(), "/", sin.scalar_type(), ", qkv is ",
              qkv.scalar_type());
  TORCH_CHECK(cos.is_contiguous() && sin.is_contiguous(),
              "rope_kv_write: cos and sin must be contiguous");
  const int64_t head_dim = cos.size(-1);
  TORCH_CHECK(head_dim >= 2 && head_dim % 2 == 0, "rope_kv_write: head_dim must be even, got ",
              head_dim);
  TORCH_CHECK(qkv.size(2) % (3 * head_dim) == 0 && qkv.size(2) > 0,
              "rope_kv_write: qkv's last dim ", qkv.size(2),
              " is not 3 * n_heads * head_dim with head_dim ", head_dim);
  const int64_t n_heads = qkv.size(2) / (3 * head_dim);
  TORCH_CHECK(kv_cache.dim() == 6 && kv_cache.size(1) == 2 && kv_cache.size(4) == n_heads &&
                  kv_cache.size(5) == head_dim,
              "rope_kv_write: kv_cache must be [n_layers, 2, n_slots, max_len, ", n_heads, ", ",
              head_dim, "], got ", kv_cache.sizes());
  TORCH_CHECK(kv_cache.scalar_type() == qkv.scalar_type(), "rope_kv_write: kv_cache is ",
              kv_cache.scalar_type(), ", qkv is ", qkv.scalar_type());
  // Any strides for layers, k/v, slots and positions (the engine passes narrowed views of its
  // cache); each position's [n_heads, head_dim] block must be contiguous.
  TORCH_CHECK(kv_cache.stride(5) == 1 && kv_cache.stride(4) == head_dim,
              "rope_kv_write: kv_cache's [n_heads, head_dim] rows must be contiguous, got strides ",
              kv_cache.strides());
  TORCH_CHECK(layer >= 0 && layer < kv_cache.size(0), "rope_kv_write: layer ", layer,
              " out of range [0, ", kv_cache.size(0), ")");
  TORCH_CHECK(slots.dim() == 1 && slots.size(0) == n_b && slots.scalar_type() == at::kLong,
              "rope_kv_write: slots must be int64 [", n_b, "], got ", slots.scalar_type(), " ",
              slots.sizes());
  TORCH_CHECK(positions.dim() == 2 && positions.size(0) == n_b && positions.size(1) == n_t &&
                  positions.scalar_type() == at::kLong,
              "rope_kv_write: positions must be int64 [", n_b, ", ", n_t, "], got ",
              positions.scalar_type(), " ", positions.sizes());
  for (const at::Tensor* t : {&cos, &sin, &kv_cache, &slots, &positions})
    TORCH_CHECK(t->device() == qkv.device(), "rope_kv_write: all tensors must be on ", qkv.device(),
                ", got one on ", t->device());
  // Value ranges need the data: checked on the CPU; on CUDA the caller guarantees them (no sync).
  if (qkv.is_cpu() && slots.numel() > 0 && positions.numel() > 0) {
    const int64_t smin = slots.min().item<int64_t>(), smax = slots.max().item<int64_t>();
    TORCH_CHECK(smin >= 0 && smax < kv_cache.size(2), "rope_kv_write: slots in [", smin, ", ", smax,
                "] out of range [0, ", kv_cache.size(2), ")");
    const int64_t pmin = positions.min().item<int64_t>(), pmax = positions.max().item<int64_t>();
    TORCH_CHECK(pmin >= 0 && pmax < kv_cache.size(3), "rope_kv_write: positions in [", pmin, ", ",
                pmax, "] out of range [0, max_len = ", kv_cache.size(3), ")");
  }
  return n_heads;
}

void check_moe_route_args(const at::Tensor& x, const at::Tensor& router, int64_t top_k) {
  TORCH_CHECK(x.dim() == 2, "moe_route: x must be [n_tokens, hidden], got ", x.sizes());
  TORCH_CHECK(router.dim() == 2 && router.size(1) == x.size(1),
              "moe_route: router must be [n_experts, ", x.size(1), "], got ", router.sizes());
  TORCH_CHECK(is_float_or_bf16(x), "moe_route: x must be float32 or bfloat16, got ",
              x.scalar_type());
  TORCH_CHECK(router.scalar_type() == x.scalar_type(), "moe_route: router is ",
              router.scalar_type(), ", x is ", x.scalar_type());
  TORCH_CHECK(router.device() == x.device(), "moe_route: router on ", router.device(), ", x on ",
              x.device());
  TORCH_CHECK(top_k >= 1 && top_k <= router.size(0), "moe_route: top_k ", top_k,
              " out of range for ", router.size(0), " experts");
}

at::Tensor rms_norm_reference(const at::Tensor& x, const at::Tensor& weight, double eps) {
  check_rms_norm_args("rms_norm", x, weight);
  const auto xf = x.to(at::kFloat);
  const auto y = xf * at::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return (weight * y.to(x.scalar_type())).contiguous();
}

std::tuple<at::Tensor, at::Tensor> add_rms_norm_reference(const at::Tensor& x,
                                                          const at::Tensor& residual,
                                                          const at::Tensor& weight, double eps) {
  check_rms_norm_args("add_rms_norm", x, weight);
  TORCH_CHECK(residual.sizes() == x.sizes() && residual.scalar_type() == x.scalar_type(),
              "add_rms_norm: residual ", residual.scalar_type(), " ", residual.sizes(),
              " differs from x ", x.scalar_type(), " ", x.sizes());
  TORCH_CHECK(residual.device() == x.device(), "add_rms_norm: residual on ", residual.device(),
              ", x on ", x.device());
  auto sum = (x + residual).contiguous();
  return {sum, rms_norm_reference(sum, weight, eps)};
}

at::Tensor rope_kv_write_reference(const at::Tensor& qkv, const at::Tensor& cos,
                                   const at::Tensor& sin, const at::Tensor& kv_cache, int64_t layer,
                                   const at::Tensor& slots, const at::Tensor& positions) {
  const int64_t n_heads =
      check_rope_kv_write_args(qkv, cos, sin, kv_cache, layer, slots, positions);
  const int64_t n_b = qkv.size(0), n_t = qkv.size(1), head_dim = cos.size(-1);
  const int64_t width = n_heads * head_dim;
  const auto c = cos.reshape({n_b, n_t, 1, head_dim});  // [n_b, n_t, 1, head_dim]
  const auto s = sin.reshape({n_b, n_t, 1, head_dim});
  const auto q = qkv.narrow(2, 0, width).view({n_b, n_t, n_heads, head_dim});
  const auto k = qkv.narrow(2, width, width).view({n_b, n_t, n_heads, head_dim});
  const auto v = qkv.narrow(2, 2 * width, width).view({n_b, n_t, n_heads, head_dim});
  const auto rows = slots.view({n_b, 1}).expand({n_b, n_t});  // [n_b, n_t]
  kv_cache.select(0, layer).select(0, 0).index_put_({rows, positions}, rope(k, c, s));
  kv_cache.select(0, layer).select(0, 1).index_put_({rows, positions}, v);
  return rope(q, c, s).contiguous();
}

std::tuple<at::Tensor, at::Tensor> moe_route_reference(const at::Tensor& x,
                                                       const at::Tensor& router, int64_t top_k,
                                                       bool renormalize) {
  check_moe_route_args(x, router, top_k);
  const auto logits = at::linear(x.to(at::kFloat), router.to(at::kFloat));  // [n_tokens, n_experts]
  return moe_topk_softmax_reference(logits, top_k, renormalize);
}

TORCH_LIBRARY_IMPL(ocr, CPU, m) {
  m.impl("rms_norm", &rms_norm_reference);
  m.impl("add_rms_norm", &add_rms_norm_reference);
  m.impl("rope_kv_write", &rope_kv_write_reference);
  m.impl("moe_route", &moe_route_reference);
}

}  // namespace ocr::kernels
