// Output formats (--format md|text|json|jsonl), figure files and layout overlays for one document.
// A DocumentWriter takes the pages of one input in order and keeps every file it will write in
// memory until finish(), which writes figures and overlays first and the main output file last:
// an existing main file means a finished document (resume), and a document that fails or is
// interrupted leaves nothing behind.
#pragma once

#include <memory>
#include <string>

#include "engine/retry.h"
#include "ocr/image.h"

namespace ocr {

enum class OutputFormat { kMarkdown, kText, kJson, kJsonl };

// "md", "text", "json", "jsonl"; throws std::invalid_argument otherwise.
OutputFormat parse_output_format(const std::string& name);

// File extension of a format under -o: md, txt, json, jsonl.
std::string output_extension(OutputFormat format);

struct DocumentOptions {
  OutputFormat format = OutputFormat::kMarkdown;
  bool raw = false;         // md, jsonl and json's "markdown" keep the grounding tags
  bool draw_boxes = false;  // one overlay picture per page (needs an output path)
  std::string eos_text;     // the EOS token's text, stripped from the end of a page
  bool paged = false;       // a PDF or a multi-page TIFF (stdout figure placeholders use the
                            // official PDF script's names images/{page}_{m}.jpg)
};

struct DocumentPage {
  int page = 1;                    // 1-based page number in the document
  const ImageU8* image = nullptr;  // the page as the model read it (crops, overlays, sizes)
  double width_pt = 0;             // PDF pages: upright page size in points, and the dpi
  double height_pt = 0;            // it was rendered at; 0 for images
  double dpi = 0;
  const ProcessedPage* result = nullptr;
};

class DocumentWriter {
 public:
  // `input`: the input as named in records; `out_path`: DIR/a/b.<ext> under -o, "" for stdout.
  // Figures go to DIR/a/b_images/p{page}_{k}.jpg, overlays to DIR/a/b_boxes/p{page}.jpg.
  DocumentWriter(DocumentOptions options, std::string input, std::string out_path);
  ~DocumentWriter();
  DocumentWriter(const DocumentWriter&) = delete;
  DocumentWriter& operator=(const DocumentWriter&) = delete;

  // Formats one page. Returns what to print on stdout now: "" under -o and for json (printed by
  // finish()). `first_on_stdout`: nothing was printed before, so no page separator.
  std::string add_page(const DocumentPage& page, bool first_on_stdout);

  // Under -o: writes the collected figures and overlays, removes figure and overlay files of an
  // earlier run that this one did not produce, then writes the main file (each file atomically;
  // throws ocr::InputError naming the path). For stdout: returns the json document (one line), ""
  // for the other formats.
  std::string finish();

  int pages() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ocr
