// PDF input: sniffing, page sizes (PyMuPDF's outward rounding), rendering where the content was
// drawn, every bad-input path as one InputError, and --pages parsing. The hand-made PDFs are built
// here with correct xref offsets; real-world PDFs come from Debian documentation packages
// (scripts/setup.sh installs them) and tests/data/pdf/ (qpdf-encrypted fixtures, see its README).
#include "ocr/pdf.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "ocr/errors.h"
#include "ocr/image_io.h"

namespace ocr {
namespace {

std::vector<uint8_t> bytes_of(const std::string& s) { return {s.begin(), s.end()}; }

// A PDF from its object bodies (object i+1 = objects[i]) with a correct xref table, so poppler
// takes the normal parse path rather than its reconstruction of damaged files.
std::vector<uint8_t> make_pdf(const std::vector<std::string>& objects) {
  std::string out = "%PDF-1.4\n%\xe2\xe3\xcf\xd3\n";
  std::vector<size_t> offsets;
  for (size_t i = 0; i < objects.size(); ++i) {
    offsets.push_back(out.size());
    out += std::to_string(i + 1) + " 0 obj\n" + objects[i] + "\nendobj\n";
  }
  const size_t xref = out.size();
  out += "xref\n0 " + std::to_string(objects.size() + 1) + "\n0000000000 65535 f \n";
  for (size_t off : offsets) {
    char line[24];
    std::snprintf(line, sizeof(line), "%010zu 00000 n \n", off);
    out += line;
  }
  out += "trailer\n<< /Size " + std::to_string(objects.size() + 1) +
         " /Root 1 0 R >>\nstartxref\n" + std::to_string(xref) + "\n%%EOF\n";
  return bytes_of(out);
}

std::string stream(const std::string& content) {
  return "<< /Length " + std::to_string(content.size()) + " >>\nstream\n" + content +
         "\nendstream";
}

// One page of `media_box` showing `content`; `page_extra` goes into the page dictionary.
std::vector<uint8_t> one_page_pdf(const std::string& media_box, const std::string& content,
                                  const std::string& page_extra = "") {
  return make_pdf({"<< /Type /Catalog /Pages 2 0 R >>",
                   "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
                   "<< /Type /Page /Parent 2 0 R /MediaBox " + media_box + " /Contents 4 0 R " +
                       page_extra + ">>",
                   stream(content)});
}

// 200 x 300 pt page, black rectangle x 100..150, y 200..280 in PDF space (origin bottom-left),
// i.e. rows 20..100 from the top at 72 dpi.
std::vector<uint8_t> rect_pdf(const std::string& page_extra = "") {
  return one_page_pdf("[0 0 200 300]", "0 0 0 rg 100 200 50 80 re f", page_extra);
}

bool is_rgb(const ImageU8& im, int x, int y, int r, int g, int b) {
  const uint8_t* p = im.px(x, y);
  return p[0] == r && p[1] == g && p[2] == b;
}

// Counts pixels inside [x0,x1) x [y0,y1) that are exactly black, and pixels outside it that are
// not exactly white.
void count_rect(const ImageU8& im, int x0, int y0, int x1, int y1, int* black_inside,
                int* non_white_outside) {
  *black_inside = *non_white_outside = 0;
  for (int y = 0; y < im.height; ++y) {
    for (int x = 0; x < im.width; ++x) {
      const bool inside = x >= x0 && x < x1 && y >= y0 && y < y1;
      if (inside && is_rgb(im, x, y, 0, 0, 0)) ++*black_inside;
      if (!inside && !is_rgb(im, x, y, 255, 255, 255)) ++*non_white_outside;
    }
  }
}

std::string error_of(const std::vector<uint8_t>& bytes, const std::string& password = "") {
  try {
    PdfDocument doc = PdfDocument::open(bytes, "in/x.pdf", password);
    for (int i = 0; i < doc.page_count(); ++i) doc.render_page(i, 72, 200'000'000);
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

std::string fixture(const std::string& name) {
  return std::string(OCR_SOURCE_DIR) + "/tests/data/pdf/" + name;
}

class PdfTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!pdf_supported()) GTEST_SKIP() << "built without poppler-cpp (libpoppler-cpp-dev)";
  }
};

TEST(PdfSniffTest, FindsHeaderWithinFirstKilobyte) {
  EXPECT_TRUE(looks_like_pdf(bytes_of("%PDF-1.7\n")));
  EXPECT_TRUE(looks_like_pdf(bytes_of(std::string(1000, 'x') + "%PDF-1.4")));
  EXPECT_FALSE(looks_like_pdf(bytes_of(std::string(1020, 'x') + "%PDF-1.4")));  // ends past 1024
  EXPECT_FALSE(looks_like_pdf({}));
  EXPECT_FALSE(looks_like_pdf(bytes_of("%PDF")));
  EXPECT_FALSE(looks_like_pdf({0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'}));
}

TEST(PdfSizeTest, RoundsOutwardLikePyMuPdf) {
  EXPECT_EQ(pdf_pixels_for_points(612, 144), 1224);       // US Letter at the official 144 dpi
  EXPECT_EQ(pdf_pixels_for_points(792, 144), 1584);
  EXPECT_EQ(pdf_pixels_for_points(595.2, 144), 1191);     // 1190.4 -> up (poppler: 1190)
  EXPECT_EQ(pdf_pixels_for_points(595.276, 144), 1191);   // A4 as most writers store it
  EXPECT_EQ(pdf_pixels_for_points(841.89, 144), 1684);    // 1683.78
  EXPECT_EQ(pdf_pixels_for_points(100.0004, 72), 100);    // within fz_round_rect's 0.001 slack
  EXPECT_EQ(pdf_pixels_for_points(100.002, 72), 101);
  EXPECT_EQ(pdf_pixels_for_points(0, 144), 0);
  EXPECT_EQ(pdf_pixels_for_points(1e300, 144), INT64_MAX / 4);  // clamped, no overflow
}

TEST_F(PdfTest, RendersRectangleWhereDrawnAt72Dpi) {
  PdfDocument doc = PdfDocument::open(rect_pdf(), "rect.pdf");
  ASSERT_EQ(doc.page_count(), 1);
  EXPECT_DOUBLE_EQ(doc.page_width_points(0), 200);
  EXPECT_DOUBLE_EQ(doc.page_height_points(0), 300);
  const ImageU8 im = doc.render_page(0, 72, 200'000'000);
  ASSERT_EQ(im.width, 200);
  ASSERT_EQ(im.height, 300);
  ASSERT_EQ(im.data.size(), 200u * 300 * 3);
  int black = 0, stray = 0;
  count_rect(im, 100, 20, 150, 100, &black, &stray);
  EXPECT_EQ(black, 50 * 80);  // pixel-aligned edges: antialiasing leaves no grey
  EXPECT_EQ(stray, 0);
}

TEST_F(PdfTest, RendersRectangleWhereDrawnAt144Dpi) {
  PdfDocument doc = PdfDocument::open(rect_pdf(), "rect.pdf");
  const ImageU8 im = doc.render_page(0, 144, 200'000'000);
  ASSERT_EQ(im.width, 400);
  ASSERT_EQ(im.height, 600);
  int black = 0, stray = 0;
  count_rect(im, 200, 40, 300, 200, &black, &stray);
  EXPECT_EQ(black, 100 * 160);
  EXPECT_EQ(stray, 0);
}

TEST_F(PdfTest, ChannelsAreRgbOnWhitePaper) {
  // Red, green and blue bars: catches BGR/ARGB byte-order mistakes.
  PdfDocument doc = PdfDocument::open(
      one_page_pdf("[0 0 30 10]", "1 0 0 rg 0 0 10 10 re f 0 1 0 rg 10 0 10 10 re f "
                                  "0 0 1 rg 20 0 10 10 re f"),
      "rgb.pdf");
  const ImageU8 im = doc.render_page(0, 72, 1000);
  ASSERT_EQ(im.width, 30);
  ASSERT_EQ(im.height, 10);
  EXPECT_TRUE(is_rgb(im, 5, 5, 255, 0, 0));
  EXPECT_TRUE(is_rgb(im, 15, 5, 0, 255, 0));
  EXPECT_TRUE(is_rgb(im, 25, 5, 0, 0, 255));
  // A page with no content is white, not transparent black.
  PdfDocument blank = PdfDocument::open(one_page_pdf("[0 0 8 8]", ""), "blank.pdf");
  const ImageU8 w = blank.render_page(0, 72, 1000);
  for (uint8_t v : w.data) ASSERT_EQ(v, 255);
}

TEST_F(PdfTest, FractionalPageSizeRoundsOutward) {
  // 100.4 x 50.4 pt: PyMuPDF makes 101 x 51 (poppler alone would make 100 x 50).
  PdfDocument doc = PdfDocument::open(
      one_page_pdf("[0 0 100.4 50.4]", "0 0 0 rg 0 0 100.4 50.4 re f"), "frac.pdf");
  const ImageU8 im = doc.render_page(0, 72, 1'000'000);
  ASSERT_EQ(im.width, 101);
  ASSERT_EQ(im.height, 51);
  // Top-left anchored: the page starts at pixel (0, 0) and every whole pixel of it is ink. The
  // extra column and row hold the remaining 0.4 pt; their shade is a renderer detail (Splash
  // snaps a page-sized rectangle's edge to the pixel grid, MuPDF antialiases it), not checked.
  EXPECT_TRUE(is_rgb(im, 0, 0, 0, 0, 0));
  EXPECT_TRUE(is_rgb(im, 99, 49, 0, 0, 0));
  EXPECT_TRUE(is_rgb(im, 99, 0, 0, 0, 0));
  EXPECT_TRUE(is_rgb(im, 0, 49, 0, 0, 0));
}

TEST_F(PdfTest, NonZeroMediaBoxOriginAndRotateAreApplied) {
  // Same drawing as rect_pdf but with the page box moved: output must be identical.
  PdfDocument moved = PdfDocument::open(
      one_page_pdf("[-50 1000 150 1300]", "0 0 0 rg 50 1200 50 80 re f"), "moved.pdf");
  const ImageU8 a = moved.render_page(0, 72, 1'000'000);
  ASSERT_EQ(a.width, 200);
  ASSERT_EQ(a.height, 300);
  int black = 0, stray = 0;
  count_rect(a, 100, 20, 150, 100, &black, &stray);
  EXPECT_EQ(black, 50 * 80);
  EXPECT_EQ(stray, 0);

  // /Rotate 90 turns the page clockwise for display: 300 x 200, the rectangle's top-down rows
  // 20..100 become columns 200..280, its columns 100..150 become rows 100..150.
  PdfDocument rotated = PdfDocument::open(rect_pdf("/Rotate 90 "), "rotated.pdf");
  EXPECT_DOUBLE_EQ(rotated.page_width_points(0), 300);
  EXPECT_DOUBLE_EQ(rotated.page_height_points(0), 200);
  const ImageU8 r = rotated.render_page(0, 72, 1'000'000);
  ASSERT_EQ(r.width, 300);
  ASSERT_EQ(r.height, 200);
  count_rect(r, 200, 100, 280, 150, &black, &stray);
  EXPECT_EQ(black, 80 * 50);
  EXPECT_EQ(stray, 0);
}

TEST_F(PdfTest, RefusesPageOverMaxPixelsBeforeRendering) {
  PdfDocument doc = PdfDocument::open(rect_pdf(), "in/rect.pdf");
  EXPECT_NO_THROW(doc.render_page(0, 72, 200 * 300));
  try {
    doc.render_page(0, 72, 200 * 300 - 1);
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_EQ(std::string(e.what()),
              "in/rect.pdf: page 1 would be 200x300 pixels at 72 dpi, over the --max-pixels "
              "limit of 59999");
  }
  // 14400 pt is the largest page PDF allows: 28800 x 28800 at 144 dpi, 829 Mpx. Refused at once
  // (rendering it would take seconds and 3.3 GB).
  PdfDocument huge = PdfDocument::open(one_page_pdf("[0 0 14400 14400]", "0 g 0 0 10 10 re f"),
                                       "huge.pdf");
  try {
    huge.render_page(0, 144, 200'000'000);
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("huge.pdf: page 1 would be 28800x28800 pixels at 144 dpi"),
              std::string::npos)
        << e.what();
  }
  // A MediaBox of absurd numbers: poppler discards it for its US Letter default, as for a
  // missing MediaBox, so the page renders at 1224 x 1584 rather than overflowing anything.
  PdfDocument absurd = PdfDocument::open(one_page_pdf("[0 0 1e30 1e30]", ""), "absurd.pdf");
  EXPECT_DOUBLE_EQ(absurd.page_width_points(0), 612);
  EXPECT_DOUBLE_EQ(absurd.page_height_points(0), 792);
  EXPECT_EQ(absurd.render_page(0, 144, 200'000'000).width, 1224);
}

TEST_F(PdfTest, BadDpiIsAUsageError) {
  PdfDocument doc = PdfDocument::open(rect_pdf(), "rect.pdf");
  EXPECT_THROW(doc.render_page(0, 0, 1'000'000), std::invalid_argument);
  EXPECT_THROW(doc.render_page(0, -72, 1'000'000), std::invalid_argument);
  EXPECT_THROW(doc.render_page(0, std::nan(""), 1'000'000), std::invalid_argument);
  EXPECT_THROW(doc.render_page(1, 72, 1'000'000), std::out_of_range);
}

TEST_F(PdfTest, NotPdfBytesAreOneLineInputErrors) {
  EXPECT_EQ(error_of({}), "in/x.pdf: empty file (0 bytes), not a PDF");
  std::mt19937 rng(7);
  std::vector<uint8_t> noise(4096);
  for (auto& b : noise) b = static_cast<uint8_t>(rng());
  EXPECT_EQ(error_of(noise), "in/x.pdf: not a PDF (no %PDF- header)");
  // The right header over noise: poppler's repair finds nothing usable.
  std::vector<uint8_t> headed = bytes_of("%PDF-1.4\n");
  headed.insert(headed.end(), noise.begin(), noise.end());
  EXPECT_EQ(error_of(headed), "in/x.pdf: damaged PDF (poppler cannot parse it)");
}

TEST_F(PdfTest, ZeroPagesIsAnInputError) {
  const auto bytes = make_pdf({"<< /Type /Catalog /Pages 2 0 R >>",
                               "<< /Type /Pages /Kids [] /Count 0 >>"});
  EXPECT_EQ(error_of(bytes), "in/x.pdf: PDF has no pages");
}

TEST_F(PdfTest, EveryTruncationFailsCleanlyOrStillRenders) {
  // Cut the file at every length: each prefix either opens (poppler repairs a lost xref, as
  // PyMuPDF does) and then renders the rectangle, or fails with one InputError; nothing else
  // escapes, and nothing crashes (this test runs under ASan/UBSan in CI).
  const auto full = rect_pdf();
  int failed = 0, rendered = 0;
  for (size_t n = 0; n < full.size(); ++n) {
    const std::vector<uint8_t> cut(full.begin(), full.begin() + n);
    try {
      PdfDocument doc = PdfDocument::open(cut, "cut.pdf");
      const ImageU8 im = doc.render_page(0, 72, 1'000'000);
      ASSERT_EQ(im.width, 200) << n;
      ++rendered;
    } catch (const InputError& e) {
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
      EXPECT_EQ(std::string(e.what()).rfind("cut.pdf: ", 0), 0u) << e.what();
      ++failed;
    }
  }
  // Before the content stream is complete there is nothing to render; the xref and trailer are
  // expendable.
  EXPECT_GT(failed, 100);
  EXPECT_GT(rendered, 10);
  // Cut inside the page tree: the canonical truncated download.
  const std::vector<uint8_t> half(full.begin(), full.begin() + full.size() / 3);
  EXPECT_NE(error_of(half), "");
}

TEST_F(PdfTest, DamagedFilesPrintNothingToStderr) {
  const auto full = rect_pdf();
  ::testing::internal::CaptureStderr();
  error_of(std::vector<uint8_t>(full.begin(), full.begin() + full.size() / 3));
  error_of(bytes_of("%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 9 0 R >> endobj trailer"));
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
}

TEST_F(PdfTest, EncryptedNeedsTheRightPassword) {
  // AES-256 with user password "secret" (qpdf --encrypt secret owner-pw 256).
  const auto bytes = read_file_bytes(fixture("encrypted_user_password.pdf"));
  EXPECT_EQ(error_of(bytes), "in/x.pdf: PDF is encrypted; pass --password");
  EXPECT_EQ(error_of(bytes, "guess"),
            "in/x.pdf: PDF is encrypted and the password given with --password is wrong");
  for (const char* pw : {"secret", "owner-pw"}) {  // user or owner password both open it
    PdfDocument doc = PdfDocument::open(bytes, "enc.pdf", pw);
    const ImageU8 im = doc.render_page(0, 72, 1'000'000);
    int black = 0, stray = 0;
    count_rect(im, 100, 20, 150, 100, &black, &stray);
    EXPECT_EQ(black, 50 * 80) << pw;
    EXPECT_EQ(stray, 0) << pw;
  }
  // Owner password only (permissions, empty user password): opens without --password, as in
  // every viewer.
  PdfDocument owner_only =
      PdfDocument::open(read_file_bytes(fixture("encrypted_owner_only.pdf")), "owner.pdf");
  EXPECT_EQ(owner_only.render_page(0, 72, 1'000'000).width, 200);
}

TEST_F(PdfTest, ThousandsOfPagesOpenAndRenderOnDemand) {
  // 3000 pages sharing one content stream; page k's MediaBox width is 10 + k % 7 to tell pages
  // apart. Opening must not render anything, so this stays fast.
  const int n_pages = 3000;
  std::string kids;
  std::vector<std::string> objects = {"<< /Type /Catalog /Pages 2 0 R >>", "",
                                      stream("0 g 0 0 5 5 re f")};
  for (int k = 0; k < n_pages; ++k) {
    kids += std::to_string(k + 4) + " 0 R ";
    objects.push_back("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 " + std::to_string(10 + k % 7) +
                      " 10] /Contents 3 0 R >>");
  }
  objects[1] = "<< /Type /Pages /Kids [" + kids + "] /Count " + std::to_string(n_pages) + " >>";
  PdfDocument doc = PdfDocument::open(make_pdf(objects), "many.pdf");
  ASSERT_EQ(doc.page_count(), n_pages);
  for (int k : {0, 1234, n_pages - 1}) {
    const ImageU8 im = doc.render_page(k, 72, 1000);
    EXPECT_EQ(im.width, 10 + k % 7) << k;
    EXPECT_TRUE(is_rgb(im, 0, 9, 0, 0, 0)) << k;  // the 5x5 square sits bottom-left
    EXPECT_TRUE(is_rgb(im, 0, 0, 255, 255, 255)) << k;
  }
}

TEST_F(PdfTest, MovedDocumentAndConcurrentRendersAgree) {
  PdfDocument a = PdfDocument::open(rect_pdf(), "rect.pdf");
  PdfDocument b = std::move(a);
  const ImageU8 ref = b.render_page(0, 144, 1'000'000);
  std::vector<ImageU8> got(4);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < got.size(); ++i) {
    threads.emplace_back([&, i] { got[i] = b.render_page(0, 144, 1'000'000); });
  }
  for (auto& t : threads) t.join();
  for (const auto& g : got) EXPECT_EQ(g.data, ref.data);
}

// PDFs that nobody here wrote: manuals shipped by Debian documentation packages (listed in
// scripts/setup.sh). Typeset text, embedded fonts, many pages.
TEST_F(PdfTest, RendersRealWorldDebianManuals) {
  const std::vector<std::string> candidates = {
      "/usr/share/doc/shared-mime-info/shared-mime-info-spec.pdf",  // package shared-mime-info
      "/usr/share/doc/libtasn1-doc/libtasn1.pdf",                   // package libtasn1-doc
  };
  int found = 0;
  for (const std::string& path : candidates) {
    std::ifstream probe(path, std::ios::binary);
    if (!probe) continue;
    ++found;
    SCOPED_TRACE(path);
    const auto bytes = read_file_bytes(path);
    ASSERT_TRUE(looks_like_pdf(bytes));
    PdfDocument doc = PdfDocument::open(bytes, path);
    ASSERT_GT(doc.page_count(), 3);
    for (int k : {0, doc.page_count() / 2, doc.page_count() - 1}) {
      const ImageU8 im = doc.render_page(k, 144, 200'000'000);
      EXPECT_EQ(im.width, pdf_pixels_for_points(doc.page_width_points(k), 144)) << k;
      EXPECT_EQ(im.height, pdf_pixels_for_points(doc.page_height_points(k), 144)) << k;
      EXPECT_GT(im.width, 1000) << k;  // Letter or A4 at 144 dpi
      // Printed text: some dark pixels, mostly white paper, and the corner margin is white.
      size_t dark = 0, white = 0;
      for (size_t i = 0; i < im.data.size(); i += 3) {
        const int lum = im.data[i] + im.data[i + 1] + im.data[i + 2];
        dark += lum < 3 * 128;
        white += lum == 3 * 255;
      }
      const double n = static_cast<double>(im.width) * im.height;
      EXPECT_GT(dark / n, 0.001) << "page " << k + 1 << " looks blank";
      EXPECT_GT(white / n, 0.6) << "page " << k + 1;
      EXPECT_TRUE(is_rgb(im, 2, 2, 255, 255, 255)) << k;
    }
  }
  if (found == 0) {
    GTEST_SKIP() << "no Debian PDF manual found; install shared-mime-info and libtasn1-doc "
                    "(scripts/setup.sh does)";
  }
}

TEST(PdfPageRangesTest, ParsesItemsInDocumentOrderOnce) {
  using V = std::vector<int>;
  EXPECT_EQ(parse_page_ranges("1-3,7,10-", 12), (V{0, 1, 2, 6, 9, 10, 11}));
  EXPECT_EQ(parse_page_ranges("7, 1-3 ,2", 12), (V{0, 1, 2, 6}));  // sorted, deduplicated
  EXPECT_EQ(parse_page_ranges("-2", 5), (V{0, 1}));
  EXPECT_EQ(parse_page_ranges("4-", 5), (V{3, 4}));
  EXPECT_EQ(parse_page_ranges("5-5", 5), (V{4}));
  EXPECT_EQ(parse_page_ranges("1", 1), (V{0}));
  EXPECT_EQ(parse_page_ranges("2-4,3-5", 5), (V{1, 2, 3, 4}));
}

TEST(PdfPageRangesTest, RejectsBadSyntaxAndPagesBeyondTheDocument) {
  for (const char* bad : {"", " ", "0", "3-1", "1,,2", "a", "1-2-3", "-", "1.5", "+2", "1-x",
                          "99999999999", ",1", "1,"}) {
    EXPECT_THROW(parse_page_ranges(bad, 10), std::invalid_argument) << '"' << bad << '"';
    EXPECT_THROW(check_page_ranges(bad), std::invalid_argument) << '"' << bad << '"';
  }
  EXPECT_NO_THROW(check_page_ranges("1-3,7,10-"));
  try {
    parse_page_ranges("1-3,12", 10);
    FAIL() << "expected invalid_argument";
  } catch (const std::invalid_argument& e) {
    EXPECT_EQ(std::string(e.what()), "--pages: \"12\" asks for page 12 but the document has 10 pages");
  }
  EXPECT_THROW(parse_page_ranges("11-", 10), std::invalid_argument);
  EXPECT_THROW(parse_page_ranges("2", 1), std::invalid_argument);
}

}  // namespace
}  // namespace ocr
