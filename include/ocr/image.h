// Plain pixel buffers shared by io/, preprocess/ and the engine. No OpenCV or torch here.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ocr {

// An 8-bit RGB image, interleaved, row-major: pixel (x, y) channel c is data[(y * width + x) * 3 + c].
struct ImageU8 {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> data;  // [height, width, 3]

  ImageU8() = default;
  ImageU8(int w, int h, uint8_t fill = 0)
      : width(w), height(h), data(static_cast<size_t>(w) * h * 3, fill) {}
  bool empty() const { return width == 0 || height == 0; }
  uint8_t* px(int x, int y) { return data.data() + (static_cast<size_t>(y) * width + x) * 3; }
  const uint8_t* px(int x, int y) const {
    return data.data() + (static_cast<size_t>(y) * width + x) * 3;
  }
};

}  // namespace ocr
