#include "tokenizer/bpe.h"

#include <algorithm>
#include <array>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "tokenizer/unicode.h"

namespace ocr::tok {
namespace {

struct ByteAlphabet {
  std::array<char32_t, 256> to_unicode;
  std::array<int16_t, 0x144> to_byte;  // the alphabet lies within U+0000..U+0143; -1 outside it
};

const ByteAlphabet& byte_alphabet() {
  static const ByteAlphabet alphabet = [] {
    ByteAlphabet a;
    a.to_byte.fill(-1);
    char32_t next = 0x100;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      a.to_unicode[b] = printable ? static_cast<char32_t>(b) : next++;
      a.to_byte[a.to_unicode[b]] = static_cast<int16_t>(b);
    }
    return a;
  }();
  return alphabet;
}

}  // namespace

char32_t byte_to_unicode(uint8_t byte) { return byte_alphabet().to_unicode[byte]; }

std::string byte_level_token_bytes(std::string_view token) {
  const ByteAlphabet& a = byte_alphabet();
  std::string bytes;
  if (!is_valid_utf8(token)) return std::string(token);
  for (size_t i = 0; i < token.size();) {
    size_t len;
    const char32_t cp = decode_valid_utf8(token, i, &len);
    if (cp >= a.to_byte.size() || a.to_byte[cp] < 0) return std::string(token);
    bytes += static_cast<char>(a.to_byte[cp]);
    i += len;
  }
  return bytes;
}

MergeMap::MergeMap(size_t expected) {
  size_t capacity = 16;
  shift_ = 60;
  while (capacity < expected * 2) {
    capacity *= 2;
    --shift_;
  }
  slots_.assign(capacity, Slot{kEmpty, {0, 0}});
}

void MergeMap::set(int32_t left, int32_t right, Merge merge) {
  const uint64_t k = key(left, right);
  const size_t mask = slots_.size() - 1;
  for (size_t i = index(k);; i = (i + 1) & mask) {
    if (slots_[i].key == kEmpty || slots_[i].key == k) {
      slots_[i] = {k, merge};
      return;
    }
  }
}

const MergeMap::Merge* MergeMap::find(int32_t left, int32_t right) const {
  const uint64_t k = key(left, right);
  const size_t mask = slots_.size() - 1;
  for (size_t i = index(k);; i = (i + 1) & mask) {
    if (slots_[i].key == k) return &slots_[i].merge;
    if (slots_[i].key == kEmpty) return nullptr;
  }
}

BpeModel BpeModel::from_json(const nlohmann::json& model) {
  using nlohmann::json;
  if (model.value("type", "") != "BPE")
    throw std::invalid_argument("model.type is \"" + model.value("type", std::string()) +
                                "\", only BPE is supported");
  // Options that would change the result and that DeepSeek's file does not use.
  if (model.contains("dropout") && !model["dropout"].is_null() &&
      model["dropout"].get<double>() != 0)
    throw std::invalid_argument("model.dropout is set; BPE dropout is random and not supported");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (model.contains(key) && !model[key].is_null() && !model[key].get<std::string>().empty())
      throw std::invalid_argument(std::string("model.") + key + " is not supported");

  BpeModel m;
  m.ignore_merges_ = model.value("ignore_merges", false);
  const json& vocab = model.at("vocab");
  if (!vocab.is_object()) throw std::invalid_argument("model.vocab is not an object");
  m.vocab_.reserve(vocab.size());
  int64_t max_id = -1;
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    const int64_t id = it.value().get<int64_t>();
    if (id < 0 || id > INT32_MAX)
      throw std::invalid_argument("model.vocab: id " + std::to_string(id) + " out of range");
    m.vocab_.emplace(it.key(), static_cast<int32_t>(id));
    max_id = std::max(max_id, id);
  }
  m.id_to_piece_.resize(static_cast<size_t>(max_id + 1));
  m.has_piece_.assign(m.id_to_piece_.size(), false);
  for (const auto& [piece, id] : m.vocab_) {
    if (m.has_piece_[id])
      throw std::invalid_argument("model.vocab: id " + std::to_string(id) + " is used twice");
    m.has_piece_[id] = true;
    m.id_to_piece_[id] = piece;
  }
  // Byte-level BPE starts from one symbol per byte; with all 256 in the vocabulary the unk and
  // byte_fallback paths of HF can never trigger, so they need no code here.
  for (int b = 0; b < 256; ++b) {
    std::string ch;
    append_utf8(ch, byte_to_unicode(static_cast<uint8_t>(b)));
    auto it = m.vocab_.find(ch);
    if (it == m.vocab_.end())
      throw std::invalid_argument("model.vocab lacks the byte-level symbol of byte " +
                                  std::to_string(b) + " (\"" + ch + "\")");
    m.byte_ids_[b] = it->second;
  }

  const json& merges = model.at("merges");
  m.merges_ = MergeMap(merges.size());
  auto lookup = [&](const std::string& piece) {
    auto it = m.vocab_.find(piece);
    if (it == m.vocab_.end())
      throw std::invalid_argument("model.merges: \"" + piece + "\" is not in the vocabulary");
    return it->second;
  };
  uint32_t rank = 0;
  for (const json& merge : merges) {
    std::string left, right;
    if (merge.is_string()) {
      const std::string& s = merge.get_ref<const std::string&>();
      const size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos)
        throw std::invalid_argument("model.merges: \"" + s + "\" is not two pieces");
      left = s.substr(0, space);
      right = s.substr(space + 1);
    } else if (merge.is_array() && merge.size() == 2) {
      left = merge[0].get<std::string>();
      right = merge[1].get<std::string>();
    } else {
      throw std::invalid_argument("model.merges: entry " + std::to_string(rank) + " is malformed");
    }
    m.merges_.set(lookup(left), lookup(right), {rank, lookup(left + right)});
    ++rank;
  }
  m.byte_pair_merges_.assign(256 * 256, MergeMap::Merge{kNoMerge, -1});
  for (int a = 0; a < 256; ++a)
    for (int b = 0; b < 256; ++b)
      if (const MergeMap::Merge* merge = m.merges_.find(m.byte_ids_[a], m.byte_ids_[b]))
        m.byte_pair_merges_[a * 256 + b] = *merge;
  return m;
}

const std::string* BpeModel::piece(int32_t id) const {
  if (id < 0 || id >= id_end() || !has_piece_[id]) return nullptr;
  return &id_to_piece_[id];
}

std::optional<int32_t> BpeModel::piece_to_id(std::string_view piece) const {
  auto it = vocab_.find(std::string(piece));
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

void BpeModel::tokenize(std::string_view bytes, std::vector<int32_t>& ids) const {
  if (bytes.empty()) return;
  if (ignore_merges_) {
    std::string word;
    for (unsigned char b : bytes) append_utf8(word, byte_to_unicode(b));
    if (auto it = vocab_.find(word); it != vocab_.end()) {
      ids.push_back(it->second);
      return;
    }
  }
  const int n = static_cast<int>(bytes.size());
  if (n == 1) {
    ids.push_back(byte_ids_[static_cast<unsigned char>(bytes[0])]);
    return;
  }

  // HF Word::merge_all: a min-heap on (rank, position) over a linked list of symbols. HF skips a
  // queued merge when the pair now at its position merges to another id; since a symbol's id is
  // fixed by the bytes it covers and symbols only grow, that is exactly when either id of the
  // pair changed, which is cheaper to test than another merge lookup.
  struct Symbol {
    int32_t id;
    int32_t prev, next;
    bool alive;
  };
  struct Entry {
    uint32_t rank;
    int32_t pos;
    int32_t new_id;
    int32_t left, right;  // the pair when queued
  };
  auto later = [](const Entry& a, const Entry& b) {
    return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
  };
  thread_local std::vector<Symbol> symbols;
  thread_local std::vector<Entry> heap;
  symbols.resize(n);
  heap.clear();
  for (int i = 0; i < n; ++i)
    symbols[i] = {byte_ids_[static_cast<unsigned char>(bytes[i])], i - 1, i + 1 < n ? i + 1 : -1,
                  true};
  for (int i = 0; i + 1 < n; ++i) {
    const MergeMap::Merge& m = byte_pair_merges_[static_cast<unsigned char>(bytes[i]) * 256 +
                                                 static_cast<unsigned char>(bytes[i + 1])];
    if (m.rank != kNoMerge) heap.push_back({m.rank, i, m.new_id, symbols[i].id, symbols[i + 1].id});
  }
  std::make_heap(heap.begin(), heap.end(), later);

  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), later);
    const Entry top = heap.back();
    heap.pop_back();
    Symbol& cur = symbols[top.pos];
    if (!cur.alive || cur.next == -1) continue;
    const int right_pos = cur.next;
    const Symbol right = symbols[right_pos];
    if (cur.id != top.left || right.id != top.right) continue;  // expired entry

    cur.id = top.new_id;
    cur.next = right.next;
    symbols[right_pos].alive = false;
    if (right.next != -1) symbols[right.next].prev = top.pos;

    if (cur.prev != -1) {
      if (const MergeMap::Merge* m = merges_.find(symbols[cur.prev].id, cur.id)) {
        heap.push_back({m->rank, cur.prev, m->new_id, symbols[cur.prev].id, cur.id});
        std::push_heap(heap.begin(), heap.end(), later);
      }
    }
    if (cur.next != -1) {
      if (const MergeMap::Merge* m = merges_.find(cur.id, symbols[cur.next].id)) {
        heap.push_back({m->rank, top.pos, m->new_id, cur.id, symbols[cur.next].id});
        std::push_heap(heap.begin(), heap.end(), later);
      }
    }
  }
  for (int i = 0; i != -1; i = symbols[i].next) ids.push_back(symbols[i].id);
}

}  // namespace ocr::tok
