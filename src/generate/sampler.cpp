#include "generate/sampler.h"

#include <limits>

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

}  // namespace ocr
