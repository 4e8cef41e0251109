// Command-line access to PDF rendering, for e2e/parity scripts and for looking at a file by hand.
//
//   pdf_probe FILE [--dpi D] [--pages SPEC] [--password P] [--max-pixels N] [--out DIR]
//
// Prints one JSON line per selected page: {"page": 1-based, "width_pt", "height_pt", "width",
// "height", "ms"}; with --out also writes DIR/page_NNNN.png. FILE "-" reads stdin.
// Input errors print one line to stderr and exit 3; usage errors exit 2.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "ocr/errors.h"
#include "ocr/image_io.h"
#include "ocr/pdf.h"

namespace {

int usage(const std::string& why) {
  std::fprintf(stderr,
               "pdf_probe: %s\nusage: pdf_probe FILE [--dpi D] [--pages SPEC] [--password P] "
               "[--max-pixels N] [--out DIR]\n",
               why.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string path, pages, password, out_dir;
  double dpi = 144;  // the official pipeline's zoom 2.0
  int64_t max_pixels = ocr::DecodeOptions{}.max_pixels;
  try {
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto value = [&]() -> std::string {
        if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
        return argv[++i];
      };
      if (a == "--dpi") {
        dpi = std::stod(value());
      } else if (a == "--pages") {
        pages = value();
        ocr::check_page_ranges(pages);
      } else if (a == "--password") {
        password = value();
      } else if (a == "--max-pixels") {
        max_pixels = std::stoll(value());
      } else if (a == "--out") {
        out_dir = value();
      } else if (path.empty() && (a == "-" || a.rfind("--", 0) != 0)) {
        path = a;
      } else {
        throw std::invalid_argument("unexpected argument " + a);
      }
    }
    if (path.empty()) throw std::invalid_argument("no FILE given");
  } catch (const std::exception& e) {
    return usage(e.what());
  }
  if (!ocr::pdf_supported()) {
    std::fprintf(stderr, "pdf_probe: built without poppler-cpp\n");
    return 1;
  }
  try {
    const ocr::PdfDocument doc =
        ocr::PdfDocument::open(ocr::read_file_bytes(path), path, password);
    std::vector<int> selected;
    if (pages.empty()) {
      for (int i = 0; i < doc.page_count(); ++i) selected.push_back(i);
    } else {
      try {
        selected = ocr::parse_page_ranges(pages, doc.page_count());
      } catch (const std::invalid_argument& e) {
        throw ocr::InputError(path + ": " + e.what());
      }
    }
    for (int index0 : selected) {
      const auto t0 = std::chrono::steady_clock::now();
      const ocr::ImageU8 im = doc.render_page(index0, dpi, max_pixels);
      const double ms =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      if (!out_dir.empty()) {
        char name[32];
        std::snprintf(name, sizeof(name), "/page_%04d.png", index0 + 1);
        ocr::save_png(im, out_dir + name);
      }
      nlohmann::json line = {{"page", index0 + 1},
                             {"width_pt", doc.page_width_points(index0)},
                             {"height_pt", doc.page_height_points(index0)},
                             {"width", im.width},
                             {"height", im.height},
                             {"ms", ms}};
      std::cout << line.dump() << "\n" << std::flush;
    }
  } catch (const ocr::InputError& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 3;
  } catch (const std::invalid_argument& e) {
    return usage(e.what());
  }
  return 0;
}
