#include "model/step.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/jit/runtime/graph_executor.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <stdexcept>
#include <utility>

#include "kernels/select.h"
#include "model/decoder_runner.h"
#include "model/graph_decoder.h"

#if __has_include(<ATen/cuda/CUDAGraph.h>) && __has_include(<c10/cuda/CUDAGuard.h>)
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#define OCR_STEP_CUDA_GRAPHS 1
#endif

namespace ocr {

namespace {
// Set once a memory cap is in force (cap_device_memory): graph captures then start from an empty
// cache.
std::atomic<bool>& memory_cap_flag() {
  static std::atomic<bool> flag{false};
  return flag;
}
[[maybe_unused]] bool memory_capped() { return memory_cap_flag().load(); }

// Fault injection (GPU check of the out-of-memory recovery): OCR_FAULT_OOM="capture:N" throws
// OutOfMemoryError inside the N-th CUDA-graph capture, with the capture open, where an allocation
// failure of the capture would surface.
[[maybe_unused]] void maybe_fail_capture() {
  static const int at = [] {
    const char* spec = std::getenv("OCR_FAULT_OOM");
    return spec && std::strncmp(spec, "capture:", 8) == 0 ? std::atoi(spec + 8) : 0;
  }();
  static std::atomic<int> calls{0};
  if (at > 0 && ++calls == at)
    TORCH_CHECK_WITH(OutOfMemoryError, false, "CUDA out of memory (injected by OCR_FAULT_OOM=capture:", at, ")");
}
}  // namespace

StepState make_step_state(const LoadedModel& model, int64_t n_slots, int64_t max_len, int64_t n_white) {
  const auto iopt = torch::TensorOptions().dtype(torch::kInt).device(model.device);
  const auto lopt = torch::TensorOptions().dtype(torch::kLong).device(model.device);
  StepState s;
  s.cache = make_kv_cache(model, n_slots, max_len);
  s.seq = torch::zeros({n_slots, max_len}, iopt);
  s.lens = torch::zeros({n_slots}, iopt);
  s.params = torch::zeros({n_slots, kernels::kSelectParams}, iopt);
  s.whitelist = torch::full({n_slots, std::max<int64_t>(1, n_white)}, -1, iopt);
  s.next_ids = torch::zeros({n_slots, 1}, lopt);
  s.next_pos = torch::zeros({n_slots, 1}, lopt);
  return s;
}

void select_tokens_into(torch::Tensor& logits, const torch::Tensor& rows, StepState& s, const torch::Tensor& forced,
                        torch::Tensor& emitted) {
  static const c10::OperatorHandle op = c10::Dispatcher::singleton().findSchemaOrThrow("ocr::select_tokens", "");
  torch::jit::Stack stack{logits, rows, s.seq, s.lens, s.params, s.whitelist, forced, s.next_ids, s.next_pos, emitted};
  op.callBoxed(&stack);
}

torch::Tensor select_tokens(torch::Tensor& logits, const torch::Tensor& rows, StepState& s, const torch::Tensor& forced) {
  auto emitted = torch::empty({logits.size(0)}, torch::TensorOptions().dtype(torch::kLong).device(logits.device()));
  select_tokens_into(logits, rows, s, forced, emitted);
  return emitted;
}

StepResult eager_step(LoadedModel& model, StepState& s, const torch::Tensor& rows, int64_t kv_len) {
  torch::NoGradGuard no_grad;
  const int64_t m = rows.size(0);
  auto ids = s.next_ids.index_select(0, rows);
  auto pos = s.next_pos.index_select(0, rows);
  const auto lopt = torch::TensorOptions().dtype(torch::kLong).device(model.device);
  // All slots (ascending, unique: 0..n-1) are attended in place by the decoder, others gathered.
  StepResult r;
  torch::Tensor cache = s.cache.narrow(3, 0, kv_len);  // a gather copies only the attended rows
  r.logits = decoder_forward(model, embed_ids(model, ids), pos, cache, rows, kv_len, torch::zeros({m}, lopt)).logits;
  r.logits = r.logits.contiguous();
  r.emitted = select_tokens(r.logits, rows, s, torch::full({m}, -1, lopt));
  return r;
}

struct GraphSteps::Impl {
  LoadedModel* model = nullptr;
  StepState* state = nullptr;
#ifdef OCR_STEP_CUDA_GRAPHS
  struct Graph {
    at::cuda::CUDAGraph graph;
    torch::Tensor rows, forced, zeros, logits, emitted;
  };
  std::map<std::pair<int64_t, int64_t>, std::unique_ptr<Graph>> graphs;
  at::cuda::MempoolId_t pool{0, 0};
  bool have_pool = false;
#endif
};

GraphSteps::GraphSteps(LoadedModel& model, StepState& state) : impl_(std::make_unique<Impl>()) {
  if (!cuda_graphs_supported(model)) throw std::runtime_error("CUDA graphs need a CUDA model in a CUDA build");
  impl_->model = &model;
  impl_->state = &state;
}

GraphSteps::~GraphSteps() = default;

size_t GraphSteps::captured() const {
#ifdef OCR_STEP_CUDA_GRAPHS
  return impl_->graphs.size();
#else
  return 0;
#endif
}

StepResult GraphSteps::run(int64_t B, int64_t K) {
  torch::NoGradGuard no_grad;
#ifdef OCR_STEP_CUDA_GRAPHS
  Impl& im = *impl_;
  StepState& s = *im.state;
  LoadedModel& model = *im.model;
  auto& slot = im.graphs[{B, K}];
  if (!slot) {
    auto g = std::make_unique<Impl::Graph>();
    const auto lopt = torch::TensorOptions().dtype(torch::kLong).device(model.device);
    g->rows = torch::arange(B, lopt);
    g->forced = torch::full({B}, -1, lopt);
    g->zeros = torch::zeros({B}, lopt);
    g->emitted = torch::empty({B}, lopt);
    // The first B slots, attended in place (the decoder's n_b == n_slots path).
    torch::Tensor cache = s.cache.narrow(2, 0, B);
    torch::Tensor ids = s.next_ids.narrow(0, 0, B);
    torch::Tensor pos = s.next_pos.narrow(0, 0, B);
    auto body = [&] {
      auto logits = decoder_forward(model, embed_ids(model, ids), pos, cache, g->rows, K, g->zeros).logits;
      select_tokens_into(logits, g->rows, s, g->forced, g->emitted);
      return logits;
    };
    // Warm-up runs real steps: keep the small state tensors and restore them (the cache rows it
    // writes are rewritten by the real step before anyone attends them).
    auto lens = s.lens.clone(), params = s.params.clone(), nid = s.next_ids.clone(), npos = s.next_pos.clone();
    const int dev = model.device.index() < 0 ? 0 : model.device.index();
    auto stream = c10::cuda::getStreamFromPool(false, dev);
    c10::cuda::getCurrentCUDAStream(dev).synchronize();
    const auto restore = [&] {
      s.lens.copy_(lens);
      s.params.copy_(params);
      s.next_ids.copy_(nid);
      s.next_pos.copy_(npos);
    };
    {
      c10::cuda::CUDAStreamGuard guard(stream);
      // An error here (out of memory) leaves with the capture ended and the state restored: the
      // engine recovers from it (fewer slots, graphs dropped) and goes on with the same pages; a
      // stream left capturing would fail every later CUDA call of this thread ("operation not
      // permitted when stream is capturing"), and tokens appended by a warm-up step would be lost
      // to the host.
      bool capturing = false;
      try {
        for (int i = 0; i < 2; ++i) body();
        restore();
        // Under a memory cap (--max-gpu-memory), hand the cached free blocks (the warm-up's, the
        // encoder thread's) back first: the capture allocates into its private pool, and the
        // allocator cannot free cached blocks while a capture is under way, so it would fail.
        if (memory_capped()) {
          stream.synchronize();
          c10::cuda::CUDACachingAllocator::emptyCache();
        }
        if (!im.have_pool) {
          im.pool = at::cuda::graph_pool_handle();
          im.have_pool = true;
        }
        // Thread-local capture mode: the encoder thread keeps allocating and launching on its own
        // stream while this thread captures (global mode would invalidate the capture).
        g->graph.capture_begin(im.pool, cudaStreamCaptureModeThreadLocal);
        capturing = true;
        maybe_fail_capture();
        g->logits = body();
        capturing = false;
        g->graph.capture_end();
      } catch (...) {
        try {
          if (capturing) g->graph.capture_end();
          restore();
          stream.synchronize();
        } catch (...) {
        }
        throw;
      }
    }
    stream.synchronize();
    slot = std::move(g);
  }
  slot->graph.replay();
  return {slot->emitted, slot->logits};
#else
  (void)B;
  (void)K;
  throw std::runtime_error("CUDA graphs are not available in this build");
#endif
}

}  // namespace ocr

#if __has_include(<ATen/cuda/CUDAEvent.h>) && defined(OCR_STEP_CUDA_GRAPHS)
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDACachingAllocator.h>
#define OCR_STEP_CUDA_EVENTS 1
#endif

namespace ocr {

struct HostCopy::Impl {
  torch::Tensor host;
#ifdef OCR_STEP_CUDA_EVENTS
  std::unique_ptr<at::cuda::CUDAEvent> event;
#endif
};

HostCopy::HostCopy() : impl_(std::make_unique<Impl>()) {}
HostCopy::~HostCopy() = default;
HostCopy::HostCopy(HostCopy&&) noexcept = default;
HostCopy& HostCopy::operator=(HostCopy&&) noexcept = default;

void HostCopy::start(const torch::Tensor& t) {
#ifdef OCR_STEP_CUDA_EVENTS
  if (t.is_cuda()) {
    impl_->host = torch::empty(t.sizes(), t.options().device(torch::kCPU).pinned_memory(true));
    impl_->host.copy_(t, /*non_blocking=*/true);
    impl_->event = std::make_unique<at::cuda::CUDAEvent>();
    impl_->event->record(c10::cuda::getCurrentCUDAStream(t.device().index()));
    return;
  }
#endif
  impl_->host = t.to(torch::kCPU).contiguous();
}

const torch::Tensor& HostCopy::wait() {
#ifdef OCR_STEP_CUDA_EVENTS
  if (impl_->event) {
    impl_->event->synchronize();
    impl_->event.reset();
  }
#endif
  return impl_->host;
}

DeviceMemory device_memory(const torch::Device& device) {
  DeviceMemory m;
#ifdef OCR_STEP_CUDA_EVENTS
  if (device.is_cuda()) {
    const int dev = device.index() < 0 ? 0 : device.index();
    c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(dev));
    size_t free_b = 0, total_b = 0;
    C10_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    m.total = static_cast<int64_t>(total_b);
    m.free = static_cast<int64_t>(free_b);
    m.allocated = c10::cuda::CUDACachingAllocator::getDeviceStats(static_cast<c10::DeviceIndex>(dev)).allocated_bytes[0].current;
  }
#else
  (void)device;
#endif
  return m;
}

void cap_device_memory(const torch::Device& device, int64_t bytes) {
#ifdef OCR_STEP_CUDA_EVENTS
  if (!device.is_cuda()) return;
  memory_cap_flag().store(true);
  const auto m = device_memory(device);
  const int dev = device.index() < 0 ? 0 : device.index();
  const double fraction = std::min(1.0, static_cast<double>(bytes) / static_cast<double>(m.total));
  c10::cuda::CUDACachingAllocator::setMemoryFraction(fraction, static_cast<c10::DeviceIndex>(dev));
#else
  (void)device;
  (void)bytes;
#endif
}

void release_cached_memory(const torch::Device& device) {
#ifdef OCR_STEP_CUDA_EVENTS
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::emptyCache();
#else
  (void)device;
#endif
}

struct StreamScope::Impl {
#ifdef OCR_STEP_CUDA_EVENTS
  std::optional<c10::cuda::CUDAStreamGuard> guard;
#endif
};

StreamScope::StreamScope(const torch::Device& device, bool high_priority) : impl_(std::make_unique<Impl>()) {
#ifdef OCR_STEP_CUDA_EVENTS
  if (device.is_cuda()) {
    const auto dev = static_cast<c10::DeviceIndex>(device.index() < 0 ? 0 : device.index());
    impl_->guard.emplace(c10::cuda::getStreamFromPool(high_priority, dev));
  }
#else
  (void)device;
  (void)high_priority;
#endif
}

StreamScope::~StreamScope() = default;

struct Fence::Impl {
#ifdef OCR_STEP_CUDA_EVENTS
  std::optional<at::cuda::CUDAEvent> event;
  c10::DeviceIndex device = 0;
#endif
};

Fence::Fence(const torch::Device& device) : impl_(std::make_shared<Impl>()) {
#ifdef OCR_STEP_CUDA_EVENTS
  if (device.is_cuda()) {
    impl_->device = static_cast<c10::DeviceIndex>(device.index() < 0 ? 0 : device.index());
    impl_->event.emplace();
    impl_->event->record(c10::cuda::getCurrentCUDAStream(impl_->device));
  }
#else
  (void)device;
#endif
}

Fence::~Fence() = default;

void Fence::wait_here() const {
#ifdef OCR_STEP_CUDA_EVENTS
  if (impl_->event) impl_->event->block(c10::cuda::getCurrentCUDAStream(impl_->device));
#endif
}

void use_on_current_stream(const torch::Tensor& t) {
#ifdef OCR_STEP_CUDA_EVENTS
  if (t.defined() && t.is_cuda())
    c10::cuda::CUDACachingAllocator::recordStream(t.storage().data_ptr(), c10::cuda::getCurrentCUDAStream(t.device().index()));
#else
  (void)t;
#endif
}

void prepare_model_thread() {
  // Both are thread-local: see load_model.
  torch::jit::setGraphExecutorOptimize(false);
  c10::GradMode::set_enabled(false);
}

}  // namespace ocr
