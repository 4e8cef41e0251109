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
};

struct PageInput {
  ImageU8 image;                  // the page, RGB
  std::string mode = "gundam";    // a mode of the model's manifest
  std::string prompt;             // must contain <image> exactly once
  DecodingOptions decoding;
  TilingOptions tiling;           // tile limits (crop modes)
};

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
};

// Called from the decoding loop as tokens are produced: (page index in the batch, token id).
using TokenCallback = std::function<void(size_t, int32_t)>;

class Engine {
 public:
  // Loads the model; throws ocr::ModelError with an actionable message.
  explicit Engine(const EngineOptions& options);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Runs a batch of pages together (prefill and decoding batched); results in input order.
  // Throws ocr::InputError for a bad page (empty image, unknown mode, bad prompt).
  std::vector<PageOutput> run(const std::vector<PageInput>& pages, const TokenCallback& on_token = {});

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
