// CUDA implementations of the ocr:: MoE ops (schemas in src/kernels/ops.cpp).
#include <torch/library.h>

#include "kernels/cuda/moe_cuda.cuh"
#include "kernels/reference.h"

namespace ocr::kernels::cuda {
namespace {

// The fused kernels, or the plain-ATen reference when the benchmark asks for its baseline.
std::tuple<at::Tensor, at::Tensor> topk_softmax(const at::Tensor& logits, int64_t top_k, bool renormalize) {
  if (use_reference_kernels()) return moe_topk_softmax_reference(logits, top_k, renormalize);
  return moe_topk_softmax_cuda(logits, top_k, renormalize);
}

at::Tensor experts(const at::Tensor& hidden, const at::Tensor& w, const at::Tensor& ids,
                   const at::Tensor& w_gate_up, const at::Tensor& w_down) {
  if (use_reference_kernels()) return moe_experts_reference(hidden, w, ids, w_gate_up, w_down);
  return moe_experts_cuda(hidden, w, ids, w_gate_up, w_down);
}

}  // namespace

TORCH_LIBRARY_IMPL(ocr, CUDA, m) {
  m.impl("moe_topk_softmax", &topk_softmax);
  m.impl("moe_experts", &experts);
}

}  // namespace ocr::kernels::cuda
