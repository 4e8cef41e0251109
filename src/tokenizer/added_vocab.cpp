#include "tokenizer/added_vocab.h"

#include <algorithm>
#include <cstring>

#include "tokenizer/unicode.h"

namespace ocr::tok {
namespace {

// Start of the whitespace run that ends at `end`, not before `floor` (Rust regex \s*$).
size_t whitespace_run_start(std::string_view text, size_t floor, size_t end) {
  size_t i = end;
  while (i > floor) {
    size_t p = i - 1;
    while (p > floor && (static_cast<unsigned char>(text[p]) & 0xC0) == 0x80) --p;
    size_t len;
    if (!(unicode_classes(decode_valid_utf8(text, p, &len)) & kClassWs)) break;
    i = p;
  }
  return i;
}

// End of the whitespace run starting at `start` (Rust regex ^\s*).
size_t whitespace_run_end(std::string_view text, size_t start, size_t end) {
  size_t i = start;
  while (i < end) {
    size_t len;
    const char32_t cp = decode_valid_utf8(text, i, &len);
    if (!(unicode_classes(cp) & kClassWs)) break;
    i += len;
  }
  return i;
}

}  // namespace

void AddedTokenMatcher::build(const std::vector<const AddedToken*>& tokens) {
  nodes_.assign(1, Node{});
  tokens_.clear();
  std::fill(std::begin(first_byte_), std::end(first_byte_), false);
  for (const AddedToken* token : tokens) {
    if (token->content.empty()) continue;
    int32_t node = 0;
    for (unsigned char b : token->content) {
      auto& children = nodes_[node].children;
      auto it = std::lower_bound(children.begin(), children.end(), b,
                                 [](const auto& c, unsigned char v) { return c.first < v; });
      if (it != children.end() && it->first == b) {
        node = it->second;
      } else {
        const auto child = static_cast<int32_t>(nodes_.size());
        children.insert(it, {b, child});
        nodes_.emplace_back();
        node = child;
      }
    }
    // The same string twice: the first one keeps it (the caller rejects duplicates anyway).
    if (nodes_[node].token < 0) {
      nodes_[node].token = static_cast<int32_t>(tokens_.size());
      tokens_.push_back(token);
    }
    first_byte_[static_cast<unsigned char>(token->content[0])] = true;
  }
  single_first_byte_ = -1;
  for (int b = 0; b < 256; ++b) {
    if (!first_byte_[b]) continue;
    single_first_byte_ = single_first_byte_ == -1 ? b : -2;
  }
  if (single_first_byte_ < 0) single_first_byte_ = -1;
}

int32_t AddedTokenMatcher::find(std::string_view s, size_t from, size_t* match_start,
                                size_t* match_end) const {
  if (tokens_.empty()) return -1;
  for (size_t i = from; i < s.size(); ++i) {
    if (single_first_byte_ >= 0) {
      const void* hit = std::memchr(s.data() + i, single_first_byte_, s.size() - i);
      if (hit == nullptr) return -1;
      i = static_cast<const char*>(hit) - s.data();
    } else if (!first_byte_[static_cast<unsigned char>(s[i])]) {
      continue;
    }
    int32_t node = 0;
    int32_t best = -1;
    size_t best_end = 0;
    for (size_t j = i; j < s.size(); ++j) {
      const auto& children = nodes_[node].children;
      const auto b = static_cast<unsigned char>(s[j]);
      auto it = std::lower_bound(children.begin(), children.end(), b,
                                 [](const auto& c, unsigned char v) { return c.first < v; });
      if (it == children.end() || it->first != b) break;
      node = it->second;
      if (nodes_[node].token >= 0) {
        best = nodes_[node].token;
        best_end = j + 1;
      }
    }
    if (best >= 0) {
      *match_start = i;
      *match_end = best_end;
      return best;
    }
  }
  return -1;
}

void AddedTokenMatcher::split(std::string_view text, size_t start, size_t end,
                              std::vector<TextSplit>& out) const {
  const std::string_view s = text.substr(0, end);
  size_t start_offset = start;
  size_t search_from = start;
  size_t m_start = 0, m_end = 0;
  int32_t index;
  while (search_from < end && (index = find(s, search_from, &m_start, &m_end)) >= 0) {
    // The automaton goes on from the end of its match, not from where rstrip stopped.
    search_from = m_end;
    const AddedToken& token = *tokens_[index];
    size_t tok_start = m_start, tok_end = m_end;
    if (token.lstrip) tok_start = std::max(whitespace_run_start(s, start, m_start), start_offset);
    if (token.rstrip) tok_end = whitespace_run_end(s, m_end, end);
    if (start_offset < tok_start) out.push_back({start_offset, tok_start, -1});
    out.push_back({tok_start, tok_end, token.id});
    start_offset = tok_end;
  }
  if (start_offset != end) out.push_back({start_offset, end, -1});
}

}  // namespace ocr::tok
