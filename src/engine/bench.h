// `ocr-cli bench`: machine-readable speed figures, each beside the physical ceiling measured in the
// same run (HBM bytes/s for decode, bf16 matmul FLOP/s for encoder and prefill).
#pragma once

#include <iosfwd>
#include <string>

namespace ocr {

struct BenchOptions {
  std::string model_dir;
  std::string device = "cuda";
  int decode_tokens = 128;        // batch-1 decode steps timed (EOS ignored)
  int pages = 256;                // concurrent synthetic gundam pages for the throughput figure
  int tokens_per_page = 1000;     // generated tokens per page (EOS ignored)
  int encoder_pages = 16;         // pages per mode for the encoder figure
  bool skip_throughput = false;
  // The engine figures (continuous batching, device-side token choice) only, with the engine's
  // memory budget (0: all free memory): a separate process proves a small card's budget.
  bool engine_only = false;
  int64_t max_gpu_memory = 0;
  int engine_pages = 0;           // pages of the engine throughput run (0: `pages`)
};

// Runs the benchmark and prints one JSON object to `out`. Returns 0.
int run_bench(const BenchOptions& options, std::ostream& out);

}  // namespace ocr
