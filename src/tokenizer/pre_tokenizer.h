// The pre-tokenizer of tokenizer.json: a Sequence of Split steps and a final ByteLevel step.
//
// HF runs the Split regexes with Oniguruma. We do not embed a regex engine: the patterns that
// DeepSeek's tokenizer.json uses are recognised verbatim and matched by hand-written matchers that
// follow Oniguruma's backtracking order (see pre_tokenizer.cpp). Any other pattern is refused when
// the file is loaded, so an unfamiliar tokenizer.json fails loudly instead of tokenizing wrongly.
#pragma once

#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace ocr::tok {

class PreTokenizer {
 public:
  // How a Split step turns matches into pieces (HF SplitDelimiterBehavior).
  enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };
  // The patterns we can match.
  enum class Pattern {
    kLiteral,       // {"String": "..."}: every occurrence, left to right
    kDigits,        // \p{N}{1,3}
    kCjkKana,       // [一-龥぀-ゟ゠-ヿ]+
    kDeepSeekWord,  // DeepSeek-V3's word / punctuation / whitespace alternation
  };
  struct Step {
    Pattern pattern;
    std::string literal;  // for kLiteral
    Behavior behavior;
    bool invert;
  };

  // Reads tokenizer.json's "pre_tokenizer"; throws std::invalid_argument naming what is not
  // supported (the caller adds the file name).
  static PreTokenizer from_json(const nlohmann::json& pre_tokenizer);

  // Appends the pieces of text (valid UTF-8) that the model tokenizes one by one, in order.
  void split(std::string_view text, std::vector<std::string_view>& pieces) const;

 private:
  std::vector<Step> steps_;
};

// Finds the first match of the pattern in s at or after byte `from`; returns false if none.
// Exposed for the tests.
bool find_pattern(const PreTokenizer::Step& step, std::string_view s, size_t from, size_t* start,
                  size_t* end);

}  // namespace ocr::tok
