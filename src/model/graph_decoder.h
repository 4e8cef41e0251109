// One decoding step (embed -> 12 layers -> lm_head) captured once as a CUDA graph and replayed:
// no interpreter or launch overhead per step, and no host synchronisation inside the step.
#pragma once

#include <torch/script.h>

#include <memory>

#include "model/model.h"

namespace ocr {

// True when this build can capture CUDA graphs and `model` runs on a CUDA device.
bool cuda_graphs_supported(const LoadedModel& model);

class GraphDecodeStep {
 public:
  // For a batch of every slot of `kv_cache` (n_slots rows, slot i = row i). The attended length
  // is the whole cache (keys beyond each row's position are masked), so shapes never change.
  GraphDecodeStep(LoadedModel& model, torch::Tensor kv_cache);
  ~GraphDecodeStep();

  // ids [n_slots, 1] and positions [n_slots, 1] (int64, any device) -> logits [n_slots, vocab]
  // float32, a buffer that the next call overwrites. Captures on the first call.
  const torch::Tensor& run(const torch::Tensor& ids, const torch::Tensor& positions);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ocr
