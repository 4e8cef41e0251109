// Views, tiling and Pillow-exact resampling (spec 4.1-4.4). Pixel parity against Pillow over many
// sizes is in tests/unit/test_pillow_parity.py; here: the fixed facts of the spec and the fixture.
#include "ocr/preprocess.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "ocr/image_io.h"

namespace ocr {
namespace {

using Grids = std::vector<std::pair<int, int>>;

ImageU8 random_image(int w, int h, uint32_t seed) {
  std::mt19937 rng(seed);
  ImageU8 img(w, h);
  for (uint8_t& v : img.data) v = static_cast<uint8_t>(rng() >> 24);
  return img;
}

const ModeSpec& mode(const std::string& name) { return find_mode(builtin_modes(), name); }

TEST(TilingCandidates, OrderForMaxNineIsTheSpecList) {
  const Grids expected = {{1, 2}, {2, 1}, {3, 1}, {1, 3}, {2, 2}, {4, 1}, {1, 4}, {5, 1},
                          {1, 5}, {1, 6}, {6, 1}, {3, 2}, {2, 3}, {7, 1}, {1, 7}, {4, 2},
                          {2, 4}, {1, 8}, {8, 1}, {1, 9}, {3, 3}, {9, 1}};
  EXPECT_EQ(tiling_candidates(2, 9), expected);
}

TEST(TilingCandidates, OrderForMaxSixIsTheSpecList) {
  const Grids expected = {{1, 2}, {2, 1}, {3, 1}, {1, 3}, {4, 1}, {1, 4}, {2, 2},
                          {1, 5}, {5, 1}, {6, 1}, {2, 3}, {1, 6}, {3, 2}};
  EXPECT_EQ(tiling_candidates(2, 6), expected);
}

TEST(TilingCandidates, EveryGridOnceSortedByProduct) {
  for (int max_num = 2; max_num <= 30; ++max_num) {
    const Grids grids = tiling_candidates(2, max_num);
    std::set<std::pair<int, int>> expected;
    for (int i = 1; i <= max_num; ++i) {
      for (int j = 1; j <= max_num; ++j) {
        if (i * j >= 2 && i * j <= max_num) expected.insert({i, j});
      }
    }
    const std::set<std::pair<int, int>> got(grids.begin(), grids.end());
    EXPECT_EQ(got, expected) << max_num;
    EXPECT_EQ(grids.size(), expected.size()) << max_num;
    EXPECT_TRUE(std::is_sorted(grids.begin(), grids.end(), [](const auto& a, const auto& b) {
      return a.first * a.second < b.first * b.second;
    })) << max_num;
  }
}

TEST(TilingCandidates, RejectsEmptyRanges) {
  EXPECT_THROW(tiling_candidates(3, 2), std::invalid_argument);
  EXPECT_THROW(tiling_candidates(0, 4), std::invalid_argument);
}

struct TilingExample {
  int width, height, max_tiles, w_t, h_t;
  int64_t tokens;
};

// Spec 4.3 worked examples (gundam: tiles of 640, global view 1024).
TEST(ChooseTiling, SpecWorkedExamples) {
  const std::vector<TilingExample> examples = {
      {1224, 1584, 9, 2, 3, 903}, {1224, 1584, 6, 2, 3, 903},  {1191, 1684, 9, 2, 3, 903},
      {1584, 1224, 9, 3, 2, 893}, {800, 600, 9, 3, 2, 893},    {800, 600, 6, 3, 2, 893},
      {1000, 1000, 9, 2, 2, 693}, {2000, 2000, 6, 2, 2, 693},  {2000, 2000, 9, 3, 3, 1203},
      {2000, 1000, 6, 2, 1, 483}, {2000, 1000, 9, 4, 2, 1093},
  };
  for (const TilingExample& e : examples) {
    const auto grid = choose_tiling(e.width, e.height, 640, 2, e.max_tiles);
    EXPECT_EQ(grid, std::make_pair(e.w_t, e.h_t))
        << e.width << "x" << e.height << " max " << e.max_tiles;
    EXPECT_EQ(count_image_tokens(mode("gundam"), e.w_t, e.h_t, true), e.tokens)
        << e.width << "x" << e.height;
  }
}

// Exact aspect ties: the later grid wins only when the image covers more than half its area.
TEST(ChooseTiling, TieRuleUsesArea) {
  // (2,2) vs (3,3): 0.5 * 640^2 * 9 = 1843200 px.
  EXPECT_EQ(choose_tiling(1357, 1357, 640, 2, 9), std::make_pair(2, 2));  // 1841449 px
  EXPECT_EQ(choose_tiling(1358, 1358, 640, 2, 9), std::make_pair(3, 3));  // 1844164 px
  // (2,1) vs (4,2): 0.5 * 640^2 * 8 = 1638400 px.
  EXPECT_EQ(choose_tiling(1810, 905, 640, 2, 9), std::make_pair(2, 1));  // 1638050 px
  EXPECT_EQ(choose_tiling(1812, 906, 640, 2, 9), std::make_pair(4, 2));  // 1641672 px
}

TEST(CountImageTokens, NonCropModes) {
  EXPECT_EQ(count_image_tokens(mode("tiny"), 1, 1, false), 73);
  EXPECT_EQ(count_image_tokens(mode("small"), 1, 1, false), 111);
  EXPECT_EQ(count_image_tokens(mode("base"), 1, 1, false), 273);
  EXPECT_EQ(count_image_tokens(mode("large"), 1, 1, false), 421);
  EXPECT_EQ(count_image_tokens(mode("gundam"), 1, 1, false), 273);  // page <= 640: no tiles
  EXPECT_EQ(count_image_tokens(mode("gundam"), 3, 2, true), 893);   // spec 2.6 example
}

TEST(Modes, BuiltinTableAndLookup) {
  const auto& modes = builtin_modes();
  ASSERT_EQ(modes.size(), 5u);
  EXPECT_EQ(modes[0].name, "tiny");
  EXPECT_EQ(mode("gundam").base_size, 1024);
  EXPECT_EQ(mode("gundam").image_size, 640);
  EXPECT_TRUE(mode("gundam").crop_mode);
  EXPECT_EQ(mode("large").image_size, 1280);
  EXPECT_FALSE(mode("large").crop_mode);
  try {
    find_mode(modes, "huge");
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("tiny, small, base, large, gundam"), std::string::npos)
        << e.what();
  }
}

TEST(RoundHalfEven, MatchesPythonRound) {
  EXPECT_EQ(round_half_even(0.5), 0);
  EXPECT_EQ(round_half_even(1.5), 2);
  EXPECT_EQ(round_half_even(2.5), 2);
  EXPECT_EQ(round_half_even(116.5), 116);
  EXPECT_EQ(round_half_even(3.4999), 3);
  EXPECT_EQ(round_half_even(790.9), 791);
}

TEST(PillowResize, SameSizeIsACopy) {
  const ImageU8 img = random_image(37, 21, 1);
  const ImageU8 out = pillow_resize_bicubic(img, 37, 21);
  EXPECT_EQ(out.width, 37);
  EXPECT_EQ(out.height, 21);
  EXPECT_EQ(out.data, img.data);
}

TEST(PillowResize, TwoPixelsToOneAveragesSymmetrically) {
  // Two taps of weight 0.5 each (2^21 in 22-bit fixed point): (255 * 2^21 + 2^21) >> 22 = 128.
  ImageU8 img(2, 1);
  std::fill_n(img.px(1, 0), 3, uint8_t{255});
  const ImageU8 out = pillow_resize_bicubic(img, 1, 1);
  EXPECT_EQ(std::vector<uint8_t>(out.data.begin(), out.data.end()), std::vector<uint8_t>(3, 128));
}

TEST(PillowResize, ConstantImagesStayConstant) {
  const std::vector<std::pair<int, int>> sizes = {{1, 1},   {1, 300},     {7, 3}, {640, 2},
                                                  {97, 61}, {1280, 1920}, {5, 1}};
  for (uint8_t value : {uint8_t{0}, uint8_t{1}, uint8_t{127}, uint8_t{254}, uint8_t{255}}) {
    const ImageU8 img(23, 41, value);
    for (const auto& [w, h] : sizes) {
      const ImageU8 out = pillow_resize_bicubic(img, w, h);
      ASSERT_EQ(out.width, w);
      ASSERT_EQ(out.height, h);
      EXPECT_TRUE(
          std::all_of(out.data.begin(), out.data.end(), [&](uint8_t v) { return v == value; }))
          << int(value) << " -> " << w << "x" << h;
    }
  }
}

TEST(PillowResize, RejectsEmptySizes) {
  const ImageU8 img(4, 4);
  EXPECT_THROW(pillow_resize_bicubic(img, 0, 4), std::invalid_argument);
  EXPECT_THROW(pillow_resize_bicubic(ImageU8(), 4, 4), std::invalid_argument);
}

// Rows [y0, y1) hold the content, every other row is fill (landscape input).
void expect_letterbox_rows(const ImageU8& out, int y0, int y1, uint8_t fill) {
  for (int y = 0; y < out.height; ++y) {
    const bool is_fill = std::all_of(out.px(0, y), out.px(0, y) + out.width * 3,
                                     [&](uint8_t v) { return v == fill; });
    EXPECT_EQ(is_fill, y < y0 || y >= y1) << "row " << y;
  }
}

TEST(PillowPad, LetterboxGeometry) {
  // 800x600 -> 1024x768 at row offset 128.
  const ImageU8 out = pillow_pad(random_image(800, 600, 2), 1024, 127);
  ASSERT_EQ(out.width, 1024);
  ASSERT_EQ(out.height, 1024);
  expect_letterbox_rows(out, 128, 896, 127);
  // 4x2 -> 5: height round(2.5) = 2, offset round(1.5) = 2 (both half to even).
  ImageU8 small(4, 2, 200);
  expect_letterbox_rows(pillow_pad(small, 5, 9), 2, 4, 9);
}

TEST(PillowPad, PortraitContentIsCentredByColumns) {
  // 600x800 -> 768x1024 at column offset 128; the content equals the plain resize.
  const ImageU8 img = random_image(600, 800, 3);
  const ImageU8 out = pillow_pad(img, 1024, 127);
  const ImageU8 resized = pillow_resize_bicubic(img, 768, 1024);
  for (int y = 0; y < 1024; y += 97) {
    EXPECT_TRUE(std::equal(resized.px(0, y), resized.px(0, y) + 768 * 3, out.px(128, y))) << y;
    EXPECT_EQ(out.px(127, y)[0], 127);
    EXPECT_EQ(out.px(896, y)[2], 127);
  }
}

TEST(PillowPad, SideRoundingToZeroGivesAllFill) {
  const ImageU8 out = pillow_pad(ImageU8(1, 3000, 0), 1024, 127);
  EXPECT_TRUE(std::all_of(out.data.begin(), out.data.end(), [](uint8_t v) { return v == 127; }));
}

TEST(PillowPad, SquareInputIsAPlainResize) {
  const ImageU8 img = random_image(300, 300, 4);
  EXPECT_EQ(pillow_pad(img, 1024, 127).data, pillow_resize_bicubic(img, 1024, 1024).data);
}

TEST(MakeViews, GundamSmallPageHasNoTiles) {
  const Views v = make_views(random_image(640, 400, 5), mode("gundam"));
  EXPECT_FALSE(v.has_tiles());
  EXPECT_EQ(v.tiles_w, 1);
  EXPECT_EQ(v.tiles_h, 1);
  EXPECT_EQ(v.global.width, 1024);
  EXPECT_EQ(count_image_tokens(mode("gundam"), v.tiles_w, v.tiles_h, v.has_tiles()), 273);
}

TEST(MakeViews, GundamTilesAreRowMajorCropsOfTheResizedPage) {
  const ImageU8 img = random_image(1300, 700, 6);  // aspect 1.857 -> (2,1) with max 9
  TilingOptions tiling;
  tiling.max_tiles = 9;
  const Views v = make_views(img, mode("gundam"), tiling);
  ASSERT_EQ(v.tiles_w, 2);
  ASSERT_EQ(v.tiles_h, 1);
  ASSERT_EQ(v.tiles.size(), 2u);
  const ImageU8 resized = pillow_resize_bicubic(img, 1280, 640);
  for (int k = 0; k < 2; ++k) {
    ASSERT_EQ(v.tiles[k].width, 640);
    for (int y = 0; y < 640; y += 37) {
      EXPECT_TRUE(
          std::equal(v.tiles[k].px(0, y), v.tiles[k].px(0, y) + 640 * 3, resized.px(640 * k, y)))
          << "tile " << k << " row " << y;
    }
  }
  EXPECT_EQ(v.global.data, pillow_pad(img, 1024, 127).data);
}

TEST(MakeViews, NonCropModes) {
  const ImageU8 img = random_image(500, 380, 7);
  EXPECT_EQ(make_views(img, mode("tiny")).global.data, pillow_resize_bicubic(img, 512, 512).data);
  EXPECT_EQ(make_views(img, mode("small")).global.data, pillow_resize_bicubic(img, 640, 640).data);
  EXPECT_EQ(make_views(img, mode("base")).global.data, pillow_pad(img, 1024, 127).data);
  const Views large = make_views(img, mode("large"));
  EXPECT_EQ(large.global.width, 1280);
  EXPECT_FALSE(large.has_tiles());
}

TEST(MakeViews, RejectsEmptyImage) {
  EXPECT_THROW(make_views(ImageU8(), mode("base")), std::invalid_argument);
}

// The committed fixture views are the official Pillow preprocessing: equal bytes required.
TEST(FixtureViews, EqualTheCommittedPngs) {
  const std::string dir = std::string(OCR_SHARED_DIR) + "/fixtures/parity-a/";
  std::ifstream in(dir + "cases.json");
  ASSERT_TRUE(in) << dir;
  const nlohmann::json cases = nlohmann::json::parse(in)["cases"];
  ASSERT_FALSE(cases.empty());
  for (const auto& c : cases) {
    const std::string id = c["id"];
    const ModeSpec& m = mode(c["mode"]);
    ASSERT_EQ(m.base_size, c["base_size"].get<int>()) << id;
    ASSERT_EQ(m.image_size, c["image_size"].get<int>()) << id;
    ASSERT_EQ(m.crop_mode, c["crop_mode"].get<bool>()) << id;
    const Views v = make_views(load_image(dir + c["image"].get<std::string>()), m);
    const auto& views = c["views"];
    ASSERT_EQ(views.size(), 1 + v.tiles.size()) << id;
    for (size_t k = 0; k < views.size(); ++k) {
      const ImageU8 expected = load_image(dir + views[k]["file"].get<std::string>());
      const ImageU8& got = k == 0 ? v.global : v.tiles[k - 1];
      EXPECT_EQ(got.width, expected.width) << id << " view " << k;
      EXPECT_EQ(got.height, expected.height) << id << " view " << k;
      EXPECT_TRUE(got.data == expected.data) << id << " view " << k << " differs";
    }
    EXPECT_EQ(std::vector<int>({v.tiles_w, v.tiles_h}),
              c["images_spatial_crop"].get<std::vector<int>>())
        << id;
    EXPECT_EQ(count_image_tokens(m, v.tiles_w, v.tiles_h, v.has_tiles()),
              c["n_image_tokens"].get<int64_t>())
        << id;
  }
}

TEST(IsNearUniform, ToleranceIsTheMaxDeviationFromTheMean) {
  ImageU8 img(10, 10, 200);
  EXPECT_TRUE(is_near_uniform(img, 0));
  img.px(3, 4)[1] = 205;  // green mean 200.05, largest deviation 4.95
  EXPECT_FALSE(is_near_uniform(img, 4));
  EXPECT_TRUE(is_near_uniform(img, 5));
  img.px(0, 0)[2] = 0;  // a dark dot on a blank page
  EXPECT_FALSE(is_near_uniform(img, 100));
}

}  // namespace
}  // namespace ocr
