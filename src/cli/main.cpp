// ocr-cli: thin front end. Parses options, builds the engine, streams results to stdout.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <unistd.h>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <utility>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "engine/bench.h"
#include "engine/parity.h"
#include "engine/prompt.h"
#include "engine/retry.h"
#include "ocr/engine.h"
#include "ocr/errors.h"
#include "ocr/image_io.h"
#include "ocr/pdf.h"
#include "postprocess/grounding.h"
#include "writers/output.h"

namespace fs = std::filesystem;

namespace {

std::atomic<bool> g_interrupted{false};
extern "C" void on_signal(int) { g_interrupted.store(true); }

constexpr const char* kExitCodes =
    "Exit codes: 0 every page succeeded; 1 fatal error (model, device); 2 usage error;\n"
    "            3 some inputs or pages failed (the others were processed); 130 interrupted.";

std::string default_model_dir() {
  if (const char* env = std::getenv("OCR_MODEL"); env && *env) return env;
  return "models/deepseek-ocr";
}

std::string tokenizer_path(const std::string& model_dir) {
  fs::path p = fs::path(model_dir) / "tokenizer.json";
  if (!fs::exists(p)) throw ocr::ModelError(model_dir + ": no tokenizer.json in the model folder");
  return p.string();
}

struct OcrArgs {
  std::vector<std::string> inputs;
  std::string mode = "gundam";
  std::string task = "markdown";
  std::string ref;
  std::string prompt;
  int max_tokens = 8192;
  std::string device = "cpu";
  int threads = 0;
  bool raw = false;
  int ngram = 30;         // official image script: 30-gram blocker over a 90-token window
  int ngram_window = 90;
  bool no_ngram = false;
  int no_repeat_ngram = 0;
  int max_tiles = 0;
  int batch_size = 1;
  bool no_verify = false;
  int64_t max_pixels = 200'000'000;
  double temperature = 0;
  double top_p = 1;
  uint64_t seed = 0;
  bool no_retry = false;
  int blank_tolerance = 6;
  double dpi = 144;          // PDF rendering, as the official PDF script (zoom 2.0)
  std::string pages;         // PDF page ranges, e.g. 1-3,7
  std::string password;      // PDF password
  bool ngram_given = false;  // --ngram/--ngram-window set explicitly (else per input kind)
  std::string out_dir;       // -o: mirror the inputs here, one file per input
  std::string format = "md"; // md or jsonl
  bool force = false;        // redo inputs whose output exists
  bool quiet = false;
  std::string files_from;    // read more inputs from this file ("-": stdin), one per line
  bool null_separated = false;  // -0: --files-from is NUL-separated (find -print0)
  std::string shard;         // "i/N": keep every N-th input starting at i
  double progress_every = 10;  // seconds between plain progress lines when stderr is not a terminal
};

// Progress on stderr: a live bar redrawn in place on a terminal, a plain line every few seconds
// otherwise, nothing with --quiet.
class Progress {
 public:
  Progress(size_t total_files, bool quiet, double every)
      : total_(total_files), quiet_(quiet), tty_(::isatty(2) != 0), every_(every),
        start_(std::chrono::steady_clock::now()), last_(start_) {}
  void update(size_t files_done, int pages, int64_t tokens, int failures, bool force = false) {
    if (quiet_) return;
    const auto now = std::chrono::steady_clock::now();
    const double since = std::chrono::duration<double>(now - last_).count();
    if (!force && !tty_ && since < every_) return;
    if (!force && tty_ && since < 0.2) return;
    last_ = now;
    const double secs = std::chrono::duration<double>(now - start_).count();
    const double rate = secs > 0 ? files_done / secs : 0;
    const double eta = rate > 0 ? (total_ - files_done) / rate : 0;
    char line[256];
    std::snprintf(line, sizeof line, "%zu/%zu files, %d pages, %.2f pages/s, %.0f tokens/s, %d failed, ETA %.0fs",
                  files_done, total_, pages, secs > 0 ? pages / secs : 0.0, secs > 0 ? tokens / secs : 0.0, failures, eta);
    if (tty_) {
      const int width = 24;
      const int filled = total_ ? static_cast<int>(width * files_done / total_) : width;
      std::fprintf(stderr, "\r[%s%s] %s\x1b[K", std::string(filled, '#').c_str(), std::string(width - filled, '.').c_str(), line);
      drawn_ = true;
    } else {
      std::fprintf(stderr, "ocr-cli: progress: %s\n", line);
    }
  }
  void finish() {
    if (drawn_) std::fprintf(stderr, "\n");
  }

 private:
  size_t total_;
  bool quiet_, tty_;
  double every_;
  std::chrono::steady_clock::time_point start_, last_;
  bool drawn_ = false;
};

// Parses "i/N" (0 <= i < N); also from SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT or
// JOB_COMPLETION_INDEX/OCR_SHARD_COUNT when no --shard is given. Returns {0, 1} for no sharding.
std::pair<int64_t, int64_t> shard_of(const std::string& spec) {
  auto parse = [](const std::string& i, const std::string& n, const std::string& what) -> std::pair<int64_t, int64_t> {
    try {
      size_t a = 0, b = 0;
      const long long index = std::stoll(i, &a), count = std::stoll(n, &b);
      if (a == i.size() && b == n.size() && count >= 1 && index >= 0 && index < count) return {index, count};
    } catch (const std::exception&) {
    }
    throw std::invalid_argument(what + ": expected a shard i/N with 0 <= i < N, got " + i + "/" + n);
  };
  if (!spec.empty()) {
    const auto slash = spec.find('/');
    if (slash == std::string::npos) throw std::invalid_argument("--shard: expected i/N, got \"" + spec + "\"");
    return parse(spec.substr(0, slash), spec.substr(slash + 1), "--shard");
  }
  const char* sid = std::getenv("SLURM_ARRAY_TASK_ID");
  const char* scount = std::getenv("SLURM_ARRAY_TASK_COUNT");
  if (sid && scount) {
    // Slurm numbers array tasks from SLURM_ARRAY_TASK_MIN (often 0 or 1).
    const char* smin = std::getenv("SLURM_ARRAY_TASK_MIN");
    const long long base = smin ? std::atoll(smin) : 0;
    return parse(std::to_string(std::atoll(sid) - base), scount, "SLURM_ARRAY_TASK_ID/COUNT");
  }
  const char* kid = std::getenv("JOB_COMPLETION_INDEX");
  const char* kcount = std::getenv("OCR_SHARD_COUNT");
  if (kid && kcount) return parse(kid, kcount, "JOB_COMPLETION_INDEX/OCR_SHARD_COUNT");
  return {0, 1};
}

// Reads input paths from a list file (one per line, or NUL-separated).
std::vector<std::string> read_list(const std::string& path, bool nul) {
  std::string data;
  if (path == "-") {
    data.assign(std::istreambuf_iterator<char>(std::cin), {});
  } else {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw ocr::InputError(path + ": cannot open --files-from list");
    data.assign(std::istreambuf_iterator<char>(f), {});
  }
  std::vector<std::string> out;
  const char sep = nul ? '\0' : '\n';
  size_t start = 0;
  while (start < data.size()) {
    size_t end = data.find(sep, start);
    if (end == std::string::npos) end = data.size();
    std::string item = data.substr(start, end - start);
    if (!nul && !item.empty() && item.back() == '\r') item.pop_back();
    if (!item.empty()) out.push_back(item);
    start = end + 1;
  }
  return out;
}


int run_ocr(const OcrArgs& a, const std::string& model_dir) {
  std::string prompt = a.prompt;
  try {
    if (prompt.empty()) prompt = ocr::task_prompt(a.task, a.ref);
  } catch (const std::invalid_argument& e) {
    std::cerr << "ocr-cli: error: " << e.what() << "\n";
    return ocr::kExitUsage;
  }
  if (prompt.find("<image>") == std::string::npos) {
    std::cerr << "ocr-cli: error: --prompt must contain <image>\n";
    return ocr::kExitUsage;
  }
  ocr::EngineOptions eo;
  eo.model_dir = model_dir;
  eo.device = a.device;
  eo.threads = a.threads;
  eo.verify_checksums = !a.no_verify;
  ocr::Engine engine(eo);
  engine.set_cancel_flag(&g_interrupted);
  try {
    ocr::find_mode(engine.modes(), a.mode);
  } catch (const std::invalid_argument& e) {
    std::cerr << "ocr-cli: error: " << e.what() << "\n";
    return ocr::kExitUsage;
  }
  ocr::TilingOptions tiling = engine.default_tiling();
  if (a.max_tiles > 0) tiling.max_tiles = a.max_tiles;
  ocr::DecodingOptions dec;
  dec.max_new_tokens = a.max_tokens;
  dec.no_repeat_ngram = a.no_repeat_ngram;
  if (!a.no_ngram) {
    dec.ngram = a.ngram;
    dec.ngram_window = a.ngram_window;
  }
  dec.temperature = a.temperature;
  dec.top_p = a.top_p;
  dec.seed = a.seed;
  ocr::RetryPolicy policy;
  policy.retry = !a.no_retry;
  policy.blank_tolerance = a.blank_tolerance;
  const auto& tok = engine.tokenizer();
  for (const char* w : {"<td>", "</td>"})
    if (auto id = tok.token_to_id(w)) dec.ngram_whitelist.push_back(*id);
  const std::string eos_text = tok.token_bytes(engine.eos_id());

  ocr::DecodeOptions decode_opts;
  decode_opts.max_pixels = a.max_pixels;
  // Official defaults per input kind (spec 6.1): 30/90 for images, 20/50 for PDF pages.
  ocr::DecodingOptions dec_pdf = dec;
  if (!a.no_ngram && !a.ngram_given) {
    dec_pdf.ngram = 20;
    dec_pdf.ngram_window = 50;
  }
  const bool to_dir = !a.out_dir.empty();
  const std::string ext = a.format == "jsonl" ? "jsonl" : "md";
  const std::string failed_log = to_dir ? a.out_dir + "/_failed.jsonl" : std::string();
  int n_failed = 0, n_pages = 0, n_docs = 0, n_skipped = 0;
  int64_t n_tokens = 0;
  const auto t_start = std::chrono::steady_clock::now();
  bool first_output = true;
  auto fail = [&](const std::string& input, int page, const std::string& reason) {
    ++n_failed;
    if (to_dir) {
      nlohmann::json j = {{"input", input}, {"error", reason}};
      if (page > 0) j["page"] = page;
      ocr::append_line(failed_log, j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
    }
  };

  std::vector<std::string> walk_errors;
  std::vector<std::string> args = a.inputs;
  if (!a.files_from.empty()) {
    const auto more = read_list(a.files_from, a.null_separated);
    args.insert(args.end(), more.begin(), more.end());
  }
  auto files = ocr::expand_inputs(args, walk_errors);
  // Sharding: input k goes to shard k mod N, over the stable (sorted walk) order of all inputs,
  // so shards 0..N-1 cover the corpus exactly once.
  const auto [shard_index, shard_count] = shard_of(a.shard);
  if (shard_count > 1) {
    std::vector<ocr::InputFile> mine;
    for (size_t k = 0; k < files.size(); ++k)
      if (static_cast<int64_t>(k % static_cast<size_t>(shard_count)) == shard_index) mine.push_back(files[k]);
    spdlog::info("shard {}/{}: {} of {} inputs", shard_index, shard_count, mine.size(), files.size());
    files.swap(mine);
  }
  for (const auto& e : walk_errors) {
    std::cerr << "ocr-cli: error: " << e << "\n";
    fail(e.substr(0, e.find(':')), 0, e);
  }
  bool interrupted = false;
  Progress progress(files.size(), a.quiet, a.progress_every);
  size_t files_done = 0;
  for (const auto& file : files) {
    progress.update(files_done, n_pages, n_tokens, n_failed);
    ++files_done;
    if (g_interrupted.load()) {
      interrupted = true;
      break;
    }
    const std::string name = file.path == "-" ? std::string("stdin") : file.path;
    const std::string out_path = to_dir ? ocr::output_path(a.out_dir, file.relative, ext) : std::string();
    if (to_dir && !a.force && ocr::path_exists(out_path)) {
      spdlog::info("{}: already done ({}), skipped; --force redoes it", name, out_path);
      ++n_skipped;
      continue;
    }
    // Open the document: one image, or the selected pages of a PDF (rendered one batch at a time).
    std::vector<uint8_t> bytes;
    std::unique_ptr<ocr::PdfDocument> pdf;
    std::vector<int> pages{0};
    try {
      bytes = ocr::read_file_bytes(file.path);
      if (ocr::looks_like_pdf(bytes)) {
        pdf = std::make_unique<ocr::PdfDocument>(ocr::PdfDocument::open(bytes, name, a.password));
        bytes.clear();
        pages.clear();
        if (a.pages.empty()) {
          for (int i = 0; i < pdf->page_count(); ++i) pages.push_back(i);
        } else {
          try {
            pages = ocr::parse_page_ranges(a.pages, pdf->page_count());
          } catch (const std::invalid_argument& e) {
            throw ocr::InputError(name + ": " + e.what());
          }
        }
      }
    } catch (const ocr::InputError& e) {
      std::cerr << "ocr-cli: error: " << e.what() << "\n";
      fail(name, 0, e.what());
      continue;
    }
    ++n_docs;
    std::string doc_md, doc_jsonl;
    bool unreadable = false;  // a page could not be decoded or rendered: no output file, so a rerun retries
    for (size_t start = 0; start < pages.size(); start += static_cast<size_t>(a.batch_size)) {
      std::vector<ocr::PageInput> batch;
      std::vector<int> page_no;  // 1-based
      for (size_t k = start; k < pages.size() && k < start + static_cast<size_t>(a.batch_size); ++k) {
        ocr::PageInput page;
        try {
          page.image = pdf ? pdf->render_page(pages[k], a.dpi, a.max_pixels) : ocr::decode_image(bytes, name, decode_opts);
        } catch (const ocr::InputError& e) {
          std::cerr << "ocr-cli: error: " << e.what() << "\n";
          fail(name, pages[k] + 1, e.what());
          unreadable = true;
          continue;
        }
        page.decoding = pdf ? dec_pdf : dec;
        page.mode = a.mode;
        page.prompt = prompt;
        page.tiling = tiling;
        batch.push_back(std::move(page));
        page_no.push_back(pages[k] + 1);
      }
      if (batch.empty()) continue;
      auto label = [&](size_t i) { return pdf ? name + " page " + std::to_string(page_no[i]) : name; };
      std::vector<ocr::ProcessedPage> results;
      try {
        results = ocr::run_pages(engine, batch, policy, [&](size_t i, const std::string& line) {
          spdlog::warn("{}: {}", label(i), line);
        });
      } catch (const ocr::Interrupted&) {
        interrupted = true;
        break;
      } catch (const ocr::InputError& e) {
        std::cerr << "ocr-cli: error: " << e.what() << "\n";
        for (int p : page_no) fail(name, p, e.what());
        unreadable = true;
        continue;
      }
      for (size_t i = 0; i < results.size(); ++i) {
        const auto& r = results[i].output;
        ++n_pages;
        n_tokens += static_cast<int64_t>(r.tokens.size());
        spdlog::info("{}: {} image tokens ({}x{} tiles), {} tokens generated, finish {}, encode {:.0f} ms, "
                     "prefill {:.0f} ms, decode {:.0f} ms",
                     label(i), r.n_image_tokens, r.tiles_w, r.tiles_h, r.tokens.size(), r.finish_reason,
                     r.encode_ms, r.prefill_ms, r.decode_ms);
        std::string md = a.raw ? r.text : ocr::clean_markdown(r.text, eos_text, {});
        if (results[i].failed()) {
          // Never silent: the page stays in the output, marked, and the run exits 3.
          md += "\n<!-- ocr-cli: page " + std::to_string(page_no[i]) + " failed: " + r.finish_reason + " -->";
          std::cerr << "ocr-cli: error: " << label(i) << ": failed: " << r.finish_reason << " after "
                    << results[i].attempts.size() << " attempt(s)\n";
          fail(name, page_no[i], r.finish_reason);
        }
        if (a.format == "jsonl") {
          nlohmann::json j = {{"input", name}, {"page", page_no[i]}, {"markdown", md},
                              {"finish_reason", r.finish_reason}, {"attempts", results[i].attempts.size()},
                              {"prompt_tokens", r.prompt_ids.size()}, {"generated_tokens", r.tokens.size()},
                              {"image_tokens", r.n_image_tokens}, {"tiles", {r.tiles_w, r.tiles_h}},
                              {"encode_ms", r.encode_ms}, {"prefill_ms", r.prefill_ms}, {"decode_ms", r.decode_ms}};
          const std::string line = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
          if (to_dir) doc_jsonl += line;
          else std::cout << line;
        } else if (to_dir) {
          if (!doc_md.empty()) doc_md += "\n<--- Page Split --->\n";
          doc_md += md + "\n";
        } else {
          if (!first_output) std::cout << "\n<--- Page Split --->\n";
          std::cout << md << "\n";
        }
        first_output = false;
        std::cout.flush();
      }
    }
    if (interrupted) break;  // the document in flight is dropped: no partial file
    if (to_dir && !unreadable) {
      try {
        ocr::write_file_atomic(out_path, a.format == "jsonl" ? doc_jsonl : doc_md);
      } catch (const ocr::InputError& e) {
        std::cerr << "ocr-cli: error: " << e.what() << "\n";
        fail(name, 0, e.what());
      }
    }
  }
  if (g_interrupted.load()) interrupted = true;
  progress.update(files_done, n_pages, n_tokens, n_failed, /*force=*/files.size() > 1 && !interrupted);
  progress.finish();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  if (!a.quiet && (to_dir || files.size() > 1))
    std::cerr << "ocr-cli: " << n_docs << " files, " << n_pages << " pages, " << n_failed << " failed, " << n_skipped
              << " skipped (done), " << (secs > 0 ? n_pages / secs : 0) << " pages/s, "
              << (secs > 0 ? n_tokens / secs : 0) << " tokens/s\n";
  if (interrupted) {
    std::cerr << "ocr-cli: interrupted; finished files are kept, a rerun resumes\n";
    return ocr::kExitInterrupted;
  }
  return n_failed > 0 ? ocr::kExitPageFailed : ocr::kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  auto logger = spdlog::stderr_color_mt("ocr-cli");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("[%H:%M:%S] %^%l%$ %v");
  spdlog::set_level(spdlog::level::warn);

  CLI::App app{"ocr-cli: DeepSeek-OCR inference: page images to markdown.\n"
               "  ocr-cli page.png --model DIR --mode base      markdown on stdout\n"
               "  cat page.png | ocr-cli - --model DIR            read one image or PDF from stdin\n"
               "  ocr-cli doc.pdf --model DIR --pages 1-3         PDF pages rendered at 144 dpi"};
  app.footer(kExitCodes);
  app.set_version_flag("--version", "ocr-cli 0.1.0");
  std::string model_dir = default_model_dir();
  std::string log_level = "warn";
  bool verbose = false;

  OcrArgs a;
  app.add_option("inputs", a.inputs, "Image or PDF files, folders (walked recursively), or - for stdin");
  app.add_option("--model", model_dir, "Exported model folder (default $OCR_MODEL, else models/deepseek-ocr)");
  app.add_option("--mode", a.mode, "Resolution mode: tiny, small, base, large, gundam")->capture_default_str();
  app.add_option("--task", a.task, "Prompt: markdown, ocr, free, figure, describe, locate")->capture_default_str();
  app.add_option("--ref", a.ref, "Text to find with --task locate");
  app.add_option("--prompt", a.prompt, "Raw prompt instead of --task (must contain <image>)");
  app.add_option("--max-tokens", a.max_tokens, "Cap on generated tokens per page")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--device", a.device, "cpu, cuda or cuda:N")->capture_default_str();
  app.add_option("--threads", a.threads, "CPU threads for inference (0: all cores)");
  app.add_flag("--raw", a.raw, "Print the raw model output (grounding tags kept)");
  auto* ngram_opt = app.add_option("--ngram", a.ngram, "Windowed n-gram blocker: n (official defaults: 30 images, 20 PDF pages)");
  auto* window_opt = app.add_option("--ngram-window", a.ngram_window, "Windowed n-gram blocker: window (90 images, 50 PDF pages)");
  app.add_option("--dpi", a.dpi, "PDF rendering resolution")->capture_default_str()->check(CLI::Range(1.0, 10000.0));
  app.add_option("--pages", a.pages, "PDF pages to read, e.g. 1-3,7,10- (default: all)");
  app.add_option("--password", a.password, "Password of encrypted PDFs");
  app.add_option("-o,--output", a.out_dir, "Write one file per input here, mirroring the input folders; "
                 "finished files are skipped on rerun (resume); failures go to DIR/_failed.jsonl");
  app.add_option("--format", a.format, "md, or jsonl (one record per page)")->capture_default_str()
      ->check(CLI::IsMember({"md", "jsonl"}));
  app.add_flag("--force", a.force, "Redo inputs whose output file exists");
  app.add_flag("-q,--quiet", a.quiet, "No progress and no summary on stderr");
  app.add_option("--progress-every", a.progress_every,
                 "Seconds between progress lines when stderr is not a terminal")->capture_default_str();
  app.add_option("--files-from", a.files_from, "Also read input paths from this file (- for stdin), one per line");
  app.add_flag("-0,--null", a.null_separated, "--files-from is NUL-separated (find -print0)");
  app.add_option("--shard", a.shard, "i/N: process every N-th input from the i-th (0-based); default from "
                 "SLURM_ARRAY_TASK_ID/COUNT or JOB_COMPLETION_INDEX with OCR_SHARD_COUNT");
  app.add_flag("--no-ngram", a.no_ngram, "Disable the windowed n-gram blocker");
  app.add_option("--no-repeat-ngram", a.no_repeat_ngram, "HF no_repeat_ngram_size over the whole sequence (0: off)");
  app.add_option("--max-tiles", a.max_tiles, "Most tiles in gundam mode (default from the model: 9)");
  app.add_option("--batch-size", a.batch_size, "Pages decoded together")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--max-pixels", a.max_pixels, "Refuse larger images before decoding them")->capture_default_str();
  app.add_flag("--no-verify", a.no_verify, "Skip the sha256 check of the model files at load");
  app.add_option("--temperature", a.temperature, "Sampling temperature (0: greedy)")->capture_default_str();
  app.add_option("--top-p", a.top_p, "Nucleus for sampling")->capture_default_str();
  app.add_option("--seed", a.seed, "Sampling seed (same seed, same output on the same device)")->capture_default_str();
  app.add_flag("--no-retry", a.no_retry, "Do not retry pages that loop or hit the token cap");
  app.add_option("--blank-tolerance", a.blank_tolerance,
                 "A page whose pixels all lie within this of the mean is blank (skipped, finish 'blank')")->capture_default_str();
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error, off")->capture_default_str();
  app.add_flag("-v,--verbose", verbose, "Same as --log-level info");

  auto* tok = app.add_subcommand("tokenize", "Text lines on stdin -> one JSON array of ids per line");
  tok->add_option("--model", model_dir, "Model folder (with tokenizer.json)");
  auto* detok = app.add_subcommand("detokenize", "JSON id arrays on stdin -> one JSON string per line");
  detok->add_option("--model", model_dir, "Model folder (with tokenizer.json)");
  bool skip_special = false;
  detok->add_flag("--skip-special", skip_special, "Drop special tokens");

  ocr::ParityOptions parity;
  auto* par = app.add_subcommand("parity", "Check the engine against a parity fixture (exit 1 beyond its tolerances)");
  par->add_option("fixture", parity.fixture_dir, "Fixture folder (cases.json, config.json, model.safetensors)")->required();
  par->add_option("--model", parity.model_dir, "Use this exported model instead of exporting the fixture (fp32)");
  par->add_option("--device", parity.device, "cpu, cuda or cuda:N")->capture_default_str();
  par->add_option("--json", parity.json_path, "Also write the report as JSON");
  par->add_option("--tolerance-scale", parity.tolerance_scale,
                  "Multiply every tolerance (only for reduced-precision runs; reported)")->capture_default_str();

  ocr::BenchOptions bench;
  auto* ben = app.add_subcommand("bench", "Speed figures as JSON, each beside its measured ceiling");
  ben->add_option("--model", bench.model_dir, "Exported model folder")->required();
  ben->add_option("--device", bench.device, "cuda, cuda:N or cpu")->capture_default_str();
  ben->add_option("--decode-tokens", bench.decode_tokens, "Batch-1 decode steps")->capture_default_str();
  ben->add_option("--pages", bench.pages, "Concurrent pages for throughput")->capture_default_str();
  ben->add_option("--tokens-per-page", bench.tokens_per_page, "Generated tokens per page")->capture_default_str();
  ben->add_option("--encoder-pages", bench.encoder_pages, "Pages per mode for the encoder figure")->capture_default_str();
  ben->add_flag("--skip-throughput", bench.skip_throughput, "Skip the many-pages throughput run");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? ocr::kExitOk : ocr::kExitUsage;
  }
  spdlog::set_level(verbose ? spdlog::level::info : spdlog::level::from_str(log_level));
  a.ngram_given = ngram_opt->count() > 0 || window_opt->count() > 0;
  if (!a.pages.empty()) {
    try {
      ocr::check_page_ranges(a.pages);
    } catch (const std::invalid_argument& e) {
      std::cerr << "ocr-cli: error: --pages: " << e.what() << "\n";
      return ocr::kExitUsage;
    }
  }
  try {
    if (tok->parsed()) return ocr::cli::run_tokenize(tokenizer_path(model_dir), std::cin, std::cout);
    if (detok->parsed())
      return ocr::cli::run_detokenize(tokenizer_path(model_dir), skip_special, std::cin, std::cout);
    if (ben->parsed()) return ocr::run_bench(bench, std::cout);
    if (par->parsed()) return ocr::run_parity(parity, std::cout) == 0 ? ocr::kExitOk : ocr::kExitFatal;
    try {
      shard_of(a.shard);
    } catch (const std::invalid_argument& e) {
      std::cerr << "ocr-cli: error: " << e.what() << "\n";
      return ocr::kExitUsage;
    }
    if (a.inputs.empty() && a.files_from.empty()) {
      std::cerr << app.help() << "\nocr-cli: error: no input given\n";
      return ocr::kExitUsage;
    }
    return run_ocr(a, model_dir);
  } catch (const ocr::ModelError& e) {
    std::cerr << "ocr-cli: error: " << e.what() << "\n";
    return ocr::kExitFatal;
  } catch (const std::exception& e) {
    std::cerr << "ocr-cli: error: " << e.what() << "\n";
    return ocr::kExitFatal;
  }
}
