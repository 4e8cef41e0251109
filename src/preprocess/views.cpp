// Page -> views for one resolution mode (spec 4.2), image-token counts (spec 4.4) and the
// blank-page check.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include "ocr/preprocess.h"

namespace ocr {
namespace {

// int(0.5 * 255): the normalisation mean as a pixel value, the official letterbox colour.
constexpr uint8_t kPadFill = 127;
// Non-crop modes up to this side stretch the page to a square instead of letterboxing (HF infer()).
constexpr int kStretchMaxSide = 640;
// SAM patch size and the 16x token compressor (two stride-2 convolutions).
constexpr int kPatchSize = 16;
constexpr int kDownsample = 4;

// ceil((side // patch) / downsample), as the official code computes num_queries.
int64_t queries_per_side(int side) {
  return static_cast<int64_t>(
      std::ceil(static_cast<double>(side / kPatchSize) / static_cast<double>(kDownsample)));
}

// Copies the T x T crop at tile column `col`, row `row` out of `src`.
ImageU8 crop_tile(const ImageU8& src, int col, int row, int tile) {
  ImageU8 out(tile, tile);
  const size_t row_bytes = static_cast<size_t>(tile) * 3;
  for (int y = 0; y < tile; ++y) {
    std::copy_n(src.px(col * tile, row * tile + y), row_bytes, out.px(0, y));
  }
  return out;
}

}  // namespace

const std::vector<ModeSpec>& builtin_modes() {
  static const std::vector<ModeSpec> modes = {
      {"tiny", 512, 512, false},    {"small", 640, 640, false},  {"base", 1024, 1024, false},
      {"large", 1280, 1280, false}, {"gundam", 1024, 640, true},
  };
  return modes;
}

const ModeSpec& find_mode(const std::vector<ModeSpec>& modes, const std::string& name) {
  std::string valid;
  for (const ModeSpec& m : modes) {
    if (m.name == name) return m;
    valid += (valid.empty() ? "" : ", ") + m.name;
  }
  throw std::invalid_argument("unknown mode '" + name + "' (valid: " + valid + ")");
}

Views make_views(const ImageU8& image, const ModeSpec& mode, const TilingOptions& tiling) {
  if (image.empty()) {
    throw std::invalid_argument("make_views: image is " + std::to_string(image.width) + "x" +
                                std::to_string(image.height) + " pixels");
  }
  Views views;
  if (!mode.crop_mode) {
    // HF: resize((S, S)) when S <= 640, after which pad() is a no-op; otherwise pad to S.
    views.global = mode.image_size <= kStretchMaxSide
                       ? pillow_resize_bicubic(image, mode.image_size, mode.image_size)
                       : pillow_pad(image, mode.image_size, kPadFill);
    return views;
  }
  views.global = pillow_pad(image, mode.base_size, kPadFill);
  if (image.width <= tiling.no_tile_side && image.height <= tiling.no_tile_side) return views;

  // Tiles of image_size, as the vLLM code passes IMAGE_SIZE to the tiler (HF's default is 640,
  // which is the same for the released modes).
  const int tile = mode.image_size;
  const auto [w_t, h_t] =
      choose_tiling(image.width, image.height, tile, tiling.min_tiles, tiling.max_tiles);
  const ImageU8 resized = pillow_resize_bicubic(image, tile * w_t, tile * h_t);
  views.tiles_w = w_t;
  views.tiles_h = h_t;
  views.tiles.reserve(static_cast<size_t>(w_t) * h_t);
  for (int k = 0; k < w_t * h_t; ++k)
    views.tiles.push_back(crop_tile(resized, k % w_t, k / w_t, tile));
  return views;
}

int64_t count_image_tokens(const ModeSpec& mode, int tiles_w, int tiles_h, bool has_tiles) {
  if (!mode.crop_mode) {
    const int64_t n = queries_per_side(mode.image_size);
    return n * (n + 1) + 1;
  }
  const int64_t n_b = queries_per_side(mode.base_size);
  int64_t count = n_b * (n_b + 1) + 1;  // global rows with their newlines, plus the separator
  if (has_tiles && (tiles_w > 1 || tiles_h > 1)) {
    const int64_t n = queries_per_side(mode.image_size);
    count += (n * tiles_w + 1) * (n * tiles_h);
  }
  return count;
}

bool is_near_uniform(const ImageU8& image, int tolerance) {
  if (image.empty()) return true;
  const size_t n_px = static_cast<size_t>(image.width) * image.height;
  uint64_t sum[3] = {0, 0, 0};
  uint8_t lo[3] = {255, 255, 255}, hi[3] = {0, 0, 0};
  const uint8_t* p = image.data.data();
  for (size_t i = 0; i < n_px; ++i, p += 3) {
    for (int c = 0; c < 3; ++c) {
      sum[c] += p[c];
      lo[c] = std::min(lo[c], p[c]);
      hi[c] = std::max(hi[c], p[c]);
    }
  }
  // The largest deviation from the mean is at the channel's minimum or maximum.
  for (int c = 0; c < 3; ++c) {
    const double mean = static_cast<double>(sum[c]) / static_cast<double>(n_px);
    if (std::max(mean - lo[c], hi[c] - mean) > tolerance) return false;
  }
  return true;
}

}  // namespace ocr
