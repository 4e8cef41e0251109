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

  // One decoding step's token choice, on the device that holds the logits (no host sync): the
  // repetition blockers of spec 6.1 (HF whole-sequence no_repeat_ngram, the windowed blocker over
  // generated tokens with its whitelist) set banned logits to -inf in place, then greedy argmax
  // (lowest id on ties), then the token is appended to the slot's sequence. Layout and fields:
  // src/kernels/select.h.
  //   logits [m, vocab] float32 (row j belongs to slot rows[j]); rows [m] int64;
  //   seq [n_slots, max_len] int32; lens [n_slots] int32; params [n_slots, kSelectParams] int32;
  //   whitelist [n_slots, n_white] int32 (-1 = unused); forced [m] int64 (>= 0: append this
  //   token instead: no bans, no argmax); next_ids, next_pos [n_slots, 1] int64 (the next decoding
  //   step's inputs); emitted [m] int64 (token appended, -1 idle row, -2 bans applied and the
  //   host chooses).
  m.def(
      "select_tokens(Tensor(a!) logits, Tensor rows, Tensor(b!) seq, Tensor(c!) lens, "
      "Tensor(d!) params, Tensor whitelist, Tensor forced, Tensor(e!) next_ids, Tensor(f!) "
      "next_pos, "
      "Tensor(g!) emitted) -> ()");

  // RMSNorm of the decoder (fused decode-step op), exactly the module's rounding:
  //   y = float(x) * rsqrt(mean(float(x)^2, -1) + eps), rounded to x's dtype; out = weight * y.
  //   x [..., dim] float32 or bfloat16 (last dim contiguous); weight [dim] x's dtype
  //   -> [..., dim] contiguous, x's dtype.
  m.def("rms_norm(Tensor x, Tensor weight, float eps) -> Tensor");

  // Residual add + RMSNorm: sum = x + residual (rounded to x's dtype), normed = rms_norm(sum).
  //   x, residual [..., dim] same shape and dtype; weight [dim]
  //   -> sum [..., dim], normed [..., dim], both contiguous in x's dtype.
  m.def("add_rms_norm(Tensor x, Tensor residual, Tensor weight, float eps) -> (Tensor, Tensor)");

  // Rotary embedding of q and k plus the KV-cache write of one attention layer, in one op.
  //   qkv [n_b, n_t, 3 * n_heads * head_dim] contiguous: q | k | v, each [n_heads, head_dim];
  //   cos, sin [n_b, n_t, head_dim] (size-1 dims allowed: [n_b, n_t, 1, head_dim]), qkv's dtype;
  //   kv_cache [n_layers, 2, n_slots, max_len, n_heads, head_dim], qkv's dtype (any strides
  //   for the first four dims: narrowed views of the engine's cache; [n_heads, head_dim]
  //   contiguous); slots [n_b] int64; positions [n_b, n_t] int64 (< max_len, unique (slot,
  //   position) pairs: checked on the CPU only, the caller guarantees them on CUDA). rope(x) = x *
  //   cos + rotate_half(x) * sin, each product and the sum rounded to the dtype. Writes
  //   kv_cache[layer, 0, slots[b], positions[b, t]] = rope(k[b, t]) and kv_cache[layer, 1,
  //   slots[b], positions[b, t]] = v[b, t]
  //   -> rope(q) [n_b, n_t, n_heads, head_dim] contiguous.
  m.def(
      "rope_kv_write(Tensor qkv, Tensor cos, Tensor sin, Tensor(a!) kv_cache, int layer, "
      "Tensor slots, Tensor positions) -> Tensor");

  // MoE router with its logits: logits = float(x) @ float(router)^T, then moe_topk_softmax.
  //   x [n_tokens, hidden] float32 or bfloat16; router [n_experts, hidden] x's dtype
  //   -> topk_weights [n_tokens, top_k] float32, topk_ids [n_tokens, top_k] int32 (same order and
  //      tie rule as moe_topk_softmax).
  m.def("moe_route(Tensor x, Tensor router, int top_k, bool renormalize) -> (Tensor, Tensor)");

  // Attention of one decoding step over the KV cache (split-K flash-decoding on CUDA), reading
  // only each row's real keys.
  //   q [B, 1, n_heads, head_dim] contiguous, float32 or bfloat16, head_dim even and <= 256;
  //   kv_cache [n_layers, 2, n_slots, max_len, n_heads, head_dim], q's dtype (narrowed views
  //   allowed: any strides for the first three dims, [max_len, n_heads, head_dim] contiguous);
  //   slots [B] int64 (distinct, any order); positions [B, 1] int64 (query position p_b);
  //   kv_len in [1, max_len], a static bound (the CUDA grid is sized from it).
  //   Row b attends keys j = 0 .. min(p_b, kv_len - 1) of kv_cache[layer, 0, slots[b]] with values
  //   kv_cache[layer, 1, slots[b]]: softmax_j((q . k_j) / sqrt(head_dim)) weighted sum of v_j, in
  //   fp32, rounded once to q's dtype (= scaled_dot_product_attention with the decoder's additive
  //   0/-inf causal mask, up to the fp32 summation order). Slot and position ranges
  //   (0 <= p_b < max_len) are checked on the CPU only.
  //   -> [B, 1, n_heads, head_dim] contiguous, q's dtype.
  m.def(
      "decode_attention(Tensor q, Tensor kv_cache, int layer, Tensor slots, Tensor positions, "
      "int kv_len) -> Tensor");
}

#include <dlfcn.h>

#include <atomic>

#include "kernels/reference.h"

namespace {
std::atomic<bool> g_reference_kernels{false};
}

bool ocr::kernels::use_reference_kernels() {
  return g_reference_kernels.load(std::memory_order_relaxed);
}

extern "C" void ocr_ops_use_reference_kernels(int enable) {
  g_reference_kernels.store(enable != 0);
}

// Where this library was loaded from, so that tools can hand the same file to scripts/export.py.
// Calling it from the engine also keeps the library linked, so its registrations run at start-up.
extern "C" const char* ocr_ops_library_path() {
  static std::string path = [] {
    Dl_info info{};
    if (dladdr(reinterpret_cast<void*>(&ocr_ops_library_path), &info) && info.dli_fname)
      return std::string(info.dli_fname);
    return std::string();
  }();
  return path.c_str();
}
