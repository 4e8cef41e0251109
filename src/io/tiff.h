// Multi-page TIFF: the chain of image directories (IFDs) read without decoding, so that every page
// can be counted, size-checked and checked for cut-off data before a decoder sees it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace ocr::io {

struct TiffPage {
  uint64_t ifd_offset = 0;  // byte offset of the page's directory
  int64_t width = 0;        // ImageWidth, 0 when absent
  int64_t height = 0;       // ImageLength, 0 when absent
  std::string truncation;   // "" or how the page's strips/tiles run past the end of the file
};

struct TiffLayout {
  bool big = false;             // BigTIFF (8-byte offsets)
  bool little = true;           // byte order
  std::vector<TiffPage> pages;  // in file order, as Pillow's n_frames and ImageSequence count them
};

// True for classic TIFF and BigTIFF magic bytes, either byte order.
bool is_tiff_data(const uint8_t* data, size_t size);

// Walks the directory chain (a loop ends it, as in libtiff). Throws ocr::InputError naming `name`
// when a directory lies or runs past the end of the file (a cut-off file) or has no entries.
TiffLayout read_tiff_layout(const uint8_t* data, size_t size, const std::string& name);

// A copy of the file whose header points at page `index0`'s directory, so that a decoder which
// reads the first page (cv::imdecode) reads that page: offsets in TIFF are absolute, nothing else
// moves.
std::vector<uint8_t> tiff_select_page(const uint8_t* data, size_t size, const TiffLayout& layout,
                                      size_t index0);

}  // namespace ocr::io
