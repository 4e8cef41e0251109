#include "model/graph_decoder.h"

#include <stdexcept>

#include "model/decoder_runner.h"

#if __has_include(<ATen/cuda/CUDAGraph.h>) && __has_include(<c10/cuda/CUDAGuard.h>)
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#define OCR_HAVE_CUDA_GRAPHS 1
#endif

namespace ocr {

bool cuda_graphs_supported(const LoadedModel& model) {
#ifdef OCR_HAVE_CUDA_GRAPHS
  return model.device.is_cuda();
#else
  (void)model;
  return false;
#endif
}

struct GraphDecodeStep::Impl {
  LoadedModel* model = nullptr;
  torch::Tensor cache, ids, positions, slots, last, logits;
  int64_t max_len = 0;
#ifdef OCR_HAVE_CUDA_GRAPHS
  std::unique_ptr<at::cuda::CUDAGraph> graph;
#endif
  torch::Tensor step() {
    return decoder_forward(*model, embed_ids(*model, ids), positions, cache, slots, max_len, last).logits;
  }
};

GraphDecodeStep::GraphDecodeStep(LoadedModel& model, torch::Tensor kv_cache) : impl_(std::make_unique<Impl>()) {
  if (!cuda_graphs_supported(model)) throw std::runtime_error("CUDA graphs need a CUDA model in a CUDA build");
  const int64_t n = kv_cache.size(2);
  const auto lopt = torch::TensorOptions().dtype(torch::kLong).device(model.device);
  impl_->model = &model;
  impl_->cache = kv_cache;
  impl_->max_len = kv_cache.size(3);
  impl_->ids = torch::zeros({n, 1}, lopt);
  impl_->positions = torch::zeros({n, 1}, lopt);
  impl_->slots = torch::arange(n, lopt);
  impl_->last = torch::zeros({n}, lopt);
}

GraphDecodeStep::~GraphDecodeStep() = default;

const torch::Tensor& GraphDecodeStep::run(const torch::Tensor& ids, const torch::Tensor& positions) {
  torch::NoGradGuard no_grad;
  Impl& s = *impl_;
  s.ids.copy_(ids, /*non_blocking=*/true);
  s.positions.copy_(positions, /*non_blocking=*/true);
#ifdef OCR_HAVE_CUDA_GRAPHS
  if (!s.graph) {
    // Warm up on a side stream (allocator, cuBLAS handles), then capture. A step is idempotent
    // for the same inputs (it rewrites the same cache rows before reading them).
    auto stream = c10::cuda::getStreamFromPool(false, s.model->device.index());
    c10::cuda::getCurrentCUDAStream(s.model->device.index()).synchronize();  // inputs copied
    {
      c10::cuda::CUDAStreamGuard guard(stream);
      for (int i = 0; i < 2; ++i) s.step();
      s.graph = std::make_unique<at::cuda::CUDAGraph>();
      s.graph->capture_begin({0, 0}, cudaStreamCaptureModeThreadLocal);
      try {
        s.logits = s.step();
      } catch (...) {
        // End the capture before the error leaves (a stream left capturing fails every later call).
        try {
          s.graph->capture_end();
        } catch (...) {
        }
        s.graph.reset();
        throw;
      }
      s.graph->capture_end();
    }
    stream.synchronize();
  }
  s.graph->replay();
#endif
  return s.logits;
}

}  // namespace ocr
