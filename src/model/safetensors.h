// Reader for the safetensors format (HF checkpoints, parity fixtures): an 8-byte little-endian
// header length, a JSON header {name: {dtype, shape, data_offsets}}, then the raw data.
// The header parser validates every offset and size against the file before anything is read.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace ocr {

struct SafetensorsEntry {
  std::string dtype;               // "BF16", "F32", "I64", ...
  std::vector<int64_t> shape;
  uint64_t begin = 0;              // byte offsets into the data section
  uint64_t end = 0;
};

struct SafetensorsHeader {
  uint64_t data_start = 0;         // file offset of the data section
  std::map<std::string, SafetensorsEntry> tensors;
  std::map<std::string, std::string> metadata;
};

// Bytes per element of a safetensors dtype; throws std::invalid_argument for unknown dtypes.
size_t safetensors_dtype_size(const std::string& dtype);

// Parses and validates a header given the first bytes of a file and the total file size.
// Throws ocr::ModelError naming `name` and the problem (lying offsets, overlaps, bad JSON, ...).
SafetensorsHeader parse_safetensors_header(const uint8_t* data, size_t available,
                                           uint64_t file_size, const std::string& name);

// A whole safetensors file read into memory.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);
  const SafetensorsHeader& header() const { return header_; }
  bool contains(const std::string& name) const { return header_.tensors.count(name) != 0; }
  const SafetensorsEntry& entry(const std::string& name) const;
  // Raw little-endian bytes of one tensor.
  const uint8_t* bytes(const std::string& name) const;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::vector<uint8_t> data_;
  SafetensorsHeader header_;
};

}  // namespace ocr
