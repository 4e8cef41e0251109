// ocr::Tokenizer: HF tokenizers' encode/decode pipeline for DeepSeek's byte-level BPE.
//
// encode: added tokens (non-normalized ones on the raw text, then normalized ones on what is
// left; the normalizer must be the identity) -> pre-tokenizer splits -> BPE per piece.
// decode: per id, HF's ByteLevel decoder bytes, concatenated, then UTF-8 with U+FFFD.
#include "ocr/tokenizer.h"

#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>
#include <unordered_map>
#include <unordered_set>

#include "ocr/errors.h"
#include "tokenizer/added_vocab.h"
#include "tokenizer/bpe.h"
#include "tokenizer/pre_tokenizer.h"
#include "tokenizer/unicode.h"
#include "tokenizer/word_cache.h"

namespace ocr {

namespace {

bool normalizer_is_identity(const nlohmann::json& j) {
  if (j.is_null()) return true;
  if (j.value("type", "") != "Sequence") return false;
  for (const auto& sub : j.at("normalizers"))
    if (!normalizer_is_identity(sub)) return false;
  return true;
}

bool decoder_is_byte_level(const nlohmann::json& j) {
  // HF's ByteLevel decoder ignores its add_prefix_space/trim_offsets/use_regex options.
  return !j.is_null() && j.value("type", "") == "ByteLevel";
}

}  // namespace

struct Tokenizer::Impl {
  tok::BpeModel model;
  tok::PreTokenizer pre_tokenizer;
  std::vector<tok::AddedToken> added;  // file order
  std::unordered_map<std::string, int32_t> added_ids;
  tok::AddedTokenMatcher raw_matcher;         // normalized=false tokens, matched first
  tok::AddedTokenMatcher normalized_matcher;  // normalized=true tokens, matched in what is left
  std::vector<std::string> id_bytes;          // decoded bytes of each id; empty: no text
  std::vector<uint8_t> id_special;            // 1 if decode(skip_special) drops the id
  int32_t size = 0;

  mutable std::mutex cache_mutex;
  mutable tok::WordCache cache;

  // Reads a parsed tokenizer.json; throws std::invalid_argument or nlohmann errors.
  static std::unique_ptr<Impl> load(const nlohmann::json& j);
  void tokenize_piece(std::string_view piece, std::vector<int32_t>& ids) const;
};

std::unique_ptr<Tokenizer::Impl> Tokenizer::Impl::load(const nlohmann::json& j) {
  using std::invalid_argument;
  if (!j.is_object()) throw invalid_argument("not a JSON object");
  for (const char* key : {"truncation", "padding"})
    if (j.contains(key) && !j[key].is_null())
      throw invalid_argument(std::string("\"") + key + "\" is set; encode would " +
                             (key[0] == 't' ? "truncate" : "pad") + " and that is not supported");
  if (!normalizer_is_identity(j.value("normalizer", nlohmann::json())))
    throw invalid_argument("normalizer " + j["normalizer"].dump() +
                           " is not supported (only none or an empty Sequence)");
  if (!decoder_is_byte_level(j.value("decoder", nlohmann::json())))
    throw invalid_argument("decoder is not ByteLevel");

  auto impl = std::make_unique<Tokenizer::Impl>();
  impl->model = tok::BpeModel::from_json(j.at("model"));
  impl->pre_tokenizer = tok::PreTokenizer::from_json(j.at("pre_tokenizer"));

  // Added tokens, with the ids HF would give them (AddedVocabulary::add_tokens): an existing
  // token keeps its id, a new one gets the next id after the vocabulary / the last added token.
  const auto n_pieces = static_cast<int64_t>(impl->model.n_pieces());
  int64_t max_added = -1;
  if (j.contains("added_tokens")) {
    for (const auto& t : j.at("added_tokens")) {
      tok::AddedToken a;
      a.id = t.at("id").get<int32_t>();
      a.content = t.at("content").get<std::string>();
      a.special = t.value("special", false);
      a.normalized = t.value("normalized", !a.special);
      a.lstrip = t.value("lstrip", false);
      a.rstrip = t.value("rstrip", false);
      if (t.value("single_word", false))
        throw invalid_argument("added token " + nlohmann::json(a.content).dump() +
                               ": single_word=true is not supported");
      if (a.content.empty()) continue;  // HF ignores empty added tokens
      if (impl->added_ids.count(a.content))
        throw invalid_argument("added token " + nlohmann::json(a.content).dump() +
                               " appears twice");
      int64_t hf_id;
      if (auto existing = impl->model.piece_to_id(a.content)) {
        hf_id = *existing;
      } else if (max_added < 0) {
        hf_id = n_pieces;
      } else {
        hf_id = (max_added >= n_pieces || n_pieces == 0) ? max_added + 1 : n_pieces;
      }
      if (hf_id != a.id)
        throw invalid_argument("added token " + nlohmann::json(a.content).dump() + " has id " +
                               std::to_string(a.id) + " but HF tokenizers would give it id " +
                               std::to_string(hf_id));
      max_added = std::max<int64_t>(max_added, a.id);
      impl->added_ids.emplace(a.content, a.id);
      impl->added.push_back(std::move(a));
    }
  }
  std::vector<const tok::AddedToken*> raw, normalized;
  for (const auto& a : impl->added) (a.normalized ? normalized : raw).push_back(&a);
  impl->raw_matcher.build(raw);
  impl->normalized_matcher.build(normalized);

  // Decoding tables. HF: added content first, then the vocabulary piece; a token is dropped by
  // skip_special when its string is the content of a special added token.
  std::unordered_set<std::string> special_contents;
  for (const auto& a : impl->added)
    if (a.special) special_contents.insert(a.content);
  int32_t end = impl->model.id_end();
  for (const auto& a : impl->added) end = std::max(end, a.id + 1);
  impl->id_bytes.assign(end, std::string());
  impl->id_special.assign(end, 0);
  std::vector<const std::string*> strings(end, nullptr);
  for (int32_t id = 0; id < impl->model.id_end(); ++id) strings[id] = impl->model.piece(id);
  for (const auto& a : impl->added) strings[a.id] = &a.content;
  for (int32_t id = 0; id < end; ++id) {
    if (!strings[id]) continue;
    impl->id_bytes[id] = tok::byte_level_token_bytes(*strings[id]);
    impl->id_special[id] = special_contents.count(*strings[id]) ? 1 : 0;
    impl->size = id + 1;
  }
  return impl;
}

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::from_json_string(const std::string& json_text, const std::string& name) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(json_text);
  } catch (const nlohmann::json::exception& e) {
    throw ModelError(name + ": not valid JSON: " + e.what());
  }
  try {
    return Tokenizer(Impl::load(j));
  } catch (const nlohmann::json::exception& e) {
    throw ModelError(name + ": unexpected tokenizer.json content: " + e.what());
  } catch (const std::invalid_argument& e) {
    throw ModelError(name + ": " + e.what());
  }
}

Tokenizer Tokenizer::from_file(const std::string& tokenizer_json_path) {
  std::ifstream in(tokenizer_json_path, std::ios::binary);
  if (!in) throw ModelError(tokenizer_json_path + ": cannot open the tokenizer file");
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) throw ModelError(tokenizer_json_path + ": cannot read the tokenizer file");
  return from_json_string(buffer.str(), tokenizer_json_path);
}

void Tokenizer::Impl::tokenize_piece(std::string_view piece, std::vector<int32_t>& ids) const {
  if (piece.size() > tok::WordCache::kMaxWordBytes) {
    model.tokenize(piece, ids);
    return;
  }
  const uint64_t hash = tok::WordCache::hash(piece);
  {
    std::lock_guard<std::mutex> lock(cache_mutex);
    if (cache.lookup(piece, hash, ids)) return;
  }
  const size_t first = ids.size();
  model.tokenize(piece, ids);
  std::lock_guard<std::mutex> lock(cache_mutex);
  cache.insert(piece, hash, ids.data() + first, ids.size() - first);
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  // Text that is not UTF-8 is read as Python's bytes.decode(errors="replace") would: the
  // reference only ever sees valid strings.
  std::string repaired;
  if (!tok::is_valid_utf8(text)) {
    tok::append_utf8_lossy(repaired, text, /*final=*/true);
    text = repaired;
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  std::vector<tok::TextSplit> outer, inner;
  std::vector<std::string_view> pieces;
  impl_->raw_matcher.split(text, 0, text.size(), outer);
  for (const tok::TextSplit& s : outer) {
    if (s.id >= 0) {
      ids.push_back(s.id);
      continue;
    }
    inner.clear();
    impl_->normalized_matcher.split(text, s.start, s.end, inner);
    for (const tok::TextSplit& t : inner) {
      if (t.id >= 0) {
        ids.push_back(t.id);
        continue;
      }
      pieces.clear();
      impl_->pre_tokenizer.split(text.substr(t.start, t.end - t.start), pieces);
      for (std::string_view piece : pieces) impl_->tokenize_piece(piece, ids);
    }
  }
  return ids;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  std::string bytes;
  for (int32_t id : ids) {
    if (id < 0 || id >= impl_->size) continue;
    if (skip_special && impl_->id_special[id]) continue;
    bytes += impl_->id_bytes[id];
  }
  std::string text;
  tok::append_utf8_lossy(text, bytes, /*final=*/true);
  return text;
}

const std::string& Tokenizer::token_bytes(int32_t id) const {
  static const std::string kNone;
  if (id < 0 || id >= impl_->size) return kNone;
  return impl_->id_bytes[id];
}

bool Tokenizer::is_special(int32_t id) const {
  return id >= 0 && id < impl_->size && impl_->id_special[id] != 0;
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  if (auto it = impl_->added_ids.find(std::string(token)); it != impl_->added_ids.end())
    return it->second;
  return impl_->model.piece_to_id(token);
}

int32_t Tokenizer::size() const { return impl_->size; }

StreamDecoder::StreamDecoder(const Tokenizer& tokenizer, bool skip_special)
    : tokenizer_(&tokenizer), skip_special_(skip_special) {}

std::string StreamDecoder::push(int32_t id) {
  if (skip_special_ && tokenizer_->is_special(id)) return {};
  pending_ += tokenizer_->token_bytes(id);
  // Everything up to a trailing, still completable UTF-8 prefix is final: the lossy reading of
  // a byte never depends on bytes after the sequence it belongs to.
  std::string text;
  const size_t used = tok::append_utf8_lossy(text, pending_, /*final=*/false);
  pending_.erase(0, used);
  return text;
}

std::string StreamDecoder::finish() {
  std::string text;
  tok::append_utf8_lossy(text, pending_, /*final=*/true);
  pending_.clear();
  return text;
}

}  // namespace ocr
