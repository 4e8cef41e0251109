// The two repetition blockers of the official DeepSeek-OCR paths (spec 6.1).
#pragma once

#include <cstddef>
#include <cstdint>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace ocr {

// Hugging Face no_repeat_ngram_size: over the whole sequence (prompt + generated), no window, no
// whitelist. With n-1 <= length, every token t such that (last n-1 tokens, t) already occurs as an
// n-gram anywhere in the sequence is banned. Incremental: O(n) per appended token.
class NoRepeatNgram {
 public:
  explicit NoRepeatNgram(int n) : n_(n) {}
  void reset(const std::vector<int32_t>& sequence);
  void push(int32_t token);
  // Ids banned for the next token (unsorted, unique).
  std::vector<int32_t> banned() const;
  int n() const { return n_; }

 private:
  uint64_t key_at(size_t start) const;  // hash of seq_[start .. start+n-2]
  bool same_prefix(size_t a, size_t b) const;
  int n_;
  std::vector<int32_t> seq_;
  // hash of an (n-1)-gram -> start positions of n-grams with that prefix (collisions checked).
  std::unordered_map<uint64_t, std::vector<uint32_t>> starts_;
};

// vLLM-style windowed blocker over generated tokens only: for the last `window` generated tokens,
// every n-gram whose first n-1 tokens equal the current last n-1 tokens bans its last token;
// whitelisted ids are never banned.
std::vector<int32_t> windowed_ngram_banned(const std::vector<int32_t>& generated, int n, int window,
                                           const std::unordered_set<int32_t>& whitelist);

}  // namespace ocr
