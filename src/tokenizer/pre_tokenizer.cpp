#include "tokenizer/pre_tokenizer.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "tokenizer/unicode.h"

namespace ocr::tok {
namespace {

// The Split regexes of DeepSeek-V3's tokenizer.json, byte for byte (the classes hold real CR/LF).
constexpr std::string_view kRegexDigits = "\\p{N}{1,3}";
constexpr std::string_view kRegexCjkKana =
    "[\xE4\xB8\x80-\xE9\xBE\xA5\xE3\x81\x80-\xE3\x82\x9F\xE3\x82\xA0-\xE3\x83\xBF]+";
constexpr std::string_view kRegexDeepSeekWord =
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+"
    "|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+"
    "| ?[\\p{P}\\p{S}]+[\r\n]*"
    "|\\s*[\r\n]+"
    "|\\s+(?!\\S)"
    "|\\s+";

// One decoded code point of valid UTF-8.
struct Cp {
  char32_t cp;
  size_t len;
  uint8_t classes;
};

inline Cp cp_at(std::string_view s, size_t i) {
  Cp c;
  c.cp = decode_valid_utf8(s, i, &c.len);
  c.classes = unicode_classes(c.cp);
  return c;
}

inline bool is_ascii_punct(char32_t c) {
  return (c >= 0x21 && c <= 0x2F) || (c >= 0x3A && c <= 0x40) || (c >= 0x5B && c <= 0x60) ||
         (c >= 0x7B && c <= 0x7E);
}
inline bool is_ascii_letter(unsigned char c) { return (c | 0x20) >= 'a' && (c | 0x20) <= 'z'; }
inline bool is_cr_lf(char32_t c) { return c == '\r' || c == '\n'; }
inline bool is_cjk_kana(char32_t c) {
  return (c >= 0x4E00 && c <= 0x9FA5) || (c >= 0x3040 && c <= 0x30FF);
}

// End of the run of code points starting at i whose classes intersect `mask`.
size_t scan_classes(std::string_view s, size_t i, uint8_t mask) {
  while (i < s.size()) {
    const Cp c = cp_at(s, i);
    if (!(c.classes & mask)) break;
    i += c.len;
  }
  return i;
}

// Oniguruma's leftmost-first alternation of the DeepSeek word regex, tried at position i:
// returns the end of the match, or i when no alternative matches there.
size_t match_deepseek_word(std::string_view s, size_t i) {
  const size_t n = s.size();
  const Cp c0 = cp_at(s, i);
  const size_t after0 = i + c0.len;

  // 1. [!"#...~][A-Za-z]+
  if (is_ascii_punct(c0.cp)) {
    size_t j = after0;
    while (j < n && is_ascii_letter(static_cast<unsigned char>(s[j]))) ++j;
    if (j > after0) return j;
  }
  // 2. [^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+ : the optional char is tried first, then skipped.
  if (!is_cr_lf(c0.cp) && !(c0.classes & (kClassL | kClassP | kClassS))) {
    const size_t j = scan_classes(s, after0, kClassL | kClassM);
    if (j > after0) return j;
  }
  if (c0.classes & (kClassL | kClassM)) return scan_classes(s, i, kClassL | kClassM);
  // 3. ' '?[\p{P}\p{S}]+[\r\n]*  (without the space, [\p{P}\p{S}] cannot match a space)
  {
    const size_t j = c0.cp == ' ' ? after0 : i;
    const size_t k = scan_classes(s, j, kClassP | kClassS);
    if (k > j) {
      size_t m = k;
      while (m < n && (s[m] == '\r' || s[m] == '\n')) ++m;
      return m;
    }
  }
  if (!(c0.classes & kClassWs)) return i;
  // The whitespace run [i, ws_end) and where its last code point starts.
  size_t ws_end = i;
  size_t last_start = i;
  size_t last_cr_lf_end = 0;  // end of the last CR/LF inside the run, 0 if none
  while (ws_end < n) {
    const Cp c = cp_at(s, ws_end);
    if (!(c.classes & kClassWs)) break;
    last_start = ws_end;
    ws_end += c.len;
    if (is_cr_lf(c.cp)) last_cr_lf_end = ws_end;
  }
  // 4. \s*[\r\n]+ : \s* backtracks to the last CR/LF of the run; [\r\n]+ takes it (the bytes
  //    after it up to the run's end hold no CR/LF, so the match ends right there).
  if (last_cr_lf_end != 0) return last_cr_lf_end;
  // 5. \s+(?!\S) : the whole run at the end of the text; otherwise the run less its last code
  //    point, which is whitespace and so satisfies the look-ahead.
  if (ws_end == n) return ws_end;
  if (last_start > i) return last_start;
  // 6. \s+
  return ws_end;
}

}  // namespace

bool find_pattern(const PreTokenizer::Step& step, std::string_view s, size_t from, size_t* start,
                  size_t* end) {
  const size_t n = s.size();
  switch (step.pattern) {
    case PreTokenizer::Pattern::kLiteral: {
      const size_t pos = s.find(step.literal, from);
      if (pos == std::string_view::npos) return false;
      *start = pos;
      *end = pos + step.literal.size();
      return true;
    }
    case PreTokenizer::Pattern::kDigits:
      for (size_t i = from; i < n;) {
        const auto b = static_cast<unsigned char>(s[i]);
        if (b < 0x80 && (b < '0' || b > '9')) {  // the ASCII \p{N} are the digits
          ++i;
          continue;
        }
        Cp c = cp_at(s, i);
        if (c.classes & kClassN) {
          size_t j = i + c.len;
          for (int count = 1; count < 3 && j < n; ++count) {
            c = cp_at(s, j);
            if (!(c.classes & kClassN)) break;
            j += c.len;
          }
          *start = i;
          *end = j;
          return true;
        }
        i += c.len;
      }
      return false;
    case PreTokenizer::Pattern::kCjkKana:
      for (size_t i = from; i < n;) {
        // Every CJK/kana code point is 3 bytes of UTF-8 with lead E3..E9: skip the rest cheaply.
        const auto b = static_cast<unsigned char>(s[i]);
        if (b < 0xE3 || b > 0xE9) {
          i += b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
          continue;
        }
        size_t len;
        if (is_cjk_kana(decode_valid_utf8(s, i, &len))) {
          size_t j = i + len;
          while (j < n) {
            size_t l;
            if (!is_cjk_kana(decode_valid_utf8(s, j, &l))) break;
            j += l;
          }
          *start = i;
          *end = j;
          return true;
        }
        i += len;
      }
      return false;
    case PreTokenizer::Pattern::kDeepSeekWord:
      for (size_t i = from; i < n;) {
        const size_t e = match_deepseek_word(s, i);
        if (e > i) {
          *start = i;
          *end = e;
          return true;
        }
        size_t len;
        decode_valid_utf8(s, i, &len);
        i += len;
      }
      return false;
  }
  return false;
}

namespace {

struct Segment {
  size_t start, end;
  bool is_match;
};

// HF Pattern::find_matches: the piece cut into alternating non-match / match segments.
void find_segments(const PreTokenizer::Step& step, std::string_view piece,
                   std::vector<Segment>& segs) {
  segs.clear();
  size_t prev = 0, start = 0, end = 0;
  while (prev < piece.size() && find_pattern(step, piece, prev, &start, &end)) {
    if (start != prev) segs.push_back({prev, start, false});
    segs.push_back({start, end, true});
    prev = end;
  }
  if (prev != piece.size()) segs.push_back({prev, piece.size(), false});
  if (step.invert)
    for (Segment& s : segs) s.is_match = !s.is_match;
}

// HF NormalizedString::split: segments -> pieces by behaviour; `is_match` becomes "remove".
void apply_behavior(PreTokenizer::Behavior behavior, std::vector<Segment>& segs,
                    std::vector<Segment>& out) {
  out.clear();
  using B = PreTokenizer::Behavior;
  bool previous_match = false;
  switch (behavior) {
    case B::kIsolated:
      for (const Segment& s : segs) out.push_back({s.start, s.end, false});
      break;
    case B::kRemoved:
      out = segs;
      break;
    case B::kContiguous:
      for (const Segment& s : segs) {
        if (s.is_match == previous_match && !out.empty())
          out.back().end = s.end;
        else
          out.push_back({s.start, s.end, false});
        previous_match = s.is_match;
      }
      break;
    case B::kMergedWithPrevious:
      for (const Segment& s : segs) {
        if (s.is_match && !previous_match && !out.empty())
          out.back().end = s.end;
        else
          out.push_back({s.start, s.end, false});
        previous_match = s.is_match;
      }
      break;
    case B::kMergedWithNext:
      for (auto it = segs.rbegin(); it != segs.rend(); ++it) {
        if (it->is_match && !previous_match && !out.empty())
          out.back().start = it->start;
        else
          out.push_back({it->start, it->end, false});
        previous_match = it->is_match;
      }
      std::reverse(out.begin(), out.end());
      break;
  }
}

PreTokenizer::Behavior parse_behavior(const std::string& name) {
  using B = PreTokenizer::Behavior;
  if (name == "Removed") return B::kRemoved;
  if (name == "Isolated") return B::kIsolated;
  if (name == "MergedWithPrevious") return B::kMergedWithPrevious;
  if (name == "MergedWithNext") return B::kMergedWithNext;
  if (name == "Contiguous") return B::kContiguous;
  throw std::invalid_argument("pre_tokenizer: unknown Split behavior \"" + name + "\"");
}

void add_step(const nlohmann::json& j, std::vector<PreTokenizer::Step>& steps, bool* byte_level) {
  const std::string type = j.value("type", "");
  if (*byte_level)
    throw std::invalid_argument("pre_tokenizer: a \"" + type +
                                "\" step after ByteLevel is not supported");
  if (type == "Sequence") {
    for (const auto& sub : j.at("pretokenizers")) add_step(sub, steps, byte_level);
    return;
  }
  if (type == "ByteLevel") {
    // Byte mapping happens in the BPE model; only the variant that adds nothing else is accepted.
    if (j.value("add_prefix_space", false))
      throw std::invalid_argument(
          "pre_tokenizer: ByteLevel add_prefix_space=true is not supported");
    if (j.value("use_regex", true))
      throw std::invalid_argument("pre_tokenizer: ByteLevel use_regex=true is not supported");
    *byte_level = true;
    return;
  }
  if (type != "Split")
    throw std::invalid_argument("pre_tokenizer: step type \"" + type + "\" is not supported");
  PreTokenizer::Step step;
  step.behavior = parse_behavior(j.at("behavior").get<std::string>());
  step.invert = j.value("invert", false);
  const auto& pattern = j.at("pattern");
  if (pattern.contains("String")) {
    step.pattern = PreTokenizer::Pattern::kLiteral;
    step.literal = pattern.at("String").get<std::string>();
    if (step.literal.empty())
      throw std::invalid_argument("pre_tokenizer: empty Split String pattern");
  } else {
    const std::string regex = pattern.at("Regex").get<std::string>();
    if (regex == kRegexDigits)
      step.pattern = PreTokenizer::Pattern::kDigits;
    else if (regex == kRegexCjkKana)
      step.pattern = PreTokenizer::Pattern::kCjkKana;
    else if (regex == kRegexDeepSeekWord)
      step.pattern = PreTokenizer::Pattern::kDeepSeekWord;
    else
      throw std::invalid_argument("pre_tokenizer: Split regex " + nlohmann::json(regex).dump() +
                                  " is not one of the DeepSeek patterns this build implements");
  }
  steps.push_back(std::move(step));
}

}  // namespace

PreTokenizer PreTokenizer::from_json(const nlohmann::json& j) {
  PreTokenizer p;
  bool byte_level = false;
  if (j.is_null())
    throw std::invalid_argument("pre_tokenizer is null (byte-level BPE needs ByteLevel)");
  add_step(j, p.steps_, &byte_level);
  if (!byte_level) throw std::invalid_argument("pre_tokenizer has no ByteLevel step");
  return p;
}

void PreTokenizer::split(std::string_view text, std::vector<std::string_view>& pieces) const {
  if (text.empty()) return;
  // Buffers reused across calls: the hot path allocates nothing once they have grown.
  thread_local std::vector<std::string_view> current, next;
  thread_local std::vector<Segment> segs, kept;
  current.clear();
  current.push_back(text);
  for (const Step& step : steps_) {
    next.clear();
    for (std::string_view piece : current) {
      if (step.behavior == Behavior::kIsolated && !step.invert) {
        // The common case, without the segment lists: every match and every gap is a piece.
        size_t prev = 0, start = 0, end = 0;
        while (prev < piece.size() && find_pattern(step, piece, prev, &start, &end)) {
          if (start != prev) next.push_back(piece.substr(prev, start - prev));
          next.push_back(piece.substr(start, end - start));
          prev = end;
        }
        if (prev != piece.size()) next.push_back(piece.substr(prev));
        continue;
      }
      find_segments(step, piece, segs);
      apply_behavior(step.behavior, segs, kept);
      for (const Segment& s : kept)
        if (!s.is_match && s.end > s.start) next.push_back(piece.substr(s.start, s.end - s.start));
    }
    current.swap(next);
  }
  pieces.insert(pieces.end(), current.begin(), current.end());
}

}  // namespace ocr::tok
