#include "engine/bench.h"

#include <torch/cuda.h>
#include <torch/script.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <ostream>

#include "engine/prompt.h"
#include "model/step.h"
#include "ocr/engine.h"
#include "model/decoder_runner.h"
#include "model/graph_decoder.h"
#include "model/model.h"
#include "ocr/preprocess.h"

#if __has_include(<c10/cuda/CUDACachingAllocator.h>) && __has_include(<cuda_runtime_api.h>)
#include <c10/cuda/CUDACachingAllocator.h>
#include <cuda_runtime_api.h>
#define OCR_BENCH_CUDA 1
#endif

extern "C" void ocr_ops_use_reference_kernels(int enable);

namespace ocr {

namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

struct Timer {
  torch::Device device;
  void sync() const {
    if (device.is_cuda()) torch::cuda::synchronize(device.index() < 0 ? 0 : device.index());
  }
  template <class F>
  double seconds(F&& f) const {  // wall time of f(), device synchronised before and after
    sync();
    const auto t0 = Clock::now();
    f();
    sync();
    return std::chrono::duration<double>(Clock::now() - t0).count();
  }
};

// A synthetic document page: text-like strokes on white.
ImageU8 synthetic_page(int w, int h) {
  ImageU8 img(w, h, 250);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      if ((y / 18) % 2 == 1 && (x / 9) % 6 != 0 && ((x * 7 + y * 3) % 11) < 7)
        for (int c = 0; c < 3; ++c) img.px(x, y)[c] = 30;
  return img;
}

// Matmul FLOPs of one view of side S through SAM + CLIP + projector (estimate from the dims).
double encoder_view_flops(const json& d, int side) {
  const double n = (side / 16.0) * (side / 16.0), w = d["sam_width"], c = d["clip_width"];
  double f = 2 * n * 3 * 256 * w;  // patch embedding
  const int depth = d["sam_depth"];
  const double window = d["sam_window"];
  const int n_global = static_cast<int>(d["sam_global_blocks"].size());
  const double g = side / 16.0, padded = std::ceil(g / window) * window;
  f += depth * 24 * n * w * w;  // qkv, proj, MLP (ratio 4)
  f += n_global * 4 * n * n * w + (depth - n_global) * 4 * (padded * padded) * window * window * w;
  const double neck = d["sam_neck"], c2 = d["sam_net2"], c3 = d["sam_net3"];
  f += 2 * n * w * neck + 2 * n * neck * neck * 9 + 2 * (n / 4) * neck * c2 * 9 + 2 * (n / 16) * c2 * c3 * 9;
  const double m = n / 16 + 1;
  const int layers = d["clip_layers"];
  const double ffn = d["clip_ffn"];
  f += layers * (8 * m * c * c + 4 * m * c * ffn + 4 * m * m * c);
  f += 2 * (n / 16) * (c + c3) * static_cast<double>(d["hidden"]);
  return f;
}

// The product path: ocr::Engine with continuous batching and device-side token choice, on
// synthetic gundam pages, EOS ignored so that every page generates exactly `tokens` tokens.
json engine_figures(const BenchOptions& opt, const json& ceilings) {
  EngineOptions eo;
  eo.model_dir = opt.model_dir;
  eo.device = opt.device;
  eo.verify_checksums = false;
  eo.max_gpu_memory = opt.max_gpu_memory;
  json j = json::object();
  const ImageU8 page = synthetic_page(1224, 1584);  // a letter page at 144 dpi: 3x3 tiles in gundam
  auto make_page = [&](const Engine& engine, int tokens) {
    PageInput p;
    p.image = page;
    p.mode = "gundam";
    p.prompt = task_prompt("markdown");
    p.tiling = engine.default_tiling();
    p.decoding.max_new_tokens = tokens;
    p.decoding.ignore_eos = true;
    p.decoding.stop_on_loop = false;
    prepare_views(p, engine.modes());
    p.image = ImageU8();
    return p;
  };
  const torch::Device device(opt.device);
  const double hbm_bps = ceilings.value("memory_copy_bytes_per_s", 0.0);
  {
    // Batch 1: one page, decode time per token (prefill excluded).
    eo.max_batch = 1;
    Engine engine(eo);
    const PageInput p = make_page(engine, opt.decode_tokens);
    engine.run({make_page(engine, opt.decode_tokens)});  // warm-up: the graphs of every length captured
    const auto o = engine.run({p});
    const double ms = o[0].decode_ms / static_cast<double>(std::max<size_t>(1, o[0].tokens.size() - 1));
    j["engine_decode_batch1"] = {{"ms_per_token", ms}, {"tokens_per_s", 1e3 / ms}, {"tokens", o[0].tokens.size()},
                                 {"prompt_tokens", o[0].prompt_ids.size()}};
    (void)hbm_bps;
  }
  {
    // Throughput: `pages` pages streamed through `slots` slots (all at once when they fit).
    const int n_pages = opt.engine_pages > 0 ? opt.engine_pages : opt.pages;
    eo.max_batch = opt.pages;
    eo.max_seq_len = 0;
    eo.max_seq_len = 1024 + opt.tokens_per_page + 64;  // a gundam letter page's prompt is 913 tokens
    Engine engine(eo);
    const PageInput p = make_page(engine, opt.tokens_per_page);
    engine.run({make_page(engine, 8)});  // warm-up (kernels, handles); graphs are captured as needed, as in use
    struct Source : PageSource {
      const PageInput* page;
      int left;
      bool next(PageInput& out, uint64_t& tag, bool) override {
        if (left <= 0) return false;
        out = *page;
        tag = static_cast<uint64_t>(left--);
        return true;
      }
    } src;
    src.page = &p;
    const auto quantiles = [](std::vector<double> v) {
      std::sort(v.begin(), v.end());
      if (v.empty()) return nlohmann::json::array();
      const auto at = [&](double f) { return v[static_cast<size_t>(f * static_cast<double>(v.size() - 1))]; };
      return nlohmann::json::array({at(0), at(0.5), at(1)});
    };
    const auto throughput = [&] {
      src.left = n_pages;
      int64_t tokens = 0;
      int done_pages = 0;
      std::vector<double> started, finished;  // seconds from t0: decoding start (after prefill), finish
      if (device.is_cuda()) torch::cuda::synchronize();
      const auto t0 = Clock::now();
      engine.run_stream(src, [&](uint64_t, PageOutput&& o) {
        tokens += static_cast<int64_t>(o.tokens.size());
        ++done_pages;
        const double now = std::chrono::duration<double>(Clock::now() - t0).count();
        finished.push_back(now);
        started.push_back(now - o.decode_ms / 1e3);
      });
      if (device.is_cuda()) torch::cuda::synchronize();
      const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
      const EngineStats st = engine.last_stats();
      return json{{"pages", done_pages}, {"slots", engine.stream_slots()}, {"tokens_per_page", opt.tokens_per_page},
                  {"seconds", secs}, {"pages_per_s", done_pages / secs}, {"output_tokens_per_s", tokens / secs},
                  {"decode_start_s_min_median_max", quantiles(started)},
                  {"finish_s_min_median_max", quantiles(finished)},
                  {"steps", st.steps}, {"mean_rows_per_step", st.steps ? double(st.rows) / double(st.steps) : 0.0},
                  {"mean_padded_rows_per_step", st.steps ? double(st.padded_rows) / double(st.steps) : 0.0},
                  {"admissions", st.admissions}, {"graphs_captured", st.graphs_captured},
                  {"capture_ms", st.capture_ms}, {"admit_ms", st.admit_ms},
                  {"includes", "encoder, prefill, continuous batching, device-side greedy choice"}};
    };
    // First run as in use (CUDA graphs captured as batch and length buckets are first reached),
    // then the same work again with the graphs kept (a long-running batch).
    j["engine_throughput"] = throughput();
    j["engine_throughput_graphs_kept"] = throughput();
  }
#ifdef OCR_BENCH_CUDA
  if (device.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index() < 0 ? 0 : device.index());
    j["engine_peak_gpu_allocated_bytes"] = stats.allocated_bytes[0].peak;
    j["engine_peak_gpu_reserved_bytes"] = stats.reserved_bytes[0].peak;
    j["engine_max_gpu_memory_bytes"] = opt.max_gpu_memory;
  }
#endif
  return j;
}

}  // namespace

int run_bench(const BenchOptions& opt, std::ostream& out) {
  torch::NoGradGuard no_grad;
  if (opt.engine_only) {
    json j = {{"device", opt.device}};
    j.update(engine_figures(opt, json::object()));
    out << j.dump(1) << "\n";
    return 0;
  }
  auto model = load_model(opt.model_dir, opt.device, false);
  const Manifest& man = model->manifest;
  const Timer timer{model->device};
  std::ifstream mf(opt.model_dir + "/manifest.json");
  const json dims = json::parse(mf).at("dims");
  json j = {{"device", opt.device}, {"dtype", man.dtype}};
  const auto bf16 = torch::TensorOptions().dtype(torch::kBFloat16).device(model->device);
  const auto lopt = torch::TensorOptions().dtype(torch::kLong).device(model->device);

  // Ceilings measured now: device-to-device copy bandwidth and large bf16 matmul throughput.
  double hbm_bps = 0, bf16_flops = 0;
  {
    const int64_t n = model->device.is_cuda() ? (int64_t{1} << 29) : (int64_t{1} << 25);  // 1 GiB / 64 MiB
    auto a = torch::empty({n}, bf16), b = torch::empty({n}, bf16);
    b.copy_(a);
    const int reps = 10;
    const double t = timer.seconds([&] { for (int i = 0; i < reps; ++i) b.copy_(a); });
    hbm_bps = 2.0 * n * 2 * reps / t;  // read + write
    const int64_t k = model->device.is_cuda() ? 8192 : 1024;
    auto x = torch::randn({k, k}, bf16), y = torch::randn({k, k}, bf16);
    torch::matmul(x, y);
    const double tm = timer.seconds([&] { for (int i = 0; i < 5; ++i) torch::matmul(x, y); });
    bf16_flops = 2.0 * k * k * k * 5 / tm;
    j["ceilings"] = {{"memory_copy_bytes_per_s", hbm_bps}, {"bf16_matmul_flop_per_s", bf16_flops}};
  }

  // Encoder: pages/s per mode on a letter page rendered at 144 dpi (1224 x 1584).
  const ImageU8 page = synthetic_page(1224, 1584);
  json enc = json::object();
  for (const ModeSpec& mode : man.modes) {
    const Views views = make_views(page, mode, TilingOptions{man.min_tiles, man.max_tiles, 640});
    encode_page(*model, views);  // warm-up (and resize tables)
    const double t = timer.seconds([&] { for (int i = 0; i < opt.encoder_pages; ++i) encode_page(*model, views); });
    double flops = encoder_view_flops(dims, views.global.width) +
                   views.tiles.size() * (views.has_tiles() ? encoder_view_flops(dims, views.tiles[0].width) : 0);
    const double pps = opt.encoder_pages / t;
    // The same pages encoded together (views of equal size batched across pages).
    std::vector<const Views*> batch(static_cast<size_t>(opt.encoder_pages), &views);
    encode_pages(*model, batch);
    const double tb = timer.seconds([&] { encode_pages(*model, batch); });
    const double pps_batched = opt.encoder_pages / tb;
    enc[mode.name] = {{"pages_per_s", pps}, {"ms_per_page", 1e3 / pps}, {"views", 1 + views.tiles.size()},
                      {"est_flop_per_page", flops}, {"fraction_of_bf16_ceiling", flops * pps / bf16_flops},
                      {"batched_pages", opt.encoder_pages}, {"batched_pages_per_s", pps_batched},
                      {"batched_fraction_of_bf16_ceiling", flops * pps_batched / bf16_flops}};
  }
  j["encoder"] = enc;

  // Decoder shapes: a gundam letter page prompt (903 image tokens + text), random visual rows.
  const int64_t hidden = man.hidden, n_layers = man.n_layers;
  const int64_t prompt_len = 913;
  const double h = hidden, vocab = man.vocab, top_k = dims["top_k"], moe_inter = dims["moe_inter"],
               shared_inter = dims["shared_inter"], dense_inter = dims["dense_inter"],
               n_experts = dims["n_experts"];
  const double first_dense = dims["first_dense"];
  const double moe_layers = n_layers - first_dense;
  // Active weights per token (elements), excluding the embedding lookup.
  const double active = n_layers * 4 * h * h + first_dense * 3 * h * dense_inter +
                        moe_layers * (top_k * 3 * h * moe_inter + 3 * h * shared_inter + n_experts * h);
  const double weight_bytes_per_step = (active + vocab * h) * 2;  // bf16, lm_head included

  auto prompt_embeds = [&](int64_t n_b) { return torch::randn({n_b, prompt_len, hidden}, bf16).mul_(0.02).to(model->dtype); };

  // Prefill tokens/s (batch 1 and 4).
  json pre = json::object();
  for (int64_t n_b : {int64_t{1}, int64_t{4}}) {
    auto cache = make_kv_cache(*model, n_b, prompt_len + 1);
    auto x = prompt_embeds(n_b);
    auto pos = torch::arange(prompt_len, lopt).unsqueeze(0).expand({n_b, prompt_len}).contiguous();
    auto slots = torch::arange(n_b, lopt);
    auto last = torch::full({n_b}, prompt_len - 1, lopt);
    decoder_forward(*model, x, pos, cache, slots, prompt_len, last);
    const int reps = 3;
    const double t = timer.seconds([&] {
      for (int i = 0; i < reps; ++i) decoder_forward(*model, x, pos, cache, slots, prompt_len, last);
    });
    const double tokens = static_cast<double>(n_b * prompt_len * reps);
    const double flops = tokens * (2 * active + n_layers * 2 * h * prompt_len);  // + causal attention
    pre["batch_" + std::to_string(n_b)] = {{"tokens_per_s", tokens / t}, {"fraction_of_bf16_ceiling", flops / t / bf16_flops}};
  }
  j["prefill"] = pre;

  // Batch-1 decode: ms per token, EOS ignored; the next token is chosen on the device and read
  // back each step (as a decoding loop must, for the stop test).
  auto decode_batch1 = [&](const std::string& how) {
    const int steps = opt.decode_tokens;
    auto cache = make_kv_cache(*model, 1, prompt_len + steps + 1);
    auto slot = torch::zeros({1}, lopt);
    auto logits = decoder_forward(*model, prompt_embeds(1), torch::arange(prompt_len, lopt).unsqueeze(0), cache, slot,
                                  prompt_len, torch::full({1}, prompt_len - 1, lopt)).logits;
    std::unique_ptr<GraphDecodeStep> graph;
    if (how == "cuda_graph") graph = std::make_unique<GraphDecodeStep>(*model, cache);
    auto step = [&](int64_t pos) {
      const int64_t tok = logits.argmax(-1).item<int64_t>();
      auto ids = torch::full({1, 1}, tok, lopt);
      auto p = torch::full({1, 1}, pos, lopt);
      if (graph) {
        logits = graph->run(ids, p);
      } else {
        logits = decoder_forward(*model, embed_ids(*model, ids), p, cache, slot, pos + 1, torch::zeros({1}, lopt)).logits;
      }
    };
    for (int i = 0; i < 3; ++i) step(prompt_len + i);  // warm-up (and capture)
    const double t = timer.seconds([&] { for (int i = 3; i < steps; ++i) step(prompt_len + i); });
    const double ms = 1e3 * t / (steps - 3);
    const double kv_bytes = 2.0 * n_layers * (prompt_len + steps / 2) * h * 2;
    const double ceiling_ms = 1e3 * (weight_bytes_per_step + kv_bytes) / hbm_bps;
    return json{{"ms_per_token", ms}, {"tokens_per_s", 1e3 / ms}, {"bytes_per_step", weight_bytes_per_step + kv_bytes},
                {"ceiling_ms_per_token", ceiling_ms}, {"fraction_of_hbm_ceiling", ceiling_ms / ms}};
  };
  j["decode_batch1"] = decode_batch1("eager");
  if (cuda_graphs_supported(*model)) {
    j["decode_batch1_cuda_graph"] = decode_batch1("cuda_graph");
    // The baseline: same graph, plain-ATen MoE (no fused kernels, host syncs), no CUDA graph.
    ocr_ops_use_reference_kernels(1);
    j["baseline_eager_reference_moe_batch1"] = decode_batch1("eager");
    ocr_ops_use_reference_kernels(0);
    j["speedup_vs_baseline_batch1"] = j["baseline_eager_reference_moe_batch1"]["ms_per_token"].get<double>() /
                                      j["decode_batch1_cuda_graph"]["ms_per_token"].get<double>();
  }

  // Throughput: `pages` concurrent pages, tokens_per_page generated each, prefilled in groups of 8.
  if (!opt.skip_throughput) {
    const int64_t n_pages = opt.pages, gen = opt.tokens_per_page;
    auto cache = make_kv_cache(*model, n_pages, prompt_len + gen + 1);
    torch::Tensor next = torch::empty({n_pages, 1}, lopt);
    double t_prefill = 0;
    for (int64_t s = 0; s < n_pages; s += 8) {
      const int64_t n_b = std::min<int64_t>(8, n_pages - s);
      auto x = prompt_embeds(n_b);
      auto pos = torch::arange(prompt_len, lopt).unsqueeze(0).expand({n_b, prompt_len}).contiguous();
      t_prefill += timer.seconds([&] {
        auto l = decoder_forward(*model, x, pos, cache, torch::arange(s, s + n_b, lopt), prompt_len,
                                 torch::full({n_b}, prompt_len - 1, lopt)).logits;
        next.narrow(0, s, n_b).copy_(l.argmax(-1, true));
      });
    }
    auto slots = torch::arange(n_pages, lopt);
    auto zeros = torch::zeros({n_pages}, lopt);
    std::unique_ptr<GraphDecodeStep> graph;
    if (cuda_graphs_supported(*model)) graph = std::make_unique<GraphDecodeStep>(*model, cache);
    const double t_decode = timer.seconds([&] {
      for (int64_t i = 0; i < gen - 1; ++i) {
        const int64_t pos = prompt_len + i;
        auto p = torch::full({n_pages, 1}, pos, lopt);
        auto l = graph ? graph->run(next, p)
                       : decoder_forward(*model, embed_ids(*model, next), p, cache, slots, pos + 1, zeros).logits;
        next = l.argmax(-1, true);  // stays on the device: no host sync per step
      }
    });
    const double enc_s_per_page = 1.0 / enc["gundam"]["batched_pages_per_s"].get<double>();
    const double total = t_prefill + t_decode + n_pages * enc_s_per_page;
    j["throughput"] = {{"pages", n_pages}, {"tokens_per_page", gen}, {"prompt_tokens", prompt_len},
                       {"prefill_s", t_prefill}, {"decode_s", t_decode}, {"encoder_s", n_pages * enc_s_per_page},
                       {"output_tokens_per_s", n_pages * gen / total}, {"pages_per_s", n_pages / total},
                       {"decode_only_tokens_per_s", n_pages * (gen - 1) / t_decode},
                       {"cuda_graph", graph != nullptr}};
  }
#ifdef OCR_BENCH_CUDA
  if (model->device.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(model->device.index() < 0 ? 0 : model->device.index());
    j["peak_gpu_memory_bytes"] = stats.allocated_bytes[0].peak;
  }
#endif
  // The product path last, with this model's memory released first.
  model.reset();
  release_cached_memory(torch::Device(opt.device));
  j.update(engine_figures(opt, j["ceilings"]));
  out << j.dump(1) << "\n";
  return 0;
}

}  // namespace ocr
