// Layout of the per-slot decoding state that ocr::select_tokens reads and updates (schema in
// src/kernels/ops.cpp). Shared by the engine, the CPU reference and the CUDA kernel: no torch.
#pragma once

#include <cstdint>

namespace ocr::kernels {

// params[slot, field] (int32)
enum SelectParam : int {
  kPromptLen = 0,    // tokens of the prompt at the start of seq
  kMaxNew = 1,       // generated-token cap; prompt_len + max_new <= max_len
  kNoRepeatN = 2,    // HF no_repeat_ngram_size over prompt + generated (0: off)
  kNgramN = 3,       // windowed blocker over generated tokens: n (0: off)
  kNgramWindow = 4,  //   and its window (generated tokens)
  kState = 5,        // SelectState
  kEos = 6,          // end-of-sequence id: appending it finishes the row
  kSelectParams = 8  // row stride (two spare fields)
};

enum SelectState : int32_t {
  kIdle = 0,        // free slot or finished row: untouched, emitted -1
  kGreedy = 1,      // bans + argmax on the device
  kHostChoice = 2,  // bans on the device; the host samples and appends through `forced`
};

// emitted[j] values besides a token id.
constexpr int64_t kEmittedIdle = -1;
constexpr int64_t kEmittedHost = -2;

}  // namespace ocr::kernels
