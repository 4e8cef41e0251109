#include "engine/retry.h"

#include <algorithm>
#include <sstream>

namespace ocr {

PageAttempt attempt_of(const PageInput& p, const PageOutput& o) {
  return {p.mode, p.tiling.max_tiles, p.decoding.temperature, o.finish_reason};
}

std::string describe_attempt(const PageInput& p) {
  std::ostringstream s;
  s << "mode " << p.mode;
  if (p.mode == "gundam") s << ", max " << p.tiling.max_tiles << " tiles";
  if (p.decoding.temperature > 0)
    s << ", sampling T=" << p.decoding.temperature << " top-p " << p.decoding.top_p << " seed " << p.decoding.seed;
  return s.str();
}

std::vector<PageInput> retry_ladder(const PageInput& page, const std::vector<ModeSpec>& modes,
                                    const RetryPolicy& policy) {
  std::vector<PageInput> ladder;
  auto it = std::find_if(modes.begin(), modes.end(), [&](const ModeSpec& m) { return m.name == page.mode; });
  if (it != modes.end() && it + 1 != modes.end()) {
    PageInput p = page;
    p.mode = (it + 1)->name;
    ladder.push_back(p);
  }
  auto crop = std::find_if(modes.begin(), modes.end(), [](const ModeSpec& m) { return m.crop_mode; });
  if (crop != modes.end()) {
    PageInput p = page;
    p.mode = crop->name;
    p.tiling.max_tiles = std::min(16, 2 * std::max(1, page.tiling.max_tiles));
    ladder.push_back(p);
  }
  PageInput p = page;
  p.decoding.temperature = policy.sampling_temperature;
  p.decoding.top_p = policy.sampling_top_p;
  ladder.push_back(p);
  return ladder;
}

std::vector<ProcessedPage> run_pages(Engine& engine, const std::vector<PageInput>& pages,
                                     const RetryPolicy& policy,
                                     const std::function<void(size_t, const std::string&)>& log) {
  std::vector<ProcessedPage> out(pages.size());
  std::vector<PageInput> batch;
  std::vector<size_t> index;
  for (size_t i = 0; i < pages.size(); ++i) {
    if (is_near_uniform(pages[i].image, policy.blank_tolerance)) {
      out[i].output.finish_reason = "blank";  // nothing to read: no hallucinated loop
      if (log) log(i, "blank page (near-uniform pixels): empty output");
      continue;
    }
    batch.push_back(pages[i]);
    index.push_back(i);
  }
  const auto first = engine.run(batch);
  for (size_t k = 0; k < batch.size(); ++k) {
    ProcessedPage& r = out[index[k]];
    r.output = first[k];
    r.attempts.push_back(attempt_of(batch[k], first[k]));
    if (!r.failed() || !policy.retry) continue;
    const auto ladder = retry_ladder(batch[k], engine.modes(), policy);
    for (size_t step = 0; step < ladder.size() && r.failed(); ++step) {
      if (log)
        log(index[k], "finish " + r.output.finish_reason + "; retry " + std::to_string(step + 1) + "/" +
                          std::to_string(ladder.size()) + " with " + describe_attempt(ladder[step]));
      auto o = engine.run({ladder[step]});
      r.attempts.push_back(attempt_of(ladder[step], o[0]));
      r.output = std::move(o[0]);
    }
  }
  return out;
}

}  // namespace ocr
