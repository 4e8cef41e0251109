// SHA-256 of files, to check exported model files against manifest.json at load.
#pragma once

#include <string>

namespace ocr {

// Lower-case hex SHA-256 of the bytes of `data`.
std::string sha256_hex(const std::string& data);
// Lower-case hex SHA-256 of a file's content; throws ocr::ModelError if it cannot be read.
std::string sha256_file(const std::string& path);

}  // namespace ocr
