// Choosing the next token from a row of logits.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace ocr {

// Sets the logits of `banned` ids to -infinity.
void apply_bans(float* logits, int64_t vocab, const std::vector<int32_t>& banned);

// Index of the largest logit; the lowest id wins a tie (as torch.argmax / HF greedy).
int32_t argmax(const float* logits, int64_t vocab);

// Samples from softmax(logits / temperature) restricted to the smallest set of top ids whose
// probability reaches top_p (nucleus). Deterministic for a given generator state.
int32_t sample(const float* logits, int64_t vocab, double temperature, double top_p, std::mt19937_64& rng);

}  // namespace ocr
