#include "generate/ngram.h"

#include <algorithm>

namespace ocr {

uint64_t NoRepeatNgram::key_at(size_t start) const {
  uint64_t h = 1469598103934665603ull;
  for (int i = 0; i < n_ - 1; ++i) {
    h ^= static_cast<uint32_t>(seq_[start + i]);
    h *= 1099511628211ull;
  }
  return h;
}

bool NoRepeatNgram::same_prefix(size_t a, size_t b) const {
  return std::equal(seq_.begin() + a, seq_.begin() + a + (n_ - 1), seq_.begin() + b);
}

void NoRepeatNgram::reset(const std::vector<int32_t>& sequence) {
  seq_.clear();
  starts_.clear();
  for (int32_t t : sequence) push(t);
}

void NoRepeatNgram::push(int32_t token) {
  seq_.push_back(token);
  if (n_ <= 0 || seq_.size() < static_cast<size_t>(n_)) return;
  const size_t start = seq_.size() - n_;  // a new complete n-gram starts here
  starts_[key_at(start)].push_back(static_cast<uint32_t>(start));
}

std::vector<int32_t> NoRepeatNgram::banned() const {
  std::vector<int32_t> out;
  if (n_ <= 0 || seq_.size() + 1 < static_cast<size_t>(n_)) return out;
  if (n_ == 1) {  // every token already in the sequence would repeat a 1-gram
    out = seq_;
  } else {
    const size_t prefix = seq_.size() - (n_ - 1);
    auto it = starts_.find(key_at(prefix));
    if (it == starts_.end()) return out;
    for (uint32_t s : it->second)
      if (same_prefix(s, prefix)) out.push_back(seq_[s + n_ - 1]);
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

std::vector<int32_t> windowed_ngram_banned(const std::vector<int32_t>& generated, int n, int window,
                                           const std::unordered_set<int32_t>& whitelist) {
  std::vector<int32_t> out;
  const int64_t len = static_cast<int64_t>(generated.size());
  if (n <= 0 || len < n) return out;
  const int64_t prefix = len - (n - 1);
  const int64_t first = std::max<int64_t>(0, len - window);
  for (int64_t i = first; i <= len - n; ++i) {
    if (std::equal(generated.begin() + i, generated.begin() + i + (n - 1), generated.begin() + prefix)) {
      const int32_t t = generated[i + n - 1];
      if (!whitelist.count(t)) out.push_back(t);
    }
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

}  // namespace ocr
