// Added tokens of tokenizer.json, found in text as whole strings before any other step.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ocr::tok {

struct AddedToken {
  int32_t id;
  std::string content;
  bool special;
  bool normalized;
  bool lstrip;
  bool rstrip;
};

// A stretch of text: an added token (id >= 0) or plain text for the pre-tokenizer (id == -1).
struct TextSplit {
  size_t start, end;
  int32_t id;
};

// The matcher of HF's AddedVocabulary: leftmost-longest over a set of token strings (HF builds an
// Aho-Corasick automaton with MatchKind::LeftmostLongest; a byte trie tried at every position
// that can start a token gives the same matches for the few hundred short tokens we have).
class AddedTokenMatcher {
 public:
  void build(const std::vector<const AddedToken*>& tokens);
  bool empty() const { return tokens_.empty(); }

  // HF AddedVocabulary::find_matches for text[start, end): appends the splits covering it,
  // lstrip/rstrip applied.
  void split(std::string_view text, size_t start, size_t end, std::vector<TextSplit>& out) const;

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int32_t>> children;  // sorted by byte
    int32_t token = -1;                                       // index into tokens_, -1 if none
  };
  // Leftmost-longest match at or after `from` in s; returns the token index or -1.
  int32_t find(std::string_view s, size_t from, size_t* match_start, size_t* match_end) const;

  std::vector<Node> nodes_;
  std::vector<const AddedToken*> tokens_;
  bool first_byte_[256] = {};
  int single_first_byte_ = -1;  // the first byte of every token when they share one (memchr)
};

}  // namespace ocr::tok
