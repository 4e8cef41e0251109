#include "writers/formats.h"

#include <dirent.h>
#include <unistd.h>

#include <cctype>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>
#include <utility>
#include <vector>

#include "postprocess/grounding.h"
#include "postprocess/layout.h"
#include "writers/output.h"

namespace ocr {
namespace {

using Json = nlohmann::ordered_json;  // keys in the order written: page, width, height, ...

constexpr const char* kPageSplit = "\n<--- Page Split --->\n";  // the official PDF script's marker

std::string dump(const Json& j, int indent = -1) {
  return j.dump(indent, ' ', false, Json::error_handler_t::replace);
}

// A relative link target for markdown: ASCII punctuation that ends or confuses a link destination
// is percent-encoded; UTF-8 bytes stay as they are.
std::string link_target(const std::string& path) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : path) {
    if (c >= 0x80 || std::isalnum(c) || c == '/' || c == '.' || c == '-' || c == '_' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

// p{page}_{k}.jpg (figures) or p{page}.jpg (overlays).
bool is_our_file(const std::string& name, bool with_index) {
  size_t i = 0;
  auto digits = [&] {
    const size_t s = i;
    while (i < name.size() && std::isdigit(static_cast<unsigned char>(name[i]))) ++i;
    return i > s;
  };
  if (name.empty() || name[i++] != 'p' || !digits()) return false;
  if (with_index && (i >= name.size() || name[i++] != '_' || !digits())) return false;
  return name.substr(i) == ".jpg";
}

// Removes files named like ours in `dir` that are not in `keep`, and the folder when it is left
// empty: a rerun (--force) must not leave figures of pages that no longer have them.
void remove_stale(const std::string& dir, const std::set<std::string>& keep, bool with_index) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) return;
  std::vector<std::string> stale;
  bool other = false;
  while (dirent* e = ::readdir(d)) {
    const std::string n = e->d_name;
    if (n == "." || n == "..") continue;
    if (is_our_file(n, with_index) && !keep.count(n))
      stale.push_back(n);
    else
      other = true;
  }
  ::closedir(d);
  for (const auto& n : stale) ::unlink((dir + "/" + n).c_str());
  if (!other) ::rmdir(dir.c_str());
}

}  // namespace

OutputFormat parse_output_format(const std::string& name) {
  if (name == "md") return OutputFormat::kMarkdown;
  if (name == "text") return OutputFormat::kText;
  if (name == "json") return OutputFormat::kJson;
  if (name == "jsonl") return OutputFormat::kJsonl;
  throw std::invalid_argument("unknown output format \"" + name + "\" (md, text, json, jsonl)");
}

std::string output_extension(OutputFormat format) {
  switch (format) {
    case OutputFormat::kMarkdown:
      return "md";
    case OutputFormat::kText:
      return "txt";
    case OutputFormat::kJson:
      return "json";
    case OutputFormat::kJsonl:
      return "jsonl";
  }
  return "md";
}

struct DocumentWriter::Impl {
  DocumentOptions options;
  std::string input;
  std::string out_path;
  std::string dir;   // folder of out_path
  std::string stem;  // file name of out_path without its extension
  std::vector<std::pair<std::string, std::string>> files;  // path, bytes: figures and overlays
  std::set<std::string> figure_names, overlay_names;
  std::string body;  // md, text, jsonl
  Json json_pages = Json::array();
  int n_pages = 0;

  bool to_dir() const { return !out_path.empty(); }
  std::string images_dir() const { return dir + "/" + stem + "_images"; }
  std::string boxes_dir() const { return dir + "/" + stem + "_boxes"; }
};

DocumentWriter::DocumentWriter(DocumentOptions options, std::string input, std::string out_path)
    : impl_(std::make_unique<Impl>()) {
  impl_->options = std::move(options);
  impl_->input = std::move(input);
  impl_->out_path = std::move(out_path);
  if (impl_->to_dir()) {
    const auto slash = impl_->out_path.rfind('/');
    impl_->dir = slash == std::string::npos ? "." : impl_->out_path.substr(0, slash);
    std::string file =
        slash == std::string::npos ? impl_->out_path : impl_->out_path.substr(slash + 1);
    const auto dot = file.rfind('.');
    impl_->stem = dot == std::string::npos || dot == 0 ? file : file.substr(0, dot);
  }
}

DocumentWriter::~DocumentWriter() = default;

int DocumentWriter::pages() const { return impl_->n_pages; }

std::string DocumentWriter::add_page(const DocumentPage& page, bool first_on_stdout) {
  Impl& d = *impl_;
  const DocumentOptions& o = d.options;
  if (!page.result || !page.image)
    throw std::invalid_argument("DocumentWriter::add_page: page without result or image");
  const PageOutput& r = page.result->output;
  const ImageU8& image = *page.image;
  PageGeometry geometry;
  geometry.width = image.width;
  geometry.height = image.height;
  geometry.width_pt = page.width_pt;
  geometry.height_pt = page.height_pt;
  const PageLayout layout = parse_layout(r.text, o.eos_text, geometry);
  const std::string page_tag = "p" + std::to_string(page.page);

  // Figures: one JPEG per image box with an area, numbered per page; kept for finish().
  std::vector<std::vector<std::string>>
      figures;  // per image match: paths relative to the output file
  const bool save_figures = d.to_dir() && o.format != OutputFormat::kText;
  if (save_figures) {
    int k = 0;
    for (const auto& b : layout.blocks) {
      if (!b.is_image) continue;
      figures.emplace_back();
      for (const auto& box : b.pixels) {
        if (!box_has_area(box)) continue;
        const std::string name = page_tag + "_" + std::to_string(k++) + ".jpg";
        d.files.emplace_back(d.images_dir() + "/" + name, encode_jpeg(crop_image(image, box)));
        d.figure_names.insert(name);
        figures.back().push_back(d.stem + "_images/" + name);
      }
    }
  }
  if (o.draw_boxes && d.to_dir()) {
    const std::string name = page_tag + ".jpg";
    d.files.emplace_back(d.boxes_dir() + "/" + name, encode_jpeg(draw_layout(image, layout)));
    d.overlay_names.insert(name);
  }

  const int ordinal = d.n_pages++;
  auto link = [&](int m) -> std::string {
    if (o.format == OutputFormat::kText) return "";
    if (save_figures) {
      std::string s;
      if (m < static_cast<int>(figures.size()))
        for (const auto& f : figures[static_cast<size_t>(m)]) s += "![](" + link_target(f) + ")\n";
      return s;
    }
    // No files on stdout: the official placeholders (result.mmd of the image / PDF scripts).
    return o.paged ? "![](images/" + std::to_string(ordinal) + "_" + std::to_string(m) + ".jpg)\n"
                   : "![](images/" + std::to_string(m) + ".jpg)\n";
  };
  const std::string failed_note =
      page.result->failed()
          ? "ocr-cli: page " + std::to_string(page.page) + " failed: " + r.finish_reason
          : std::string();

  std::string chunk;  // this page in the main output
  switch (o.format) {
    case OutputFormat::kMarkdown:
    case OutputFormat::kJsonl: {
      std::string md = o.raw ? r.text : clean_markdown(r.text, o.eos_text, link);
      if (!failed_note.empty()) md += "\n<!-- " + failed_note + " -->";  // never silent
      if (o.format == OutputFormat::kMarkdown) {
        chunk = (d.to_dir() ? ordinal > 0 : !first_on_stdout) ? kPageSplit + md + "\n" : md + "\n";
      } else {
        const Json j = {{"input", d.input},
                        {"page", page.page},
                        {"markdown", md},
                        {"finish_reason", r.finish_reason},
                        {"attempts", page.result->attempts.size()},
                        {"prompt_tokens", r.prompt_ids.size()},
                        {"generated_tokens", r.tokens.size()},
                        {"image_tokens", r.n_image_tokens},
                        {"tiles", {r.tiles_w, r.tiles_h}},
                        {"encode_ms", r.encode_ms},
                        {"prefill_ms", r.prefill_ms},
                        {"decode_ms", r.decode_ms}};
        chunk = dump(j) + "\n";
      }
      break;
    }
    case OutputFormat::kText: {
      std::string text = markdown_to_text(clean_markdown(r.text, o.eos_text, link));
      if (!failed_note.empty()) text += "\n[" + failed_note + "]";
      // Pages separated by a form feed, as pdftotext and tesseract's text output do.
      chunk = (d.to_dir() ? ordinal > 0 : !first_on_stdout) ? "\f" + text + "\n" : text + "\n";
      break;
    }
    case OutputFormat::kJson: {
      Json p = {{"page", page.page}, {"width", image.width}, {"height", image.height}};
      if (geometry.has_points()) {
        p["width_pt"] = page.width_pt;
        p["height_pt"] = page.height_pt;
        p["dpi"] = page.dpi;
      }
      p["finish_reason"] = r.finish_reason;
      p["failed"] = page.result->failed();
      p["markdown"] = o.raw ? r.text : clean_markdown(r.text, o.eos_text, link);
      Json blocks = Json::array();
      size_t m = 0;
      for (const auto& b : layout.blocks) {
        Json jb;
        jb["label"] = b.grounded ? Json(b.label) : Json(nullptr);
        jb["text"] = b.text;
        jb["boxes"] = b.pixels;
        jb["boxes_grid"] = b.grid;
        if (geometry.has_points()) jb["boxes_pt"] = b.points;
        if (b.is_image && save_figures) jb["figures"] = figures[m++];
        blocks.push_back(std::move(jb));
      }
      p["blocks"] = std::move(blocks);
      d.json_pages.push_back(std::move(p));
      return "";
    }
  }
  if (d.to_dir()) {
    d.body += chunk;
    return "";
  }
  return chunk;
}

std::string DocumentWriter::finish() {
  Impl& d = *impl_;
  const bool json = d.options.format == OutputFormat::kJson;
  const Json doc =
      json ? Json{{"version", 1}, {"input", d.input}, {"pages", d.json_pages}} : Json();
  if (!d.to_dir()) return json ? dump(doc) + "\n" : "";
  for (const auto& [path, bytes] : d.files) write_file_atomic(path, bytes);
  if (d.to_dir() && d.options.format != OutputFormat::kText)
    remove_stale(d.images_dir(), d.figure_names, true);
  if (d.options.draw_boxes) remove_stale(d.boxes_dir(), d.overlay_names, false);
  // Last: the main file's existence marks the document as done.
  write_file_atomic(d.out_path, json ? dump(doc, 2) + "\n" : d.body);
  d.files.clear();
  return "";
}

}  // namespace ocr
