// Reference (plain ATen) implementations of the MoE ops, usable on any device, and the switch
// that makes the CUDA registrations use them (the benchmark's "no fused kernels" baseline).
#pragma once

#include <ATen/ATen.h>

#include <tuple>

namespace ocr::kernels {

std::tuple<at::Tensor, at::Tensor> moe_topk_softmax_reference(const at::Tensor& router_logits,
                                                              int64_t top_k, bool renormalize);
at::Tensor moe_experts_reference(const at::Tensor& hidden, const at::Tensor& topk_weights,
                                 const at::Tensor& topk_ids, const at::Tensor& w_gate_up,
                                 const at::Tensor& w_down);

// True while the CUDA ops should run the reference implementations instead of the fused kernels.
bool use_reference_kernels();

}  // namespace ocr::kernels

// Process-wide switch (C linkage so tools can call it without C++ headers): 1 = reference.
extern "C" void ocr_ops_use_reference_kernels(int enable);
