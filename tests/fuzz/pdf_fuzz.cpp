// Fuzzes PDF input (src/io/pdf.cpp over poppler-cpp): open, page sizes, and rendering of the first
// pages at a low dpi under a pixel cap. ocr::InputError is the documented refusal; a rendered page
// must have exactly the size pdf_pixels_for_points gives.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "fuzz_check.h"
#include "ocr/errors.h"
#include "ocr/pdf.h"

namespace {
constexpr double kDpi = 24;
constexpr int64_t kMaxPixels = int64_t{1} << 20;
constexpr int kMaxPages = 2;
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::vector<uint8_t> bytes(data, data + size);
  try {
    const ocr::PdfDocument doc = ocr::PdfDocument::open(bytes, "fuzz.pdf");
    OCR_FUZZ_CHECK(doc.page_count() >= 1, "an opened document has pages");
    for (int i = 0; i < std::min(doc.page_count(), kMaxPages); ++i) {
      const double w_pt = doc.page_width_points(i), h_pt = doc.page_height_points(i);
      try {
        const ocr::ImageU8 page = doc.render_page(i, kDpi, kMaxPixels);
        OCR_FUZZ_CHECK(page.width == ocr::pdf_pixels_for_points(w_pt, kDpi), "page width");
        OCR_FUZZ_CHECK(page.height == ocr::pdf_pixels_for_points(h_pt, kDpi), "page height");
        OCR_FUZZ_CHECK(int64_t{page.width} * page.height <= kMaxPixels, "within --max-pixels");
        OCR_FUZZ_CHECK(page.data.size() == size_t{3} * page.width * page.height, "RGB buffer size");
      } catch (const ocr::InputError&) {
        // One bad page: the next one is still tried, as the engine does.
      }
    }
  } catch (const ocr::InputError&) {
  }
  return 0;
}
