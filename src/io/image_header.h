// Cheap header parsing for page images: format, pixel size and EXIF orientation, read without
// decoding, so that decompression bombs are refused before any pixel buffer is allocated.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace ocr::io {

struct ImageHeader {
  std::string format;  // "PNG", "JPEG", "BMP", "TIFF", "WebP", "PNM"; empty when not recognised
  int64_t width = 0;   // 0 when the size could not be read from the header
  int64_t height = 0;
  bool has_size() const { return width > 0 && height > 0; }
};

// Recognises the format from the magic bytes and reads the stored size (JPEG: first SOF marker;
// TIFF: first IFD; WebP: VP8/VP8L/VP8X chunk).
ImageHeader read_image_header(const uint8_t* data, size_t size);

// EXIF orientation (1..8) stored in the image (JPEG APP1, PNG eXIf, WebP EXIF, TIFF IFD0);
// 0 when there is none or it cannot be read.
int read_exif_orientation(const uint8_t* data, size_t size);

// Describes how a PNG, JPEG, BMP or WebP stream is cut off or structurally broken ("" when it
// looks whole, or for other formats; TIFF is checked by io/tiff.h). Checked before decoding because
// libjpeg pads a cut-off JPEG with grey and only warns, libpng reports a cut-off or corrupt PNG
// (zero size, checksum mismatch) on stderr, and OpenCV prints its own exception for a short BMP or
// WebP: a batch over damaged files must print one line per file.
std::string find_truncation(const uint8_t* data, size_t size);

}  // namespace ocr::io
