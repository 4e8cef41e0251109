// Batched inference: encode each page, prefill all prompts together, decode the batch greedily
// with the repetition blockers, rows leaving the batch as they finish.
#include "ocr/engine.h"

#include <ATen/Parallel.h>
#include <torch/script.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <stdexcept>
#include <random>
#include <unordered_set>

#include "engine/prompt.h"
#include "generate/loop_detect.h"
#include "generate/ngram.h"
#include "generate/sampler.h"
#include "model/decoder_runner.h"
#include "model/graph_decoder.h"
#include "model/model.h"
#include "ocr/errors.h"

namespace ocr {

namespace {

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// Decoding state of one page.
struct Row {
  size_t page = 0;
  int64_t prompt_len = 0;
  int64_t max_new = 0;
  std::vector<int32_t> generated;
  std::unique_ptr<NoRepeatNgram> no_repeat;
  std::unordered_set<int32_t> whitelist;
  std::mt19937_64 rng;
  bool looping = false;
  bool done = false;
};

}  // namespace

struct Engine::Impl {
  std::unique_ptr<LoadedModel> model;
  const std::atomic<bool>* cancel = nullptr;
};

Engine::Engine(const EngineOptions& options) : impl_(std::make_unique<Impl>()) {
  if (options.threads > 0) at::set_num_threads(options.threads);
  impl_->model = load_model(options.model_dir, options.device, options.verify_checksums);
}

Engine::~Engine() = default;

void Engine::set_cancel_flag(const std::atomic<bool>* flag) { impl_->cancel = flag; }

const Tokenizer& Engine::tokenizer() const { return impl_->model->tokenizer; }
const std::vector<ModeSpec>& Engine::modes() const { return impl_->model->manifest.modes; }
int32_t Engine::eos_id() const { return impl_->model->manifest.tokens.eos; }

TilingOptions Engine::default_tiling() const {
  TilingOptions t;
  t.min_tiles = impl_->model->manifest.min_tiles;
  t.max_tiles = impl_->model->manifest.max_tiles;
  return t;
}

std::vector<PageOutput> Engine::run(const std::vector<PageInput>& pages, const TokenCallback& on_token) {
  torch::NoGradGuard no_grad;
  LoadedModel& model = *impl_->model;
  const Manifest& man = model.manifest;
  const size_t n_pages = pages.size();
  std::vector<PageOutput> out(n_pages);
  if (n_pages == 0) return out;

  // 1. Views of every page, the encoder over all of them at once, prompt ids, input embeddings.
  std::vector<Views> views(n_pages);
  const auto t_encode = std::chrono::steady_clock::now();
  for (size_t i = 0; i < n_pages; ++i) {
    const PageInput& page = pages[i];
    if (page.image.empty()) throw InputError("page " + std::to_string(i) + ": empty image");
    const ModeSpec* mode = nullptr;
    try {
      mode = &find_mode(man.modes, page.mode);
    } catch (const std::invalid_argument& e) {
      throw InputError(e.what());
    }
    views[i] = make_views(page.image, *mode, page.tiling);
    out[i].tiles_w = views[i].tiles_w;
    out[i].tiles_h = views[i].tiles_h;
    out[i].n_image_tokens = count_image_tokens(*mode, views[i].tiles_w, views[i].tiles_h, views[i].has_tiles());
    try {
      out[i].prompt_ids =
          build_prompt_ids(model.tokenizer, page.prompt, out[i].n_image_tokens, man.tokens.bos, man.tokens.image);
    } catch (const std::invalid_argument& e) {
      throw InputError(e.what());
    }
  }
  std::vector<const Views*> view_ptrs;
  for (const auto& v : views) view_ptrs.push_back(&v);
  const std::vector<torch::Tensor> visual = encode_pages(model, view_ptrs);
  std::vector<torch::Tensor> embeds(n_pages);
  for (size_t i = 0; i < n_pages; ++i) embeds[i] = embed_prompt(model, out[i].prompt_ids, visual[i]);
  const double encode_ms = ms_since(t_encode);
  for (size_t i = 0; i < n_pages; ++i) out[i].encode_ms = encode_ms / static_cast<double>(n_pages);

  // 2. Rows, token budgets, the KV cache.
  std::vector<Row> rows(n_pages);
  int64_t max_prompt = 0, max_len = 1;
  for (size_t i = 0; i < n_pages; ++i) {
    Row& r = rows[i];
    r.page = i;
    r.prompt_len = static_cast<int64_t>(out[i].prompt_ids.size());
    const DecodingOptions& dec = pages[i].decoding;
    r.max_new = std::max<int64_t>(0, std::min<int64_t>(dec.max_new_tokens, man.max_positions - r.prompt_len));
    if (dec.no_repeat_ngram > 0) {
      r.no_repeat = std::make_unique<NoRepeatNgram>(dec.no_repeat_ngram);
      r.no_repeat->reset(out[i].prompt_ids);
    }
    r.whitelist.insert(dec.ngram_whitelist.begin(), dec.ngram_whitelist.end());
    r.rng.seed(dec.seed);
    max_prompt = std::max(max_prompt, r.prompt_len);
    max_len = std::max(max_len, r.prompt_len + r.max_new);
  }
  auto cache = make_kv_cache(model, static_cast<int64_t>(n_pages), max_len);
  const auto long_opts = torch::TensorOptions().dtype(torch::kLong).device(model.device);

  // 3. Prefill, right-padded: pad positions write cache rows that real tokens overwrite before
  // any query can attend them.
  const auto t_prefill = std::chrono::steady_clock::now();
  auto h = torch::zeros({static_cast<int64_t>(n_pages), max_prompt, man.hidden},
                        torch::TensorOptions().dtype(model.dtype).device(model.device));
  std::vector<int64_t> last(n_pages);
  for (size_t i = 0; i < n_pages; ++i) {
    h[i].narrow(0, 0, rows[i].prompt_len).copy_(embeds[i]);
    last[i] = rows[i].prompt_len - 1;
  }
  embeds.clear();
  auto positions = torch::arange(max_prompt, long_opts).unsqueeze(0).expand({static_cast<int64_t>(n_pages), max_prompt}).contiguous();
  auto slots = torch::arange(static_cast<int64_t>(n_pages), long_opts);
  auto logits = decoder_forward(model, h, positions, cache, slots, max_prompt, torch::tensor(last, torch::kLong).to(model.device)).logits;
  const double prefill_ms = ms_since(t_prefill);

  // 4. Decode. On CUDA one step of the whole batch (every slot) is a captured CUDA graph; rows
  // that finished keep a harmless place in it. Elsewhere, only the active rows are computed.
  const auto t_decode = std::chrono::steady_clock::now();
  std::unique_ptr<GraphDecodeStep> graph;
  if (cuda_graphs_supported(model) && !std::getenv("OCR_NO_CUDA_GRAPHS"))
    graph = std::make_unique<GraphDecodeStep>(model, cache);
  std::vector<size_t> active(n_pages);
  std::vector<int64_t> logit_row(n_pages);  // active index -> row of `logits`
  for (size_t i = 0; i < n_pages; ++i) active[i] = logit_row[i] = static_cast<int64_t>(i);
  std::vector<int64_t> graph_ids(n_pages, man.tokens.eos), graph_pos(n_pages, 0);
  const int64_t vocab = man.vocab;
  while (!active.empty()) {
    if (impl_->cancel && impl_->cancel->load()) throw Interrupted("interrupted");
    auto cpu = logits.to(torch::kCPU, torch::kFloat).contiguous();
    float* base = cpu.data_ptr<float>();
    std::vector<size_t> still;
    std::vector<int64_t> next_ids, next_pos, next_slots;
    for (size_t a = 0; a < active.size(); ++a) {
      Row& r = rows[active[a]];
      if (r.max_new == 0) {  // prompt already fills the context
        r.done = true;
        continue;
      }
      float* row = base + logit_row[a] * vocab;
      const DecodingOptions& dec = pages[r.page].decoding;
      if (r.no_repeat) apply_bans(row, vocab, r.no_repeat->banned());
      if (dec.ngram > 0) apply_bans(row, vocab, windowed_ngram_banned(r.generated, dec.ngram, dec.ngram_window, r.whitelist));
      const int32_t tok = dec.temperature > 0 ? sample(row, vocab, dec.temperature, dec.top_p, r.rng) : argmax(row, vocab);
      r.generated.push_back(tok);
      if (r.no_repeat) r.no_repeat->push(tok);
      if (on_token) on_token(r.page, tok);
      // The loop test runs every 16 tokens: a looping page stops early instead of filling the cap.
      if (dec.stop_on_loop && r.generated.size() % 16 == 0 && periodic_suffix(r.generated) > 0) r.looping = true;
      if (tok == man.tokens.eos || r.looping || static_cast<int64_t>(r.generated.size()) >= r.max_new) {
        r.done = true;
        continue;
      }
      still.push_back(r.page);
      next_ids.push_back(tok);
      next_pos.push_back(r.prompt_len + static_cast<int64_t>(r.generated.size()) - 1);
      next_slots.push_back(static_cast<int64_t>(r.page));
    }
    active.swap(still);
    if (active.empty()) break;
    const int64_t n_active = static_cast<int64_t>(active.size());
    if (graph) {
      // Finished rows rewrite their own last cache row with EOS: nobody attends it.
      for (size_t k = 0; k < active.size(); ++k) {
        graph_ids[active[k]] = next_ids[k];
        graph_pos[active[k]] = next_pos[k];
        logit_row[k] = static_cast<int64_t>(active[k]);
      }
      const int64_t n = static_cast<int64_t>(n_pages);
      logits = graph->run(torch::tensor(graph_ids, torch::kLong).view({n, 1}),
                          torch::tensor(graph_pos, torch::kLong).view({n, 1}));
      continue;
    }
    for (size_t k = 0; k < active.size(); ++k) logit_row[k] = static_cast<int64_t>(k);
    auto ids = torch::tensor(next_ids, torch::kLong).to(model.device).view({n_active, 1});
    auto pos = torch::tensor(next_pos, torch::kLong).to(model.device).view({n_active, 1});
    const int64_t kv_len = *std::max_element(next_pos.begin(), next_pos.end()) + 1;
    logits = decoder_forward(model, embed_ids(model, ids), pos, cache,
                             torch::tensor(next_slots, torch::kLong).to(model.device), kv_len,
                             torch::zeros({n_active}, long_opts))
                 .logits;
  }
  const double decode_ms = ms_since(t_decode);

  for (size_t i = 0; i < n_pages; ++i) {
    PageOutput& o = out[i];
    Row& r = rows[i];
    o.tokens = std::move(r.generated);
    const bool stopped = !o.tokens.empty() && o.tokens.back() == man.tokens.eos;
    o.finish_reason = stopped ? "stop" : r.looping ? "repetition" : "length";
    std::vector<int32_t> text_ids(o.tokens.begin(), o.tokens.end() - (stopped ? 1 : 0));
    o.text = model.tokenizer.decode(text_ids, false);
    o.prefill_ms = prefill_ms / static_cast<double>(n_pages);
    o.decode_ms = decode_ms / static_cast<double>(n_pages);
  }
  return out;
}

}  // namespace ocr
