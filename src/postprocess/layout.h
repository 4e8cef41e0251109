// A page's layout from the model's grounding output (spec 6.2, 6.3): blocks with label, text and
// boxes on the original page (pixels, and PDF points), figure crops, the box overlay picture, and
// plain text without layout markup.
#pragma once

#include <array>
#include <string>
#include <vector>

#include "ocr/image.h"

namespace ocr {

struct PageGeometry {
  int width = 0;  // pixels of the page image the model read (decoded or rendered)
  int height = 0;
  double width_pt = 0;  // PDF pages: upright page size in points; 0 for images
  double height_pt = 0;
  bool has_points() const { return width_pt > 0 && height_pt > 0; }
};

struct LayoutBlock {
  bool grounded = true;   // false: text before the first grounding tag (or a page without tags)
  std::string label;      // between <|ref|> and <|/ref|>
  bool is_image = false;  // the official test: the whole match contains "<|ref|>image<|/ref|>"
  std::string text;       // what follows the tag up to the next tag, stripped, \coloneqq -> :=
  std::vector<std::array<int, 4>> grid;    // boxes as emitted, [x1, y1, x2, y2] on the 0..999 grid
  std::vector<std::array<int, 4>> pixels;  // the same on the page, see page_pixel_box
  std::vector<std::array<double, 4>> points;  // PDF pages: see page_point_box; empty otherwise
};

struct PageLayout {
  std::vector<LayoutBlock> blocks;  // in output order
};

// Blocks of one page's raw output (trailing `eos_text` and surrounding whitespace removed first, as
// clean_markdown does, so that the blocks are those of the official post-processing).
PageLayout parse_layout(const std::string& raw, const std::string& eos_text,
                        const PageGeometry& geometry);

// The official int(coord / 999 * size) per coordinate (truncation), then ordered (x1 <= x2,
// y1 <= y2) and clamped to the page: 0 <= x1 <= x2 <= width, 0 <= y1 <= y2 <= height. Right and
// bottom are exclusive, as in PIL's crop, so a full-page box is [0, 0, width, height].
std::array<int, 4> page_pixel_box(const std::array<int, 4>& grid, int width, int height);

// coord / 999 * size in points from the page's top-left corner (y down, as PyMuPDF and pdfplumber
// measure), ordered, clamped to the page and rounded to 0.01 pt.
std::array<double, 4> page_point_box(const std::array<int, 4>& grid, double width_pt,
                                     double height_pt);

// True when the pixel box has an area (a crop of it is not empty).
bool box_has_area(const std::array<int, 4>& box);

// The pixels inside a page_pixel_box (right/bottom exclusive); the box must have an area.
ImageU8 crop_image(const ImageU8& page, const std::array<int, 4>& box);

// The layout overlay: the page with every box of every block outlined in its label's colour
// (4 pixels wide for titles, 2 otherwise, as the official result_with_boxes.jpg), a faint fill
// (alpha 20/255), and the label on a white patch above the box's top-left corner.
ImageU8 draw_layout(const ImageU8& page, const PageLayout& layout);

// The colour of a label in overlays: one of a fixed palette, chosen by the label's hash, so a
// label has the same colour on every page and every run. RGB.
std::array<uint8_t, 3> label_colour(const std::string& label);

// JPEG bytes of an RGB image (libjpeg through OpenCV). Throws ocr::InputError if encoding fails.
std::string encode_jpeg(const ImageU8& image, int quality = 95);

// Plain text from cleaned markdown: heading marks (#) and **bold** marks removed, HTML tables
// turned into one line per row with tab-separated cells, other HTML tags dropped (their content
// kept), the common entities (&amp; &lt; &gt; &quot; &#39; &nbsp;) decoded, trailing spaces
// trimmed, runs of blank lines collapsed to one. LaTeX is content and stays.
std::string markdown_to_text(const std::string& markdown);

}  // namespace ocr
