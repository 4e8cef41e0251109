// Output formats on crafted grounding output (the tiny test models print random text): boxes on the
// page in pixels and points, block texts, figure crops and links, overlays, plain text, json, and
// the document writer's files (written only by finish(), main file last, stale figures removed).
#include "writers/formats.h"

#include <dirent.h>
#include <ftw.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "ocr/image_io.h"
#include "postprocess/layout.h"
#include "writers/output.h"

namespace ocr {
namespace {

const std::string kEos =
    "<\xef\xbd\x9c"
    "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>";  // <｜end▁of▁sentence｜>

// A page as the model emits it with <|grounding|>: title, text, an image ref with two boxes, a
// table, and the EOS text at the end.
const std::string kPage =
    "<|ref|>title<|/ref|><|det|>[[100, 50, 900, 120]]<|/det|>\n# The Title\n\n"
    "<|ref|>text<|/ref|><|det|>[[100, 150, 900, 400]]<|/det|>\nA \\coloneqq B, **bold** words.\n\n"
    "<|ref|>image<|/ref|><|det|>[[100, 450, 500, 800], [520, 450, 900, 800]]<|/det|>\n\n"
    "<|ref|>table<|/ref|><|det|>[[100, 820, 900, 990]]<|/det|>\n"
    "<table><tr><td>a</td><td>b &amp; c</td></tr><tr><td>1</td><td>2</td></tr></table>" +
    kEos;

// Pixel (x, y) = (x mod 256, y mod 256, (x + y) mod 256): every crop is recognisable.
ImageU8 pattern(int w, int h) {
  ImageU8 img(w, h);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      uint8_t* p = img.px(x, y);
      p[0] = static_cast<uint8_t>(x);
      p[1] = static_cast<uint8_t>(y);
      p[2] = static_cast<uint8_t>(x + y);
    }
  return img;
}

ProcessedPage processed(const std::string& text, const std::string& finish = "stop") {
  ProcessedPage p;
  p.output.text = text;
  p.output.finish_reason = finish;
  p.output.tokens = {5, 6, 7};
  p.attempts.push_back({"tiny", 0, 0, finish});
  return p;
}

std::string read(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// A fresh folder, removed with everything in it at the end of the test.
class TempDir {
 public:
  TempDir() {
    std::string t = ::testing::TempDir() + "ocr-formats-XXXXXX";
    std::vector<char> buf(t.begin(), t.end());
    buf.push_back('\0');
    EXPECT_NE(::mkdtemp(buf.data()), nullptr);
    path_ = buf.data();
  }
  ~TempDir() {
    ::nftw(
        path_.c_str(), [](const char* p, const struct stat*, int, FTW*) { return ::remove(p); }, 16,
        FTW_DEPTH | FTW_PHYS);
  }
  operator std::string() const { return path_; }

 private:
  std::string path_;
};

std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> out;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d))
      if (std::string(e->d_name) != "." && std::string(e->d_name) != "..") out.push_back(e->d_name);
    ::closedir(d);
  }
  std::sort(out.begin(), out.end());
  return out;
}

double mean_abs_diff(const ImageU8& a, const ImageU8& b) {
  EXPECT_EQ(a.width, b.width);
  EXPECT_EQ(a.height, b.height);
  double s = 0;
  for (size_t i = 0; i < a.data.size() && i < b.data.size(); ++i)
    s += std::abs(int(a.data[i]) - int(b.data[i]));
  return a.data.empty() ? 0 : s / a.data.size();
}

TEST(PageBoxes, OfficialTruncationOrderedAndClamped) {
  // int(c / 999 * size), as the official code (values from Python).
  EXPECT_EQ(page_pixel_box({100, 200, 300, 400}, 1191, 1684),
            (std::array<int, 4>{119, 337, 357, 674}));
  EXPECT_EQ(page_pixel_box({0, 0, 999, 999}, 1000, 500), (std::array<int, 4>{0, 0, 1000, 500}));
  EXPECT_EQ(page_pixel_box({500, 1, 500, 1}, 1001, 1000), (std::array<int, 4>{501, 1, 501, 1}));
  // Reversed corners are ordered; coordinates off the grid are clamped to the page.
  EXPECT_EQ(page_pixel_box({300, 400, 100, 200}, 1191, 1684),
            (std::array<int, 4>{119, 337, 357, 674}));
  EXPECT_EQ(page_pixel_box({-50, 1200, 2000000000, -2000000000}, 640, 480),
            (std::array<int, 4>{0, 0, 640, 480}));
  const auto pt = page_point_box({0, 0, 999, 999}, 595.2, 841.8);
  EXPECT_DOUBLE_EQ(pt[2], 595.2);
  EXPECT_DOUBLE_EQ(pt[3], 841.8);
  const auto q = page_point_box({450, 100, 100, 450}, 595.2, 841.8);
  EXPECT_DOUBLE_EQ(q[0], 59.58);  // round(100 / 999 * 595.2, 2)
  EXPECT_DOUBLE_EQ(q[3], 379.19);
  EXPECT_LE(q[0], q[2]);
  const auto big = page_point_box({-10, -10, 5000, 5000}, 612.345, 792.999);
  EXPECT_EQ(big[0], 0);
  EXPECT_LE(big[2], 612.345);
  EXPECT_LE(big[3], 792.999);
  EXPECT_FALSE(box_has_area({5, 5, 5, 9}));
  EXPECT_TRUE(box_has_area({5, 5, 6, 6}));
}

TEST(ParseLayout, BlocksWithLabelsTextsAndBoxes) {
  PageGeometry g;
  g.width = 1000;
  g.height = 2000;
  g.width_pt = 500;
  g.height_pt = 1000;
  const PageLayout l = parse_layout("Intro line before any tag.\n" + kPage, kEos, g);
  ASSERT_EQ(l.blocks.size(), 5u);
  EXPECT_FALSE(l.blocks[0].grounded);
  EXPECT_EQ(l.blocks[0].text, "Intro line before any tag.");
  EXPECT_TRUE(l.blocks[0].pixels.empty());
  EXPECT_EQ(l.blocks[1].label, "title");
  EXPECT_EQ(l.blocks[1].text, "# The Title");
  EXPECT_EQ(l.blocks[1].pixels[0], (std::array<int, 4>{100, 100, 900, 240}));
  EXPECT_EQ(l.blocks[2].text, "A := B, **bold** words.");
  EXPECT_TRUE(l.blocks[3].is_image);
  EXPECT_FALSE(l.blocks[2].is_image);
  ASSERT_EQ(l.blocks[3].pixels.size(), 2u);
  EXPECT_EQ(l.blocks[3].grid[1], (std::array<int, 4>{520, 450, 900, 800}));
  EXPECT_EQ(l.blocks[3].text, "");
  EXPECT_EQ(l.blocks[4].label, "table");
  EXPECT_EQ(l.blocks[4].text.find(kEos), std::string::npos);  // EOS stripped
  ASSERT_EQ(l.blocks[4].points.size(), 1u);
  EXPECT_DOUBLE_EQ(l.blocks[4].points[0][0], 50.05);  // round(100 / 999 * 500, 2)
  for (const auto& b : l.blocks)
    for (const auto& p : b.pixels) {
      EXPECT_GE(p[0], 0);
      EXPECT_LE(p[2], g.width);
      EXPECT_LE(p[3], g.height);
    }
  // No tags at all: one ungrounded block; images: no points.
  const PageLayout plain = parse_layout("  just text  ", kEos, {640, 480});
  ASSERT_EQ(plain.blocks.size(), 1u);
  EXPECT_EQ(plain.blocks[0].text, "just text");
  EXPECT_TRUE(parse_layout("", kEos, {640, 480}).blocks.empty());
  EXPECT_TRUE(parse_layout("<|ref|>x<|/ref|><|det|>[[1,2,3,4]]<|/det|>", "", {640, 480})
                  .blocks[0]
                  .points.empty());
}

TEST(MarkdownToText, DropsLayoutMarkupKeepsContent) {
  EXPECT_EQ(markdown_to_text("# Title\n\n\n\nSome **bold** text &amp; more.  \n## Sub"),
            "Title\n\nSome bold text & more.\nSub");
  EXPECT_EQ(markdown_to_text("<table><tr><td>a</td><td>b &lt; "
                             "c</td></tr>\n<tr><td>1</td><td>2<br>3</td></tr></table>"),
            "a\tb < c\n1\t2 3");
  EXPECT_EQ(markdown_to_text("<center>Figure 1</center>\nx<sup>2</sup>"), "Figure 1\nx2");
  // Not tags: comparisons and LaTeX stay.
  EXPECT_EQ(markdown_to_text("a < b and c > d\n\\[ x^{2} < y \\]"),
            "a < b and c > d\n\\[ x^{2} < y \\]");
  EXPECT_EQ(markdown_to_text("#hashtag is not a heading"), "#hashtag is not a heading");
  EXPECT_EQ(markdown_to_text(""), "");
}

TEST(Figures, CropIsExactAndOverlayDrawsLabels) {
  const ImageU8 page = pattern(300, 200);
  const ImageU8 c = crop_image(page, {10, 20, 50, 35});
  ASSERT_EQ(c.width, 40);
  ASSERT_EQ(c.height, 15);
  for (int y = 0; y < c.height; ++y)
    for (int x = 0; x < c.width; ++x)
      ASSERT_EQ(std::vector<uint8_t>(c.px(x, y), c.px(x, y) + 3),
                std::vector<uint8_t>(page.px(x + 10, y + 20), page.px(x + 10, y + 20) + 3));
  // Full-page box: the page itself.
  EXPECT_EQ(crop_image(page, page_pixel_box({0, 0, 999, 999}, 300, 200)).data, page.data);

  ImageU8 white(300, 200, 255);
  PageLayout l;
  LayoutBlock t;
  t.label = "title";
  t.pixels = {{20, 40, 200, 120}};
  LayoutBlock x;
  x.label = "text";
  x.pixels = {{20, 150, 100, 190}};
  l.blocks = {t, x};
  const ImageU8 o = draw_layout(white, l);
  const auto tc = label_colour("title"), xc = label_colour("text");
  EXPECT_NE(tc, xc);
  auto at = [&](int px, int py) {
    return std::array<uint8_t, 3>{o.px(px, py)[0], o.px(px, py)[1], o.px(px, py)[2]};
  };
  // Title outline 4 pixels wide, text outline 2: the PIL convention of growing inwards.
  for (int k = 0; k < 4; ++k) EXPECT_EQ(at(20 + k, 80), tc) << k;
  EXPECT_NE(at(24, 80), tc);
  for (int k = 0; k < 2; ++k) EXPECT_EQ(at(20 + k, 170), xc) << k;
  EXPECT_NE(at(22, 170), xc);
  // Inside: white blended with the label colour at 20/255; outside: untouched.
  const auto in = at(120, 100);
  for (int ch = 0; ch < 3; ++ch)
    EXPECT_NEAR(in[ch], 255 * (235.0 / 255) + tc[ch] * (20.0 / 255), 1.0);
  EXPECT_EQ(at(250, 10), (std::array<uint8_t, 3>{255, 255, 255}));
  // The label is written above the title box (some pixels in its colour between y 25 and 40).
  int label_px = 0;
  for (int py = 25; py < 40; ++py)
    for (int px = 20; px < 60; ++px)
      label_px += at(px, py) != std::array<uint8_t, 3>{255, 255, 255};
  EXPECT_GT(label_px, 10);

  // JPEG round trip: same size, close pixels.
  const std::string jpg = encode_jpeg(page);
  const ImageU8 back = decode_image(std::vector<uint8_t>(jpg.begin(), jpg.end()), "jpg");
  EXPECT_LT(mean_abs_diff(back, page), 4.0);
}

TEST(DocumentWriter, MarkdownUnderOutputFolderSavesAndLinksFigures) {
  const TempDir tmp;
  const std::string dir = tmp;
  const ImageU8 page = pattern(1000, 2000);
  const ProcessedPage r = processed(kPage);
  DocumentOptions o;
  o.eos_text = kEos;
  o.paged = true;
  o.draw_boxes = true;
  {
    DocumentWriter w(o, "in/a/b.pdf", dir + "/a/b.md");
    DocumentPage p{3, &page, 0, 0, 0, &r};
    EXPECT_EQ(w.add_page(p, true), "");
    DocumentPage p4{4, &page, 0, 0, 0, &r};
    EXPECT_EQ(w.add_page(p4, false), "");
    // Nothing on disk before finish(): a failed or interrupted document leaves no files.
    EXPECT_TRUE(list_dir(dir).empty());
    EXPECT_EQ(w.finish(), "");
  }
  EXPECT_EQ(list_dir(dir + "/a"), (std::vector<std::string>{"b.md", "b_boxes", "b_images"}));
  EXPECT_EQ(list_dir(dir + "/a/b_images"),
            (std::vector<std::string>{"p3_0.jpg", "p3_1.jpg", "p4_0.jpg", "p4_1.jpg"}));
  EXPECT_EQ(list_dir(dir + "/a/b_boxes"), (std::vector<std::string>{"p3.jpg", "p4.jpg"}));
  const std::string md = read(dir + "/a/b.md");
  EXPECT_EQ(md.find("<|ref|>"), std::string::npos);
  EXPECT_NE(md.find("A := B"), std::string::npos);
  EXPECT_NE(md.find("![](b_images/p3_0.jpg)\n![](b_images/p3_1.jpg)\n"), std::string::npos) << md;
  EXPECT_NE(md.find("![](b_images/p4_1.jpg)"), std::string::npos);
  EXPECT_EQ(md.find("<--- Page Split --->"), md.rfind("<--- Page Split --->"));
  EXPECT_NE(md.find("<--- Page Split --->"), std::string::npos);
  // The figure is the box's pixels: [100,450,500,800] on 1000x2000 -> x 100..500, y 900..1601.
  const std::string jpg = read(dir + "/a/b_images/p3_0.jpg");
  const ImageU8 fig = decode_image(std::vector<uint8_t>(jpg.begin(), jpg.end()), "fig");
  const auto box = page_pixel_box({100, 450, 500, 800}, 1000, 2000);
  EXPECT_LT(mean_abs_diff(fig, crop_image(page, box)), 4.0);
  const std::string ov = read(dir + "/a/b_boxes/p3.jpg");
  const ImageU8 overlay = decode_image(std::vector<uint8_t>(ov.begin(), ov.end()), "overlay");
  EXPECT_EQ(overlay.width, 1000);
  EXPECT_EQ(overlay.height, 2000);

  // A rerun whose page has one figure: the figures of the earlier run are removed, other files
  // stay.
  std::ofstream(dir + "/a/b_images/notes.txt") << "mine";
  const ProcessedPage one =
      processed("<|ref|>image<|/ref|><|det|>[[0, 0, 500, 500]]<|/det|>\ncaption");
  DocumentOptions o2;
  o2.eos_text = kEos;
  DocumentWriter w2(o2, "in/a/b.pdf", dir + "/a/b.md");
  w2.add_page({1, &page, 0, 0, 0, &one}, true);
  w2.finish();
  EXPECT_EQ(list_dir(dir + "/a/b_images"), (std::vector<std::string>{"notes.txt", "p1_0.jpg"}));
  EXPECT_EQ(list_dir(dir + "/a/b_boxes"),
            (std::vector<std::string>{"p3.jpg", "p4.jpg"}));  // no --draw-boxes: untouched
  EXPECT_EQ(read(dir + "/a/b.md"), "![](b_images/p1_0.jpg)\n\ncaption\n");

  // Names that end a markdown link target are percent-encoded; empty boxes give no file and no
  // link.
  const ProcessedPage odd =
      processed("<|ref|>image<|/ref|><|det|>[[10, 10, 10, 500], [0, 0, 999, 999]]<|/det|>");
  DocumentWriter w3(o2, "x", dir + "/my doc (1).md");
  w3.add_page({1, &page, 0, 0, 0, &odd}, true);
  w3.finish();
  EXPECT_EQ(read(dir + "/my doc (1).md"), "![](my%20doc%20%281%29_images/p1_0.jpg)\n\n");
  EXPECT_EQ(list_dir(dir + "/my doc (1)_images"), (std::vector<std::string>{"p1_0.jpg"}));
}

TEST(DocumentWriter, StdoutKeepsTheOfficialPlaceholders) {
  const ImageU8 page = pattern(100, 100);
  const ProcessedPage r = processed(kPage);
  DocumentOptions o;
  o.eos_text = kEos;
  DocumentWriter single(o, "x.png", "");
  const std::string md = single.add_page({1, &page, 0, 0, 0, &r}, true);
  EXPECT_NE(md.find("![](images/0.jpg)\n"), std::string::npos) << md;
  EXPECT_EQ(md.find("images/1.jpg"), std::string::npos);  // one link per image ref, as upstream
  EXPECT_EQ(md.find("<--- Page Split"), std::string::npos);
  EXPECT_EQ(single.finish(), "");
  o.paged = true;
  DocumentWriter doc(o, "x.pdf", "");
  doc.add_page({1, &page, 0, 0, 0, &r}, true);
  const std::string second = doc.add_page({5, &page, 0, 0, 0, &r}, false);
  EXPECT_EQ(second.rfind("\n<--- Page Split --->\n", 0), 0u);
  EXPECT_NE(second.find("![](images/1_0.jpg)\n"), std::string::npos)
      << second;  // page index among pages written
}

TEST(DocumentWriter, JsonBlocksInPixelsAndPoints) {
  const TempDir tmp;
  const std::string dir = tmp;
  const ImageU8 page = pattern(1191, 1684);
  const ProcessedPage r = processed(kPage);
  const ProcessedPage failed =
      processed("<|ref|>text<|/ref|><|det|>[[0,0,10,10]]<|/det|>\nloop loop", "length");
  DocumentOptions o;
  o.format = OutputFormat::kJson;
  o.eos_text = kEos;
  o.paged = true;
  DocumentWriter w(o, "in/doc.pdf", "");
  EXPECT_EQ(w.add_page({1, &page, 595.2, 841.8, 144, &r}, true), "");
  w.add_page({2, &page, 595.2, 841.8, 144, &failed}, false);
  const std::string line = w.finish();
  ASSERT_EQ(line.find('\n'), line.size() - 1);  // one line per document on stdout
  const auto j = nlohmann::json::parse(line);
  EXPECT_EQ(j["input"], "in/doc.pdf");
  ASSERT_EQ(j["pages"].size(), 2u);
  const auto& p = j["pages"][0];
  EXPECT_EQ(p["width"], 1191);
  EXPECT_EQ(p["height_pt"], 841.8);
  EXPECT_EQ(p["dpi"], 144);
  EXPECT_EQ(p["failed"], false);
  EXPECT_EQ(j["pages"][1]["failed"], true);
  EXPECT_EQ(j["pages"][1]["finish_reason"], "length");
  ASSERT_EQ(p["blocks"].size(), 4u);
  EXPECT_EQ(p["blocks"][0]["label"], "title");
  EXPECT_EQ(p["blocks"][0]["boxes"][0].get<std::vector<int>>(),
            (std::vector<int>{119, 84, 1072, 202}));
  EXPECT_EQ(p["blocks"][0]["boxes_grid"][0].get<std::vector<int>>(),
            (std::vector<int>{100, 50, 900, 120}));
  EXPECT_EQ(p["blocks"][2]["boxes"].size(), 2u);
  EXPECT_FALSE(p["blocks"][2].contains("figures"));  // stdout: no files
  for (const auto& b : p["blocks"]) {
    for (const auto& bx : b["boxes"]) {
      EXPECT_GE(bx[0].get<int>(), 0);
      EXPECT_LE(bx[2].get<int>(), 1191);
      EXPECT_LE(bx[3].get<int>(), 1684);
    }
    for (const auto& bx : b["boxes_pt"]) {
      EXPECT_LE(bx[2].get<double>(), 595.2);
      EXPECT_LE(bx[3].get<double>(), 841.8);
    }
  }
  // Under -o: an indented file, figures listed per image block relative to the file.
  DocumentWriter f(o, "in/doc.pdf", dir + "/doc.json");
  f.add_page({1, &page, 595.2, 841.8, 144, &r}, true);
  f.finish();
  const auto fj = nlohmann::json::parse(read(dir + "/doc.json"));
  EXPECT_EQ(fj["pages"][0]["blocks"][2]["figures"].get<std::vector<std::string>>(),
            (std::vector<std::string>{"doc_images/p1_0.jpg", "doc_images/p1_1.jpg"}));
  EXPECT_TRUE(path_exists(dir + "/doc_images/p1_1.jpg"));
  EXPECT_NE(fj["pages"][0]["markdown"].get<std::string>().find("![](doc_images/p1_0.jpg)"),
            std::string::npos);
  // Images have no point boxes.
  DocumentWriter img(o, "x.png", "");
  img.add_page({1, &page, 0, 0, 0, &r}, true);
  const auto ij = nlohmann::json::parse(img.finish());
  EXPECT_FALSE(ij["pages"][0].contains("width_pt"));
  EXPECT_FALSE(ij["pages"][0]["blocks"][0].contains("boxes_pt"));
}

TEST(DocumentWriter, TextAndJsonlAndFailedPages) {
  const TempDir tmp;
  const std::string dir = tmp;
  const ImageU8 page = pattern(200, 100);
  const ProcessedPage r = processed(kPage);
  const ProcessedPage failed = processed("endless", "repetition");
  DocumentOptions o;
  o.format = OutputFormat::kText;
  o.eos_text = kEos;
  DocumentWriter t(o, "x.tif", dir + "/x.txt");
  t.add_page({1, &page, 0, 0, 0, &r}, true);
  t.add_page({2, &page, 0, 0, 0, &failed}, false);
  t.finish();
  EXPECT_EQ(read(dir + "/x.txt"),
            "The Title\n\nA := B, bold words.\n\na\tb & c\n1\t2\n\fendless\n[ocr-cli: page 2 "
            "failed: repetition]\n");
  EXPECT_EQ(list_dir(dir), (std::vector<std::string>{"x.txt"}));  // text: no figure files

  o.format = OutputFormat::kMarkdown;
  DocumentWriter m(o, "x.png", "");
  EXPECT_EQ(m.add_page({1, &page, 0, 0, 0, &failed}, true),
            "endless\n<!-- ocr-cli: page 1 failed: repetition -->\n");
  o.raw = true;
  DocumentWriter raw(o, "x.png", "");
  EXPECT_EQ(raw.add_page({1, &page, 0, 0, 0, &r}, true),
            kPage + "\n");  // as generated (the engine strips EOS)

  o.raw = false;
  o.format = OutputFormat::kJsonl;
  DocumentWriter l(o, "x.png", "");
  const std::string line = l.add_page({7, &page, 0, 0, 0, &r}, true);
  const auto j = nlohmann::json::parse(line);
  EXPECT_EQ(j["page"], 7);
  EXPECT_EQ(j["generated_tokens"], 3);
  EXPECT_EQ(j["finish_reason"], "stop");
  EXPECT_NE(j["markdown"].get<std::string>().find("![](images/0.jpg)"), std::string::npos);
  EXPECT_EQ(parse_output_format("json"), OutputFormat::kJson);
  EXPECT_EQ(output_extension(OutputFormat::kText), "txt");
  EXPECT_THROW(parse_output_format("html"), std::invalid_argument);
}

}  // namespace
}  // namespace ocr
