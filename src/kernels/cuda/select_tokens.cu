// ocr::select_tokens on CUDA: one block per row, bans then argmax then append, all on the device,
// so a decoding step (and its CUDA graph) needs no host synchronisation. Same results as the CPU
// reference (src/kernels/cpu/select_cpu.cpp): bans are a set, argmax keeps the lowest id on ties.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cmath>

#include "kernels/select.h"

namespace ocr::kernels::cuda {
namespace {

constexpr int kSelectThreads = 512;

__device__ __forceinline__ bool same_tokens(const int32_t* a, const int32_t* b, int n) {
  for (int k = 0; k < n; ++k)
    if (a[k] != b[k]) return false;
  return true;
}

__device__ __forceinline__ void ban(float* logits, int64_t vocab, int32_t t) {
  if (t >= 0 && t < vocab) logits[t] = -INFINITY;  // racing writes store the same value
}

__global__ void __launch_bounds__(kSelectThreads)
    select_tokens_kernel(float* __restrict__ logits, const int64_t* __restrict__ rows, int32_t* __restrict__ seq,
                         int32_t* __restrict__ lens, int32_t* __restrict__ params,
                         const int32_t* __restrict__ whitelist, const int64_t* __restrict__ forced,
                         int64_t* __restrict__ next_ids, int64_t* __restrict__ next_pos,
                         int64_t* __restrict__ emitted, int64_t vocab, int64_t max_len, int n_white) {
  __shared__ float best_v[kSelectThreads];
  __shared__ int64_t best_i[kSelectThreads];
  __shared__ int skip;
  const int j = blockIdx.x;
  const int tid = threadIdx.x;
  const int64_t slot = rows[j];
  int32_t* p = params + slot * kSelectParams;
  int32_t* s = seq + slot * max_len;
  const int32_t len = lens[slot];
  float* row = logits + static_cast<int64_t>(j) * vocab;
  const int64_t force = forced[j];

  if (p[kState] == kIdle || len >= max_len) {
    __syncthreads();  // every thread has read p[kState] before thread 0 writes it
    if (tid == 0) {
      p[kState] = kIdle;
      emitted[j] = kEmittedIdle;
      next_pos[slot] = 0;  // an idle row's step attends one key, not its whole finished page
    }
    return;
  }
  int64_t tok = force;
  if (force < 0) {
    const int32_t nr = p[kNoRepeatN];
    if (nr > 0 && len + 1 >= nr) {
      const int32_t* prefix = s + len - (nr - 1);
      for (int32_t i = tid; i + nr <= len; i += blockDim.x)
        if (same_tokens(s + i, prefix, nr - 1)) ban(row, vocab, s[i + nr - 1]);
    }
    const int32_t ng = p[kNgramN];
    const int32_t gen = len - p[kPromptLen];
    if (ng > 0 && gen >= ng) {
      const int32_t* g = s + p[kPromptLen];
      const int32_t* prefix = g + gen - (ng - 1);
      const int32_t* white = whitelist + slot * n_white;
      const int32_t first = max(0, gen - p[kNgramWindow]);
      for (int32_t i = first + tid; i + ng <= gen; i += blockDim.x) {
        if (!same_tokens(g + i, prefix, ng - 1)) continue;
        const int32_t t = g[i + ng - 1];
        bool exempt = false;
        for (int w = 0; w < n_white; ++w) exempt |= white[w] == t;
        if (!exempt) ban(row, vocab, t);
      }
    }
    __syncthreads();  // bans visible to the whole block
    if (tid == 0) skip = p[kState] == kHostChoice;
    __syncthreads();
    if (skip) {
      if (tid == 0) emitted[j] = kEmittedHost;
      return;
    }
    // Argmax: each thread scans ascending ids with a strict '>', so it keeps its lowest id on ties;
    // the tree then prefers the lower id among equal values. An all -inf/NaN row gives id 0.
    float v = -INFINITY;
    int64_t bi = vocab;  // "none yet"
    for (int64_t i = tid; i < vocab; i += blockDim.x) {
      const float x = row[i];
      if (bi == vocab ? !isnan(x) : x > v) {
        v = x;
        bi = i;
      }
    }
    best_v[tid] = v;
    best_i[tid] = bi;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
      if (tid < stride) {
        const float ov = best_v[tid + stride];
        const int64_t oi = best_i[tid + stride];
        const bool take = oi != vocab && (best_i[tid] == vocab || ov > best_v[tid] || (ov == best_v[tid] && oi < best_i[tid]));
        if (take) {
          best_v[tid] = ov;
          best_i[tid] = oi;
        }
      }
      __syncthreads();
    }
    tok = best_i[0] == vocab ? 0 : best_i[0];
  } else {
    __syncthreads();
  }
  if (tid == 0) {
    s[len] = static_cast<int32_t>(tok);
    lens[slot] = len + 1;
    emitted[j] = tok;
    next_ids[slot] = tok;
    const bool stop = tok == p[kEos] || len + 1 - p[kPromptLen] >= p[kMaxNew];
    next_pos[slot] = stop ? 0 : len;  // a finished row's later steps attend one key
    if (stop) p[kState] = kIdle;
  }
}

void select_tokens_cuda(at::Tensor logits, const at::Tensor& rows, at::Tensor seq, at::Tensor lens, at::Tensor params,
                        const at::Tensor& whitelist, const at::Tensor& forced, at::Tensor next_ids,
                        at::Tensor next_pos, at::Tensor emitted) {
  TORCH_CHECK(logits.dim() == 2 && logits.scalar_type() == at::kFloat && logits.is_contiguous(),
              "select_tokens: logits must be contiguous float32 [m, vocab]");
  TORCH_CHECK(seq.scalar_type() == at::kInt && seq.is_contiguous() && lens.scalar_type() == at::kInt &&
                  lens.is_contiguous() && params.scalar_type() == at::kInt && params.is_contiguous() &&
                  params.size(1) == kSelectParams && whitelist.scalar_type() == at::kInt && whitelist.is_contiguous(),
              "select_tokens: seq, lens, params, whitelist must be contiguous int32");
  TORCH_CHECK(rows.scalar_type() == at::kLong && rows.is_contiguous() && forced.scalar_type() == at::kLong &&
                  forced.is_contiguous() && next_ids.scalar_type() == at::kLong && next_ids.is_contiguous() &&
                  next_pos.scalar_type() == at::kLong && next_pos.is_contiguous() &&
                  emitted.scalar_type() == at::kLong && emitted.is_contiguous(),
              "select_tokens: rows, forced, next_ids, next_pos, emitted must be contiguous int64");
  const int64_t m = logits.size(0);
  TORCH_CHECK(rows.size(0) == m && forced.size(0) == m && emitted.size(0) == m, "select_tokens: [m] sizes differ");
  TORCH_CHECK(whitelist.size(0) == seq.size(0) && lens.size(0) == seq.size(0) && params.size(0) == seq.size(0),
              "select_tokens: per-slot sizes differ");
  if (m == 0) return;
  const c10::cuda::CUDAGuard guard(logits.device());
  select_tokens_kernel<<<static_cast<unsigned>(m), kSelectThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
      logits.data_ptr<float>(), rows.data_ptr<int64_t>(), seq.data_ptr<int32_t>(), lens.data_ptr<int32_t>(),
      params.data_ptr<int32_t>(), whitelist.data_ptr<int32_t>(), forced.data_ptr<int64_t>(),
      next_ids.data_ptr<int64_t>(), next_pos.data_ptr<int64_t>(), emitted.data_ptr<int64_t>(), logits.size(1),
      seq.size(1), static_cast<int>(whitelist.size(1)));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

TORCH_LIBRARY_IMPL(ocr, CUDA, m) { m.impl("select_tokens", &select_tokens_cuda); }

}  // namespace ocr::kernels::cuda
