// Fuzzes the safetensors header parser (src/model/safetensors.cpp) on untrusted file bytes.
// ocr::ModelError is the documented refusal; anything else escaping is a finding, and so is an
// accepted header whose offsets would let SafetensorsFile::bytes read outside the file.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "fuzz_check.h"
#include "model/safetensors.h"
#include "ocr/errors.h"

namespace {

void check_header(const uint8_t* data, size_t available, uint64_t file_size) {
  ocr::SafetensorsHeader h;
  try {
    h = ocr::parse_safetensors_header(data, available, file_size, "fuzz.safetensors");
  } catch (const ocr::ModelError&) {
    return;
  }
  OCR_FUZZ_CHECK(h.data_start >= 8 && h.data_start <= available, "header lies in the bytes read");
  const uint64_t data_size = file_size - h.data_start;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const auto& [name, e] : h.tensors) {
    OCR_FUZZ_CHECK(e.begin <= e.end && e.end <= data_size, name.c_str());
    uint64_t numel = 1;
    for (int64_t d : e.shape) {
      OCR_FUZZ_CHECK(d >= 0, name.c_str());
      OCR_FUZZ_CHECK(d == 0 || numel <= UINT64_MAX / 16 / static_cast<uint64_t>(d), name.c_str());
      numel *= static_cast<uint64_t>(d);
    }
    OCR_FUZZ_CHECK(e.end - e.begin == numel * ocr::safetensors_dtype_size(e.dtype), name.c_str());
    ranges.emplace_back(e.begin, e.end);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i)
    OCR_FUZZ_CHECK(ranges[i].first >= ranges[i - 1].second, "tensor ranges do not overlap");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  check_header(data, size, size);  // the whole file in memory, as SafetensorsFile reads it
  // Only a prefix read of a larger file: the parser must not trust offsets past what it was given.
  check_header(data, size / 2, size);
  check_header(data, size, uint64_t{size} + 4096);
  return 0;
}
