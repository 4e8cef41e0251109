#include "generate/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace ocr {

void apply_bans(float* logits, int64_t vocab, const std::vector<int32_t>& banned) {
  for (int32_t id : banned)
    if (id >= 0 && id < vocab) logits[id] = -std::numeric_limits<float>::infinity();
}

int32_t argmax(const float* logits, int64_t vocab) {
  int32_t best = 0;
  for (int64_t i = 1; i < vocab; ++i)
    if (logits[i] > logits[best]) best = static_cast<int32_t>(i);
  return best;
}

int32_t sample(const float* logits, int64_t vocab, double temperature, double top_p, std::mt19937_64& rng) {
  if (temperature <= 0) return argmax(logits, vocab);
  const float top = logits[argmax(logits, vocab)];
  if (!std::isfinite(top)) return argmax(logits, vocab);
  std::vector<double> prob(static_cast<size_t>(vocab));
  double total = 0;
  for (int64_t i = 0; i < vocab; ++i) {
    prob[i] = std::isfinite(logits[i]) ? std::exp((static_cast<double>(logits[i]) - top) / temperature) : 0.0;
    total += prob[i];
  }
  // Ids by descending probability (ties: lower id first), keep the nucleus.
  std::vector<int32_t> order(static_cast<size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return prob[a] > prob[b]; });
  double kept = 0;
  size_t n_keep = 0;
  while (n_keep < order.size() && (n_keep == 0 || kept < top_p * total)) kept += prob[order[n_keep++]];
  std::uniform_real_distribution<double> uniform(0.0, kept);
  double u = uniform(rng);
  for (size_t k = 0; k < n_keep; ++k) {
    u -= prob[order[k]];
    if (u <= 0) return order[k];
  }
  return order[n_keep - 1];
}

}  // namespace ocr
