#include "engine/prompt.h"

#include <stdexcept>

namespace ocr {

std::string task_prompt(const std::string& task, const std::string& ref) {
  if (task == "markdown") return "<image>\n<|grounding|>Convert the document to markdown.";
  if (task == "ocr") return "<image>\n<|grounding|>OCR this image.";
  if (task == "free") return "<image>\nFree OCR.";
  if (task == "figure") return "<image>\nParse the figure.";
  if (task == "describe") return "<image>\nDescribe this image in detail.";
  if (task == "locate") {
    if (ref.empty()) throw std::invalid_argument("--task locate needs --ref TEXT");
    return "<image>\nLocate <|ref|>" + ref + "<|/ref|> in the image.";
  }
  throw std::invalid_argument("unknown task '" + task + "' (markdown, ocr, free, figure, describe, locate)");
}

namespace {

// Length of the whitespace code point at s[i] (Python str.isspace()), or 0.
size_t space_len(const std::string& s, size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  if (c == ' ' || (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x1f)) return 1;
  auto at = [&](size_t k) { return i + k < s.size() ? static_cast<unsigned char>(s[i + k]) : 0; };
  if (c == 0xc2 && (at(1) == 0x85 || at(1) == 0xa0)) return 2;
  if (c == 0xe1 && at(1) == 0x9a && at(2) == 0x80) return 3;  // U+1680
  if (c == 0xe2 && at(1) == 0x80 && ((at(2) >= 0x80 && at(2) <= 0x8a) || at(2) == 0xa8 || at(2) == 0xa9 || at(2) == 0xaf))
    return 3;  // U+2000..200A, 2028, 2029, 202F
  if (c == 0xe2 && at(1) == 0x81 && at(2) == 0x9f) return 3;  // U+205F
  if (c == 0xe3 && at(1) == 0x80 && at(2) == 0x80) return 3;  // U+3000
  return 0;
}

size_t space_len_before(const std::string& s, size_t end) {
  for (size_t n = 1; n <= 3 && n <= end; ++n)
    if (space_len(s, end - n) == n) return n;
  return 0;
}

}  // namespace

std::string python_strip(const std::string& s) {
  size_t begin = 0, end = s.size();
  while (begin < end) {
    const size_t n = space_len(s, begin);
    if (n == 0) break;
    begin += n;
  }
  while (end > begin) {
    const size_t n = space_len_before(s, end);
    if (n == 0) break;
    end -= n;
  }
  return s.substr(begin, end - begin);
}

std::vector<int32_t> build_prompt_ids(const Tokenizer& tokenizer, const std::string& prompt,
                                      int64_t n_image_tokens, int32_t bos_id, int32_t image_id) {
  static const std::string kImage = "<image>";
  const std::string text = python_strip(prompt);
  const size_t at = text.find(kImage);
  if (at == std::string::npos || text.find(kImage, at + 1) != std::string::npos)
    throw std::invalid_argument("the prompt must contain <image> exactly once: \"" + prompt + "\"");
  std::vector<int32_t> ids{bos_id};
  for (int32_t id : tokenizer.encode(std::string_view(text).substr(0, at))) ids.push_back(id);
  ids.insert(ids.end(), static_cast<size_t>(n_image_tokens), image_id);
  for (int32_t id : tokenizer.encode(std::string_view(text).substr(at + kImage.size()))) ids.push_back(id);
  return ids;
}

}  // namespace ocr
