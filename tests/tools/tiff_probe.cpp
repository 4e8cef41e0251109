// Command-line access to multi-page image decoding, for tests/e2e/test_tiff.py.
//
//   tiff_probe FILE OUTDIR [--max-pixels N]
//
// Prints {"pages": N} and writes every page as OUTDIR/page_K.png (K from 1), decoded exactly as
// ocr-cli decodes it. Input errors print one line to stderr and exit 3; usage errors exit 2.
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>

#include "ocr/errors.h"
#include "ocr/image_io.h"

int main(int argc, char** argv) {
  if (argc != 3 && argc != 5) {
    std::fprintf(stderr, "usage: tiff_probe FILE OUTDIR [--max-pixels N]\n");
    return 2;
  }
  ocr::DecodeOptions options;
  if (argc == 5) {
    if (std::string(argv[3]) != "--max-pixels") {
      std::fprintf(stderr, "tiff_probe: unknown option %s\n", argv[3]);
      return 2;
    }
    options.max_pixels = std::stoll(argv[4]);
  }
  try {
    const auto bytes = ocr::read_file_bytes(argv[1]);
    const int n = ocr::count_image_pages(bytes, argv[1]);
    for (int k = 0; k < n; ++k)
      ocr::save_png(ocr::decode_image_page(bytes, k, argv[1], options),
                    std::string(argv[2]) + "/page_" + std::to_string(k + 1) + ".png");
    std::cout << nlohmann::json{{"pages", n}}.dump() << "\n";
  } catch (const ocr::InputError& e) {
    std::fprintf(stderr, "tiff_probe: error: %s\n", e.what());
    return 3;
  }
  return 0;
}
