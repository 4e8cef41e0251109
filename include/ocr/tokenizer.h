// Exact DeepSeek (V3 + OCR) byte-level BPE tokenizer, read from a Hugging Face tokenizer.json.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ocr {

class Tokenizer {
 public:
  // Loads a Hugging Face tokenizer.json (byte-level BPE model + added tokens).
  // Throws ocr::ModelError naming the file and the problem.
  static Tokenizer from_file(const std::string& tokenizer_json_path);
  static Tokenizer from_json_string(const std::string& json_text, const std::string& name);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // HF encode(text, add_special_tokens=False): added tokens matched as whole strings first,
  // then the DeepSeek-V3 pre-tokenizer splits, byte-to-unicode mapping and BPE merges by rank.
  std::vector<int32_t> encode(std::string_view text) const;

  // HF decode(ids, skip_special_tokens): token bytes concatenated, then read as UTF-8 with every
  // maximal invalid subpart replaced by U+FFFD. Ids without text (e.g. 128827..) decode to nothing.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const;

  // Raw bytes of one token (added tokens: their content); empty for ids without text.
  const std::string& token_bytes(int32_t id) const;
  // Whether the id is an added token flagged special (dropped by skip_special).
  bool is_special(int32_t id) const;
  // Id of an exact token string (added token content or vocabulary piece), if any.
  std::optional<int32_t> token_to_id(std::string_view token) const;
  // One past the largest id that has text (128827 for DeepSeek-OCR).
  int32_t size() const;

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Turns ids into text as they arrive, never emitting half a UTF-8 character: incomplete trailing
// bytes are held back until the next token completes them (or flushed as U+FFFD by finish()).
// The concatenation of all push() results and finish() equals Tokenizer::decode of all ids.
class StreamDecoder {
 public:
  StreamDecoder(const Tokenizer& tokenizer, bool skip_special = false);
  std::string push(int32_t id);
  std::string finish();

 private:
  const Tokenizer* tokenizer_;
  bool skip_special_;
  std::string pending_;
};

}  // namespace ocr
