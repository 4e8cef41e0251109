// Fuzzes the page layout built from model output (src/postprocess/layout.cpp): blocks and boxes on
// image and PDF pages, figure crops, the box overlay, and the markdown -> plain text conversion.
// Nothing here may throw; boxes must lie on the page as documented.
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz_check.h"
#include "postprocess/grounding.h"
#include "postprocess/layout.h"

namespace {

const std::string kEos =
    "<\xef\xbd\x9c"
    "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>";

void check_layout(const std::string& text, const ocr::PageGeometry& g) {
  const ocr::PageLayout layout = ocr::parse_layout(text, kEos, g);
  const ocr::ImageU8 page(g.width, g.height, 200);
  for (size_t i = 0; i < layout.blocks.size(); ++i) {
    const ocr::LayoutBlock& b = layout.blocks[i];
    if (!b.grounded) {
      OCR_FUZZ_CHECK(i == 0 && b.label.empty() && b.grid.empty(), "ungrounded text comes first");
    }
    OCR_FUZZ_CHECK(b.pixels.size() == b.grid.size(), "one pixel box per grid box");
    OCR_FUZZ_CHECK(b.points.size() == (g.has_points() ? b.grid.size() : 0), "point boxes");
    for (const auto& p : b.pixels) {
      OCR_FUZZ_CHECK(0 <= p[0] && p[0] <= p[2] && p[2] <= g.width, "pixel box x on the page");
      OCR_FUZZ_CHECK(0 <= p[1] && p[1] <= p[3] && p[3] <= g.height, "pixel box y on the page");
      if (ocr::box_has_area(p)) {
        const ocr::ImageU8 crop = ocr::crop_image(page, p);
        OCR_FUZZ_CHECK(crop.width == p[2] - p[0] && crop.height == p[3] - p[1], "crop size");
      }
    }
    for (const auto& q : b.points) {
      OCR_FUZZ_CHECK(0 <= q[0] && q[0] <= q[2] && q[2] <= g.width_pt, "point box x on the page");
      OCR_FUZZ_CHECK(0 <= q[1] && q[1] <= q[3] && q[3] <= g.height_pt, "point box y on the page");
    }
  }
  const ocr::ImageU8 overlay = ocr::draw_layout(page, layout);
  OCR_FUZZ_CHECK(overlay.width == page.width && overlay.height == page.height, "overlay size");
}

void check_text(const std::string& markdown) {
  const std::string text = ocr::markdown_to_text(markdown);
  OCR_FUZZ_CHECK(text.find("\n\n\n") == std::string::npos, "blank lines collapsed");
  OCR_FUZZ_CHECK(text.empty() || (text.front() != '\n' && text.back() != '\n'),
                 "no outer blank lines");
  for (size_t nl = text.find('\n'); nl != std::string::npos; nl = text.find('\n', nl + 1))
    OCR_FUZZ_CHECK(nl == 0 || (text[nl - 1] != ' ' && text[nl - 1] != '\t'), "lines trimmed");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  check_layout(text, {37, 53, 0, 0});          // an image page
  check_layout(text, {64, 48, 612.0, 792.0});  // a PDF page (pixels and points)
  check_layout(text, {1, 1, 0.5, 0.7});
  check_text(text);
  check_text(ocr::clean_markdown(
      text, kEos, [](int m) { return "![](images/" + std::to_string(m) + ".jpg)\n"; }));
  return 0;
}
