#include "generate/loop_detect.h"

#include <algorithm>

namespace ocr {

int periodic_suffix(const std::vector<int32_t>& tokens, int min_tail, int min_repeats, int max_period) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  for (int p = 1; p <= max_period; ++p) {
    const int64_t tail = std::max<int64_t>(min_tail, static_cast<int64_t>(min_repeats) * p);
    if (tail > n) break;  // longer periods need even longer tails
    bool periodic = true;
    for (int64_t i = n - tail + p; i < n && periodic; ++i) periodic = tokens[i] == tokens[i - p];
    if (periodic) return p;
  }
  return 0;
}

}  // namespace ocr
