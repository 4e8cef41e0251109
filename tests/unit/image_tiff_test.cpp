// Multi-page TIFF: pages counted from the directory chain, each decoded exactly, both byte orders
// and BigTIFF, the pixel limit checked per page before decoding, cut-off files refused with one
// line. The files are written by hand here (uncompressed RGB strips) so every byte is known;
// tests/e2e/test_tiff.py checks Pillow-written files against Pillow's own decoding.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "io/tiff.h"
#include "ocr/errors.h"
#include "ocr/image_io.h"

namespace ocr {
namespace {

struct Page {
  int w, h;
  ImageU8 rgb;
};

Page make_page(int w, int h, int seed) {
  Page p{w, h, ImageU8(w, h)};
  for (size_t i = 0; i < p.rgb.data.size(); ++i)
    p.rgb.data[i] = static_cast<uint8_t>(i * 31 + seed * 57 + 3);
  return p;
}

class TiffWriter {
 public:
  TiffWriter(bool big_endian, bool bigtiff) : be_(big_endian), big_(bigtiff) {
    put_raw(be_ ? "MM" : "II", 2);
    put(big_ ? 43 : 42, 2);
    if (big_) {
      put(8, 2);
      put(0, 2);
    }
    first_link_ = out_.size();
    put(0, big_ ? 8 : 4);
  }
  // Pixel data, then the directory; the previous directory's "next" field is patched to it.
  void add(const Page& p) {
    const uint64_t data_at = out_.size();
    out_.insert(out_.end(), p.rgb.data.begin(), p.rgb.data.end());
    const uint64_t bps_at = out_.size();
    for (int i = 0; i < 3; ++i) put(8, 2);
    if (out_.size() % 2) out_.push_back(0);
    const uint64_t ifd = out_.size();
    patch(link_ ? link_ : first_link_, ifd);
    struct E {
      uint16_t tag, type;
      uint64_t count, value;
    };
    const bool bps_inline = big_;  // 3 SHORTs fit in BigTIFF's 8-byte field
    const std::vector<E> entries = {{256, 4, 1, uint64_t(p.w)},
                                    {257, 4, 1, uint64_t(p.h)},
                                    {258, 3, 3, bps_inline ? 0 : bps_at},
                                    {259, 3, 1, 1},
                                    {262, 3, 1, 2},
                                    {273, 4, 1, data_at},
                                    {277, 3, 1, 3},
                                    {278, 4, 1, uint64_t(p.h)},
                                    {279, 4, 1, p.rgb.data.size()},
                                    {284, 3, 1, 1}};
    put(entries.size(), big_ ? 8 : 2);
    for (const auto& e : entries) {
      put(e.tag, 2);
      put(e.type, 2);
      put(e.count, big_ ? 8 : 4);
      const int field = big_ ? 8 : 4;
      if (e.tag == 258 && bps_inline) {
        for (int i = 0; i < 3; ++i) put(8, 2);
        put(0, field - 6);
      } else if (e.type == 3 && e.count == 1) {
        put(e.value, 2);  // SHORT, left-justified
        put(0, field - 2);
      } else {
        put(e.value, field);
      }
    }
    link_ = out_.size();
    put(0, big_ ? 8 : 4);
  }
  std::vector<uint8_t> bytes() const { return out_; }
  uint64_t link() const { return link_; }
  void patch(uint64_t at, uint64_t v) {
    const int n = big_ ? 8 : 4;
    for (int i = 0; i < n; ++i)
      out_[at + i] = static_cast<uint8_t>(v >> (8 * (be_ ? n - 1 - i : i)));
  }

 private:
  void put_raw(const char* s, size_t n) {
    for (size_t i = 0; i < n; ++i) out_.push_back(static_cast<uint8_t>(s[i]));
  }
  void put(uint64_t v, int n) {
    for (int i = 0; i < n; ++i)
      out_.push_back(static_cast<uint8_t>(v >> (8 * (be_ ? n - 1 - i : i))));
  }
  bool be_, big_;
  std::vector<uint8_t> out_;
  uint64_t first_link_ = 0, link_ = 0;
};

std::vector<Page> three_pages() {
  return {make_page(7, 5, 1), make_page(12, 3, 2), make_page(4, 9, 3)};
}

std::vector<uint8_t> tiff(const std::vector<Page>& pages, bool be = false, bool big = false) {
  TiffWriter w(be, big);
  for (const auto& p : pages) w.add(p);
  return w.bytes();
}

TEST(MultiPageTiff, EveryPageDecodesExactlyInBothByteOrdersAndBigTiff) {
  const auto pages = three_pages();
  for (bool be : {false, true}) {
    for (bool big : {false, true}) {
      const auto bytes = tiff(pages, be, big);
      SCOPED_TRACE(std::string(be ? "MM" : "II") + (big ? " BigTIFF" : ""));
      ASSERT_EQ(count_image_pages(bytes, "t.tif"), 3);
      if (be && big) {  // OpenCV's reader does not take it: a clear error, not "unsupported format"
        try {
          decode_image_page(bytes, 0, "t.tif");
          FAIL();
        } catch (const InputError& e) {
          EXPECT_NE(std::string(e.what()).find("big-endian BigTIFF"), std::string::npos)
              << e.what();
        }
        continue;
      }
      for (int k = 0; k < 3; ++k) {
        const ImageU8 img = decode_image_page(bytes, k, "t.tif");
        EXPECT_EQ(img.width, pages[k].w);
        EXPECT_EQ(img.height, pages[k].h);
        EXPECT_EQ(img.data, pages[k].rgb.data) << "page " << k + 1;
      }
      EXPECT_THROW(decode_image_page(bytes, 3, "t.tif"), InputError);
    }
  }
  // Page 1 is what decode_image reads from the same file.
  const auto bytes = tiff(pages);
  EXPECT_EQ(decode_image(bytes, "t.tif").data, pages[0].rgb.data);
}

TEST(MultiPageTiff, SinglePageAndOtherFormats) {
  const auto one = tiff({make_page(6, 6, 9)});
  EXPECT_EQ(count_image_pages(one, "one.tif"), 1);
  EXPECT_EQ(decode_image_page(one, 0, "one.tif").data, make_page(6, 6, 9).rgb.data);
  const std::vector<uint8_t> not_tiff = {'B', 'M', 0, 0};
  EXPECT_EQ(count_image_pages(not_tiff, "x.bmp"), 1);
  try {
    decode_image_page(one, 1, "one.tif");
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("page 2"), std::string::npos) << e.what();
  }
}

TEST(MultiPageTiff, PixelLimitCheckedPerPageBeforeDecoding) {
  // Page 2 is 12x3 = 36 pixels: over a limit of 35 while the others pass.
  const auto bytes = tiff(three_pages());
  DecodeOptions o;
  o.max_pixels = 35;
  EXPECT_NO_THROW(decode_image_page(bytes, 0, "t.tif", o));
  try {
    decode_image_page(bytes, 1, "t.tif", o);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_EQ(std::string(e.what()),
              "t.tif: page 2: image is 12x3 pixels, over the --max-pixels limit of 35");
  }
  // A page that claims 100000 x 100000 pixels is refused from its directory alone.
  TiffWriter w(false, false);
  w.add(make_page(2, 2, 1));
  Page huge = make_page(1, 1, 2);
  huge.w = 100000;
  huge.h = 100000;
  w.add(huge);
  try {
    decode_image_page(w.bytes(), 1, "bomb.tif");
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("100000x100000 pixels"), std::string::npos) << e.what();
  }
}

TEST(MultiPageTiff, CutOffFilesFailWithOneLine) {
  const auto bytes = tiff(three_pages());
  // Cut inside the last directory (each page's directory follows its data here), inside the first
  // page's data (so its directory is gone), and inside the header.
  for (size_t cut : {bytes.size() - 10, size_t(60), size_t(5)}) {
    const std::vector<uint8_t> part(bytes.begin(), bytes.begin() + cut);
    bool threw = false;
    try {
      const int n = count_image_pages(part, "cut.tif");
      for (int k = 0; k < n; ++k) decode_image_page(part, k, "cut.tif");
    } catch (const InputError& e) {
      threw = true;
      const std::string m = e.what();
      EXPECT_EQ(m.rfind("cut.tif: ", 0), 0u) << m;
      EXPECT_NE(m.find("truncated"), std::string::npos) << m;
      EXPECT_EQ(m.find('\n'), std::string::npos) << m;
    }
    EXPECT_TRUE(threw) << "cut at " << cut;
  }
}

TEST(MultiPageTiff, DirectoryLoopEndsTheChain) {
  TiffWriter w(false, false);
  w.add(make_page(3, 3, 1));
  w.add(make_page(3, 3, 2));
  auto first = io::read_tiff_layout(w.bytes().data(), w.bytes().size(), "x");
  w.patch(w.link(), first.pages[0].ifd_offset);  // page 2's "next" points back at page 1
  const auto bytes = w.bytes();
  EXPECT_EQ(count_image_pages(bytes, "loop.tif"), 2);
  EXPECT_EQ(decode_image_page(bytes, 1, "loop.tif").data, make_page(3, 3, 2).rgb.data);
}

TEST(MultiPageTiff, StripsPastTheEndAreNamed) {
  TiffWriter w(false, false);
  w.add(make_page(3, 3, 1));
  auto b = w.bytes();
  // Point page 1's strip 1000 bytes further: its data now ends past the end of the file.
  const auto layout = io::read_tiff_layout(b.data(), b.size(), "x");
  const uint64_t ifd = layout.pages[0].ifd_offset;
  for (uint64_t e = 0; e < 10; ++e) {
    const uint64_t at = ifd + 2 + e * 12;
    if (b[at] == (273 & 255) && b[at + 1] == (273 >> 8))
      b[at + 8] = static_cast<uint8_t>(b[at + 8] + 200);
  }
  try {
    decode_image_page(b, 0, "strip.tif");
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(
                  "strip.tif: truncated TIFF: the image data of page 1 ends at byte"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace ocr
