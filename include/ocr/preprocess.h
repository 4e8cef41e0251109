// Page image -> views (global view + tiles), exactly as the official DeepSeek-OCR preprocessing
// (spec section 4): Pillow-exact bicubic resampling, ImageOps.pad letterboxing, dynamic tiling.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "ocr/image.h"

namespace ocr {

// One resolution mode (spec table 4.2). The engine takes these values from the model manifest.
struct ModeSpec {
  std::string name;     // "tiny", "small", "base", "large", "gundam"
  int base_size = 1024; // side of the global view
  int image_size = 1024;// side of a tile (crop mode) or of the global view (non-crop modes)
  bool crop_mode = false;
};

// The five official modes, in order tiny, small, base, large, gundam.
const std::vector<ModeSpec>& builtin_modes();
// Looks a mode up by name in `modes`; throws std::invalid_argument listing the valid names.
const ModeSpec& find_mode(const std::vector<ModeSpec>& modes, const std::string& name);

// PIL Image.resize(size, BICUBIC) on an RGB image: separable, a = -0.5, support scaled by the
// downscale factor (antialiased when shrinking), 22-bit fixed-point coefficients, uint8 rounding
// between the horizontal and the vertical pass. Same size returns a copy.
ImageU8 pillow_resize_bicubic(const ImageU8& src, int out_width, int out_height);

// PIL ImageOps.pad(img, (size, size), BICUBIC, color=(fill,fill,fill)): contain (aspect kept,
// round-half-to-even), then paste centred on a fill-coloured square (offset rounded half-to-even).
ImageU8 pillow_pad(const ImageU8& src, int size, uint8_t fill = 127);

// Python's round() for a non-negative double: half to even.
int round_half_even(double x);

// Tiling grid candidates (i columns, j rows) with min_num <= i*j <= max_num, in the official order
// (spec 4.3; sorted by i*j, equal products in CPython set-iteration order).
std::vector<std::pair<int, int>> tiling_candidates(int min_num, int max_num);

// Chooses (w_t, h_t) for an image of width x height, spec 4.3 (closest aspect ratio, tie rule on area).
std::pair<int, int> choose_tiling(int width, int height, int tile_size, int min_num, int max_num);

// The views of one page.
struct Views {
  ImageU8 global;               // base_size (crop mode / base / large) or image_size square
  std::vector<ImageU8> tiles;   // row-major, tile k at column k % tiles_w, row k / tiles_w
  int tiles_w = 1;              // tiles across ([1,1] when there are no tiles)
  int tiles_h = 1;              // tiles down
  bool has_tiles() const { return !tiles.empty(); }
};

struct TilingOptions {
  int min_tiles = 2;
  int max_tiles = 9;  // 9 as in the official HF infer(); the official vLLM scripts use 6
  int no_tile_side = 640;  // crop mode: no tiles when both sides <= this (hard-coded 640 upstream)
};

// Builds the views of `image` for `mode` (spec 4.2). Throws std::invalid_argument on an empty image.
Views make_views(const ImageU8& image, const ModeSpec& mode, const TilingOptions& tiling = {});

// Number of image-token ids in the prompt for these views (spec 4.4; patch 16, downsample 4).
int64_t count_image_tokens(const ModeSpec& mode, int tiles_w, int tiles_h, bool has_tiles);

// True when every pixel is within `tolerance` of the image mean on every channel (blank page).
bool is_near_uniform(const ImageU8& image, int tolerance);

}  // namespace ocr
