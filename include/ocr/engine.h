// The inference engine: page images in, generated text out. No torch headers here (pimpl).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "ocr/image.h"
#include "ocr/preprocess.h"
#include "ocr/tokenizer.h"

namespace ocr {

struct EngineOptions {
  std::string model_dir;         // exported model folder (manifest.json, encoder.pt, decoder.pt)
  std::string device = "cpu";    // "cpu", "cuda" or "cuda:N"
  bool verify_checksums = true;  // check encoder.pt/decoder.pt against manifest.json at load
  int threads = 0;               // CPU threads for torch; 0 keeps torch's default
  // Continuous batching (run_stream): pages decoded at once (KV-cache slots). 0: on CUDA as many as
  // max_gpu_memory allows (at most 256), on CPU 1.
  int max_batch = 0;
  // CUDA memory budget in bytes for weights, KV cache and work space (0: the device's free memory
  // at load). The caching allocator is capped to it, so the run never takes more.
  int64_t max_gpu_memory = 0;
  // Positions per KV-cache slot in run_stream (prompt + generated); 0: the model's maximum.
  int64_t max_seq_len = 0;
  // Warnings of the engine (out-of-memory recovery), one line each; none when empty.
  std::function<void(const std::string&)> log;
};

struct DecodingOptions {
  int max_new_tokens = 8192;      // also capped so that prompt + output fit the model's positions
  int no_repeat_ngram = 0;        // HF no_repeat_ngram_size over the whole sequence; 0 = off
  int ngram = 0;                  // vLLM-style windowed blocker over generated tokens; 0 = off
  int ngram_window = 0;           // its window (generated tokens)
  std::vector<int32_t> ngram_whitelist;  // ids the windowed blocker never bans
  double temperature = 0;         // 0: greedy (argmax, lowest id on ties)
  double top_p = 1;               // nucleus for sampling
  uint64_t seed = 0;              // sampling seed: the same seed gives the same output on a device
  bool stop_on_loop = true;       // stop a page whose output tail repeats (finish "repetition")
  bool ignore_eos = false;        // benchmarks: generate exactly max_new_tokens
};

struct PageInput {
  ImageU8 image;                  // the page, RGB
  std::string mode = "gundam";    // a mode of the model's manifest
  std::string prompt;             // must contain <image> exactly once
  DecodingOptions decoding;
  TilingOptions tiling;           // tile limits (crop modes)
  // Optional: the views of `image` for `mode`/`tiling`, made ahead (prepare_views) on a CPU thread
  // so the engine's thread only runs the model. The image may then be empty.
  std::shared_ptr<const Views> views;
};

// Makes page.views from page.image (thread-safe, no torch). Throws InputError for an unknown mode.
void prepare_views(PageInput& page, const std::vector<ModeSpec>& modes);

struct PageOutput {
  std::vector<int32_t> prompt_ids;
  std::vector<int32_t> tokens;    // generated ids, with the final EOS when one was produced
  std::string text;               // decoded with special tokens kept, trailing EOS removed
  std::string finish_reason;      // "stop" (EOS), "length" (token cap), "repetition" (looping
                                  // tail, see generate/loop_detect.h) or "blank" (set by callers)
  int64_t n_image_tokens = 0;
  int tiles_w = 1;
  int tiles_h = 1;
  double encode_ms = 0;
  double prefill_ms = 0;
  double decode_ms = 0;
  std::string error;              // run_stream: why the page could not run (finish_reason "error")
};

// Called from the decoding loop as tokens are produced: (page index or tag, token id).
using TokenCallback = std::function<void(uint64_t, int32_t)>;

// Pages for Engine::run_stream, pulled as KV-cache slots free up.
class PageSource {
 public:
  virtual ~PageSource() = default;
  // Fills `page` and its `tag` and returns true; returns false when no page is ready now
  // (wait == false), or, with wait == true, when no page will ever come (blocks until one does).
  virtual bool next(PageInput& page, uint64_t& tag, bool wait) = 0;
};

// Receives each finished page (any order) with the tag it was pulled with.
using PageDone = std::function<void(uint64_t tag, PageOutput&& output)>;

// What the last run()/run_stream() did (the benchmark reports it).
struct EngineStats {
  int64_t steps = 0;          // decoding steps
  int64_t rows = 0;           // sum over steps of the rows decoding (busy slots)
  int64_t padded_rows = 0;    // sum over steps of the rows computed (the CUDA graph's batch bucket)
  int64_t admissions = 0;     // encode + prefill groups
  int64_t graphs_captured = 0;
  double capture_ms = 0;      // host wall time of steps that captured a graph (warm-up included)
  double admit_ms = 0;        // host wall time in admission (waiting for encoded pages, prefill)
};

class Engine {
 public:
  // Loads the model; throws ocr::ModelError with an actionable message.
  explicit Engine(const EngineOptions& options);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Runs a batch of pages together (prefill and decoding batched); results in input order.
  // Throws ocr::InputError for a bad page (empty image, unknown mode, bad prompt).
  // The batch gets exactly one KV-cache slot per page, sized for its longest page.
  std::vector<PageOutput> run(const std::vector<PageInput>& pages, const TokenCallback& on_token = {});

  // Continuous batching: pages are pulled from `source` whenever a slot is free (encoded and
  // prefilled together), decoded together step by step, and handed to `done` as each finishes,
  // while the others go on. A page that cannot run (bad mode or prompt, out of memory even alone)
  // is handed back with finish_reason "error" and `error` set. Throws Interrupted (cancel flag),
  // ModelError (device failure).
  void run_stream(PageSource& source, const PageDone& done, const TokenCallback& on_token = {});

  // KV-cache slots run_stream uses (from max_batch / the memory budget) and their length.
  int64_t stream_slots() const;
  int64_t stream_max_len() const;
  // Counters of the last run (reset at the start of each run).
  EngineStats last_stats() const;

  // While *flag is true, run() stops at the next decoding step and throws ocr::Interrupted.
  void set_cancel_flag(const std::atomic<bool>* flag);

  const Tokenizer& tokenizer() const;
  const std::vector<ModeSpec>& modes() const;
  int32_t eos_id() const;
  // Default tiling limits of the model (manifest).
  TilingOptions default_tiling() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ocr
