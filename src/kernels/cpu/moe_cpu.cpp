// Reference implementations of the MoE ops with plain ATen calls. They are the CPU kernels, the
// oracle of the CUDA sweep, and (with host syncs) the "no fused kernels" baseline on CUDA.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <numeric>
#include <vector>

#include "kernels/reference.h"

namespace ocr::kernels {
namespace {

void check_router(const at::Tensor& router_logits, int64_t top_k) {
  TORCH_CHECK(router_logits.dim() == 2, "moe_topk_softmax: router_logits must be 2-D, got ",
              router_logits.sizes());
  TORCH_CHECK(router_logits.scalar_type() == at::kFloat,
              "moe_topk_softmax: router_logits must be float32, got ", router_logits.scalar_type());
  TORCH_CHECK(top_k >= 1 && top_k <= router_logits.size(1), "moe_topk_softmax: top_k ", top_k,
              " out of range for ", router_logits.size(1), " experts");
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> moe_topk_softmax_reference(const at::Tensor& router_logits,
                                                        int64_t top_k, bool renormalize) {
  check_router(router_logits, top_k);
  const auto logits = router_logits.to(at::kCPU).contiguous();
  const int64_t n_tokens = logits.size(0);
  const int64_t n_experts = logits.size(1);
  auto scores = logits.softmax(-1, at::kFloat);  // same op as the reference: fp32 softmax
  auto weights = at::empty({n_tokens, top_k}, logits.options().dtype(at::kFloat));
  auto ids = at::empty({n_tokens, top_k}, logits.options().dtype(at::kInt));
  const float* s = scores.data_ptr<float>();
  float* w = weights.data_ptr<float>();
  int32_t* id = ids.data_ptr<int32_t>();
  std::vector<int32_t> order(n_experts);
  for (int64_t t = 0; t < n_tokens; ++t) {
    const float* row = s + t * n_experts;
    std::iota(order.begin(), order.end(), 0);
    // Descending score; ties to the lower expert index (stable on an ascending index list).
    std::partial_sort(order.begin(), order.begin() + top_k, order.end(),
                      [row](int32_t a, int32_t b) { return row[a] > row[b] || (row[a] == row[b] && a < b); });
    float sum = 0.f;
    for (int64_t k = 0; k < top_k; ++k) sum += row[order[k]];
    for (int64_t k = 0; k < top_k; ++k) {
      id[t * top_k + k] = order[k];
      w[t * top_k + k] = renormalize ? row[order[k]] / sum : row[order[k]];
    }
  }
  return {weights.to(router_logits.device()), ids.to(router_logits.device())};
}

at::Tensor moe_experts_reference(const at::Tensor& hidden, const at::Tensor& topk_weights,
                           const at::Tensor& topk_ids, const at::Tensor& w_gate_up,
                           const at::Tensor& w_down) {
  TORCH_CHECK(hidden.dim() == 2, "moe_experts: hidden must be [n_tokens, hidden], got ", hidden.sizes());
  TORCH_CHECK(topk_ids.dim() == 2 && topk_ids.size(0) == hidden.size(0),
              "moe_experts: topk_ids must be [n_tokens, top_k], got ", topk_ids.sizes());
  TORCH_CHECK(topk_weights.sizes() == topk_ids.sizes(), "moe_experts: topk_weights ",
              topk_weights.sizes(), " vs topk_ids ", topk_ids.sizes());
  TORCH_CHECK(w_gate_up.dim() == 3 && w_down.dim() == 3, "moe_experts: expert weights must be 3-D");
  const int64_t n_tokens = hidden.size(0);
  const int64_t top_k = topk_ids.size(1);
  const int64_t n_experts = w_gate_up.size(0);
  const int64_t inter = w_gate_up.size(1) / 2;
  TORCH_CHECK(w_gate_up.size(2) == hidden.size(1) && w_down.size(0) == n_experts &&
                  w_down.size(1) == hidden.size(1) && w_down.size(2) == inter,
              "moe_experts: shapes disagree: hidden ", hidden.sizes(), ", w_gate_up ",
              w_gate_up.sizes(), ", w_down ", w_down.sizes());

  const auto ids = topk_ids.to(at::kCPU, at::kLong).contiguous();  // grouping happens on the host
  const auto weights = topk_weights.to(at::kFloat).contiguous();
  // [n_tokens * top_k, hidden] in fp32: each (token, slot) gets its own weighted expert output,
  // then the top_k slots are summed per token, as the reference does.
  auto per_slot = at::zeros({n_tokens * top_k, hidden.size(1)}, hidden.options().dtype(at::kFloat));
  if (n_tokens == 0) return at::zeros_like(hidden);
  const auto flat_ids = ids.view({-1});
  const auto slot_expert = flat_ids.accessor<int64_t, 1>();
  std::vector<std::vector<int64_t>> slots_of(n_experts);
  for (int64_t i = 0; i < n_tokens * top_k; ++i) {
    const int64_t e = slot_expert[i];
    TORCH_CHECK(e >= 0 && e < n_experts, "moe_experts: expert id ", e, " out of range [0, ", n_experts, ")");
    slots_of[e].push_back(i);
  }
  const auto flat_w = weights.view({-1});
  for (int64_t e = 0; e < n_experts; ++e) {
    if (slots_of[e].empty()) continue;
    auto slots = at::tensor(slots_of[e], at::kLong).to(hidden.device());
    auto x = hidden.index_select(0, at::floor_divide(slots, top_k));   // [n, hidden]
    auto gu = at::matmul(x, w_gate_up[e].t());                         // [n, 2*inter]
    auto act = at::silu(gu.narrow(1, 0, inter)) * gu.narrow(1, inter, inter);
    auto y = at::matmul(act, w_down[e].t());                           // [n, hidden]
    per_slot.index_copy_(0, slots, y.to(at::kFloat) * flat_w.index_select(0, slots).unsqueeze(1));
  }
  return per_slot.view({n_tokens, top_k, hidden.size(1)}).sum(1).to(hidden.scalar_type());
}

TORCH_LIBRARY_IMPL(ocr, CPU, m) {
  m.impl("moe_topk_softmax", &moe_topk_softmax_reference);
  m.impl("moe_experts", &moe_experts_reference);
}

}  // namespace ocr::kernels
