// The one schema registry of ocr-cli's custom ops. cpu/ and cuda/ register implementations.
// scripts/export.py loads this library, so the scripted decoder records calls to these schemas.
#include <torch/library.h>

#include <string>

TORCH_LIBRARY(ocr, m) {
  // Router of a DeepSeek MoE layer: softmax over experts (fp32) + top-k in one op.
  //   router_logits [n_tokens, n_experts] float32
  //   -> topk_weights [n_tokens, top_k] float32 (softmax probabilities, divided by their sum
  //      when renormalize), topk_ids [n_tokens, top_k] int32.
  // Outputs are sorted by descending weight; equal scores go to the lower expert index.
  m.def("moe_topk_softmax(Tensor router_logits, int top_k, bool renormalize) -> (Tensor, Tensor)");

  // Routed experts (SwiGLU) of a DeepSeek MoE layer, weighted and combined.
  //   hidden       [n_tokens, hidden]                    float32 or bfloat16
  //   topk_weights [n_tokens, top_k]                     float32
  //   topk_ids     [n_tokens, top_k]                     int32
  //   w_gate_up    [n_experts, 2 * inter, hidden]        rows 0..inter-1 gate, inter.. up
  //   w_down       [n_experts, hidden, inter]
  //   -> [n_tokens, hidden] in hidden's dtype:
  //      out[t] = cast( sum_k topk_weights[t,k] * float32(down(silu(gate(x)) * up(x))) ),
  //      every expert product rounded to hidden's dtype as in the reference implementation.
  m.def(
      "moe_experts(Tensor hidden, Tensor topk_weights, Tensor topk_ids, Tensor w_gate_up, "
      "Tensor w_down) -> Tensor");
}

#include <dlfcn.h>

#include <atomic>

#include "kernels/reference.h"

namespace {
std::atomic<bool> g_reference_kernels{false};
}

bool ocr::kernels::use_reference_kernels() { return g_reference_kernels.load(std::memory_order_relaxed); }

extern "C" void ocr_ops_use_reference_kernels(int enable) { g_reference_kernels.store(enable != 0); }

// Where this library was loaded from, so that tools can hand the same file to scripts/export.py.
// Calling it from the engine also keeps the library linked, so its registrations run at start-up.
extern "C" const char* ocr_ops_library_path() {
  static std::string path = [] {
    Dl_info info{};
    if (dladdr(reinterpret_cast<void*>(&ocr_ops_library_path), &info) && info.dli_fname) return std::string(info.dli_fname);
    return std::string();
  }();
  return path.c_str();
}
