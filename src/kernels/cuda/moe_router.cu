// Fused MoE router on CUDA: fp32 softmax over the experts + top-k in one kernel, one warp per token.
// Same results as moe_topk_softmax_cpu: descending score, equal scores to the lower expert index,
// optional renormalisation by the sum of the selected scores (summed in rank order).
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <cfloat>
#include <climits>

#include "kernels/cuda/moe_cuda.cuh"

namespace ocr::kernels::cuda {
namespace {

constexpr int kRouterWarps = 8;                    // tokens per block
constexpr int kPerLane = kMaxExperts / 32;         // scores each lane holds

// (value, index) order of the reference: higher score first, then the lower expert index.
__device__ __forceinline__ bool ranks_before(float v, int i, float best_v, int best_i) {
  return v > best_v || (v == best_v && i < best_i);
}

// router_logits [n_tokens, n_experts] -> topk_weights, topk_ids [n_tokens, top_k].
// Lane l holds experts l, l + 32, ... so the row is read coalesced and, within a lane, in
// ascending expert order (a strict '>' then keeps the lower index on ties).
__global__ void __launch_bounds__(kRouterWarps * 32)
    topk_softmax_kernel(const float* __restrict__ logits, float* __restrict__ topk_weights,
                        int32_t* __restrict__ topk_ids, int n_tokens, int n_experts, int top_k,
                        bool renormalize) {
  const int lane = threadIdx.x % 32;
  const int token = blockIdx.x * kRouterWarps + threadIdx.x / 32;
  if (token >= n_tokens) return;
  const float* row = logits + static_cast<int64_t>(token) * n_experts;

  float p[kPerLane];
  float row_max = -INFINITY;
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) {
    const int e = j * 32 + lane;
    p[j] = e < n_experts ? row[e] : -INFINITY;
    row_max = fmaxf(row_max, p[j]);
  }
#pragma unroll
  for (int off = 16; off > 0; off /= 2) row_max = fmaxf(row_max, __shfl_xor_sync(0xffffffffu, row_max, off));

  // A butterfly sum leaves the bit-identical total in every lane (a + b == b + a exactly).
  float sum = 0.f;
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) {
    if (j * 32 + lane < n_experts) {
      p[j] = expf(p[j] - row_max);
      sum += p[j];
    }
  }
#pragma unroll
  for (int off = 16; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
  const float inv_sum = 1.f / sum;  // the CPU softmax multiplies by the reciprocal too
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) p[j] *= inv_sum;

  // k rounds of a warp arg-max; rank k is kept by lane k % 32 in slot k / 32.
  uint32_t taken = 0;  // bit j: expert j * 32 + lane already selected
  float sel_sum = 0.f;
  float my_w[kPerLane];
  int my_id[kPerLane];
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) {
    my_w[j] = 0.f;
    my_id[j] = 0;
  }
  for (int k = 0; k < top_k; ++k) {
    float best_v = -INFINITY;
    int best_i = INT_MAX;
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) {
      const int e = j * 32 + lane;
      if (e < n_experts && !((taken >> j) & 1u) && ranks_before(p[j], e, best_v, best_i)) {
        best_v = p[j];
        best_i = e;
      }
    }
    // The order is total on (score, index), so every lane ends with the same winner.
#pragma unroll
    for (int off = 16; off > 0; off /= 2) {
      const float v = __shfl_xor_sync(0xffffffffu, best_v, off);
      const int i = __shfl_xor_sync(0xffffffffu, best_i, off);
      if (ranks_before(v, i, best_v, best_i)) {
        best_v = v;
        best_i = i;
      }
    }
    if (best_i < n_experts && best_i % 32 == lane) taken |= 1u << (best_i / 32);
    sel_sum += best_v;  // same order as the reference: ranks 0, 1, ..., k - 1
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) {
      if (k == j * 32 + lane) {
        my_w[j] = best_v;
        my_id[j] = best_i;
      }
    }
  }
  float* w_out = topk_weights + static_cast<int64_t>(token) * top_k;
  int32_t* id_out = topk_ids + static_cast<int64_t>(token) * top_k;
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) {
    const int k = j * 32 + lane;
    if (k < top_k) {
      w_out[k] = renormalize ? __fdiv_rn(my_w[j], sel_sum) : my_w[j];
      id_out[k] = my_id[j];
    }
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> moe_topk_softmax_cuda(const at::Tensor& router_logits,
                                                         int64_t top_k, bool renormalize) {
  TORCH_CHECK(router_logits.is_cuda(), "moe_topk_softmax: router_logits must be a CUDA tensor, got ",
              router_logits.device());
  TORCH_CHECK(router_logits.dim() == 2, "moe_topk_softmax: router_logits must be 2-D [n_tokens, n_experts], got ",
              router_logits.sizes());
  TORCH_CHECK(router_logits.scalar_type() == at::kFloat,
              "moe_topk_softmax: router_logits must be float32, got ", router_logits.scalar_type());
  const int64_t n_tokens = router_logits.size(0);
  const int64_t n_experts = router_logits.size(1);
  TORCH_CHECK(n_experts >= 1 && n_experts <= kMaxExperts, "moe_topk_softmax: the CUDA kernel supports 1..",
              kMaxExperts, " experts, got ", n_experts);
  TORCH_CHECK(top_k >= 1 && top_k <= n_experts, "moe_topk_softmax: top_k ", top_k, " out of range for ",
              n_experts, " experts");
  TORCH_CHECK(n_tokens <= INT_MAX / 2, "moe_topk_softmax: too many tokens: ", n_tokens);

  const c10::cuda::CUDAGuard device_guard(router_logits.device());
  const auto logits = router_logits.contiguous();
  auto weights = at::empty({n_tokens, top_k}, logits.options());                   // [n_tokens, top_k]
  auto ids = at::empty({n_tokens, top_k}, logits.options().dtype(at::kInt));       // [n_tokens, top_k]
  if (n_tokens == 0) return {weights, ids};

  const auto stream = at::cuda::getCurrentCUDAStream();
  const int blocks = static_cast<int>((n_tokens + kRouterWarps - 1) / kRouterWarps);
  topk_softmax_kernel<<<blocks, kRouterWarps * 32, 0, stream>>>(
      logits.data_ptr<float>(), weights.data_ptr<float>(), ids.data_ptr<int32_t>(),
      static_cast<int>(n_tokens), static_cast<int>(n_experts), static_cast<int>(top_k), renormalize);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {weights, ids};
}

}  // namespace ocr::kernels::cuda
