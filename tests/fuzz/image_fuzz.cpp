// Fuzzes image decoding (src/io/image_io.cpp, image_header.cpp, tiff.cpp): header probing,
// truncation, EXIF and TIFF page checks, then OpenCV's decoders, with a small --max-pixels so that
// decompression bombs must be refused (an allocation past -rss_limit_mb is a finding).
// ocr::InputError is the documented refusal; a decoded image must be a well-formed RGB buffer
// within the limit. Decoded pages then go through the preprocessing (letterbox, stretch, dynamic
// tiling) at small view sizes.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "fuzz_check.h"
#include "io/image_header.h"
#include "ocr/errors.h"
#include "ocr/image_io.h"
#include "ocr/preprocess.h"

namespace {
constexpr int64_t kMaxPixels = int64_t{1} << 22;      // 4 Mpx: 12 MB of RGB
constexpr int64_t kMaxViewPixels = int64_t{1} << 18;  // larger pages skip the preprocessing
constexpr int kMaxPages = 3;

// The official code paths (pad + tiles, stretch) at sizes that keep one execution cheap.
void check_views(const ocr::ImageU8& image) {
  const ocr::ModeSpec crop{"fuzz-crop", 128, 64, true};
  const ocr::ModeSpec stretch{"fuzz-stretch", 64, 64, false};
  ocr::TilingOptions tiling;
  tiling.no_tile_side = 32;
  const ocr::Views v = ocr::make_views(image, crop, tiling);
  OCR_FUZZ_CHECK(v.global.width == 128 && v.global.height == 128, "global view size");
  if (v.has_tiles()) {
    OCR_FUZZ_CHECK(v.tiles.size() == size_t(v.tiles_w) * v.tiles_h, "tile count");
    OCR_FUZZ_CHECK(
        v.tiles.size() >= size_t(tiling.min_tiles) && v.tiles.size() <= size_t(tiling.max_tiles),
        "tile count within the tiling range");
    for (const ocr::ImageU8& t : v.tiles)
      OCR_FUZZ_CHECK(t.width == 64 && t.height == 64, "tile size");
  }
  OCR_FUZZ_CHECK(ocr::count_image_tokens(crop, v.tiles_w, v.tiles_h, v.has_tiles()) > 0, "tokens");
  const ocr::Views s = ocr::make_views(image, stretch, tiling);
  OCR_FUZZ_CHECK(s.global.width == 64 && s.global.height == 64 && !s.has_tiles(), "stretched view");
  ocr::is_near_uniform(image, 8);
}

void check_image(const ocr::ImageU8& image) {
  OCR_FUZZ_CHECK(image.width > 0 && image.height > 0, "decoded size");
  OCR_FUZZ_CHECK(int64_t{image.width} * image.height <= kMaxPixels, "within --max-pixels");
  OCR_FUZZ_CHECK(image.data.size() == size_t{3} * image.width * image.height, "RGB buffer size");
  if (int64_t{image.width} * image.height <= kMaxViewPixels) check_views(image);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const ocr::io::ImageHeader header = ocr::io::read_image_header(data, size);
  OCR_FUZZ_CHECK(header.width >= 0 && header.height >= 0, "header size");
  const int orientation = ocr::io::read_exif_orientation(data, size);
  OCR_FUZZ_CHECK(orientation >= 0 && orientation <= 8, "EXIF orientation");
  ocr::io::find_truncation(data, size);

  const std::vector<uint8_t> bytes(data, data + size);
  ocr::DecodeOptions options;
  options.max_pixels = kMaxPixels;
  try {
    check_image(ocr::decode_image(bytes, "fuzz.img", options));
  } catch (const ocr::InputError&) {
  }
  // The pages of a multi-page TIFF, as the CLI reads them (the first page is decode_image's).
  int n_pages = 0;
  try {
    n_pages = ocr::count_image_pages(bytes, "fuzz.img");
  } catch (const ocr::InputError&) {
    return 0;
  }
  OCR_FUZZ_CHECK(n_pages >= 1, "page count");
  for (int p = 1; p < std::min(n_pages, kMaxPages); ++p) {
    try {
      check_image(ocr::decode_image_page(bytes, p, "fuzz.img", options));
    } catch (const ocr::InputError&) {
    }
  }
  return 0;
}
