#include "postprocess/layout.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "engine/prompt.h"
#include "ocr/errors.h"
#include "postprocess/grounding.h"

namespace ocr {
namespace {

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  for (size_t p = s.find(from); p != std::string::npos; p = s.find(from, p + to.size()))
    s.replace(p, from.size(), to);
}

// The text clean_markdown works on: trailing EOS removed, then Python's strip().
std::string page_text(const std::string& raw, const std::string& eos_text) {
  std::string text = raw;
  if (!eos_text.empty() && text.size() >= eos_text.size() &&
      text.compare(text.size() - eos_text.size(), eos_text.size(), eos_text) == 0)
    text.resize(text.size() - eos_text.size());
  return python_strip(text);
}

std::string block_text(const std::string& text, size_t begin, size_t end) {
  std::string s = python_strip(text.substr(begin, end - begin));
  replace_all(s, "\\coloneqq", ":=");
  replace_all(s, "\\eqqcolon", "=:");
  return s;
}

// A coordinate on the grid -> a position on an axis of `size`, clamped before any integer cast.
double grid_to(int coord, double size) { return std::clamp(coord / 999.0 * size, 0.0, size); }

cv::Mat as_mat(ImageU8& image) {
  return cv::Mat(image.height, image.width, CV_8UC3, image.data.data());
}

}  // namespace

std::array<int, 4> page_pixel_box(const std::array<int, 4>& grid, int width, int height) {
  // Truncation of a non-negative value, as Python's int() in the official code.
  const int x1 = static_cast<int>(grid_to(grid[0], width)),
            y1 = static_cast<int>(grid_to(grid[1], height));
  const int x2 = static_cast<int>(grid_to(grid[2], width)),
            y2 = static_cast<int>(grid_to(grid[3], height));
  return {std::min(x1, x2), std::min(y1, y2), std::max(x1, x2), std::max(y1, y2)};
}

std::array<double, 4> page_point_box(const std::array<int, 4>& grid, double width_pt,
                                     double height_pt) {
  auto r = [](double v) { return std::round(v * 100.0) / 100.0; };
  const double x1 = r(grid_to(grid[0], width_pt)), y1 = r(grid_to(grid[1], height_pt));
  const double x2 = r(grid_to(grid[2], width_pt)), y2 = r(grid_to(grid[3], height_pt));
  // Rounding may not leave the page: the clamp bound itself is rounded the same way.
  const double w = std::floor(width_pt * 100.0) / 100.0, h = std::floor(height_pt * 100.0) / 100.0;
  return {std::min({x1, x2, w}), std::min({y1, y2, h}), std::min(std::max(x1, x2), w),
          std::min(std::max(y1, y2), h)};
}

bool box_has_area(const std::array<int, 4>& box) { return box[2] > box[0] && box[3] > box[1]; }

PageLayout parse_layout(const std::string& raw, const std::string& eos_text,
                        const PageGeometry& geometry) {
  const std::string text = page_text(raw, eos_text);
  const auto matches = find_grounding(text);
  PageLayout out;
  const std::string before = block_text(text, 0, matches.empty() ? text.size() : matches[0].begin);
  if (!before.empty()) {
    LayoutBlock b;
    b.grounded = false;
    b.text = before;
    out.blocks.push_back(std::move(b));
  }
  for (size_t i = 0; i < matches.size(); ++i) {
    const auto& m = matches[i];
    LayoutBlock b;
    b.label = m.label;
    b.is_image =
        text.substr(m.begin, m.end - m.begin).find("<|ref|>image<|/ref|>") != std::string::npos;
    b.text = block_text(text, m.end, i + 1 < matches.size() ? matches[i + 1].begin : text.size());
    b.grid = m.boxes;
    for (const auto& g : m.boxes) {
      b.pixels.push_back(page_pixel_box(g, geometry.width, geometry.height));
      if (geometry.has_points())
        b.points.push_back(page_point_box(g, geometry.width_pt, geometry.height_pt));
    }
    out.blocks.push_back(std::move(b));
  }
  return out;
}

ImageU8 crop_image(const ImageU8& page, const std::array<int, 4>& box) {
  const int x1 = std::clamp(box[0], 0, page.width), y1 = std::clamp(box[1], 0, page.height);
  const int x2 = std::clamp(box[2], x1, page.width), y2 = std::clamp(box[3], y1, page.height);
  ImageU8 out(x2 - x1, y2 - y1);
  for (int y = y1; y < y2; ++y)
    std::copy_n(page.px(x1, y), static_cast<size_t>(x2 - x1) * 3, out.px(0, y - y1));
  return out;
}

std::array<uint8_t, 3> label_colour(const std::string& label) {
  // Distinct, darkish colours that stay readable on white paper (the official code draws random
  // colours from [0,200) x [0,200) x [0,255)).
  static const std::array<uint8_t, 3> kPalette[] = {
      {230, 25, 75},  {60, 140, 60}, {0, 90, 200},   {245, 130, 48}, {145, 30, 180}, {0, 150, 150},
      {200, 40, 200}, {128, 110, 0}, {170, 110, 40}, {128, 0, 0},    {0, 0, 128},    {90, 90, 90}};
  uint32_t h = 2166136261u;  // FNV-1a
  for (unsigned char c : label) h = (h ^ c) * 16777619u;
  return kPalette[h % (sizeof(kPalette) / sizeof(kPalette[0]))];
}

ImageU8 draw_layout(const ImageU8& page, const PageLayout& layout) {
  ImageU8 out = page;
  if (out.empty()) return out;
  cv::Mat img = as_mat(out);  // RGB order: colours below are given as RGB
  // The faint fill first (the official code pastes a translucent overlay), then outlines and
  // labels.
  cv::Mat fill = img.clone();
  for (const auto& b : layout.blocks) {
    const auto c = label_colour(b.label);
    for (const auto& p : b.pixels)
      if (box_has_area(p))
        cv::rectangle(fill, cv::Rect(p[0], p[1], p[2] - p[0], p[3] - p[1]),
                      cv::Scalar(c[0], c[1], c[2]), cv::FILLED);
  }
  cv::addWeighted(fill, 20.0 / 255.0, img, 1.0 - 20.0 / 255.0, 0.0, img);
  // Labels about 10 pixels high on small pages, growing with the page so they stay readable.
  const double font_scale = std::clamp(out.width / 1800.0, 0.45, 1.2);
  const int font_weight = font_scale > 0.8 ? 2 : 1;
  for (const auto& b : layout.blocks) {
    if (!b.grounded) continue;
    const auto c = label_colour(b.label);
    const cv::Scalar colour(c[0], c[1], c[2]);
    const int width = b.label == "title" ? 4 : 2;
    for (const auto& p : b.pixels) {
      // PIL draws [x1, y1, x2, y2] inclusive with the outline growing inwards.
      const int x2 = std::min(p[2], out.width - 1), y2 = std::min(p[3], out.height - 1);
      for (int k = 0; k < width && p[0] + k <= x2 - k && p[1] + k <= y2 - k; ++k)
        cv::rectangle(img, cv::Point(p[0] + k, p[1] + k), cv::Point(x2 - k, y2 - k), colour, 1);
      int baseline = 0;
      const cv::Size ts =
          cv::getTextSize(b.label, cv::FONT_HERSHEY_SIMPLEX, font_scale, font_weight, &baseline);
      const int tx = p[0], ty = std::max(0, p[1] - ts.height - baseline - 2);
      cv::rectangle(img, cv::Rect(tx, ty, ts.width, ts.height + baseline),
                    cv::Scalar(255, 255, 255), cv::FILLED);
      cv::putText(img, b.label, cv::Point(tx, ty + ts.height), cv::FONT_HERSHEY_SIMPLEX, font_scale,
                  colour, font_weight, cv::LINE_AA);
    }
  }
  return out;
}

std::string encode_jpeg(const ImageU8& image, int quality) {
  if (image.empty()) throw InputError("cannot encode an empty image as JPEG");
  cv::Mat bgr;
  ImageU8 copy = image;
  cv::cvtColor(as_mat(copy), bgr, cv::COLOR_RGB2BGR);
  std::vector<uint8_t> buf;
  try {
    if (!cv::imencode(".jpg", bgr, buf, {cv::IMWRITE_JPEG_QUALITY, quality}))
      throw InputError("JPEG encoding failed");
  } catch (const cv::Exception& e) {
    throw InputError("JPEG encoding failed (" + e.err + ")");
  }
  return std::string(buf.begin(), buf.end());
}

namespace {

// HTML tags the model writes (tables, centring, sub/superscripts, line breaks).
const char* const kHtmlTags[] = {
    "table",  "thead",  "tbody", "tfoot",   "tr",       "td",  "th", "br",
    "center", "sup",    "sub",   "b",       "i",        "u",   "em", "strong",
    "p",      "div",    "span",  "caption", "colgroup", "col", "hr", "img",
    "s",      "strike", "small", "big",     "font",     "ul",  "ol", "li"};

// Recognises "<name ...>", "</name>" or "<name/>" at `pos`; returns its length (0: not a tag).
size_t match_tag(const std::string& s, size_t pos, std::string& name, bool& closing) {
  size_t i = pos + 1;
  closing = i < s.size() && s[i] == '/';
  if (closing) ++i;
  const size_t name_start = i;
  while (i < s.size() && std::isalpha(static_cast<unsigned char>(s[i]))) ++i;
  if (i == name_start) return 0;
  name = s.substr(name_start, i - name_start);
  std::transform(name.begin(), name.end(), name.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (std::none_of(std::begin(kHtmlTags), std::end(kHtmlTags),
                   [&](const char* t) { return name == t; }))
    return 0;
  const size_t end = s.find_first_of("<>", i);
  if (end == std::string::npos || s[end] != '>' || end - pos > 1000) return 0;
  if (end > i && !std::isspace(static_cast<unsigned char>(s[i])) && s[i] != '/')
    return 0;  // "<tdx>"
  return end + 1 - pos;
}

std::string strip_tags(const std::string& s) {
  std::string out;
  int table_depth = 0;
  bool in_cell = false;
  int cell_index = 0;
  auto line_break = [&] {
    if (!out.empty() && out.back() != '\n') out += '\n';
  };
  for (size_t i = 0; i < s.size();) {
    std::string name;
    bool closing = false;
    const size_t n = s[i] == '<' ? match_tag(s, i, name, closing) : 0;
    if (n == 0) {
      // Whitespace between table tags (outside cells) is layout, not content.
      if (!(table_depth > 0 && !in_cell && std::isspace(static_cast<unsigned char>(s[i]))))
        out += s[i];
      ++i;
      continue;
    }
    i += n;
    if (name == "table") {
      table_depth = std::max(0, table_depth + (closing ? -1 : 1));
      in_cell = false;
      line_break();
    } else if (name == "tr") {
      line_break();
      cell_index = 0;
      in_cell = false;
    } else if (name == "td" || name == "th") {
      if (!closing) {
        if (cell_index++ > 0) out += '\t';
        in_cell = true;
      } else {
        in_cell = false;
      }
    } else if (name == "br") {
      out += in_cell ? ' ' : '\n';
    } else if (name == "p" || name == "div" || name == "li" || name == "hr" || name == "caption") {
      if (!in_cell) line_break();
    }
  }
  return out;
}

std::string decode_entities(const std::string& s) {
  static const std::pair<const char*, const char*> kEntities[] = {
      {"&amp;", "&"}, {"&lt;", "<"},   {"&gt;", ">"},  {"&quot;", "\""},
      {"&#39;", "'"}, {"&apos;", "'"}, {"&nbsp;", " "}};
  std::string out;
  for (size_t i = 0; i < s.size();) {
    bool done = false;
    if (s[i] == '&') {
      for (const auto& [from, to] : kEntities) {
        if (s.compare(i, std::strlen(from), from) == 0) {
          out += to;
          i += std::strlen(from);
          done = true;
          break;
        }
      }
    }
    if (!done) out += s[i++];
  }
  return out;
}

std::string plain_line(std::string line) {
  // "# Heading" .. "###### Heading" -> "Heading".
  size_t h = 0;
  while (h < line.size() && h < 7 && line[h] == '#') ++h;
  if (h >= 1 && h <= 6 && h < line.size() && (line[h] == ' ' || line[h] == '\t')) {
    size_t k = h;
    while (k < line.size() && (line[k] == ' ' || line[k] == '\t')) ++k;
    line.erase(0, k);
  }
  // **bold** -> bold, only for pairs on the line.
  for (size_t a = line.find("**"); a != std::string::npos; a = line.find("**", a)) {
    const size_t b = line.find("**", a + 2);
    if (b == std::string::npos || b == a + 2) break;
    line.erase(b, 2);
    line.erase(a, 2);
    a = b - 2;
  }
  while (!line.empty() && (line.back() == ' ' || line.back() == '\t' || line.back() == '\r'))
    line.pop_back();
  return line;
}

}  // namespace

std::string markdown_to_text(const std::string& markdown) {
  const std::string s = decode_entities(strip_tags(markdown));
  std::string out;
  int blank_run = 0;
  size_t start = 0;
  while (start <= s.size()) {
    size_t end = s.find('\n', start);
    if (end == std::string::npos) end = s.size();
    const std::string line = plain_line(s.substr(start, end - start));
    start = end + 1;
    if (line.empty()) {
      if (++blank_run > 1 || out.empty()) continue;
    } else {
      blank_run = 0;
    }
    out += line;
    out += '\n';
  }
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

}  // namespace ocr
