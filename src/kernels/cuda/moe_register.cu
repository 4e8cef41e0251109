// CUDA implementations of the ocr:: MoE ops (schemas in src/kernels/ops.cpp).
#include <torch/library.h>

#include "kernels/cuda/moe_cuda.cuh"

namespace ocr::kernels::cuda {

TORCH_LIBRARY_IMPL(ocr, CUDA, m) {
  m.impl("moe_topk_softmax", &moe_topk_softmax_cuda);
  m.impl("moe_experts", &moe_experts_cuda);
}

}  // namespace ocr::kernels::cuda
