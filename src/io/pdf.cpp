// PDF pages -> RGB buffers with poppler-cpp, sized and composited like the official PyMuPDF path.
#include "ocr/pdf.h"

#include <algorithm>
#include <cctype>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "ocr/errors.h"

#ifdef OCR_HAVE_PDF
#include <poppler-document.h>
#include <poppler-global.h>
#include <poppler-image.h>
#include <poppler-page-renderer.h>
#include <poppler-page.h>
#endif

namespace ocr {
namespace {

std::string format_dpi(double dpi) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g", dpi);
  return buf;
}

void check_dpi(double dpi) {
  // A bad --dpi is a usage error, not a property of one file.
  if (!std::isfinite(dpi) || dpi <= 0 || dpi > 10000) {
    throw std::invalid_argument("dpi must be in (0, 10000], got " + format_dpi(dpi));
  }
}

#ifdef OCR_HAVE_PDF
// poppler prints parser complaints ("Syntax Error: ...") to stderr; a batch over damaged files
// reports them as one InputError line per file instead.
void quiet_poppler() {
  static std::once_flag once;
  std::call_once(once, [] {
    poppler::set_debug_error_function([](const std::string&, void*) {}, nullptr);
  });
}
#endif

}  // namespace

bool pdf_supported() {
#ifdef OCR_HAVE_PDF
  return true;
#else
  return false;
#endif
}

bool looks_like_pdf(const std::vector<uint8_t>& bytes) {
  static const char kMagic[] = "%PDF-";
  const size_t n = std::min<size_t>(bytes.size(), 1024);
  if (n < 5) return false;
  for (size_t i = 0; i + 5 <= n; ++i) {
    if (std::memcmp(bytes.data() + i, kMagic, 5) == 0) return true;
  }
  return false;
}

int64_t pdf_pixels_for_points(double points, double dpi) {
  const double px = std::ceil(points * dpi / 72.0 - 0.001);
  // Clamp before converting: a MediaBox of 1e30 points must become "too large", not UB.
  if (!(px > 0)) return 0;
  if (px > static_cast<double>(INT64_MAX / 4)) return INT64_MAX / 4;
  return static_cast<int64_t>(px);
}

#ifdef OCR_HAVE_PDF

struct PdfDocument::Impl {
  std::string name;
  // load_from_raw_data does not copy: poppler reads this buffer for the document's lifetime.
  std::vector<char> bytes;
  std::unique_ptr<poppler::document> doc;
  int n_pages = 0;
  mutable std::mutex mutex;  // poppler's document/XRef state is not safe for concurrent renders

  std::unique_ptr<poppler::page> page(int index0) const {
    if (index0 < 0 || index0 >= n_pages) {
      throw std::out_of_range(name + ": page index " + std::to_string(index0) + " outside 0.." +
                              std::to_string(n_pages - 1));
    }
    std::unique_ptr<poppler::page> p(doc->create_page(index0));
    if (!p) {
      throw InputError(name + ": page " + std::to_string(index0 + 1) + " cannot be read (damaged PDF)");
    }
    return p;
  }

  // Upright size in points: crop box (poppler clips it to the media box, as MuPDF does), width and
  // height swapped for /Rotate 90 and 270.
  void size_points(const poppler::page& p, double* w, double* h) const {
    const poppler::rectf r = p.page_rect(poppler::crop_box);
    *w = std::abs(r.width());
    *h = std::abs(r.height());
    const auto o = p.orientation();
    if (o == poppler::page::landscape || o == poppler::page::seascape) std::swap(*w, *h);
  }
};

PdfDocument PdfDocument::open(const std::vector<uint8_t>& bytes, const std::string& name,
                              const std::string& password) {
  quiet_poppler();
  if (bytes.empty()) throw InputError(name + ": empty file (0 bytes), not a PDF");
  if (!looks_like_pdf(bytes)) throw InputError(name + ": not a PDF (no %PDF- header)");
  if (bytes.size() > static_cast<size_t>(INT_MAX)) {
    throw InputError(name + ": PDF is " + std::to_string(bytes.size()) +
                     " bytes, over the 2 GiB poppler can read from memory");
  }
  auto impl = std::make_unique<Impl>();
  impl->name = name;
  impl->bytes.assign(bytes.begin(), bytes.end());
  // The password is offered as both owner and user password, as PyMuPDF's authenticate() does.
  impl->doc.reset(poppler::document::load_from_raw_data(
      impl->bytes.data(), static_cast<int>(impl->bytes.size()), password, password));
  if (!impl->doc) throw InputError(name + ": damaged PDF (poppler cannot parse it)");
  if (impl->doc->is_locked()) {
    if (password.empty()) throw InputError(name + ": PDF is encrypted; pass --password");
    throw InputError(name + ": PDF is encrypted and the password given with --password is wrong");
  }
  impl->n_pages = impl->doc->pages();
  if (impl->n_pages <= 0) throw InputError(name + ": PDF has no pages");
  return PdfDocument(std::move(impl));
}

int PdfDocument::page_count() const { return impl_->n_pages; }

double PdfDocument::page_width_points(int index0) const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  double w, h;
  impl_->size_points(*impl_->page(index0), &w, &h);
  return w;
}

double PdfDocument::page_height_points(int index0) const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  double w, h;
  impl_->size_points(*impl_->page(index0), &w, &h);
  return h;
}

ImageU8 PdfDocument::render_page(int index0, double dpi, int64_t max_pixels) const {
  check_dpi(dpi);
  std::lock_guard<std::mutex> lock(impl_->mutex);
  const std::string where = impl_->name + ": page " + std::to_string(index0 + 1);
  std::unique_ptr<poppler::page> p = impl_->page(index0);
  double w_pt, h_pt;
  impl_->size_points(*p, &w_pt, &h_pt);
  const int64_t w = pdf_pixels_for_points(w_pt, dpi);
  const int64_t h = pdf_pixels_for_points(h_pt, dpi);
  if (w < 1 || h < 1) throw InputError(where + " has an empty page box");
  // Decompression-bomb guard: a 14400 pt MediaBox at 144 dpi is 829 Mpx; refuse before Splash
  // allocates it. w, h <= INT64_MAX/4 here, but their product may not fit: compare by division.
  if (w > max_pixels / h) {
    throw InputError(where + " would be " + std::to_string(w) + "x" + std::to_string(h) +
                     " pixels at " + format_dpi(dpi) + " dpi, over the --max-pixels limit of " +
                     std::to_string(max_pixels));
  }
  // Splash stores 4 bytes a pixel with an int row stride.
  if (w > INT_MAX / 4 || h > INT_MAX) {
    throw InputError(where + " would be " + std::to_string(w) + "x" + std::to_string(h) +
                     " pixels, too wide for the renderer");
  }

  poppler::page_renderer renderer;
  renderer.set_render_hint(poppler::page_renderer::antialiasing, true);
  renderer.set_render_hint(poppler::page_renderer::text_antialiasing, true);
  renderer.set_paper_color(0xffffffff);  // opaque white paper, as alpha=False in PyMuPDF
  renderer.set_image_format(poppler::image::format_argb32);
  // An explicit slice of exactly w x h from the top-left corner: poppler alone sizes the bitmap
  // with round-to-nearest, PyMuPDF rounds outward; any extra column/row stays paper white, as in
  // MuPDF's cleared pixmap.
  const poppler::image img = renderer.render_page(p.get(), dpi, dpi, 0, 0, static_cast<int>(w),
                                                  static_cast<int>(h));
  if (!img.is_valid() || img.width() != w || img.height() != h ||
      img.format() != poppler::image::format_argb32) {
    throw InputError(where + " could not be rendered (damaged PDF or out of memory)");
  }

  ImageU8 out(static_cast<int>(w), static_cast<int>(h));
  const int stride = img.bytes_per_row();
  const char* base = img.const_data();
  for (int y = 0; y < out.height; ++y) {
    const char* row = base + static_cast<size_t>(y) * stride;
    uint8_t* o = out.px(0, y);
    for (int x = 0; x < out.width; ++x, o += 3) {
      // argb32 is one native-endian 32-bit word per pixel, alpha premultiplied; composite over
      // white (c + 255 - a) so a transparent pixel, should any survive, reads as paper.
      uint32_t v;
      std::memcpy(&v, row + static_cast<size_t>(x) * 4, 4);
      const int a = static_cast<int>(v >> 24);
      const int r = static_cast<int>((v >> 16) & 255), g = static_cast<int>((v >> 8) & 255),
                b = static_cast<int>(v & 255);
      o[0] = static_cast<uint8_t>(std::min(255, r + 255 - a));
      o[1] = static_cast<uint8_t>(std::min(255, g + 255 - a));
      o[2] = static_cast<uint8_t>(std::min(255, b + 255 - a));
    }
  }
  return out;
}

#else  // !OCR_HAVE_PDF

struct PdfDocument::Impl {};

PdfDocument PdfDocument::open(const std::vector<uint8_t>&, const std::string& name,
                              const std::string&) {
  throw InputError(name + ": PDF input is not available in this build (poppler-cpp was not found)");
}

int PdfDocument::page_count() const { return 0; }
double PdfDocument::page_width_points(int) const { return 0; }
double PdfDocument::page_height_points(int) const { return 0; }
ImageU8 PdfDocument::render_page(int, double dpi, int64_t) const {
  check_dpi(dpi);
  throw InputError("PDF input is not available in this build (poppler-cpp was not found)");
}

#endif

PdfDocument::PdfDocument(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
PdfDocument::PdfDocument(PdfDocument&&) noexcept = default;
PdfDocument& PdfDocument::operator=(PdfDocument&&) noexcept = default;
PdfDocument::~PdfDocument() = default;

namespace {

std::string trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return s.substr(b, e - b);
}

// A 1-based page number: digits only (no sign, no spaces inside), at least 1, bounded.
int parse_page_number(const std::string& text, const std::string& item) {
  if (text.empty() || text.size() > 9 ||
      !std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    throw std::invalid_argument("--pages: bad item \"" + item +
                                "\" (expected N, N-M, N- or -M with page numbers from 1)");
  }
  const int n = std::stoi(text);
  if (n < 1) throw std::invalid_argument("--pages: pages are numbered from 1, got \"" + item + "\"");
  return n;
}

// One --pages item, 1-based and inclusive; last == 0 means "to the last page".
struct PageRange {
  int first;
  int last;
  std::string item;  // as written, for error messages
};

std::vector<PageRange> parse_page_items(const std::string& spec) {
  if (trim(spec).empty()) throw std::invalid_argument("--pages: empty page list");
  std::vector<PageRange> ranges;
  size_t start = 0;
  while (start <= spec.size()) {
    size_t comma = spec.find(',', start);
    if (comma == std::string::npos) comma = spec.size();
    const std::string item = trim(spec.substr(start, comma - start));
    start = comma + 1;
    if (item.empty()) throw std::invalid_argument("--pages: empty item in \"" + spec + "\"");
    const size_t dash = item.find('-');
    PageRange r{0, 0, item};
    if (dash == std::string::npos) {
      r.first = r.last = parse_page_number(item, item);
    } else {
      const std::string a = trim(item.substr(0, dash)), b = trim(item.substr(dash + 1));
      if (a.empty() && b.empty()) {
        throw std::invalid_argument("--pages: bad item \"" + item +
                                    "\" (expected N, N-M, N- or -M with page numbers from 1)");
      }
      r.first = a.empty() ? 1 : parse_page_number(a, item);
      r.last = b.empty() ? 0 : parse_page_number(b, item);
      if (r.last != 0 && r.last < r.first) {
        throw std::invalid_argument("--pages: reversed range \"" + item + "\"");
      }
    }
    ranges.push_back(r);
  }
  return ranges;
}

}  // namespace

void check_page_ranges(const std::string& spec) { parse_page_items(spec); }

std::vector<int> parse_page_ranges(const std::string& spec, int page_count) {
  std::vector<PageRange> ranges = parse_page_items(spec);
  for (PageRange& r : ranges) {
    const int highest = r.last == 0 ? r.first : r.last;
    if (highest > page_count) {
      throw std::invalid_argument("--pages: \"" + r.item + "\" asks for page " +
                                  std::to_string(highest) + " but the document has " +
                                  std::to_string(page_count) + " page" +
                                  (page_count == 1 ? "" : "s"));
    }
    if (r.last == 0) r.last = page_count;
  }
  // Ascending and each page once: merge the sorted ranges.
  std::sort(ranges.begin(), ranges.end(),
            [](const PageRange& a, const PageRange& b) { return a.first < b.first; });
  std::vector<int> out;
  int next = 1;  // first page not yet emitted
  for (const PageRange& r : ranges) {
    for (int p = std::max(r.first, next); p <= r.last; ++p) out.push_back(p - 1);
    next = std::max(next, r.last + 1);
  }
  return out;
}

}  // namespace ocr
