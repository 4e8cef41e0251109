// Byte-level BPE model of tokenizer.json ("model": {"type": "BPE", ...}).
#pragma once

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace ocr::tok {

// GPT-2's byte <-> unicode alphabet: printable Latin-1 bytes stand for themselves, the other 68
// bytes for U+0100.. in byte order, so every byte string has a printable, lossless spelling.
char32_t byte_to_unicode(uint8_t byte);

// HF's ByteLevel decoder applied to one token string: the bytes its characters stand for, or the
// token's own UTF-8 when some character is outside the alphabet (e.g. "<｜User｜>").
std::string byte_level_token_bytes(std::string_view token);

// Open-addressing map (pair of ids -> merge): this lookup is the inner loop of BPE.
class MergeMap {
 public:
  struct Merge {
    uint32_t rank;
    int32_t new_id;
  };
  explicit MergeMap(size_t expected = 0);
  // Inserts or overwrites (a later duplicate merge wins, as in HF's HashMap collect).
  void set(int32_t left, int32_t right, Merge merge);
  const Merge* find(int32_t left, int32_t right) const;

 private:
  struct Slot {
    uint64_t key;  // kEmpty when free
    Merge merge;
  };
  static constexpr uint64_t kEmpty = ~uint64_t{0};
  static uint64_t key(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
           static_cast<uint32_t>(right);
  }
  size_t index(uint64_t k) const { return (k * 0x9E3779B97F4A7C15ull) >> shift_; }
  std::vector<Slot> slots_;
  int shift_;
};

class BpeModel {
 public:
  // Reads tokenizer.json's "model"; throws std::invalid_argument naming the problem.
  static BpeModel from_json(const nlohmann::json& model);

  // Appends the ids of one pre-tokenized piece, given as raw bytes (HF: ByteLevel then BPE).
  void tokenize(std::string_view bytes, std::vector<int32_t>& ids) const;

  // Vocabulary piece of an id (in the byte-level alphabet), nullptr if the id has none.
  const std::string* piece(int32_t id) const;
  std::optional<int32_t> piece_to_id(std::string_view piece) const;
  // Number of vocabulary entries (HF get_vocab_size), and one past the largest id.
  size_t n_pieces() const { return vocab_.size(); }
  int32_t id_end() const { return static_cast<int32_t>(id_to_piece_.size()); }

 private:
  std::unordered_map<std::string, int32_t> vocab_;
  std::vector<std::string> id_to_piece_;
  std::vector<bool> has_piece_;
  MergeMap merges_;
  int32_t byte_ids_[256];  // id of the one-character piece of each byte
  // Merge of each byte pair (rank kNoMerge if none): every word starts as bytes, so the first
  // round of lookups is dense and needs no hashing.
  static constexpr uint32_t kNoMerge = UINT32_MAX;
  std::vector<MergeMap::Merge> byte_pair_merges_;
  bool ignore_merges_ = false;
};

}  // namespace ocr::tok
