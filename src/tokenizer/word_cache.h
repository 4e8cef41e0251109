// Piece -> ids memo for BPE. Text repeats its words, so most pieces are looked up, not merged.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ocr::tok {

// Open addressing on a fixed number of slots; when half full it is emptied and refilled, which
// keeps memory bounded and costs one miss per word afterwards. Not thread-safe (callers lock).
class WordCache {
 public:
  static constexpr size_t kMaxWordBytes = 256;  // longer pieces are rarely repeated

  explicit WordCache(size_t n_slots_log2 = 16);

  static uint64_t hash(std::string_view word);
  // Appends the cached ids of word to out and returns true, or returns false.
  bool lookup(std::string_view word, uint64_t hash, std::vector<int32_t>& out) const;
  void insert(std::string_view word, uint64_t hash, const int32_t* ids, size_t n_ids);

 private:
  struct Slot {
    uint64_t hash;
    uint32_t key_offset, key_size;  // key_size == 0: free (words are never empty)
    uint32_t ids_offset, ids_size;
  };
  void clear();

  std::vector<Slot> slots_;
  std::string keys_;
  std::vector<int32_t> ids_;
  size_t n_used_ = 0;
};

}  // namespace ocr::tok
