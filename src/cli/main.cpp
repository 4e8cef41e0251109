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
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>
#include <optional>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/page_queue.h"
#include "engine/bench.h"
#include "engine/parity.h"
#include "engine/prompt.h"
#include "engine/retry.h"
#include "ocr/engine.h"
#include "ocr/errors.h"
#include "ocr/image_io.h"
#include "ocr/pdf.h"
#include "postprocess/grounding.h"
#include "writers/formats.h"
#include "writers/output.h"

namespace fs = std::filesystem;

namespace {

std::atomic<bool> g_interrupted{false};
extern "C" void on_signal(int) { g_interrupted.store(true); }

constexpr const char* kExitCodes =
    "Exit codes: 0 every page succeeded; 1 fatal error (model, device, output folder unwritable\n"
    "            or full: finished files are kept); 2 usage error; 3 some inputs or pages failed\n"
    "            (the others were processed); 130 interrupted.";

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
  int batch_size = 0;        // pages decoded at once; 0: from GPU memory (CUDA), 1 on CPU
  std::string max_gpu_memory;  // e.g. 22GiB
  std::string devices;       // --devices 0,1
  int io_threads = 0;        // CPU threads that open, render and preprocess documents
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
  std::string format = "md"; // md, text, json or jsonl (src/writers/formats.h)
  bool draw_boxes = false;   // layout overlays under -o DIR
  bool force = false;        // redo inputs whose output exists
  bool quiet = false;
  std::string files_from;    // read more inputs from this file ("-": stdin), one per line
  bool null_separated = false;  // -0: --files-from is NUL-separated (find -print0)
  std::string shard;         // "i/N": keep every N-th input starting at i
  bool dry_run = false;      // list the inputs and what would happen to each; no model is loaded
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

// "22GiB", "500MiB", "8G", "1e9" -> bytes; throws std::invalid_argument.
int64_t parse_bytes(const std::string& text) {
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(text, &used);
  } catch (const std::exception&) {
    throw std::invalid_argument("expected a size such as 22GiB, got \"" + text + "\"");
  }
  std::string unit = text.substr(used);
  for (auto& c : unit) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  double mul = 1;
  if (unit == "" || unit == "b") mul = 1;
  else if (unit == "k" || unit == "kib" || unit == "kb") mul = 1024.0;
  else if (unit == "m" || unit == "mib" || unit == "mb") mul = 1024.0 * 1024;
  else if (unit == "g" || unit == "gib" || unit == "gb") mul = 1024.0 * 1024 * 1024;
  else if (unit == "t" || unit == "tib" || unit == "tb") mul = 1024.0 * 1024 * 1024 * 1024;
  else throw std::invalid_argument("unknown size unit \"" + unit + "\" in \"" + text + "\" (use B, KiB, MiB, GiB)");
  if (!(v > 0)) throw std::invalid_argument("size must be positive, got \"" + text + "\"");
  return static_cast<int64_t>(v * mul);
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


// The inputs of this run in their stable order: arguments and --files-from expanded (folders
// walked), outputs that two inputs share marked, then this shard's share.
std::vector<ocr::InputFile> collect_inputs(const OcrArgs& a, const std::string& ext,
                                           std::vector<std::string>& walk_errors) {
  std::vector<std::string> args = a.inputs;
  if (!a.files_from.empty()) {
    const auto more = read_list(a.files_from, a.null_separated);
    args.insert(args.end(), more.begin(), more.end());
  }
  auto files = ocr::expand_inputs(args, walk_errors);
  if (!a.out_dir.empty()) ocr::mark_output_conflicts(files, a.out_dir, ext);  // before sharding: all shards agree
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
  return files;
}

// --dry-run: one line per input on stdout, "todo|done|conflict<TAB>input[<TAB>output]" (control
// characters escaped), counts on stderr. Nothing is read, written or loaded.
int run_plan(const OcrArgs& a) {
  const std::string ext = ocr::output_extension(ocr::parse_output_format(a.format));
  std::vector<std::string> walk_errors;
  const auto files = collect_inputs(a, ext, walk_errors);
  for (const auto& e : walk_errors) std::cerr << "ocr-cli: error: " << ocr::one_line(e) << "\n";
  size_t n_todo = 0, n_done = 0, n_conflict = 0;
  for (const auto& file : files) {
    std::string status = "todo", line = ocr::one_line(file.path == "-" ? std::string("stdin") : file.path);
    if (!a.out_dir.empty()) {
      const std::string out = ocr::output_path(a.out_dir, file.relative, ext);
      if (!file.conflict.empty()) status = "conflict";
      else if (!a.force && ocr::path_exists(out)) status = "done";
      line += "\t" + ocr::one_line(out);
    }
    (status == "todo" ? n_todo : status == "done" ? n_done : n_conflict)++;
    std::cout << status << '\t' << line << '\n';
  }
  std::cout.flush();
  if (!a.quiet)
    std::cerr << "ocr-cli: dry run: " << files.size() << " inputs, " << n_todo << " to do, " << n_done << " done, "
              << n_conflict << " conflicting, " << walk_errors.size() << " unreadable folders\n";
  return walk_errors.empty() && n_conflict == 0 ? ocr::kExitOk : ocr::kExitPageFailed;
}

int run_ocr(const OcrArgs& a, const std::string& model_dir) {
  std::string prompt = a.prompt;
  try {
    if (prompt.empty()) prompt = ocr::task_prompt(a.task, a.ref);
  } catch (const std::invalid_argument& e) {
    std::cerr << "ocr-cli: error: " << ocr::one_line(e.what()) << "\n";
    return ocr::kExitUsage;
  }
  if (prompt.find("<image>") == std::string::npos) {
    std::cerr << "ocr-cli: error: --prompt must contain <image>\n";
    return ocr::kExitUsage;
  }
  // An unwritable -o fails now, not after the model has loaded and the first page is done.
  if (!a.out_dir.empty()) ocr::prepare_output_dir(a.out_dir);
  ocr::EngineOptions eo;
  eo.model_dir = model_dir;
  eo.device = a.device;
  eo.threads = a.threads;
  eo.verify_checksums = !a.no_verify;
  eo.max_batch = a.batch_size;
  eo.log = [](const std::string& line) { spdlog::warn("{}", line); };
  if (!a.max_gpu_memory.empty()) {
    try {
      eo.max_gpu_memory = parse_bytes(a.max_gpu_memory);
    } catch (const std::invalid_argument& e) {
      std::cerr << "ocr-cli: error: --max-gpu-memory: " << e.what() << "\n";
      return ocr::kExitUsage;
    }
  }
  // One engine per device (--devices 0,1: data-parallel over those GPUs in this process).
  std::vector<std::string> devices{a.device};
  if (!a.devices.empty()) {
    devices.clear();
    std::stringstream list(a.devices);
    for (std::string item; std::getline(list, item, ',');) {
      if (item.empty() || item.find_first_not_of("0123456789") != std::string::npos) {
        std::cerr << "ocr-cli: error: --devices: expected GPU numbers such as 0,1, got \"" << a.devices << "\"\n";
        return ocr::kExitUsage;
      }
      devices.push_back("cuda:" + item);
    }
  }
  // Models load on every device at once (each load reads and checks the files itself).
  std::vector<std::unique_ptr<ocr::Engine>> engines(devices.size());
  {
    std::vector<std::exception_ptr> load_errors(devices.size());
    std::vector<std::thread> loaders;
    for (size_t i = 0; i < devices.size(); ++i)
      loaders.emplace_back([&, i] {
        try {
          ocr::EngineOptions o = eo;
          o.device = devices[i];
          engines[i] = std::make_unique<ocr::Engine>(o);
        } catch (...) {
          load_errors[i] = std::current_exception();
        }
      });
    for (auto& t : loaders) t.join();
    for (auto& e : load_errors)
      if (e) std::rethrow_exception(e);
  }
  for (size_t i = 0; i < devices.size(); ++i) {
    engines[i]->set_cancel_flag(&g_interrupted);
    spdlog::info("{}: {} pages at once (KV-cache slots of {} positions)", devices[i], engines[i]->stream_slots(),
                 engines[i]->stream_max_len());
  }
  ocr::Engine& engine = *engines[0];
  const int io_threads = a.io_threads > 0 ? a.io_threads
                                          : std::clamp(static_cast<int>(std::thread::hardware_concurrency()) / 2, 1, 8);
  try {
    ocr::find_mode(engine.modes(), a.mode);
  } catch (const std::invalid_argument& e) {
    std::cerr << "ocr-cli: error: " << ocr::one_line(e.what()) << "\n";
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
  ocr::DocumentOptions doc_options;
  doc_options.format = ocr::parse_output_format(a.format);
  doc_options.raw = a.raw;
  doc_options.draw_boxes = a.draw_boxes;
  doc_options.eos_text = eos_text;
  const std::string ext = ocr::output_extension(doc_options.format);
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
      try {
        ocr::append_line(failed_log, j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
      } catch (const ocr::InputError& e) {  // the failure itself was reported on stderr already
        std::cerr << "ocr-cli: warning: " << ocr::one_line(e.what()) << "\n";
      }
    }
  };
  bool output_full = false;  // the output file system is full or read-only: the batch stops
  auto write_failed = [&](const std::string& input, const ocr::InputError& e) {
    std::cerr << "ocr-cli: error: " << ocr::one_line(e.what()) << "\n";
    fail(input, 0, e.what());
    const auto* w = dynamic_cast<const ocr::WriteError*>(&e);
    if (w && w->device_full()) output_full = true;
  };

  std::vector<std::string> walk_errors;
  auto files = collect_inputs(a, ext, walk_errors);
  for (const auto& e : walk_errors) {
    std::cerr << "ocr-cli: error: " << ocr::one_line(e) << "\n";
    fail(e.substr(0, e.find(':')), 0, e);
  }
  // The pipeline: CPU threads (--io-threads) open, render and preprocess documents in input order
  // and queue their pages; the engines (one per device) pull pages as KV-cache slots free up
  // (continuous batching); each finished page goes through the retry ladder if it failed, then to
  // its document, which is written (atomically, figures first) once its last page is done.
  struct DocState {
    std::string name, out_path;
    bool paged = false, unreadable = false, opened = false, enumerated = false, finished = false;
    int pending = 0;  // pages queued or running
    std::optional<ocr::OutputClaim> claim;
    std::unique_ptr<ocr::DocumentWriter> writer;
    std::map<int, ocr::DocumentPage> ready;  // finished pages waiting for their turn (page order)
    std::map<int, std::unique_ptr<ocr::ProcessedPage>> results;
    std::map<int, ocr::ImageU8> images;     // the page as the model read it (crops, overlays)
    std::vector<int> order;                 // page numbers in the order they are written
    size_t next_out = 0;                    // index in `order` of the next page to add
    std::string stdout_text;                // stdout: text not printed yet (documents print in order)
    std::unique_ptr<ocr::PdfDocument> pdf;
  };
  struct PageJob {
    size_t doc = 0;
    int page_no = 1;
    double width_pt = 0, height_pt = 0;
    ocr::PageInput first;                   // the first attempt (the ladder starts from it)
    std::vector<ocr::PageInput> ladder;
    size_t rung = 0;
    std::unique_ptr<ocr::ProcessedPage> result = std::make_unique<ocr::ProcessedPage>();
  };
  std::vector<DocState> docs(files.size());
  std::mutex mu;                            // docs, jobs, counters, progress, stdout/stderr lines
  std::map<uint64_t, std::unique_ptr<PageJob>> jobs;
  uint64_t next_tag = 0;
  size_t next_print = 0;                    // stdout: the document printing now
  bool interrupted = false;
  std::atomic<bool> stop{false};
  Progress progress(files.size(), a.quiet, a.progress_every);
  size_t files_done = 0;
  const int64_t total_slots = [&] {
    int64_t n = 0;
    for (const auto& e : engines) n += e->stream_slots();
    return n;
  }();
  ocr::cli::PageQueue queue(static_cast<size_t>(std::max<int64_t>(8, 2 * total_slots)), &g_interrupted);
  auto err_line = [&](const std::string& text) { std::cerr << "ocr-cli: error: " << ocr::one_line(text) << "\n"; };

  // Adds the pages that are next in order to the document's writer (under mu).
  auto drain_pages = [&](DocState& d) {
    while (d.writer && d.next_out < d.order.size()) {
      auto it = d.ready.find(d.order[d.next_out]);
      if (it == d.ready.end()) break;
      d.stdout_text += d.writer->add_page(it->second, first_output);
      if (!to_dir) first_output = false;
      d.results.erase(it->first);
      d.images.erase(it->first);
      d.ready.erase(it);
      ++d.next_out;
    }
  };
  // stdout: documents print in input order, each page as soon as it and the pages before it are
  // done (under mu).
  auto flush_stdout = [&] {
    while (!to_dir && next_print < docs.size()) {
      DocState& d = docs[next_print];
      drain_pages(d);
      if (!d.stdout_text.empty()) {
        std::cout << d.stdout_text;
        std::cout.flush();
        d.stdout_text.clear();
      }
      if (!d.finished) break;
      if (d.writer && !stop.load()) {
        std::cout << d.writer->finish();  // json: the document; other formats were printed page by page
        std::cout.flush();
      }
      d.writer.reset();
      ++next_print;
    }
  };
  // A document whose pages are all done: written under -o (its claim released), printed in turn
  // on stdout (under mu).
  auto finish_doc = [&](size_t di) {
    DocState& d = docs[di];
    if (d.finished || !d.enumerated || d.pending > 0) return;
    d.finished = true;
    ++files_done;
    if (to_dir && d.opened && !stop.load()) {
      drain_pages(d);
      if (!d.unreadable) {
        try {
          d.writer->finish();  // figures and overlays first, the main file last
        } catch (const ocr::InputError& e) {
          err_line(e.what());
          fail(d.name, 0, e.what());
          const auto* w = dynamic_cast<const ocr::WriteError*>(&e);
          if (w && w->device_full()) {
            output_full = true;
            stop.store(true);
            queue.close();
          }
        }
      }
    }
    if (to_dir) d.writer.reset();
    d.pdf.reset();
    d.claim.reset();
    flush_stdout();
    progress.update(files_done, n_pages, n_tokens, n_failed);
  };

  // A page the engine finished: retry ladder, or into its document.
  auto complete = [&](uint64_t tag, ocr::PageOutput&& out, bool from_engine) {
    std::lock_guard<std::mutex> lock(mu);
    PageJob& job = *jobs.at(tag);
    DocState& d = docs[job.doc];
    const std::string label = d.paged ? d.name + " page " + std::to_string(job.page_no) : d.name;
    ocr::ProcessedPage& r = *job.result;
    const ocr::PageInput& ran = job.rung == 0 ? job.first : job.ladder[job.rung - 1];
    if (out.finish_reason == "error") {  // the page cannot run at all (e.g. out of memory alone)
      err_line(label + ": " + out.error);
      fail(d.name, job.page_no, out.error);
      d.unreadable = true;
    } else {
      if (out.finish_reason != "blank") r.attempts.push_back(ocr::attempt_of(ran, out));
      r.output = std::move(out);
      if (r.failed() && policy.retry) {
        if (job.rung == 0) job.ladder = ocr::retry_ladder(job.first, engines[0]->modes(), policy);
        if (job.rung < job.ladder.size()) {
          ocr::PageInput next = job.ladder[job.rung++];
          spdlog::warn("{}: finish {}; retry {}/{} with {}", label, r.output.finish_reason, job.rung,
                       job.ladder.size(), ocr::describe_attempt(next));
          next.views.reset();
          queue.push_front(std::move(next), tag);
          queue.page_finished();
          return;
        }
      }
      const auto& o = r.output;
      ++n_pages;
      n_tokens += static_cast<int64_t>(o.tokens.size());
      spdlog::info("{}: {} image tokens ({}x{} tiles), {} tokens generated, finish {}, encode {:.0f} ms, "
                   "prefill {:.0f} ms, decode {:.0f} ms",
                   label, o.n_image_tokens, o.tiles_w, o.tiles_h, o.tokens.size(), o.finish_reason, o.encode_ms,
                   o.prefill_ms, o.decode_ms);
      if (r.failed()) {
        // Never silent: the page stays in the output, marked there, and the run exits 3.
        err_line(label + ": failed: " + o.finish_reason + " after " + std::to_string(r.attempts.size()) + " attempt(s)");
        fail(d.name, job.page_no, o.finish_reason);
      }
      ocr::DocumentPage page;
      page.page = job.page_no;
      page.width_pt = job.width_pt;
      page.height_pt = job.height_pt;
      page.dpi = job.width_pt > 0 ? a.dpi : 0;
      d.results[job.page_no] = std::move(job.result);
      page.result = d.results[job.page_no].get();
      page.image = &d.images[job.page_no];
      d.ready[job.page_no] = page;
      if (to_dir) drain_pages(d);  // stdout: in document order, by flush_stdout
      flush_stdout();
    }
    --d.pending;
    const size_t di = job.doc;
    jobs.erase(tag);
    if (from_engine) queue.page_finished();
    finish_doc(di);
    progress.update(files_done, n_pages, n_tokens, n_failed);
  };

  // CPU side: opens document k, renders/decodes and preprocesses its pages, queues them.
  auto produce = [&](size_t k) {
    const ocr::InputFile& file = files[k];
    DocState& d = docs[k];
    const std::string name = file.path == "-" ? std::string("stdin") : file.path;
    const std::string out_path = to_dir ? ocr::output_path(a.out_dir, file.relative, ext) : std::string();
    auto skip_doc = [&] {
      std::lock_guard<std::mutex> lock(mu);
      d.name = name;
      d.enumerated = true;
      finish_doc(k);
    };
    if (!file.conflict.empty()) {
      const std::string why = name + ": its output " + out_path + " is also the output of " + file.conflict + "; rename one";
      {
        std::lock_guard<std::mutex> lock(mu);
        err_line(why);
        fail(name, 0, why);
      }
      return skip_doc();
    }
    if (to_dir && !a.force && ocr::path_exists(out_path)) {
      spdlog::info("{}: already done ({}), skipped; --force redoes it", name, out_path);
      {
        std::lock_guard<std::mutex> lock(mu);
        ++n_skipped;
      }
      return skip_doc();
    }
    // Another process on the same -o (a double run, overlapping shards) may hold this output.
    std::optional<ocr::OutputClaim> claim;
    if (to_dir) {
      try {
        claim.emplace(ocr::OutputClaim::take(a.out_dir, out_path, a.force));
      } catch (const ocr::InputError& e) {
        {
          std::lock_guard<std::mutex> lock(mu);
          write_failed(name, e);
          if (output_full) {
            stop.store(true);
            queue.close();
          }
        }
        return skip_doc();
      }
      if (claim->state() != ocr::OutputClaim::State::kHeld) {
        spdlog::info("{}: {}, skipped", name, claim->state() == ocr::OutputClaim::State::kBusy
                                                  ? "being processed by another process"
                                                  : "done by another process");
        {
          std::lock_guard<std::mutex> lock(mu);
          ++n_skipped;
        }
        return skip_doc();
      }
    }
    // Open the document: one image, the pages of a multi-page TIFF, or the selected pages of a PDF.
    std::vector<uint8_t> bytes;
    std::unique_ptr<ocr::PdfDocument> pdf;
    std::vector<int> pages{0};
    bool paged = false;
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
      } else if (const int n_image_pages = ocr::count_image_pages(bytes, name); n_image_pages > 1) {
        // A multi-page TIFF is a document like a PDF (--pages applies); other images have one page.
        paged = true;
        pages.clear();
        try {
          pages = a.pages.empty() ? std::vector<int>() : ocr::parse_page_ranges(a.pages, n_image_pages);
        } catch (const std::invalid_argument& e) {
          throw ocr::InputError(name + ": " + e.what());
        }
        for (int i = 0; a.pages.empty() && i < n_image_pages; ++i) pages.push_back(i);
      }
    } catch (const ocr::InputError& e) {
      {
        std::lock_guard<std::mutex> lock(mu);
        err_line(e.what());
        fail(name, 0, e.what());
      }
      return skip_doc();
    }
    if (pdf) paged = true;
    {
      std::lock_guard<std::mutex> lock(mu);
      ++n_docs;
      d.name = name;
      d.out_path = out_path;
      d.paged = paged;
      d.opened = true;
      if (claim) d.claim.emplace(std::move(*claim));
      ocr::DocumentOptions this_doc = doc_options;
      this_doc.paged = paged;
      d.writer = std::make_unique<ocr::DocumentWriter>(this_doc, name, out_path);
    }
    for (int p : pages) {
      if (stop.load() || g_interrupted.load()) break;
      ocr::ImageU8 image;
      try {
        image = pdf ? pdf->render_page(p, a.dpi, a.max_pixels) : ocr::decode_image_page(bytes, p, name, decode_opts);
      } catch (const ocr::InputError& e) {
        std::lock_guard<std::mutex> lock(mu);
        err_line(e.what());
        fail(name, p + 1, e.what());
        d.unreadable = true;
        continue;
      }
      auto job = std::make_unique<PageJob>();
      job->doc = k;
      job->page_no = p + 1;
      if (pdf) {
        job->width_pt = pdf->page_width_points(p);
        job->height_pt = pdf->page_height_points(p);
      }
      job->first.decoding = pdf ? dec_pdf : dec;
      job->first.mode = a.mode;
      job->first.prompt = prompt;
      job->first.tiling = tiling;
      const bool blank = ocr::is_near_uniform(image, policy.blank_tolerance);
      ocr::PageInput input;
      if (!blank) {
        job->first.image = image;
        try {
          input = job->first;
          ocr::prepare_views(input, engines[0]->modes());  // the CPU-heavy part, here on this thread
        } catch (const ocr::InputError& e) {
          std::lock_guard<std::mutex> lock(mu);
          err_line(name + ": " + e.what());
          fail(name, p + 1, e.what());
          d.unreadable = true;
          continue;
        }
        input.image = ocr::ImageU8();
      }
      uint64_t tag = 0;
      {
        std::lock_guard<std::mutex> lock(mu);
        tag = next_tag++;
        d.images[p + 1] = std::move(image);
        d.order.push_back(p + 1);
        ++d.pending;
        jobs[tag] = std::move(job);
      }
      if (blank) {  // nothing to read: no hallucinated loop, no model call
        spdlog::info("{}: blank page (near-uniform pixels): empty output", paged ? name + " page " + std::to_string(p + 1) : name);
        ocr::PageOutput out;
        out.finish_reason = "blank";
        complete(tag, std::move(out), /*from_engine=*/false);
        continue;
      }
      if (!queue.push(std::move(input), tag)) break;  // closed: stopping
    }
    std::lock_guard<std::mutex> lock(mu);
    d.pdf = std::move(pdf);
    d.enumerated = true;
    finish_doc(k);
  };

  // Run: producers on CPU threads, one engine per device (this thread drives the first).
  std::atomic<size_t> next_file{0};
  std::atomic<int> producers_left{io_threads};
  std::vector<std::thread> producers;
  for (int t = 0; t < io_threads; ++t)
    producers.emplace_back([&] {
      for (size_t k; !stop.load() && !g_interrupted.load() && (k = next_file++) < files.size();) produce(k);
      if (--producers_left == 0) queue.producers_done();
    });
  std::exception_ptr engine_error;
  std::vector<int64_t> pages_per_engine(engines.size(), 0);
  auto drive = [&](size_t i) {
    ocr::Engine& e = *engines[i];
    try {
      e.run_stream(queue, [&](uint64_t tag, ocr::PageOutput&& out) {
        ++pages_per_engine[i];
        complete(tag, std::move(out), true);
      });
    } catch (const ocr::Interrupted&) {
      stop.store(true);
      queue.close();
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu);
      if (!engine_error) engine_error = std::current_exception();
      stop.store(true);
      queue.close();
    }
  };
  std::vector<std::thread> others;
  for (size_t i = 1; i < engines.size(); ++i) others.emplace_back([&, i] { drive(i); });
  drive(0);
  for (auto& t : others) t.join();
  for (size_t i = 0; i < engines.size() && engines.size() > 1; ++i)
    spdlog::info("{}: {} page attempts", devices[i], pages_per_engine[i]);
  if (g_interrupted.load()) stop.store(true);
  queue.close();
  for (auto& t : producers) t.join();
  if (engine_error) std::rethrow_exception(engine_error);
  {
    std::lock_guard<std::mutex> lock(mu);
    flush_stdout();
  }
  interrupted = g_interrupted.load();
  if (g_interrupted.load()) interrupted = true;
  progress.update(files_done, n_pages, n_tokens, n_failed, /*force=*/files.size() > 1 && !interrupted);
  progress.finish();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  if (!a.quiet && (to_dir || files.size() > 1))
    std::cerr << "ocr-cli: " << n_docs << " files, " << n_pages << " pages, " << n_failed << " failed, " << n_skipped
              << " skipped (done), " << (secs > 0 ? n_pages / secs : 0) << " pages/s, "
              << (secs > 0 ? n_tokens / secs : 0) << " tokens/s\n";
  if (output_full) {
    std::cerr << "ocr-cli: stopped: the output file system is full or read-only; finished files are kept, "
                 "a rerun resumes\n";
    return ocr::kExitFatal;
  }
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
               "  ocr-cli doc.pdf --model DIR --pages 1-3         PDF pages rendered at 144 dpi\n"
               "  ocr-cli scans/ -o out --format json --draw-boxes  a tree of files: out/a/b.json,\n"
               "                                                  figures in out/a/b_images/, overlays in out/a/b_boxes/\n"
               "Inputs: PNG, JPEG, TIFF (every page of a multi-page TIFF, --pages applies), BMP, WebP, PDF."};
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
  app.add_flag("--raw", a.raw, "Keep the raw model output (grounding tags) in md, jsonl and json's markdown");
  auto* ngram_opt = app.add_option("--ngram", a.ngram, "Windowed n-gram blocker: n (official defaults: 30 images, 20 PDF pages)");
  auto* window_opt = app.add_option("--ngram-window", a.ngram_window, "Windowed n-gram blocker: window (90 images, 50 PDF pages)");
  app.add_option("--dpi", a.dpi, "PDF rendering resolution")->capture_default_str()->check(CLI::Range(1.0, 10000.0));
  app.add_option("--pages", a.pages, "Pages of PDFs and multi-page TIFFs, e.g. 1-3,7,10- (default: all)");
  app.add_option("--password", a.password, "Password of encrypted PDFs");
  app.add_option("-o,--output", a.out_dir, "Write one file per input here, mirroring the input folders; "
                 "finished files are skipped on rerun (resume); failures go to DIR/_failed.jsonl");
  app.add_option("--format", a.format,
                 "md: cleaned markdown (figures saved and linked under -o); text: plain text, pages "
                 "separated by form feeds; json: one document per input, blocks with label, text and "
                 "boxes in pixels (and PDF points); jsonl: one record per page")
      ->capture_default_str()->check(CLI::IsMember({"md", "text", "json", "jsonl"}));
  app.add_flag("--draw-boxes", a.draw_boxes, "With -o: also write each page with its layout boxes drawn "
               "to DIR/.../NAME_boxes/pN.jpg");
  app.add_flag("--force", a.force, "Redo inputs whose output file exists");
  app.add_flag("--dry-run", a.dry_run, "List the inputs (folders walked, --shard applied) and, with -o, whether "
               "each is todo, done or conflicting; loads no model, writes nothing");
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
  app.add_option("--batch-size", a.batch_size, "Pages decoded at once (continuous batching; 0: as many as GPU "
                 "memory allows, at most 256; 1 on CPU)")->capture_default_str()->check(CLI::NonNegativeNumber);
  app.add_option("--max-gpu-memory", a.max_gpu_memory, "GPU memory budget for weights, KV cache and work space, "
                 "e.g. 22GiB (default: the free memory); the batch is sized to fit");
  app.add_option("--devices", a.devices, "GPUs to run on together, e.g. 0,1 (one engine each, pages shared)");
  app.add_option("--io-threads", a.io_threads, "CPU threads that read, render and preprocess inputs while the "
                 "model runs (0: half the cores, at most 8)")->capture_default_str();
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
  ben->add_flag("--engine-only", bench.engine_only, "Only the engine figures (continuous batching)");
  ben->add_option("--engine-pages", bench.engine_pages, "Pages of the engine throughput run (default --pages)");
  std::string bench_budget;
  ben->add_option("--max-gpu-memory", bench_budget, "Engine memory budget, e.g. 22GiB");

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
    if (ben->parsed()) {
      if (!bench_budget.empty()) {
        try {
          bench.max_gpu_memory = parse_bytes(bench_budget);
        } catch (const std::invalid_argument& e) {
          std::cerr << "ocr-cli: error: --max-gpu-memory: " << e.what() << "\n";
          return ocr::kExitUsage;
        }
      }
      return ocr::run_bench(bench, std::cout);
    }
    if (par->parsed()) return ocr::run_parity(parity, std::cout) == 0 ? ocr::kExitOk : ocr::kExitFatal;
    try {
      shard_of(a.shard);
    } catch (const std::invalid_argument& e) {
      std::cerr << "ocr-cli: error: " << ocr::one_line(e.what()) << "\n";
      return ocr::kExitUsage;
    }
    if (a.inputs.empty() && a.files_from.empty()) {
      std::cerr << app.help() << "\nocr-cli: error: no input given\n";
      return ocr::kExitUsage;
    }
    if (a.draw_boxes && a.out_dir.empty()) {
      std::cerr << "ocr-cli: error: --draw-boxes writes image files: give an output folder with -o DIR\n";
      return ocr::kExitUsage;
    }
    if (a.raw && a.format == "text") {
      std::cerr << "ocr-cli: error: --raw keeps the grounding tags, --format text removes them: choose one\n";
      return ocr::kExitUsage;
    }
    if (a.dry_run) return run_plan(a);
    return run_ocr(a, model_dir);
  } catch (const ocr::ModelError& e) {
    std::cerr << "ocr-cli: error: " << ocr::one_line(e.what()) << "\n";
    return ocr::kExitFatal;
  } catch (const std::exception& e) {
    std::cerr << "ocr-cli: error: " << ocr::one_line(e.what()) << "\n";
    return ocr::kExitFatal;
  }
}
