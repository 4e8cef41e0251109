// Pages that fail are never dropped: blank pages are answered without the model, pages that end
// without EOS (a repetition loop, or the token cap) are retried through a ladder, and a page that
// still fails keeps its finish reason so that writers can mark it.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "ocr/engine.h"

namespace ocr {

struct RetryPolicy {
  bool retry = true;             // run the ladder for failed pages
  int blank_tolerance = 6;       // near-uniform pixels (max deviation from the mean) = blank page
  double sampling_temperature = 0.3;  // last rung: seeded low-temperature sampling
  double sampling_top_p = 0.9;
};

struct PageAttempt {
  std::string mode;
  int max_tiles = 0;
  double temperature = 0;
  std::string finish_reason;
};

struct ProcessedPage {
  PageOutput output;                 // of the successful (or last) attempt
  std::vector<PageAttempt> attempts; // in order; empty for blank pages
  bool failed() const { return output.finish_reason != "stop" && output.finish_reason != "blank"; }
};

// The ladder after a failed first attempt (documented in README "Loops and failures"):
// 1. the next higher resolution mode of the model (tiny -> small -> base -> large -> gundam);
// 2. gundam with twice the tile limit (at most 16);
// 3. the original request with seeded low-temperature sampling.
std::vector<PageInput> retry_ladder(const PageInput& page, const std::vector<ModeSpec>& modes,
                                    const RetryPolicy& policy);

// "mode gundam, max 18 tiles, sampling T=0.3 top-p 0.9 seed 0": a rung, for logs.
std::string describe_attempt(const PageInput& page);
// The record of one attempt.
PageAttempt attempt_of(const PageInput& page, const PageOutput& output);

// Runs `pages` as one batch, then the ladder for each failed page. `log` gets one line per retry.
std::vector<ProcessedPage> run_pages(Engine& engine, const std::vector<PageInput>& pages,
                                     const RetryPolicy& policy,
                                     const std::function<void(size_t, const std::string&)>& log);

}  // namespace ocr
