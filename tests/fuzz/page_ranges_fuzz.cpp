// Fuzzes the --pages parser (src/io/pdf.cpp): the input is "<page count byte><spec>". The
// documented refusal is std::invalid_argument; an accepted spec yields ascending, distinct,
// in-range page indices, and check_page_ranges agrees with parse_page_ranges on the syntax.
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "fuzz_check.h"
#include "ocr/pdf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const int page_count = 1 + data[0];
  const std::string spec(reinterpret_cast<const char*>(data + 1), size - 1);
  bool syntax_ok = true;
  try {
    ocr::check_page_ranges(spec);
  } catch (const std::invalid_argument&) {
    syntax_ok = false;
  }
  std::vector<int> pages;
  try {
    pages = ocr::parse_page_ranges(spec, page_count);
  } catch (const std::invalid_argument&) {
    return 0;
  }
  OCR_FUZZ_CHECK(syntax_ok, "parse_page_ranges accepted what check_page_ranges refused");
  OCR_FUZZ_CHECK(!pages.empty(), "an accepted spec selects pages");
  for (size_t i = 0; i < pages.size(); ++i) {
    OCR_FUZZ_CHECK(pages[i] >= 0 && pages[i] < page_count, "page in range");
    OCR_FUZZ_CHECK(i == 0 || pages[i] > pages[i - 1], "ascending and distinct");
  }
  return 0;
}
