// Calls into the TorchScript decoder over an engine-owned KV cache.
#pragma once

#include <torch/script.h>

#include <cstdint>
#include <vector>

#include "model/model.h"

namespace ocr {

// KV cache [n_layers, 2, n_slots, max_len, n_heads, head_dim] in the model's dtype, zeroed.
torch::Tensor make_kv_cache(const LoadedModel& model, int64_t n_slots, int64_t max_len);

// Input embeddings of one prompt: token embeddings with the image positions replaced, in order,
// by `visual` [n_image_tokens, hidden]. -> [n_ids, hidden].
torch::Tensor embed_prompt(LoadedModel& model, const std::vector<int32_t>& ids, const torch::Tensor& visual);

// Token embeddings of ids [n_b, n_t] (int64, on the model's device).
torch::Tensor embed_ids(LoadedModel& model, const torch::Tensor& ids);

struct DecoderOutput {
  torch::Tensor logits;  // [n_b, vocab] float32
  torch::Tensor hidden;  // [n_layers + 1, n_b, hidden] float32 when requested, else empty
};

// One decoder call: h [n_b, n_t, hidden]; positions [n_b, n_t]; slots [n_b] (unique, ascending);
// kv_len keys per slot;
// last_idx [n_b] index in n_t of the row whose logits are returned.
DecoderOutput decoder_forward(LoadedModel& model, const torch::Tensor& h, const torch::Tensor& positions,
                              torch::Tensor& kv_cache, const torch::Tensor& slots, int64_t kv_len,
                              const torch::Tensor& last_idx, bool return_hidden = false);

}  // namespace ocr
