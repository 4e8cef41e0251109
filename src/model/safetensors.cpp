#include "model/safetensors.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "ocr/errors.h"

namespace ocr {

size_t safetensors_dtype_size(const std::string& dtype) {
  if (dtype == "F64" || dtype == "I64" || dtype == "U64") return 8;
  if (dtype == "F32" || dtype == "I32" || dtype == "U32") return 4;
  if (dtype == "F16" || dtype == "BF16" || dtype == "I16" || dtype == "U16") return 2;
  if (dtype == "I8" || dtype == "U8" || dtype == "BOOL" || dtype == "F8_E4M3" || dtype == "F8_E5M2") return 1;
  throw std::invalid_argument("unknown safetensors dtype '" + dtype + "'");
}

SafetensorsHeader parse_safetensors_header(const uint8_t* data, size_t available, uint64_t file_size,
                                           const std::string& name) {
  auto fail = [&](const std::string& what) -> ModelError {
    return ModelError(name + ": invalid safetensors file: " + what);
  };
  if (available < 8 || file_size < 8) throw fail("shorter than the 8-byte header length");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | data[i];
  if (header_len > file_size - 8) {
    throw fail("header length " + std::to_string(header_len) + " exceeds the file size " +
               std::to_string(file_size));
  }
  if (header_len > available - 8) throw fail("header truncated");
  if (header_len > (100u << 20)) throw fail("header length " + std::to_string(header_len) + " is absurd");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(data + 8, data + 8 + header_len);
  } catch (const std::exception& e) {
    throw fail(std::string("header is not valid JSON (") + e.what() + ")");
  }
  if (!j.is_object()) throw fail("header is not a JSON object");
  SafetensorsHeader h;
  h.data_start = 8 + header_len;
  const uint64_t data_size = file_size - h.data_start;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (it.value().is_object())
        for (auto m = it.value().begin(); m != it.value().end(); ++m)
          if (m.value().is_string()) h.metadata[m.key()] = m.value().get<std::string>();
      continue;
    }
    const auto& v = it.value();
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets"))
      throw fail("tensor '" + it.key() + "' lacks dtype, shape or data_offsets");
    SafetensorsEntry e;
    if (!v["dtype"].is_string()) throw fail("tensor '" + it.key() + "' has a non-string dtype");
    e.dtype = v["dtype"].get<std::string>();
    size_t elem = 0;
    try {
      elem = safetensors_dtype_size(e.dtype);
    } catch (const std::invalid_argument& ex) {
      throw fail("tensor '" + it.key() + "': " + ex.what());
    }
    if (!v["shape"].is_array()) throw fail("tensor '" + it.key() + "' has a non-array shape");
    uint64_t numel = 1;
    for (const auto& d : v["shape"]) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0)
        throw fail("tensor '" + it.key() + "' has a bad dimension");
      const uint64_t dim = d.get<uint64_t>();
      if (dim != 0 && numel > (UINT64_MAX / 16) / dim) throw fail("tensor '" + it.key() + "' is too large");
      numel *= dim;
      e.shape.push_back(static_cast<int64_t>(dim));
    }
    const auto& off = v["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      throw fail("tensor '" + it.key() + "' has bad data_offsets");
    e.begin = off[0].get<uint64_t>();
    e.end = off[1].get<uint64_t>();
    if (e.begin > e.end || e.end > data_size)
      throw fail("tensor '" + it.key() + "' data_offsets [" + std::to_string(e.begin) + ", " +
                 std::to_string(e.end) + "] lie outside the " + std::to_string(data_size) +
                 "-byte data section");
    if (e.end - e.begin != numel * elem)
      throw fail("tensor '" + it.key() + "' occupies " + std::to_string(e.end - e.begin) +
                 " bytes but its shape and dtype need " + std::to_string(numel * elem));
    ranges.emplace_back(e.begin, e.end);
    h.tensors.emplace(it.key(), std::move(e));
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i)
    if (ranges[i].first < ranges[i - 1].second) throw fail("tensor data ranges overlap");
  return h;
}

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) throw ModelError(path + ": cannot open safetensors file");
  const auto size = static_cast<uint64_t>(f.tellg());
  f.seekg(0);
  data_.resize(size);
  if (size > 0 && !f.read(reinterpret_cast<char*>(data_.data()), static_cast<std::streamsize>(size)))
    throw ModelError(path + ": read error");
  header_ = parse_safetensors_header(data_.data(), data_.size(), size, path);
}

const SafetensorsEntry& SafetensorsFile::entry(const std::string& name) const {
  auto it = header_.tensors.find(name);
  if (it == header_.tensors.end()) throw ModelError(path_ + ": no tensor named '" + name + "'");
  return it->second;
}

const uint8_t* SafetensorsFile::bytes(const std::string& name) const {
  return data_.data() + header_.data_start + entry(name).begin;
}

}  // namespace ocr
