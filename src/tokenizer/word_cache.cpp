#include "tokenizer/word_cache.h"

#include <cstring>

namespace ocr::tok {

WordCache::WordCache(size_t n_slots_log2) : slots_(size_t{1} << n_slots_log2) { clear(); }

void WordCache::clear() {
  for (Slot& s : slots_) s.key_size = 0;
  keys_.clear();
  ids_.clear();
  n_used_ = 0;
}

uint64_t WordCache::hash(std::string_view word) {
  // FNV-1a: pieces are a few bytes long, where it is as fast as anything fancier.
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : word) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

bool WordCache::lookup(std::string_view word, uint64_t hash, std::vector<int32_t>& out) const {
  const size_t mask = slots_.size() - 1;
  for (size_t i = hash & mask;; i = (i + 1) & mask) {
    const Slot& s = slots_[i];
    if (s.key_size == 0) return false;
    if (s.hash == hash && s.key_size == word.size() &&
        std::memcmp(keys_.data() + s.key_offset, word.data(), word.size()) == 0) {
      out.insert(out.end(), ids_.begin() + s.ids_offset, ids_.begin() + s.ids_offset + s.ids_size);
      return true;
    }
  }
}

void WordCache::insert(std::string_view word, uint64_t hash, const int32_t* ids, size_t n_ids) {
  if (word.empty() || word.size() > kMaxWordBytes) return;
  if (2 * (n_used_ + 1) > slots_.size()) clear();
  const size_t mask = slots_.size() - 1;
  size_t i = hash & mask;
  for (;; i = (i + 1) & mask) {
    const Slot& s = slots_[i];
    if (s.key_size == 0) break;
    if (s.hash == hash && s.key_size == word.size() &&
        std::memcmp(keys_.data() + s.key_offset, word.data(), word.size()) == 0)
      return;  // another thread's insert got here first
  }
  slots_[i] = {hash, static_cast<uint32_t>(keys_.size()), static_cast<uint32_t>(word.size()),
               static_cast<uint32_t>(ids_.size()), static_cast<uint32_t>(n_ids)};
  keys_.append(word);
  ids_.insert(ids_.end(), ids, ids + n_ids);
  ++n_used_;
}

}  // namespace ocr::tok
