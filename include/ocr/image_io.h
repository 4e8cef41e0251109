// Decoding page images into RGB buffers (OpenCV underneath, hidden from this header).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ocr/image.h"

namespace ocr {

struct DecodeOptions {
  bool apply_exif_orientation = true;   // as PIL ImageOps.exif_transpose in the official infer()
  int64_t max_pixels = 200'000'000;     // refuse larger images before allocating (decompression bombs)
};

// Decodes one image (PNG, JPEG, TIFF (first page), BMP, WebP where OpenCV has it) from bytes into
// 8-bit RGB like PIL's convert("RGB"): alpha dropped, grey expanded, 16-bit scaled to 8-bit.
// Throws ocr::InputError naming `name` and the problem.
ImageU8 decode_image(const std::vector<uint8_t>& bytes, const std::string& name,
                     const DecodeOptions& options = {});

// Pages of an image file: the directories of a TIFF (multi-page scans, faxes), 1 for other formats.
// Throws ocr::InputError naming `name` when a TIFF's directory chain is cut off or damaged.
int count_image_pages(const std::vector<uint8_t>& bytes, const std::string& name);

// Decodes page `index0` (0-based) of a multi-page TIFF as decode_image decodes a first page, after
// checking that page's size against max_pixels and its image data for a cut-off file; errors say
// "NAME: page N" when the TIFF has several pages. For other formats only index0 = 0 exists and
// this is decode_image. (src/io/tiff.cpp)
ImageU8 decode_image_page(const std::vector<uint8_t>& bytes, int index0, const std::string& name,
                          const DecodeOptions& options = {});

// Reads a whole file (or "-" for stdin); throws ocr::InputError naming the file.
std::vector<uint8_t> read_file_bytes(const std::string& path);

// Convenience: read_file_bytes + decode_image.
ImageU8 load_image(const std::string& path, const DecodeOptions& options = {});

// Writes an RGB image as PNG (lossless); throws ocr::InputError on failure.
void save_png(const ImageU8& image, const std::string& path);

}  // namespace ocr
