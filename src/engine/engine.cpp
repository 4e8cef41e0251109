// Continuous batching: pages are pulled into free KV-cache slots (encoded and prefilled together),
// all busy slots decode together one token per step with the token chosen on the device
// (ocr::select_tokens: repetition bans + argmax), and a page leaves as soon as it finishes, its slot
// taken by the next page. On CUDA each step is a replayed CUDA graph and the host reads the tokens
// of step k while the device runs step k+1: no host synchronisation inside the decoding loop.
#include "ocr/engine.h"

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <torch/script.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <deque>
#include <exception>
#include <thread>
#include <mutex>
#include <functional>
#include <condition_variable>
#include <optional>
#include <random>
#include <stdexcept>

#include "engine/prompt.h"
#include "generate/loop_detect.h"
#include "generate/sampler.h"
#include "kernels/select.h"
#include "model/decoder_runner.h"
#include "model/graph_decoder.h"
#include "model/model.h"
#include "model/step.h"
#include "ocr/errors.h"

namespace ocr {

namespace {

using Clock = std::chrono::steady_clock;
namespace k = kernels;

double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

constexpr int64_t kAdmitPages = 16;      // pages encoded and prefilled together at most
constexpr int64_t kMaxAutoSlots = 256;   // slots sized from memory: at most this many
// CUDA graphs attend K keys, K a multiple of this (each (batch, K) bucket is a graph, captured
// when first reached; decode_attention reads only each row's own keys, so a coarse K costs little).
// OCR_KV_BUCKET overrides it (tuning).
int64_t kv_bucket() {
  static const int64_t bucket = [] {
    const char* env = std::getenv("OCR_KV_BUCKET");
    const int64_t v = env ? std::atoll(env) : 0;
    return v > 0 ? v : int64_t{1024};
  }();
  return bucket;
}

int64_t pow2_at_least(int64_t n, int64_t floor) {
  int64_t p = floor;
  while (p < n) p *= 2;
  return p;
}

// One line: c10 errors carry a C++ backtrace in what().
std::string message_of(const std::exception& e) {
  if (const auto* c = dynamic_cast<const c10::Error*>(&e)) return c->what_without_backtrace();
  return e.what();
}

bool is_oom(const std::exception& e) {
  if (dynamic_cast<const c10::OutOfMemoryError*>(&e)) return true;
  const std::string what = e.what();
  return what.find("out of memory") != std::string::npos;
}

// Fault injection for the tests of out-of-memory recovery (no GPU needed): OCR_FAULT_OOM="admit:N"
// throws OutOfMemoryError at the N-th encode/prefill of two or more pages, "step:N" at the N-th
// decoding step (1-based), where a CUDA allocation failure would surface.
void maybe_fail(const char* where) {
  static const std::string spec = [] {
    const char* s = std::getenv("OCR_FAULT_OOM");
    return std::string(s ? s : "");
  }();
  if (spec.empty()) return;
  const auto colon = spec.find(':');
  if (spec.compare(0, colon, where) != 0) return;
  static int calls_admit = 0, calls_step = 0;
  int& calls = std::string(where) == "admit" ? calls_admit : calls_step;
  if (++calls == std::atoi(spec.c_str() + colon + 1))
    TORCH_CHECK_WITH(OutOfMemoryError, false, "CUDA out of memory (injected by OCR_FAULT_OOM=", spec, ")");
}

// One page waiting for a slot (or retried after an out-of-memory eviction).
struct Pending {
  PageInput page;
  uint64_t tag = 0;
};

// Host-side state of one slot.
struct Slot {
  bool busy = false;
  uint64_t epoch = 0;  // bumps at every use: results of steps launched before are ignored
  Pending job;
  PageOutput out;
  int64_t prompt_len = 0, max_new = 0;
  std::vector<int32_t> generated;
  std::mt19937_64 rng;
  bool looping = false;
  bool host_choice = false;  // sampling: the device bans, the host draws
  Clock::time_point t_start;
  torch::Tensor visual;      // visual embeddings made by the encoder thread, until prefilled
  double encode_ms = 0;
};

class VectorSource : public PageSource {
 public:
  explicit VectorSource(const std::vector<PageInput>& pages) : pages_(pages) {}
  bool next(PageInput& page, uint64_t& tag, bool) override {
    if (next_ >= pages_.size()) return false;
    tag = next_;
    page = pages_[next_++];
    return true;
  }

 private:
  const std::vector<PageInput>& pages_;
  size_t next_ = 0;
};

}  // namespace

void prepare_views(PageInput& page, const std::vector<ModeSpec>& modes) {
  if (page.views) return;
  const ModeSpec* mode = nullptr;
  try {
    mode = &find_mode(modes, page.mode);
  } catch (const std::invalid_argument& e) {
    throw InputError(e.what());
  }
  if (page.image.empty()) throw InputError("empty image");
  page.views = std::make_shared<const Views>(make_views(page.image, *mode, page.tiling));
}

struct Engine::Impl {
  std::unique_ptr<LoadedModel> model;
  const std::atomic<bool>* cancel = nullptr;
  EngineOptions options;
  int64_t stream_slots = 1, stream_max_len = 0;
  int64_t reserve_bytes = 0;  // CUDA work space kept outside the KV cache

  int64_t slot_bytes(int64_t max_len) const {
    const Manifest& m = model->manifest;
    return m.n_layers * 2 * max_len * m.n_heads * m.head_dim * static_cast<int64_t>(c10::elementSize(model->dtype)) +
           max_len * 4;
  }
  void run_slots(PageSource& source, const PageDone& done, const TokenCallback& on_token, int64_t n_slots,
                 int64_t max_len);
  // The device state and captured CUDA graphs of the last run, kept for the next run of the same
  // shape (a stream, or run() with the same batch): graphs are captured once per process.
  std::unique_ptr<StepState> state;
  std::unique_ptr<GraphSteps> graphs;
  EngineStats stats;
};

Engine::Engine(const EngineOptions& options) : impl_(std::make_unique<Impl>()) {
  if (options.threads > 0) at::set_num_threads(options.threads);
  impl_->options = options;
  impl_->model = load_model(options.model_dir, options.device, options.verify_checksums);
  const LoadedModel& model = *impl_->model;
  const Manifest& man = model.manifest;
  impl_->stream_max_len = options.max_seq_len > 0 ? std::min(options.max_seq_len, man.max_positions) : man.max_positions;
  if (!model.device.is_cuda()) {
    impl_->stream_slots = std::max(1, options.max_batch);
    return;
  }
  // CUDA: weights are loaded; the rest of the budget is the KV cache plus work space for the
  // encoder, prefill and decoding steps (an eighth of the budget, at least 3 GiB).
  const DeviceMemory mem = device_memory(model.device);
  const int64_t budget = options.max_gpu_memory > 0 ? options.max_gpu_memory : mem.allocated + mem.free;
  if (options.max_gpu_memory > 0) cap_device_memory(model.device, budget);
  impl_->reserve_bytes = std::max<int64_t>(int64_t{3} << 30, budget / 8);
  const int64_t for_cache = budget - mem.allocated - impl_->reserve_bytes;
  const int64_t fit = for_cache > 0 ? for_cache / impl_->slot_bytes(impl_->stream_max_len) : 0;
  if (fit < 1)
    throw ModelError("GPU memory budget of " + std::to_string(budget >> 20) + " MiB is too small: the weights take " +
                     std::to_string(mem.allocated >> 20) + " MiB, work space " +
                     std::to_string(impl_->reserve_bytes >> 20) + " MiB and one page's KV cache " +
                     std::to_string(impl_->slot_bytes(impl_->stream_max_len) >> 20) + " MiB (lower --max-tokens)");
  impl_->stream_slots = options.max_batch > 0 ? std::min<int64_t>(options.max_batch, fit) : std::min(fit, kMaxAutoSlots);
}

Engine::~Engine() = default;

void Engine::set_cancel_flag(const std::atomic<bool>* flag) { impl_->cancel = flag; }

const Tokenizer& Engine::tokenizer() const { return impl_->model->tokenizer; }
const std::vector<ModeSpec>& Engine::modes() const { return impl_->model->manifest.modes; }
int32_t Engine::eos_id() const { return impl_->model->manifest.tokens.eos; }
int64_t Engine::stream_slots() const { return impl_->stream_slots; }
int64_t Engine::stream_max_len() const { return impl_->stream_max_len; }
EngineStats Engine::last_stats() const { return impl_->stats; }

TilingOptions Engine::default_tiling() const {
  TilingOptions t;
  t.min_tiles = impl_->model->manifest.min_tiles;
  t.max_tiles = impl_->model->manifest.max_tiles;
  return t;
}

std::vector<PageOutput> Engine::run(const std::vector<PageInput>& pages, const TokenCallback& on_token) {
  std::vector<PageOutput> out(pages.size());
  if (pages.empty()) return out;
  const Manifest& man = impl_->model->manifest;
  // One slot per page, as long as the longest prompt + its token budget.
  std::vector<PageInput> ready(pages);
  int64_t max_len = 1;
  for (size_t i = 0; i < ready.size(); ++i) {
    try {
      prepare_views(ready[i], man.modes);
    } catch (const InputError& e) {
      throw InputError("page " + std::to_string(i) + ": " + e.what());
    }
    const ModeSpec& mode = find_mode(man.modes, ready[i].mode);
    const Views& v = *ready[i].views;
    const int64_t n_image = count_image_tokens(mode, v.tiles_w, v.tiles_h, v.has_tiles());
    int64_t prompt_len = 0;
    try {
      prompt_len = static_cast<int64_t>(
          build_prompt_ids(impl_->model->tokenizer, ready[i].prompt, n_image, man.tokens.bos, man.tokens.image).size());
    } catch (const std::invalid_argument& e) {
      throw InputError(e.what());
    }
    const int64_t cap = std::max<int64_t>(0, std::min<int64_t>(ready[i].decoding.max_new_tokens, man.max_positions - prompt_len));
    max_len = std::max(max_len, prompt_len + cap);
  }
  VectorSource source(ready);
  impl_->run_slots(
      source, [&](uint64_t tag, PageOutput&& o) { out[tag] = std::move(o); }, on_token,
      static_cast<int64_t>(pages.size()), max_len);
  for (size_t i = 0; i < out.size(); ++i)
    if (out[i].finish_reason == "error") throw InputError("page " + std::to_string(i) + ": " + out[i].error);
  return out;
}

void Engine::run_stream(PageSource& source, const PageDone& done, const TokenCallback& on_token) {
  impl_->run_slots(source, done, on_token, impl_->stream_slots, impl_->stream_max_len);
}

void Engine::Impl::run_slots(PageSource& source, const PageDone& done, const TokenCallback& on_token,
                             int64_t n_slots, int64_t max_len) {
  torch::NoGradGuard no_grad;
  stats = EngineStats();
  LoadedModel& m = *model;
  const Manifest& man = m.manifest;
  const auto lopt = torch::TensorOptions().dtype(torch::kLong).device(m.device);
  const int64_t vocab = man.vocab;
  const int64_t n_white = 4;

  if (state && state->slots() == n_slots && state->max_len() == max_len) {
    // Every slot idle again; the graphs keep pointing at these very tensors.
    state->seq.zero_();
    state->lens.zero_();
    state->params.zero_();
    state->whitelist.fill_(-1);
    state->next_ids.zero_();
    state->next_pos.zero_();
  } else {
    graphs.reset();
    state.reset();
    release_cached_memory(m.device);
    state = std::make_unique<StepState>(make_step_state(m, n_slots, max_len, n_white));
    if (cuda_graphs_supported(m) && !std::getenv("OCR_NO_CUDA_GRAPHS")) graphs = std::make_unique<GraphSteps>(m, *state);
  }
  StepState& state = *this->state;
  std::unique_ptr<GraphSteps>& graphs = this->graphs;

  std::vector<Slot> slots(static_cast<size_t>(n_slots));
  int64_t slot_limit = n_slots;     // lowered after an out-of-memory error
  std::deque<Pending> retry;        // pages evicted by an out-of-memory error, first in line
  bool exhausted = false;

  auto finish = [&](int64_t s, const std::string& reason) {
    Slot& sl = slots[s];
    PageOutput& o = sl.out;
    o.tokens = std::move(sl.generated);
    o.finish_reason = reason;
    const bool stopped = reason == "stop";
    std::vector<int32_t> text_ids(o.tokens.begin(), o.tokens.end() - (stopped ? 1 : 0));
    o.text = m.tokenizer.decode(text_ids, false);
    o.decode_ms = ms_since(sl.t_start);
    sl.busy = false;
    sl.generated.clear();
    done(sl.job.tag, std::move(o));
    sl.out = PageOutput();
  };
  auto fail_page = [&](Pending&& p, const std::string& error) {
    PageOutput o;
    o.finish_reason = "error";
    o.error = error;
    done(p.tag, std::move(o));
  };
  // Applies one token chosen for slot s (by the device or the host); finishes the page when due.
  // Returns true when the page finished here.
  auto take_token = [&](int64_t s, int64_t tok) -> bool {
    Slot& sl = slots[s];
    if (tok == k::kEmittedIdle) {  // the device saw no room left
      finish(s, "length");
      return true;
    }
    sl.generated.push_back(static_cast<int32_t>(tok));
    if (on_token) on_token(sl.job.tag, static_cast<int32_t>(tok));
    const DecodingOptions& dec = sl.job.page.decoding;
    if (dec.stop_on_loop && sl.generated.size() % 16 == 0 && periodic_suffix(sl.generated) > 0) sl.looping = true;
    const bool eos = !dec.ignore_eos && tok == man.tokens.eos;
    if (eos || sl.looping || static_cast<int64_t>(sl.generated.size()) >= sl.max_new) {
      // The device stops by itself on EOS and at the cap; a loop is the host's call.
      if (sl.looping && !eos) {
        state.params[s][k::kState].fill_(k::kIdle);
        state.next_pos[s].fill_(0);  // its later steps attend one key
      }
      finish(s, eos ? "stop" : sl.looping ? "repetition" : "length");
      return true;
    }
    return false;
  };
  // Host choice (sampling) for rows whose emitted value is kEmittedHost: draw from their banned
  // logits, then append through `forced`. rows/emitted/logits are one step's results.
  auto host_choose = [&](const std::vector<int64_t>& step_slots, const torch::Tensor& emitted_cpu,
                         const torch::Tensor& logits) {
    std::vector<int64_t> js, ss, toks;
    const int64_t* e = emitted_cpu.data_ptr<int64_t>();
    for (size_t j = 0; j < step_slots.size(); ++j)
      if (e[j] == k::kEmittedHost) js.push_back(static_cast<int64_t>(j));
    if (js.empty()) return std::vector<std::pair<int64_t, int64_t>>{};
    auto rows_cpu = logits.index_select(0, torch::tensor(js, torch::kLong).to(logits.device())).to(torch::kCPU).contiguous();
    for (size_t q = 0; q < js.size(); ++q) {
      const int64_t s = step_slots[js[q]];
      Slot& sl = slots[s];
      const DecodingOptions& dec = sl.job.page.decoding;
      ss.push_back(s);
      toks.push_back(sample(rows_cpu[q].data_ptr<float>(), vocab, dec.temperature, dec.top_p, sl.rng));
    }
    auto sub = torch::zeros({static_cast<int64_t>(ss.size()), vocab}, torch::TensorOptions().dtype(torch::kFloat).device(m.device));
    select_tokens(sub, torch::tensor(ss, torch::kLong).to(m.device), state, torch::tensor(toks, torch::kLong).to(m.device));
    std::vector<std::pair<int64_t, int64_t>> chosen;
    for (size_t q = 0; q < ss.size(); ++q) chosen.emplace_back(ss[q], toks[q]);
    return chosen;
  };

  // Encoder calls sized to half the work space: about 0.6 GB per 1024-pixel view, scaling with
  // side^4 (a generous bound since SAM's global attention no longer materialises its bias).
  const int64_t half_reserve = reserve_bytes / 2;
  auto views_per_call = [&m, half_reserve](int side) -> int64_t {
    if (!m.device.is_cuda()) return 64;
    const double r = static_cast<double>(side) / 1024.0;
    return std::clamp<int64_t>(static_cast<int64_t>(half_reserve / (0.6e9 * r * r * r * r)), 1, 64);
  };

  // Encodes and prefills `group` into the free slots `where` (ascending), then takes each page's
  // first token. Throws on out-of-memory (the caller splits the group).
  auto prefill_group = [&](const std::vector<int64_t>& where) {
    if (where.size() >= 2) maybe_fail("admit");
    ++stats.admissions;
    const size_t g = where.size();
    const auto t_encode = Clock::now();
    std::vector<torch::Tensor> visual;
    bool pre_encoded = true;
    for (int64_t s : where) pre_encoded = pre_encoded && slots[s].visual.defined();
    if (pre_encoded) {
      for (int64_t s : where) visual.push_back(slots[s].visual);
    } else {
      std::vector<const Views*> views;
      for (int64_t s : where) views.push_back(slots[s].job.page.views.get());
      visual = encode_pages(m, views, views_per_call);
    }
    std::vector<torch::Tensor> embeds(g);
    int64_t max_prompt = 0;
    for (size_t i = 0; i < g; ++i) {
      embeds[i] = embed_prompt(m, slots[where[i]].out.prompt_ids, visual[i]);
      max_prompt = std::max<int64_t>(max_prompt, embeds[i].size(0));
    }
    double encode_ms = ms_since(t_encode);
    if (pre_encoded) {
      encode_ms = 0;
      for (int64_t s : where) encode_ms += slots[s].encode_ms;
    }
    const auto t_prefill = Clock::now();
    auto h = torch::zeros({static_cast<int64_t>(g), max_prompt, man.hidden}, torch::TensorOptions().dtype(m.dtype).device(m.device));
    std::vector<int64_t> last(g);
    for (size_t i = 0; i < g; ++i) {
      h[static_cast<int64_t>(i)].narrow(0, 0, embeds[i].size(0)).copy_(embeds[i]);
      last[i] = embeds[i].size(0) - 1;
    }
    embeds.clear();
    auto positions = torch::arange(max_prompt, lopt).unsqueeze(0).expand({static_cast<int64_t>(g), max_prompt}).contiguous();
    auto where_t = torch::tensor(where, torch::kLong).to(m.device);
    torch::Tensor cache = state.cache.narrow(3, 0, max_prompt);  // gathers only the rows it needs
    auto logits = decoder_forward(m, h, positions, cache, where_t, max_prompt, torch::tensor(last, torch::kLong).to(m.device))
                      .logits.contiguous();
    // Device state of the new rows: prompt ids, length, decoding parameters, whitelist.
    auto seq = torch::zeros({static_cast<int64_t>(g), max_len}, torch::kInt);
    auto lens = torch::zeros({static_cast<int64_t>(g)}, torch::kInt);
    auto params = torch::zeros({static_cast<int64_t>(g), k::kSelectParams}, torch::kInt);
    auto white = torch::full({static_cast<int64_t>(g), n_white}, -1, torch::kInt);
    for (size_t i = 0; i < g; ++i) {
      const Slot& sl = slots[where[i]];
      const DecodingOptions& dec = sl.job.page.decoding;
      const auto& ids = sl.out.prompt_ids;
      std::copy(ids.begin(), ids.end(), seq[static_cast<int64_t>(i)].data_ptr<int32_t>());
      lens[static_cast<int64_t>(i)] = static_cast<int32_t>(ids.size());
      int32_t* p = params[static_cast<int64_t>(i)].data_ptr<int32_t>();
      p[k::kPromptLen] = static_cast<int32_t>(ids.size());
      p[k::kMaxNew] = static_cast<int32_t>(sl.max_new);
      p[k::kNoRepeatN] = dec.no_repeat_ngram;
      p[k::kNgramN] = dec.ngram;
      p[k::kNgramWindow] = dec.ngram_window;
      p[k::kState] = sl.host_choice ? k::kHostChoice : k::kGreedy;
      p[k::kEos] = dec.ignore_eos ? -1 : man.tokens.eos;
      for (int64_t w = 0; w < n_white && w < static_cast<int64_t>(dec.ngram_whitelist.size()); ++w)
        white[static_cast<int64_t>(i)][w] = dec.ngram_whitelist[w];
    }
    for (int64_t s : where) slots[s].visual = torch::Tensor();
    state.seq.index_copy_(0, where_t, seq.to(m.device));
    state.lens.index_copy_(0, where_t, lens.to(m.device));
    state.params.index_copy_(0, where_t, params.to(m.device));
    state.whitelist.index_copy_(0, where_t, white.to(m.device));
    auto emitted = select_tokens(logits, where_t, state, torch::full({static_cast<int64_t>(g)}, -1, lopt)).to(torch::kCPU);
    const double prefill_ms = ms_since(t_prefill);
    for (size_t i = 0; i < g; ++i) {
      Slot& sl = slots[where[i]];
      sl.out.encode_ms = encode_ms / static_cast<double>(g);
      sl.out.prefill_ms = prefill_ms / static_cast<double>(g);
      sl.t_start = Clock::now();  // decode_ms counts from here
    }
    const auto chosen = host_choose(where, emitted, logits);
    const int64_t* e = emitted.data_ptr<int64_t>();
    for (size_t i = 0; i < g; ++i) {
      if (e[i] == k::kEmittedHost) continue;
      take_token(where[i], e[i]);
    }
    for (const auto& [s, tok] : chosen) take_token(s, tok);
  };

  // Validates a page and books slot s for it; false (page handed back as an error) when it
  // cannot run, or when it needs no decoding (empty token budget: finished at once).
  auto book = [&](Pending&& p, int64_t s) -> bool {
    Slot& sl = slots[s];
    sl.out = PageOutput();
    try {
      prepare_views(p.page, man.modes);
      const ModeSpec& mode = find_mode(man.modes, p.page.mode);
      const Views& v = *p.page.views;
      sl.out.tiles_w = v.tiles_w;
      sl.out.tiles_h = v.tiles_h;
      sl.out.n_image_tokens = count_image_tokens(mode, v.tiles_w, v.tiles_h, v.has_tiles());
      sl.out.prompt_ids = build_prompt_ids(m.tokenizer, p.page.prompt, sl.out.n_image_tokens, man.tokens.bos, man.tokens.image);
    } catch (const std::exception& e) {
      fail_page(std::move(p), message_of(e));
      return false;
    }
    sl.visual = torch::Tensor();
    sl.encode_ms = 0;
    sl.prompt_len = static_cast<int64_t>(sl.out.prompt_ids.size());
    if (sl.prompt_len >= max_len) {
      fail_page(std::move(p), "the prompt has " + std::to_string(sl.prompt_len) + " tokens, more than the " +
                                  std::to_string(max_len) + " positions of a cache slot (raise --max-tokens)");
      return false;
    }
    const DecodingOptions& dec = p.page.decoding;
    sl.max_new = std::max<int64_t>(0, std::min<int64_t>({dec.max_new_tokens, man.max_positions - sl.prompt_len, max_len - sl.prompt_len}));
    sl.job = std::move(p);
    sl.job.page.image = ImageU8();  // the views are all the model needs
    sl.generated.clear();
    sl.looping = false;
    sl.host_choice = dec.temperature > 0;
    sl.rng.seed(dec.seed);
    sl.t_start = Clock::now();
    ++sl.epoch;
    if (sl.max_new == 0) {  // the prompt already fills the context
      sl.busy = true;
      finish(s, "length");
      return false;
    }
    sl.busy = true;
    return true;
  };

  // The encoder thread (CUDA): pulls pages from the source while the device decodes, prepares their
  // views and encodes them on its own stream; the main thread prefills them when slots free up
  // (its stream waits on the encoder's fence: no host sync). The main thread pulls from the source
  // itself only when nothing runs and the encoder thread is idle (it then encodes inline).
  struct Encoded {
    Pending job;
    torch::Tensor visual;  // undefined: not encoded here (the main thread books/fails/encodes it)
    std::shared_ptr<Fence> fence;
    double encode_ms = 0;
  };
  struct EncoderThread {
    std::mutex mu;  // guards everything below and the source
    std::condition_variable cv;
    std::deque<Encoded> ready;
    bool busy = false, stop = false;
    std::exception_ptr error;
    std::thread thread;
  };
  // On CUDA by default (OCR_NO_ENCODER_THREAD=1: off); OCR_ENCODER_THREAD=1 forces it on (the CPU
  // tests use that to exercise the hand-over).
  const char* force_encoder_thread = std::getenv("OCR_ENCODER_THREAD");
  const bool use_encoder_thread = (m.device.is_cuda() && !std::getenv("OCR_NO_ENCODER_THREAD")) ||
                                  (force_encoder_thread && std::string(force_encoder_thread) == "1");
  const char* admit_policy = std::getenv("OCR_ADMIT");  // "overlap": decode while a group encodes
  const bool fill_first = !(admit_policy && std::string(admit_policy) == "overlap");
  std::mutex source_mu;  // the source is pulled by one thread at a time
  EncoderThread enc;
  constexpr size_t kReadyPages = 2 * kAdmitPages;  // encoded pages waiting for slots, at most
  auto encode_group = [&](std::vector<Encoded>& group) {
    // Views first (CPU); a page whose views fail is passed on unencoded and fails when booked.
    std::vector<size_t> ok;
    for (size_t i = 0; i < group.size(); ++i) {
      try {
        prepare_views(group[i].job.page, man.modes);
        ok.push_back(i);
      } catch (const std::exception&) {
      }
    }
    // Out of memory: halve and retry; a page that cannot be encoded even alone is passed on
    // unencoded (the main thread retries it inline and fails it there if it must).
    std::function<void(size_t, size_t)> encode_range = [&](size_t a, size_t b) {
      if (a >= b) return;
      const auto t0 = Clock::now();
      try {
        std::vector<const Views*> views;
        for (size_t i = a; i < b; ++i) views.push_back(group[ok[i]].job.page.views.get());
        auto visual = encode_pages(m, views, views_per_call);
        auto fence = std::make_shared<Fence>(m.device);
        const double ms = ms_since(t0) / static_cast<double>(b - a);
        for (size_t i = a; i < b; ++i) {
          group[ok[i]].visual = visual[i - a];
          group[ok[i]].fence = fence;
          group[ok[i]].encode_ms = ms;
        }
      } catch (const std::exception& e) {
        if (!is_oom(e)) throw;
        release_cached_memory(m.device);
        if (b - a == 1) return;
        const size_t mid = a + (b - a) / 2;
        encode_range(a, mid);
        encode_range(mid, b);
      }
    };
    encode_range(0, ok.size());
  };
  auto encoder_main = [&] {
    prepare_model_thread();
    // High priority by default: pages reach the decoding batch sooner (fewer steps at a partial
    // batch), and decoding steps fill the SMs the encoder leaves idle. OCR_ENCODER_PRIORITY=normal
    // gives both streams the same priority.
    const char* prio = std::getenv("OCR_ENCODER_PRIORITY");
    StreamScope stream(m.device, !(prio && std::string(prio) == "normal"));
    try {
      while (true) {
        {
          std::unique_lock<std::mutex> lock(enc.mu);
          enc.cv.wait(lock, [&] { return enc.stop || enc.ready.size() < kReadyPages; });
          if (enc.stop) return;
        }
        std::vector<Encoded> group;
        {
          std::lock_guard<std::mutex> src_lock(source_mu);
          {
            std::lock_guard<std::mutex> lock(enc.mu);
            if (enc.stop) return;
            enc.busy = true;
          }
          while (group.size() < static_cast<size_t>(kAdmitPages)) {
            Encoded e;
            if (!source.next(e.job.page, e.job.tag, false)) break;
            group.push_back(std::move(e));
          }
        }
        if (!group.empty()) encode_group(group);
        {
          std::lock_guard<std::mutex> lock(enc.mu);
          for (auto& e : group) enc.ready.push_back(std::move(e));
          enc.busy = false;
        }
        enc.cv.notify_all();
        if (group.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(enc.mu);
      enc.error = std::current_exception();
      enc.busy = false;
      enc.cv.notify_all();
    }
  };
  struct JoinEncoder {
    EncoderThread& enc;
    ~JoinEncoder() {
      {
        std::lock_guard<std::mutex> lock(enc.mu);
        enc.stop = true;
      }
      enc.cv.notify_all();
      if (enc.thread.joinable()) enc.thread.join();
    }
  } join_encoder{enc};
  if (use_encoder_thread) enc.thread = std::thread(encoder_main);

  // Admits pages into free slots. Returns after pulling nothing when none is ready, unless
  // nothing is running (then it waits for the encoder thread or the source).
  auto admit = [&](bool can_wait) {
    std::vector<int64_t> free;
    for (int64_t s = 0; s < slot_limit; ++s)
      if (!slots[s].busy) free.push_back(s);
    if (free.empty()) return;
    std::vector<int64_t> where;  // pages encoded here, inline
    std::vector<int64_t> where_encoded;  // pages the encoder thread encoded
    size_t next_free = 0;
    auto room = [&] {
      return next_free < free.size() && static_cast<int64_t>(where.size() + where_encoded.size()) < kAdmitPages;
    };
    while (room() && !retry.empty()) {
      Pending p = std::move(retry.front());
      retry.pop_front();
      if (book(std::move(p), free[next_free])) where.push_back(free[next_free++]);
    }
    if (use_encoder_thread) {
      std::unique_lock<std::mutex> lock(enc.mu);
      if (enc.error) std::rethrow_exception(enc.error);
      // Wait for the group in progress when nothing runs, and (fill first) while a whole group of
      // slots is free: pages join the batch as soon as they can instead of the batch stepping at
      // part size meanwhile (each step streams the expert weights whatever its size). Never waits
      // for the source itself: the encoder thread is busy only while it encodes.
      const bool fill = fill_first && static_cast<int64_t>(free.size()) >= kAdmitPages;
      if ((can_wait || fill) && where.empty())
        enc.cv.wait(lock, [&] { return !enc.ready.empty() || !enc.busy || enc.error; });
      if (enc.error) std::rethrow_exception(enc.error);
      bool took = false;
      while (room() && !enc.ready.empty()) {
        Encoded e = std::move(enc.ready.front());
        enc.ready.pop_front();
        took = true;
        const int64_t s = free[next_free];
        const bool encoded = e.visual.defined();
        if (!book(std::move(e.job), s)) continue;
        ++next_free;
        if (!encoded) {
          where.push_back(s);
          continue;
        }
        e.fence->wait_here();
        use_on_current_stream(e.visual);
        slots[s].visual = std::move(e.visual);
        slots[s].encode_ms = e.encode_ms;
        where_encoded.push_back(s);
      }
      lock.unlock();
      if (took) enc.cv.notify_all();
      can_wait = can_wait && !took && where.empty();
    }
    std::unique_lock<std::mutex> src_lock(source_mu, std::defer_lock);
    if (use_encoder_thread && can_wait) {
      // Nothing runs, nothing is encoded: pull here, waiting for the source, but only while the
      // encoder thread holds no page (the source may wait for pages in flight to finish).
      src_lock.lock();
      std::lock_guard<std::mutex> lock(enc.mu);
      if (enc.busy || !enc.ready.empty()) can_wait = false;
    }
    if (!use_encoder_thread || can_wait) {
      while (room()) {
        if (exhausted) break;
        Pending p;
        const bool wait = can_wait && where.empty();
        if (!source.next(p.page, p.tag, wait)) {
          if (wait) exhausted = true;
          break;
        }
        const int64_t s = free[next_free];
        if (book(std::move(p), s)) {
          where.push_back(s);
          ++next_free;
        }
      }
    }
    if (src_lock.owns_lock()) src_lock.unlock();
    // Encode + prefill; on out-of-memory, halve the group (a single page fails).
    std::function<void(const std::vector<int64_t>&)> run_group = [&](const std::vector<int64_t>& at) {
      if (at.empty()) return;
      try {
        prefill_group(at);
      } catch (const std::exception& e) {
        if (!is_oom(e)) throw;
        release_cached_memory(m.device);
        if (options.log)
          options.log("out of memory while encoding and prefilling " + std::to_string(at.size()) + " page(s)" +
                      (at.size() > 1 ? ": halving the group and retrying" : ": the page fails"));
        if (at.size() == 1) {
          slots[at[0]].busy = false;
          slots[at[0]].visual = torch::Tensor();
          ++slots[at[0]].epoch;
          fail_page(std::move(slots[at[0]].job), "out of memory even alone: " + message_of(e));
          return;
        }
        const size_t half = at.size() / 2;
        run_group(std::vector<int64_t>(at.begin(), at.begin() + half));
        run_group(std::vector<int64_t>(at.begin() + half, at.end()));
      }
    };
    std::sort(where_encoded.begin(), where_encoded.end());
    run_group(where_encoded);
    std::sort(where.begin(), where.end());
    run_group(where);
  };

  // Out of memory in a decoding step: evict the upper half of the busy slots back to the queue
  // (they restart from scratch), lower the slot limit, drop the captured graphs.
  auto shrink = [&](const std::exception& e) {
    release_cached_memory(m.device);
    std::vector<int64_t> busy;
    for (int64_t s = 0; s < n_slots; ++s)
      if (slots[s].busy) busy.push_back(s);
    if (busy.size() <= 1) {
      // One page: if graphs were on, their capture (or their private pool) is what did not fit;
      // decode without graphs from now on (the step state was restored by the failed capture).
      if (!graphs) throw ModelError("out of memory with a single page: " + message_of(e));
      graphs.reset();
      if (options.log) options.log("out of memory in a decoding step with one page: decoding without CUDA graphs from now");
      return;
    }
    const size_t keep = busy.size() / 2;
    for (size_t i = busy.size(); i-- > keep;) {
      Slot& sl = slots[busy[i]];
      state.params[busy[i]][k::kState].fill_(k::kIdle);
      state.next_pos[busy[i]].fill_(0);
      sl.busy = false;
      ++sl.epoch;
      retry.push_front(std::move(sl.job));
    }
    slot_limit = busy[keep - 1] + 1;
    if (graphs) {
      graphs.reset();
      graphs = std::make_unique<GraphSteps>(m, state);
    }
    if (options.log)
      options.log("out of memory in a decoding step: " + std::to_string(busy.size() - keep) +
                  " page(s) evicted back to the queue (they restart), at most " + std::to_string(slot_limit) +
                  " slots from now");
  };

  struct InFlight {
    HostCopy copy;
    std::vector<int64_t> step_slots;
    std::vector<uint64_t> epochs;
  };
  std::optional<InFlight> pending;
  auto process = [&](InFlight& f) {
    const torch::Tensor& e_cpu = f.copy.wait();
    const int64_t* e = e_cpu.data_ptr<int64_t>();
    for (size_t j = 0; j < f.step_slots.size(); ++j) {
      const int64_t s = f.step_slots[j];
      Slot& sl = slots[s];
      if (!sl.busy || sl.epoch != f.epochs[j] || e[j] == k::kEmittedHost) continue;
      take_token(s, e[j]);
    }
  };

  while (true) {
    if (cancel && cancel->load()) throw Interrupted("interrupted");
    bool any_busy = false;
    for (int64_t s = 0; s < n_slots && !any_busy; ++s) any_busy = slots[s].busy;
    {
      const auto t_admit = Clock::now();
      admit(/*can_wait=*/!any_busy && !pending);
      stats.admit_ms += ms_since(t_admit);
    }
    std::vector<int64_t> busy;
    bool any_host = false;
    int64_t need_k = 1;
    for (int64_t s = 0; s < n_slots; ++s) {
      if (!slots[s].busy) continue;
      busy.push_back(s);
      any_host |= slots[s].host_choice;
      need_k = std::max<int64_t>(need_k, slots[s].prompt_len + static_cast<int64_t>(slots[s].generated.size()) + 2);
    }
    if (busy.empty()) {
      if (pending) {
        process(*pending);
        pending.reset();
        continue;
      }
      if (exhausted && retry.empty()) break;
      continue;
    }
    try {
      maybe_fail("step");
      if (graphs) {
        const int64_t B = std::min(n_slots, pow2_at_least(busy.back() + 1, 1));
        const int64_t K = std::min(max_len, (need_k + kv_bucket() - 1) / kv_bucket() * kv_bucket());
        const size_t n_graphs = graphs->captured();
        const auto t_step = Clock::now();
        StepResult r = graphs->run(B, K);
        if (graphs->captured() != n_graphs) {
          ++stats.graphs_captured;
          stats.capture_ms += ms_since(t_step);
        }
        ++stats.steps;
        stats.rows += static_cast<int64_t>(busy.size());
        stats.padded_rows += B;
        InFlight f;
        for (int64_t s = 0; s < B; ++s) {
          f.step_slots.push_back(s);
          f.epochs.push_back(slots[s].epoch);
        }
        f.copy.start(r.emitted);
        if (pending) {
          process(*pending);
          pending.reset();
        }
        if (any_host) {  // sampling rows: the host draws now, synchronously
          const torch::Tensor& e_cpu = f.copy.wait();
          const auto chosen = host_choose(f.step_slots, e_cpu, r.logits);
          process(f);
          for (const auto& [s, tok] : chosen)
            if (slots[s].busy) take_token(s, tok);
        } else {
          pending = std::move(f);
        }
      } else {
        auto rows = torch::tensor(busy, torch::kLong).to(m.device);
        StepResult r = eager_step(m, state, rows, need_k - 1);
        ++stats.steps;
        stats.rows += static_cast<int64_t>(busy.size());
        stats.padded_rows += static_cast<int64_t>(busy.size());
        InFlight f;
        f.step_slots = busy;
        for (int64_t s : busy) f.epochs.push_back(slots[s].epoch);
        f.copy.start(r.emitted);
        const auto chosen = any_host ? host_choose(f.step_slots, f.copy.wait(), r.logits)
                                     : std::vector<std::pair<int64_t, int64_t>>{};
        process(f);
        for (const auto& [s, tok] : chosen)
          if (slots[s].busy) take_token(s, tok);
      }
    } catch (const Interrupted&) {
      throw;
    } catch (const ModelError&) {
      throw;
    } catch (const std::exception& e) {
      if (!is_oom(e)) throw;
      // The step before this one completed: its tokens are already in the device-side sequences,
      // so the host must take them too (dropping them would shift every kept page by a token).
      if (pending) {
        process(*pending);
        pending.reset();
      }
      shrink(e);
    }
  }
}

}  // namespace ocr
