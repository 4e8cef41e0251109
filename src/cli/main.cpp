// ocr-cli: thin front end. Parses options, builds the engine, streams results to stdout.
#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <filesystem>
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

namespace fs = std::filesystem;

namespace {

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
};

// The pages still to read from one input: an image (one page) or a PDF (rendered on demand).
struct Source {
  std::string name;
  std::vector<uint8_t> bytes;
  std::unique_ptr<ocr::PdfDocument> pdf;
  std::vector<int> pages;  // 0-based page indices still to do (PDF)
  size_t next = 0;
  bool image_done = false;
};

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
  int n_failed = 0;
  bool first_output = true;
  // Official defaults per input kind (spec 6.1): 30/90 for images, 20/50 for PDF pages.
  ocr::DecodingOptions dec_pdf = dec;
  if (!a.no_ngram && !a.ngram_given) {
    dec_pdf.ngram = 20;
    dec_pdf.ngram_window = 50;
  }
  size_t input = 0;
  std::unique_ptr<Source> src;
  auto next_page = [&](ocr::PageInput& page, std::string& name) -> bool {
    // Fills the next page of the inputs; false when all are done. Bad inputs are reported here.
    while (true) {
      if (!src) {
        if (input >= a.inputs.size()) return false;
        src = std::make_unique<Source>();
        const std::string& path = a.inputs[input++];
        src->name = path == "-" ? std::string("stdin") : path;
        try {
          src->bytes = ocr::read_file_bytes(path);
          if (ocr::looks_like_pdf(src->bytes)) {
            src->pdf = std::make_unique<ocr::PdfDocument>(ocr::PdfDocument::open(src->bytes, src->name, a.password));
            src->bytes.clear();
            std::vector<int> all;
            if (a.pages.empty()) {
              for (int i = 0; i < src->pdf->page_count(); ++i) all.push_back(i);
            } else {
              try {
                all = ocr::parse_page_ranges(a.pages, src->pdf->page_count());
              } catch (const std::invalid_argument& e) {
                throw ocr::InputError(src->name + ": " + e.what());
              }
            }
            src->pages = std::move(all);
          }
        } catch (const ocr::InputError& e) {
          std::cerr << "ocr-cli: error: " << e.what() << "\n";
          ++n_failed;
          src.reset();
          continue;
        }
      }
      try {
        if (src->pdf) {
          if (src->next >= src->pages.size()) {
            src.reset();
            continue;
          }
          const int index = src->pages[src->next++];
          name = src->name + " page " + std::to_string(index + 1);
          page.image = src->pdf->render_page(index, a.dpi, a.max_pixels);
          page.decoding = dec_pdf;
        } else {
          if (src->image_done) {
            src.reset();
            continue;
          }
          src->image_done = true;
          name = src->name;
          page.image = ocr::decode_image(src->bytes, src->name, decode_opts);
          page.decoding = dec;
        }
      } catch (const ocr::InputError& e) {
        std::cerr << "ocr-cli: error: " << e.what() << "\n";
        ++n_failed;
        continue;
      }
      page.mode = a.mode;
      page.prompt = prompt;
      page.tiling = tiling;
      return true;
    }
  };
  while (true) {
    std::vector<ocr::PageInput> batch;
    std::vector<std::string> names;
    while (batch.size() < static_cast<size_t>(a.batch_size)) {
      ocr::PageInput page;
      std::string name;
      if (!next_page(page, name)) break;
      batch.push_back(std::move(page));
      names.push_back(name);
    }
    if (batch.empty()) break;
    std::vector<ocr::ProcessedPage> results;
    try {
      results = ocr::run_pages(engine, batch, policy, [&](size_t i, const std::string& line) {
        spdlog::warn("{}: {}", names[i], line);
      });
    } catch (const ocr::InputError& e) {
      std::cerr << "ocr-cli: error: " << e.what() << "\n";
      n_failed += static_cast<int>(batch.size());
      continue;
    }
    for (size_t i = 0; i < results.size(); ++i) {
      const auto& r = results[i].output;
      spdlog::info("{}: {} image tokens ({}x{} tiles), {} tokens generated, finish {}, encode {:.0f} ms, "
                   "prefill {:.0f} ms, decode {:.0f} ms",
                   names[i], r.n_image_tokens, r.tiles_w, r.tiles_h, r.tokens.size(), r.finish_reason,
                   r.encode_ms, r.prefill_ms, r.decode_ms);
      if (!first_output) std::cout << "\n<--- Page Split --->\n";
      first_output = false;
      std::cout << (a.raw ? r.text : ocr::clean_markdown(r.text, eos_text, {})) << "\n";
      if (results[i].failed()) {
        // Never silent: the page stays in the output, marked, and the run exits 3.
        const auto at = names[i].rfind(" page ");
        const std::string page_no = at == std::string::npos ? "1" : names[i].substr(at + 6);
        std::cout << "<!-- ocr-cli: page " << page_no << " failed: " << r.finish_reason << " -->\n";
        std::cerr << "ocr-cli: error: " << names[i] << ": failed: " << r.finish_reason << " after "
                  << results[i].attempts.size() << " attempt(s)\n";
        ++n_failed;
      }
      std::cout.flush();
    }
  }
  return n_failed > 0 ? ocr::kExitPageFailed : ocr::kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
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
  app.add_option("inputs", a.inputs, "Image or PDF files, or - for stdin");
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
    if (a.inputs.empty()) {
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
