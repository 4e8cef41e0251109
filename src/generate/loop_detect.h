// Repetition-loop detection on generated tokens (issue: decoding never fails silently).
#pragma once

#include <cstdint>
#include <vector>

namespace ocr {

// Threshold of the periodic-suffix detector: the output is looping when its last
// max(kLoopMinTail, kLoopMinRepeats * p) tokens repeat with a period p <= kLoopMaxPeriod.
constexpr int kLoopMinTail = 64;
constexpr int kLoopMinRepeats = 4;
constexpr int kLoopMaxPeriod = 256;

// The smallest period p (1..max_period) such that the last max(min_tail, min_repeats * p) tokens
// satisfy t[i] == t[i - p]; 0 when there is none (or too few tokens).
int periodic_suffix(const std::vector<int32_t>& tokens, int min_tail = kLoopMinTail,
                    int min_repeats = kLoopMinRepeats, int max_period = kLoopMaxPeriod);

}  // namespace ocr
