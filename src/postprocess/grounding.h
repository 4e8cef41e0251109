// Grounding output of DeepSeek-OCR (spec 6.2, 6.3): <|ref|>LABEL<|/ref|><|det|>[[x1,y1,x2,y2],...]<|/det|>.
#pragma once

#include <array>
#include <functional>
#include <string>
#include <vector>

namespace ocr {

struct GroundingBlock {
  size_t begin = 0;            // byte range of the whole match in the text
  size_t end = 0;
  std::string label;           // text between <|ref|> and <|/ref|>
  std::string det;             // text between <|det|> and <|/det|>
  std::vector<std::array<int, 4>> boxes;  // parsed [x1, y1, x2, y2] on the 0..999 grid
};

// All matches of the official non-greedy pattern, left to right (spec 6.3 step 2).
std::vector<GroundingBlock> find_grounding(const std::string& text);

// Official clean-up (spec 6.3): strip a trailing EOS string and whitespace; the m-th "image" block
// is replaced by image_link(m) (the official code writes "![](images/m.jpg)\n"); every other
// block is deleted; \coloneqq -> :=, \eqqcolon -> =:.
std::string clean_markdown(const std::string& text, const std::string& eos_text,
                           const std::function<std::string(int)>& image_link);

// Pixel box on the original page from a 0..999 grid box: int(coord / 999 * W) (truncation).
std::array<int, 4> grid_box_to_pixels(const std::array<int, 4>& box, int width, int height);

}  // namespace ocr
