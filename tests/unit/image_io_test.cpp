// Decoding into PIL-like RGB, header checks before decoding, EXIF orientation, file reading.
// Bytes are made with OpenCV's encoders here; parity with Pillow's decoders is checked in
// tests/unit/test_pillow_parity.py.
#include "ocr/image_io.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <string>
#include <vector>

#include "io/image_header.h"
#include "ocr/errors.h"

namespace ocr {
namespace {

std::vector<uint8_t> encode(const cv::Mat& m, const std::string& ext) {
  std::vector<uint8_t> out;
  EXPECT_TRUE(cv::imencode(ext, m, out)) << ext;
  return out;
}

// BGR test pattern with a distinct value in every byte position (w*h*3 <= 256).
cv::Mat pattern_bgr(int w, int h) {
  cv::Mat m(h, w, CV_8UC3);
  for (int i = 0; i < w * h * 3; ++i) m.data[i] = static_cast<uint8_t>(i * 7 + 1);
  return m;
}

std::string temp_path(const std::string& name) {
  return ::testing::TempDir() + "ocr_image_io_" + std::to_string(::getpid()) + "_" + name;
}

uint32_t crc32(const uint8_t* data, size_t n) {
  uint32_t c = 0xffffffffu;
  for (size_t i = 0; i < n; ++i) {
    c ^= data[i];
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
  }
  return ~c;
}

void put_be32(std::vector<uint8_t>& v, uint32_t x) {
  for (int s = 24; s >= 0; s -= 8) v.push_back(static_cast<uint8_t>(x >> s));
}

std::vector<uint8_t> png_chunk(const char* type, const std::vector<uint8_t>& data) {
  std::vector<uint8_t> c;
  put_be32(c, static_cast<uint32_t>(data.size()));
  c.insert(c.end(), type, type + 4);
  c.insert(c.end(), data.begin(), data.end());
  put_be32(c, crc32(c.data() + 4, c.size() - 4));
  return c;
}

// Big-endian TIFF structure with one IFD entry: Orientation (SHORT).
std::vector<uint8_t> exif_tiff(int orientation) {
  return {'M',  'M',  0, 42, 0, 0, 0, 8, 0, 1,
          0x01, 0x12, 0, 3,  0, 0, 0, 1, 0, static_cast<uint8_t>(orientation),
          0,    0,    0, 0,  0, 0, 0, 0};
}

// Inserts an eXIf chunk right after IHDR (8-byte signature + 25-byte IHDR chunk).
std::vector<uint8_t> with_png_exif(std::vector<uint8_t> png, int orientation) {
  const std::vector<uint8_t> chunk = png_chunk("eXIf", exif_tiff(orientation));
  png.insert(png.begin() + 33, chunk.begin(), chunk.end());
  return png;
}

// Inserts an APP1 "Exif" segment right after SOI.
std::vector<uint8_t> with_jpeg_exif(std::vector<uint8_t> jpg, int orientation) {
  std::vector<uint8_t> payload = {'E', 'x', 'i', 'f', 0, 0};
  const std::vector<uint8_t> tiff = exif_tiff(orientation);
  payload.insert(payload.end(), tiff.begin(), tiff.end());
  std::vector<uint8_t> seg = {0xff, 0xe1, static_cast<uint8_t>((payload.size() + 2) >> 8),
                              static_cast<uint8_t>(payload.size() + 2)};
  seg.insert(seg.end(), payload.begin(), payload.end());
  jpg.insert(jpg.begin() + 2, seg.begin(), seg.end());
  return jpg;
}

std::vector<uint8_t> png_with_size(uint32_t w, uint32_t h) {
  std::vector<uint8_t> ihdr;
  put_be32(ihdr, w);
  put_be32(ihdr, h);
  ihdr.insert(ihdr.end(), {8, 2, 0, 0, 0});
  std::vector<uint8_t> png = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  const auto c = png_chunk("IHDR", ihdr);
  png.insert(png.end(), c.begin(), c.end());
  const auto end = png_chunk("IEND", {});
  png.insert(png.end(), end.begin(), end.end());
  return png;
}

// Channel 0 of every pixel, row by row.
std::vector<std::vector<int>> red_plane(const ImageU8& img) {
  std::vector<std::vector<int>> rows(img.height);
  for (int y = 0; y < img.height; ++y) {
    for (int x = 0; x < img.width; ++x) rows[y].push_back(img.px(x, y)[0]);
  }
  return rows;
}

std::string input_error(const std::vector<uint8_t>& bytes, const DecodeOptions& opt = {}) {
  try {
    decode_image(bytes, "page.bin", opt);
  } catch (const InputError& e) {
    return e.what();
  }
  return "no InputError";
}

TEST(DecodeImage, PngRgbIsBgrSwapped) {
  const cv::Mat bgr = pattern_bgr(5, 3);
  const ImageU8 img = decode_image(encode(bgr, ".png"), "p.png");
  ASSERT_EQ(img.width, 5);
  ASSERT_EQ(img.height, 3);
  for (int y = 0; y < 3; ++y) {
    for (int x = 0; x < 5; ++x) {
      const cv::Vec3b p = bgr.at<cv::Vec3b>(y, x);
      EXPECT_EQ(img.px(x, y)[0], p[2]);
      EXPECT_EQ(img.px(x, y)[1], p[1]);
      EXPECT_EQ(img.px(x, y)[2], p[0]);
    }
  }
}

TEST(DecodeImage, GreyIsExpandedAndAlphaDropped) {
  cv::Mat grey(2, 3, CV_8UC1);
  for (int i = 0; i < 6; ++i) grey.data[i] = static_cast<uint8_t>(40 * i);
  const ImageU8 g = decode_image(encode(grey, ".png"), "g.png");
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(g.data[i * 3], 40 * i);
    EXPECT_EQ(g.data[i * 3 + 1], 40 * i);
    EXPECT_EQ(g.data[i * 3 + 2], 40 * i);
  }
  // Fully transparent pixels keep their colour: no compositing onto white or black.
  cv::Mat bgra(1, 2, CV_8UC4, cv::Scalar(10, 20, 30, 0));
  const ImageU8 a = decode_image(encode(bgra, ".png"), "a.png");
  EXPECT_EQ(std::vector<uint8_t>(a.data.begin(), a.data.end()),
            (std::vector<uint8_t>{30, 20, 10, 30, 20, 10}));
}

TEST(DecodeImage, SixteenBitKeepsTheHighByte) {
  cv::Mat m(1, 2, CV_16UC3);
  m.at<cv::Vec3w>(0, 0) = cv::Vec3w(0x12ff, 0x3480, 0xff01);
  m.at<cv::Vec3w>(0, 1) = cv::Vec3w(0x0000, 0xffff, 0x00ff);
  const ImageU8 img = decode_image(encode(m, ".png"), "16.png");
  EXPECT_EQ(std::vector<uint8_t>(img.data.begin(), img.data.end()),
            (std::vector<uint8_t>{0xff, 0x34, 0x12, 0x00, 0xff, 0x00}));
}

TEST(DecodeImage, OtherFormats) {
  const cv::Mat bgr = pattern_bgr(6, 4);
  const ImageU8 ref = decode_image(encode(bgr, ".png"), "ref.png");
  for (const char* ext : {".bmp", ".tiff", ".ppm", ".webp"}) {
    std::vector<uint8_t> bytes;
    if (std::string(ext) == ".webp") {
      ASSERT_TRUE(cv::imencode(ext, bgr, bytes, {cv::IMWRITE_WEBP_QUALITY, 101}));  // lossless
    } else {
      bytes = encode(bgr, ext);
    }
    const ImageU8 img = decode_image(bytes, std::string("x") + ext);
    EXPECT_EQ(img.data, ref.data) << ext;
  }
  const ImageU8 jpg = decode_image(encode(bgr, ".jpg"), "x.jpg");  // lossy: size only
  EXPECT_EQ(jpg.width, 6);
  EXPECT_EQ(jpg.height, 4);
}

// ImageOps.exif_transpose semantics, on a 3x2 image whose red values are 0, 3, ..., 15.
TEST(DecodeImage, ExifOrientationLikeExifTranspose) {
  cv::Mat bgr(2, 3, CV_8UC3);
  for (int i = 0; i < 6; ++i)
    bgr.at<cv::Vec3b>(i / 3, i % 3) = cv::Vec3b(0, 0, static_cast<uint8_t>(3 * i));
  const std::vector<uint8_t> png = encode(bgr, ".png");
  using Plane = std::vector<std::vector<int>>;
  const Plane upright = {{0, 3, 6}, {9, 12, 15}};
  const std::vector<Plane> expected = {
      {},
      upright,                     // 1
      {{6, 3, 0}, {15, 12, 9}},    // 2 FLIP_LEFT_RIGHT
      {{15, 12, 9}, {6, 3, 0}},    // 3 ROTATE_180
      {{9, 12, 15}, {0, 3, 6}},    // 4 FLIP_TOP_BOTTOM
      {{0, 9}, {3, 12}, {6, 15}},  // 5 TRANSPOSE
      {{9, 0}, {12, 3}, {15, 6}},  // 6 ROTATE_270 (clockwise)
      {{15, 6}, {12, 3}, {9, 0}},  // 7 TRANSVERSE
      {{6, 15}, {3, 12}, {0, 9}},  // 8 ROTATE_90 (counter-clockwise)
  };
  for (int o = 1; o <= 8; ++o) {
    const std::vector<uint8_t> bytes = with_png_exif(png, o);
    EXPECT_EQ(io::read_exif_orientation(bytes.data(), bytes.size()), o);
    EXPECT_EQ(red_plane(decode_image(bytes, "o.png")), expected[o]) << "orientation " << o;
    DecodeOptions keep;
    keep.apply_exif_orientation = false;
    EXPECT_EQ(red_plane(decode_image(bytes, "o.png", keep)), upright) << "orientation " << o;
  }
}

TEST(DecodeImage, JpegExifOrientationIsOptional) {
  const std::vector<uint8_t> jpg = with_jpeg_exif(encode(pattern_bgr(8, 4), ".jpg"), 6);
  EXPECT_EQ(io::read_exif_orientation(jpg.data(), jpg.size()), 6);
  const ImageU8 rotated = decode_image(jpg, "o.jpg");
  EXPECT_EQ(rotated.width, 4);
  EXPECT_EQ(rotated.height, 8);
  DecodeOptions keep;
  keep.apply_exif_orientation = false;
  const ImageU8 stored = decode_image(jpg, "o.jpg", keep);
  ASSERT_EQ(stored.width, 8);
  ASSERT_EQ(stored.height, 4);
  // Clockwise: output (x, y) comes from stored (y, H - 1 - x).
  for (int y = 0; y < 8; ++y) {
    for (int x = 0; x < 4; ++x) {
      ASSERT_TRUE(std::equal(rotated.px(x, y), rotated.px(x, y) + 3, stored.px(y, 3 - x)));
    }
  }
}

TEST(ImageHeader, SizesFromEveryFormat) {
  const cv::Mat bgr(37, 53, CV_8UC3, cv::Scalar(1, 2, 3));
  for (const char* ext : {".png", ".jpg", ".bmp", ".tiff", ".webp", ".ppm"}) {
    const std::vector<uint8_t> bytes = encode(bgr, ext);
    const io::ImageHeader h = io::read_image_header(bytes.data(), bytes.size());
    EXPECT_FALSE(h.format.empty()) << ext;
    EXPECT_EQ(h.width, 53) << ext;
    EXPECT_EQ(h.height, 37) << ext;
  }
  const std::vector<uint8_t> noise = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
  EXPECT_TRUE(io::read_image_header(noise.data(), noise.size()).format.empty());
}

TEST(DecodeImage, RefusesTooManyPixelsBeforeDecoding) {
  EXPECT_EQ(input_error(png_with_size(50000, 50000)),
            "page.bin: image is 50000x50000 pixels, over the --max-pixels limit of 200000000");
  DecodeOptions small;
  small.max_pixels = 100;
  EXPECT_EQ(input_error(encode(pattern_bgr(11, 10), ".jpg"), small),
            "page.bin: image is 11x10 pixels, over the --max-pixels limit of 100");
  EXPECT_NO_THROW(decode_image(encode(pattern_bgr(10, 10), ".png"), "ok.png", small));
}

TEST(DecodeImage, BrokenInputsAreOneLineInputErrors) {
  cv::Mat big(300, 400, CV_8UC3);
  cv::randu(big, 0, 256);
  const std::vector<uint8_t> jpg = encode(big, ".jpg");
  const std::vector<uint8_t> png = encode(big, ".png");
  std::vector<uint8_t> random_bytes(4000);
  for (size_t i = 0; i < random_bytes.size(); ++i)
    random_bytes[i] = static_cast<uint8_t>(i * 2654435761u >> 13);
  const std::vector<std::pair<std::vector<uint8_t>, std::string>> cases = {
      {{}, "page.bin: empty file (0 bytes)"},
      {random_bytes, "page.bin: not a supported image format"},
      {std::vector<uint8_t>(jpg.begin(), jpg.begin() + jpg.size() / 2), "page.bin: truncated JPEG"},
      {std::vector<uint8_t>(png.begin(), png.begin() + png.size() / 2), "page.bin: truncated PNG"},
      {std::vector<uint8_t>(png.begin(), png.end() - 12), "page.bin: truncated PNG data (no IEND"},
  };
  for (const auto& [bytes, prefix] : cases) {
    const std::string msg = input_error(bytes);
    EXPECT_EQ(msg.rfind(prefix, 0), 0u) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}

TEST(Files, ReadSaveAndErrors) {
  const std::string path = temp_path("roundtrip.png");
  ImageU8 img(3, 2);
  for (size_t i = 0; i < img.data.size(); ++i) img.data[i] = static_cast<uint8_t>(i * 13);
  save_png(img, path);
  const ImageU8 back = load_image(path);
  EXPECT_EQ(back.width, 3);
  EXPECT_EQ(back.data, img.data);
  EXPECT_EQ(read_file_bytes(path).size(),
            encode(cv::Mat(2, 3, CV_8UC3, img.data.data()), ".png").size());
  std::remove(path.c_str());

  try {
    read_file_bytes(path);
    FAIL() << "no exception";
  } catch (const InputError& e) {
    EXPECT_EQ(std::string(e.what()), path + ": cannot open (No such file or directory)");
  }
  EXPECT_THROW(read_file_bytes(::testing::TempDir()), InputError);
  EXPECT_THROW(save_png(img, ::testing::TempDir() + "no_such_dir/x.png"), InputError);

  const std::string empty = temp_path("empty.png");
  std::ofstream(empty).close();
  EXPECT_TRUE(read_file_bytes(empty).empty());
  try {
    load_image(empty);
    FAIL() << "no exception";
  } catch (const InputError& e) {
    EXPECT_EQ(std::string(e.what()), empty + ": empty file (0 bytes)");
  }
  std::remove(empty.c_str());
}

}  // namespace
}  // namespace ocr
