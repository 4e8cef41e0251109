// Rendering PDF pages into RGB buffers (poppler-cpp underneath, hidden from this header).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ocr/image.h"

namespace ocr {

// False when the build found no poppler-cpp: PdfDocument::open then throws InputError.
bool pdf_supported();

// True when "%PDF-" occurs within the first 1024 bytes, the window PDF readers accept (files with
// a short junk prefix, e.g. from mail gateways, still open).
bool looks_like_pdf(const std::vector<uint8_t>& bytes);

// Page size in pixels for a page of `points` (1/72 inch) at `dpi`: ceil(points * dpi / 72 - 0.001),
// the outward rounding of MuPDF's fz_round_rect that PyMuPDF's get_pixmap (the official pipeline)
// applies, so 595.2 pt at 144 dpi is 1191 pixels (poppler alone would round to 1190).
int64_t pdf_pixels_for_points(double points, double dpi);

// One opened PDF. Pages are rendered one at a time on request, so a document of thousands of pages
// costs the file's bytes plus one page image. Rendering of one document is serialised internally
// (poppler documents are not safe to render from several threads at once); open one PdfDocument
// per thread for parallel rendering of the same file.
class PdfDocument {
 public:
  // Loads the document from its bytes (copied); `password` is tried as user and owner password.
  // Throws ocr::InputError naming `name`: not a PDF or damaged beyond repair, encrypted without or
  // with a wrong password, no pages, or no PDF support in this build.
  static PdfDocument open(const std::vector<uint8_t>& bytes, const std::string& name,
                          const std::string& password = "");

  PdfDocument(PdfDocument&&) noexcept;
  PdfDocument& operator=(PdfDocument&&) noexcept;
  ~PdfDocument();

  int page_count() const;

  // Page size in points after the page's /Rotate (width, height of the upright page, crop box).
  double page_width_points(int index0) const;
  double page_height_points(int index0) const;

  // Renders page `index0` (0-based) at `dpi` like PyMuPDF get_pixmap(Matrix(dpi/72), alpha=False):
  // white background, antialiased text and vector graphics, the page's /Rotate applied, size from
  // pdf_pixels_for_points. A page over `max_pixels` is refused before anything is allocated.
  // Throws ocr::InputError naming the file and page (1-based in messages, as users count pages).
  ImageU8 render_page(int index0, double dpi, int64_t max_pixels) const;

 private:
  struct Impl;
  explicit PdfDocument(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Parses a --pages spec such as "1-3,7,10-" against a document of `page_count` pages.
// Items are N, N-M, N- (to the last page) and -M (from the first page), 1-based, separated by
// commas; spaces around items are ignored. Returns 0-based indices ascending, each once, whatever
// the order or overlap in the spec. Throws std::invalid_argument on bad syntax, page 0, a reversed
// range, or a page beyond `page_count` (an error, not clipped: a silent clip would hide a typo;
// the message names the page count).
std::vector<int> parse_page_ranges(const std::string& spec, int page_count);

// The syntax half of parse_page_ranges, for checking --pages once at start-up before any file is
// opened. Throws std::invalid_argument with the same messages.
void check_page_ranges(const std::string& spec);

}  // namespace ocr
