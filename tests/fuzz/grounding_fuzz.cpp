// Fuzzes the grounding-tag parser and the markdown clean-up (src/postprocess/grounding.cpp) on
// arbitrary model output: nothing here may throw, and the matches must describe the text.
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "fuzz_check.h"
#include "postprocess/grounding.h"

namespace {

const std::string kRef = "<|ref|>";
const std::string kRefDet = "<|/ref|><|det|>";
const std::string kDetEnd = "<|/det|>";
const std::string kEos =
    "<\xef\xbd\x9c"
    "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>";

void check_blocks(const std::string& text) {
  const std::vector<ocr::GroundingBlock> blocks = ocr::find_grounding(text);
  size_t prev_end = 0;
  for (const ocr::GroundingBlock& b : blocks) {
    OCR_FUZZ_CHECK(b.begin >= prev_end && b.begin < b.end && b.end <= text.size(), "block order");
    OCR_FUZZ_CHECK(text.compare(b.begin, kRef.size(), kRef) == 0, "starts with <|ref|>");
    OCR_FUZZ_CHECK(text.compare(b.end - kDetEnd.size(), kDetEnd.size(), kDetEnd) == 0,
                   "ends with <|/det|>");
    OCR_FUZZ_CHECK(text.compare(b.begin + kRef.size(), b.label.size(), b.label) == 0, "label");
    OCR_FUZZ_CHECK(b.label.find(kRefDet) == std::string::npos, "non-greedy label");
    OCR_FUZZ_CHECK(b.det.find(kDetEnd) == std::string::npos, "non-greedy det");
    OCR_FUZZ_CHECK(
        b.begin + kRef.size() + b.label.size() + kRefDet.size() + b.det.size() + kDetEnd.size() ==
            b.end,
        "label and det fill the match");
    size_t brackets = 0;
    for (char c : b.det) brackets += c == ']';
    OCR_FUZZ_CHECK(b.boxes.size() <= brackets, "one box per closing bracket at most");
    for (const auto& box : b.boxes) {
      for (int width : {1, 999, 1000, 4096, 100000}) {
        const std::array<int, 4> px = ocr::grid_box_to_pixels(box, width, width / 2 + 1);
        for (int k = 0; k < 4; ++k) {
          const int side = k % 2 == 0 ? width : width / 2 + 1;
          // On the 0..999 grid a coordinate maps into the page.
          if (box[k] >= 0 && box[k] <= 999)
            OCR_FUZZ_CHECK(px[k] >= 0 && px[k] <= side, "pixel box");
        }
      }
    }
    prev_end = b.end;
  }
}

void check_clean(const std::string& text) {
  int calls = 0;
  size_t link_bytes = 0;
  const std::string out = ocr::clean_markdown(text, kEos, [&](int m) {
    OCR_FUZZ_CHECK(m == calls, "image links are numbered in order");
    ++calls;
    std::string link = "![](images/" + std::to_string(m) + ".jpg)\n";
    link_bytes += link.size();
    return link;
  });
  // Blocks are deleted or replaced by a link, \coloneqq/\eqqcolon shrink: never longer.
  OCR_FUZZ_CHECK(out.size() <= text.size() + link_bytes, "clean_markdown output length");
  const std::string no_links = ocr::clean_markdown(text, kEos, nullptr);
  // Without the links, text on both sides of a removed block can join into \coloneqq and shrink
  // (the official code does the same), so the sizes are compared only where no backslash is.
  if (text.find('\\') == std::string::npos)
    OCR_FUZZ_CHECK(no_links.size() + link_bytes == out.size(), "links are the only difference");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  check_blocks(text);
  check_clean(text);
  check_clean(text + kEos);
  return 0;
}
