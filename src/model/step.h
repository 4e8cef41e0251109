// One decoding step of many KV-cache slots, with the next token chosen on the device
// (ocr::select_tokens): eagerly over any ascending set of slots, or as CUDA graphs over the first
// B slots attending K keys (captured once per (B, K) bucket, replayed without host sync).
#pragma once

#include <torch/script.h>

#include <cstdint>
#include <memory>

#include "model/model.h"

namespace ocr {

// Device-side decoding state of every slot (layout: src/kernels/select.h).
struct StepState {
  torch::Tensor cache;      // [n_layers, 2, n_slots, max_len, n_heads, head_dim]
  torch::Tensor seq;        // [n_slots, max_len] int32: prompt then generated ids
  torch::Tensor lens;       // [n_slots] int32
  torch::Tensor params;     // [n_slots, kSelectParams] int32
  torch::Tensor whitelist;  // [n_slots, n_white] int32, -1 = unused
  torch::Tensor next_ids;   // [n_slots, 1] int64: input of the next step
  torch::Tensor next_pos;   // [n_slots, 1] int64
  int64_t slots() const { return seq.size(0); }
  int64_t max_len() const { return seq.size(1); }
};

StepState make_step_state(const LoadedModel& model, int64_t n_slots, int64_t max_len, int64_t n_white);

// ocr::select_tokens on logits [m, vocab] whose row j belongs to slot rows[j] -> emitted [m].
torch::Tensor select_tokens(torch::Tensor& logits, const torch::Tensor& rows, StepState& state,
                            const torch::Tensor& forced);
// The same, writing into `emitted` [m].
void select_tokens_into(torch::Tensor& logits, const torch::Tensor& rows, StepState& state,
                        const torch::Tensor& forced, torch::Tensor& emitted);

struct StepResult {
  torch::Tensor emitted;  // [m] int64 on the device (see select_tokens)
  torch::Tensor logits;   // [m, vocab] float32, bans applied (for rows the host chooses)
};

// A step of the slots `rows` (int64, ascending, on the device) attending kv_len keys.
StepResult eager_step(LoadedModel& model, StepState& state, const torch::Tensor& rows, int64_t kv_len);

// CUDA graphs of steps over slots 0..B-1 attending K keys, sharing one memory pool.
class GraphSteps {
 public:
  GraphSteps(LoadedModel& model, StepState& state);
  ~GraphSteps();
  // Replays (capturing first if needed) the (B, K) step. Results are buffers of that graph,
  // valid until its next replay. Warm-up before capture leaves `state` as it was.
  StepResult run(int64_t B, int64_t K);
  size_t captured() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ocr

namespace ocr {

// A device-to-host copy of a small int64 tensor that completes in the background (CUDA: pinned
// memory and an event; elsewhere a plain copy).
class HostCopy {
 public:
  HostCopy();
  ~HostCopy();
  HostCopy(HostCopy&&) noexcept;
  HostCopy& operator=(HostCopy&&) noexcept;
  void start(const torch::Tensor& device_tensor);
  // Waits for the copy; the CPU tensor.
  const torch::Tensor& wait();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// CUDA memory of `device` in bytes (zeros elsewhere).
struct DeviceMemory {
  int64_t total = 0;      // the device's memory
  int64_t free = 0;       // free now (driver's view)
  int64_t allocated = 0;  // held by tensors of this process now
};
DeviceMemory device_memory(const torch::Device& device);
// Caps the caching allocator of `device` at `bytes` (an allocation beyond throws OutOfMemoryError).
void cap_device_memory(const torch::Device& device, int64_t bytes);
// Returns cached blocks to the driver (after an out-of-memory error).
void release_cached_memory(const torch::Device& device);

// Work handed from one CUDA stream to another without a host sync (no-ops off CUDA): the encoder
// thread runs on its own stream, the decoding thread consumes its results on the main one.
class StreamScope {
 public:
  // Makes a side stream of `device` current on this thread for the scope's lifetime; a high
  // priority one gets free SMs first when both streams have work queued.
  explicit StreamScope(const torch::Device& device, bool high_priority = false);
  ~StreamScope();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

class Fence {
 public:
  // Marks the work enqueued so far on this thread's current stream of `device`.
  explicit Fence(const torch::Device& device);
  ~Fence();
  // Makes this thread's current stream wait for the marked work (no host sync).
  void wait_here() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

// `t`, made on another stream, is used on this thread's current stream: its memory is not
// reused before the work enqueued here so far has finished.
void use_on_current_stream(const torch::Tensor& t);

// Per-thread settings every thread that runs the TorchScript modules needs (interpreted graphs,
// no autograd): call at the start of such a thread.
void prepare_model_thread();

}  // namespace ocr
