// ocr::decode_attention on CUDA: split-K flash-decoding over the KV cache that reads only each
// row's real keys (0 .. min(p_b, kv_len - 1)), in place of SDPA over the padded bucket with a -inf
// mask. Schema: src/kernels/ops.cpp; reference: src/kernels/cpu/attention_cpu.cpp.
// Two implementations, chosen at every call by OCR_DECODE_ATTENTION_IMPL = auto (default: v2
// wherever it handles the shape, else v1) | v1 | v2 (v2 also falls back to v1 by itself).
//
// v1, kernel 1, grid (n_splits, B): block (split, b) handles keys [split * chunk, split * chunk +
// chunk) of row b for all heads at once (the n_heads * head_dim values of one key are contiguous,
// so a block streams whole rows of the cache: coalesced 16-byte loads). Three phases:
//   1. scores: a group of G lanes (G = power of two >= head_dim / vec, <= 32) computes one
//      (key, head) dot product against q (staged in shared memory as fp32), kKeyUnroll items per
//      group in flight before any reduction; scores (log2 domain, scaled) go to shared memory;
//   2. per head: m = max over the chunk's keys, p_j = exp2(s_j - m), l = sum p_j;
//   3. values: thread (stream s, vector e) accumulates p_j * v_j[e] over keys j = s, s + streams,
//      ..., kValUnroll keys in flight (the first batch is prefetched before phase 1 so that its
//      latency hides behind the key loads); streams are summed in a fixed order.
// The partial (m, l, acc[head_dim]) per (b, head, split) goes to an fp32 scratch tensor (at::empty:
// the caching allocator, graph-safe). A block whose chunk starts at or past the row's length writes
// an empty partial (m = -inf, l = 0) and exits: rows shorter than kv_len cost only what they read.
// Kernel 2, one block per (b, head), merges the row's non-empty splits (the splits are spread over
// the threads too, so B = 1 with ~100 splits is not a serial chain of L2 loads):
//   M = max m_s, L = sum l_s 2^(m_s - M), out = (sum acc_s 2^(m_s - M)) / L, rounded once.
// With one split (kv_len <= chunk) kernel 1 normalises and writes the output itself.
// v1's weakness (H200, bf16, 10 heads of 128, p_b ~ U[900, 1900), kv_len 2048): the phases leave
// HBM idle between the K and V passes of a block; 532 us + 28 us of merge at B = 256 (3.5 TB/s).
//
// v2 (decode_attention_stream_kernel), grid (n_splits * n_tiles, B): block (split, head tile, b)
// streams the K and V of its tile's heads (HT heads, default one warp per key: 2 heads of 128 bf16)
// over the chunk's keys through registers, one iteration of loads ahead, with an online softmax per
// (head, key stream) and no barrier in the loop (details at the kernel). The key range is split
// only when B * n_tiles blocks would not fill the GPU (kV2BlocksPerSm), so B = 256 needs no merge:
// the block writes the output; otherwise v1's merge kernel combines v2's partials (same layout).
// With OCR_DECODE_ATTENTION_V2_SORT=1 the blocks take the rows longest first (blockIdx.y is the
// row's rank by length, computed per block from the positions in shared memory); off by default:
// measured slower (H200, B = 256: 480 us sorted, 463 us in order).
// Knobs, read at every call (for tuning; 0/unset = automatic): OCR_DECODE_ATTENTION_V2_HEADS
// (heads per block), OCR_DECODE_ATTENTION_V2_STREAMS (key streams per block: threads = heads x G x
// streams, <= 512), OCR_DECODE_ATTENTION_V2_CHUNK (keys per block), OCR_DECODE_ATTENTION_V2_SORT
// (1: longest rows first; default off).
// ptxas (sm_90, bf16 D = 128): 124 registers, no spills: 256-thread blocks, 2 per SM (16 warps),
// each warp with 2 iterations x 4 keys x 2 heads x 256 B x (K, V) = up to 8 KB of loads in flight:
// up to ~128 KB per SM, ~17 MB over 132 SMs (HBM needs ~4.3 TB/s x ~2 us = ~9 MB).
//
// Both: all fp32 (exp2 with the log2(e) / sqrt(D) pre-scale, one rounding at the end); no host
// sync, no allocation of our own: capturable in a CUDA graph (the grids depend only on B, kv_len
// and the head shape, not on the positions). Deterministic (fixed orders only).
//
// Measured (H200, bf16, 10 heads of 128, CUDA graph of 12 layers, tests/kernels/test_attention_sweep.py;
// p_b ~ U[K/2, K)): B = 256, K = 2048: v2 463 us = 4.42 TB/s on the real bytes (v1 579 us with
// its merge, cuDNN SDPA over the padded keys 601 us); B = 64: 131 vs 211 us; B = 16: 40 vs 60 us;
// B = 1, p = 1000: 9.1 vs 14.5 us (SDPA 7.5 us). v1's knob: OCR_DECODE_ATTENTION_CHUNK=<keys per block> (read once per process).
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_bf16.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <type_traits>

#include "kernels/attention_reference.h"
#include "kernels/cuda/moe_common.cuh"
#include "kernels/reference.h"

namespace ocr::kernels::cuda {
namespace {

constexpr int kVecBytes = 16;  // widest load: 8 bf16 or 4 fp32
constexpr int kMaxHeadDim = static_cast<int>(kDecodeAttentionMaxHeadDim);
constexpr int kMinChunk = 8;  // keys per block: bounds on the host's choice
constexpr int kMaxChunk = 256;
constexpr int kChunkAlign = 8;
constexpr int kTargetThreads = 256;  // phase 3 wants >= this many (stream, vector) pairs
constexpr int kMaxThreads = 512;
constexpr int kBlocksPerSmTarget = 2;  // blocks per SM the chunk size aims at (full-length rows)
constexpr int kKeyUnroll = 4;          // phase 1: (key, head) items per lane group in flight
constexpr int kValUnroll = 4;          // phase 3: keys per thread in flight
constexpr int kMaxSplits = 8192;       // bounds the merge's shared memory (kv_len <= 2^21)
constexpr int kMergeMaxThreads = 512;
constexpr int kMergeUnroll = 8;
constexpr float kLog2e = 1.4426950408889634f;

template <typename T, int kN>
struct alignas(sizeof(T) * kN) Vec {
  T v[kN];
};

template <typename V>
__device__ __forceinline__ V load_vec(const void* p) {
  return *reinterpret_cast<const V*>(p);
}

template <typename T, int kN>
__device__ __forceinline__ Vec<T, kN> zero_vec() {
  Vec<T, kN> z;
#pragma unroll
  for (int i = 0; i < kN; ++i) z.v[i] = from_float<T>(0.f);
  return z;
}

// kN floats of shared memory at p (16-byte aligned when kN % 4 == 0), as 128-bit loads.
template <int kN>
__device__ __forceinline__ void load_smem(const float* p, float (&out)[kN]) {
  if constexpr (kN % 4 == 0) {
#pragma unroll
    for (int i = 0; i < kN; i += 4) {
      const float4 f = *reinterpret_cast<const float4*>(p + i);
      out[i] = f.x;
      out[i + 1] = f.y;
      out[i + 2] = f.z;
      out[i + 3] = f.w;
    }
  } else {
#pragma unroll
    for (int i = 0; i < kN; ++i) out[i] = p[i];
  }
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int off = 16; off > 0; off /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
  return v;
}

__device__ __forceinline__ float warp_sum(float v) {
  // Butterfly: every lane ends with the same, bit-identical total.
#pragma unroll
  for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// Keys of row b: j = 0 .. len - 1 (0 for a negative position: the caller's contract excludes it).
__device__ __forceinline__ int row_length(const int64_t* positions, int b, int kv_len) {
  const int64_t p = positions[b];
  return p < 0 ? 0 : static_cast<int>(p < kv_len - 1 ? p : kv_len - 1) + 1;
}

struct AttnParams {
  int n_heads, head_dim, kv_len, chunk, n_splits;
  int group;    // lanes per (key, head) dot product in phase 1 (power of two <= 32)
  int streams;  // key streams per value vector in phase 3
  int64_t stride_slot;  // elements between slots of the cache (the cache may be a narrowed view)
  float scale_log2;  // log2(e) / sqrt(head_dim)
};

// Shared memory (floats): [max(HD, streams * HD): q as fp32 in phases 0-1, then the streams'
// partial sums in phase 3] [n_heads * chunk: scores, then probabilities] [n_heads: l].
template <typename T, int kVec>
__global__ void __launch_bounds__(kMaxThreads, 2)
    decode_attention_split_kernel(const T* __restrict__ q, const T* __restrict__ k_cache,
                                  const T* __restrict__ v_cache, const int64_t* __restrict__ slots,
                                  const int64_t* __restrict__ positions,
                                  float* __restrict__ part_acc, float* __restrict__ part_ml,
                                  T* __restrict__ out, AttnParams prm) {
  using V = Vec<T, kVec>;
  constexpr int kPerLane =
      (kMaxHeadDim + kVec * 32 - 1) / (kVec * 32);  // vectors of a head per lane
  extern __shared__ float4 smem_f4[];               // float4: 16-byte aligned
  float* smem = reinterpret_cast<float*>(smem_f4);
  const int H = prm.n_heads, D = prm.head_dim, HD = H * D;
  const int tid = static_cast<int>(threadIdx.x), n_threads = static_cast<int>(blockDim.x);
  const int split = static_cast<int>(blockIdx.x), b = static_cast<int>(blockIdx.y);
  const bool direct = prm.n_splits == 1;
  const int len = row_length(positions, b, prm.kv_len);
  const int j0 = split * prm.chunk;
  const int n_keys = max(0, min(prm.chunk, len - j0));
  const int64_t part = static_cast<int64_t>(b) * prm.n_splits + split;  // (b, split)
  if (n_keys == 0 && !direct) {
    for (int h = tid; h < H; h += n_threads) {
      part_ml[(part * H + h) * 2 + 0] = -INFINITY;
      part_ml[(part * H + h) * 2 + 1] = 0.f;
    }
    return;
  }
  float* q_s = smem;                                       // [HD], later red [streams, HD]
  float* scores = smem + max(HD, prm.streams * HD);        // [H, chunk]
  float* l_s = scores + H * prm.chunk;                     // [H]
  const int64_t row = slots[b] * prm.stride_slot + static_cast<int64_t>(j0) * HD;  // key j0 of the slot
  const T* kb = k_cache + row;
  const T* vb = v_cache + row;

  // Phase 3's first batch of values, loaded now (its latency overlaps phase 1's).
  const int E = HD / kVec;  // vectors per key
  const int n_pairs = prm.streams * E;
  V v_pre[kValUnroll];
  {
    const int s = tid / E, ve = tid - (tid / E) * E;
#pragma unroll
    for (int u = 0; u < kValUnroll; ++u) {
      const int j = s + u * prm.streams;
      v_pre[u] = tid < n_pairs && j < n_keys
                     ? load_vec<V>(vb + static_cast<int64_t>(j) * HD + ve * kVec)
                     : zero_vec<T, kVec>();
    }
  }

  for (int i = tid; i < HD; i += n_threads) q_s[i] = to_float(q[static_cast<int64_t>(b) * HD + i]);
  __syncthreads();

  // ---- phase 1: scores[h][j] = (q_h . k_{j,h}) * log2(e) / sqrt(D) ----
  {
    const int G = prm.group;
    const int vpd = D / kVec;  // vectors per head
    const int gid = tid / G, gl = tid % G, n_groups = n_threads / G;
    const int items = n_keys * H;  // item = j * H + h: consecutive items are consecutive memory
    const int step_j = n_groups / H, step_h = n_groups % H;
    int j = gid / H, h = gid % H;                                      // of item base + gid
    for (int base = 0; base < items; base += n_groups * kKeyUnroll) {  // block-uniform trip count
      V kr[kKeyUnroll][kPerLane];
#pragma unroll
      for (int u = 0; u < kKeyUnroll; ++u) {
        const int item = base + u * n_groups + gid;
#pragma unroll
        for (int k = 0; k < kPerLane; ++k) {
          const int c = gl + k * G;
          kr[u][k] = item < items && c < vpd
                         ? load_vec<V>(kb + static_cast<int64_t>(item) * D + c * kVec)
                         : zero_vec<T, kVec>();
        }
      }
#pragma unroll
      for (int u = 0; u < kKeyUnroll; ++u) {
        const int item = base + u * n_groups + gid;
        float dot = 0.f;
#pragma unroll
        for (int k = 0; k < kPerLane; ++k) {
          const int c = gl + k * G;
          if (item < items && c < vpd) {
            float qv[kVec];
            load_smem<kVec>(q_s + h * D + c * kVec, qv);
#pragma unroll
            for (int i = 0; i < kVec; ++i) dot = fmaf(qv[i], to_float(kr[u][k].v[i]), dot);
          }
        }
        for (int off = G / 2; off > 0; off /= 2) dot += __shfl_xor_sync(0xffffffffu, dot, off);
        if (gl == 0 && item < items) scores[h * prm.chunk + j] = dot * prm.scale_log2;
        // Next item of this group: + n_groups.
        j += step_j;
        h += step_h;
        if (h >= H) {
          h -= H;
          ++j;
        }
      }
    }
  }
  __syncthreads();

  // ---- phase 2: per head, m = max_j s_j, p_j = 2^(s_j - m), l = sum_j p_j ----
  {
    const int warp = tid / 32, lane = tid % 32, n_warps = n_threads / 32;
    for (int h = warp; h < H; h += n_warps) {
      float* s = scores + h * prm.chunk;
      float m = -INFINITY;
      for (int j = lane; j < n_keys; j += 32) m = fmaxf(m, s[j]);
      m = warp_max(m);
      float l = 0.f;
      for (int j = lane; j < n_keys; j += 32) {
        const float p = exp2f(s[j] - m);
        s[j] = p;
        l += p;
      }
      l = warp_sum(l);
      if (lane == 0) {
        l_s[h] = l;
        if (!direct) {
          part_ml[(part * H + h) * 2 + 0] = m;
          part_ml[(part * H + h) * 2 + 1] = l;
        }
      }
    }
  }
  __syncthreads();  // also: q_s is dead from here, its space holds the streams' sums

  // ---- phase 3: acc[h, d] = sum_j p_{h,j} v_{j,h,d} ----
  // Writes element i = h * D + d of the block's result: normalised output, or the partial.
  const auto emit = [&](int i, float a) {
    if (direct) {
      out[static_cast<int64_t>(b) * HD + i] = from_float<T>(a / l_s[i / D]);
    } else {
      part_acc[part * HD + i] = a;
    }
  };
  float* red = q_s;  // [streams, HD]
  bool first = true;
  for (int e = tid; e < n_pairs; e += n_threads) {
    const int s = e / E, ve = e - (e / E) * E;
    const int h = ve * kVec / D;  // D % kVec == 0: a vector never straddles two heads
    const float* p = scores + h * prm.chunk;
    const T* vp = vb + ve * kVec;
    float acc[kVec];
#pragma unroll
    for (int i = 0; i < kVec; ++i) acc[i] = 0.f;
    for (int j = s; j < n_keys; j += prm.streams * kValUnroll) {
      V vr[kValUnroll];
      if (first) {
#pragma unroll
        for (int u = 0; u < kValUnroll; ++u) vr[u] = v_pre[u];
        first = false;
      } else {
#pragma unroll
        for (int u = 0; u < kValUnroll; ++u) {
          const int jj = j + u * prm.streams;
          vr[u] =
              jj < n_keys ? load_vec<V>(vp + static_cast<int64_t>(jj) * HD) : zero_vec<T, kVec>();
        }
      }
#pragma unroll
      for (int u = 0; u < kValUnroll; ++u) {
        const int jj = j + u * prm.streams;
        if (jj < n_keys) {
          const float pj = p[jj];
#pragma unroll
          for (int i = 0; i < kVec; ++i) acc[i] = fmaf(pj, to_float(vr[u].v[i]), acc[i]);
        }
      }
    }
    first = false;
    if (prm.streams == 1) {
#pragma unroll
      for (int i = 0; i < kVec; ++i) emit(ve * kVec + i, acc[i]);
    } else {
#pragma unroll
      for (int i = 0; i < kVec; ++i) red[s * HD + ve * kVec + i] = acc[i];
    }
  }
  if (prm.streams > 1) {
    __syncthreads();
    for (int i = tid; i < HD; i += n_threads) {
      float a = 0.f;
      for (int s = 0; s < prm.streams; ++s) a += red[s * HD + i];  // fixed order
      emit(i, a);
    }
  }
}

// One block per (b, head): merges the non-empty splits of row b (those below its length).
// M = max m_s and the weights w_s = 2^(m_s - M) (shared memory), L = sum l_s w_s; then thread
// (split group sg, column pair d2) sums w_s acc_s[2 d2 .. 2 d2 + 1] over s = sg, sg + n_sg, ...
// (kMergeUnroll loads in flight), and the groups are added in a fixed order.
// Shared memory (floats): [n_sg, D] group sums, [2, 32] warp partials, [n_splits] weights.
template <typename T>
__global__ void __launch_bounds__(kMergeMaxThreads)
    decode_attention_merge_kernel(const float* __restrict__ part_acc,
                                  const float* __restrict__ part_ml,
                                  const int64_t* __restrict__ positions, T* __restrict__ out,
                                  AttnParams prm, int n_sg) {
  extern __shared__ float4 smem_f4[];
  float* red = reinterpret_cast<float*>(smem_f4);
  const int H = prm.n_heads, D = prm.head_dim, n_splits = prm.n_splits;
  float* warp_part = red + n_sg * D;
  float* w = warp_part + 64;
  const int b = static_cast<int>(blockIdx.x) / H, h = static_cast<int>(blockIdx.x) % H;
  const int tid = static_cast<int>(threadIdx.x), n_threads = static_cast<int>(blockDim.x);
  const int lane = tid % 32, warp = tid / 32, n_warps = n_threads / 32;
  const int len = row_length(positions, b, prm.kv_len);
  const int n_valid = (len + prm.chunk - 1) / prm.chunk;
  const float* ml =
      part_ml + (static_cast<int64_t>(b) * n_splits * H + h) * 2;  // split s: + s * 2H

  float m = -INFINITY;
  for (int s = tid; s < n_valid; s += n_threads) m = fmaxf(m, ml[s * 2 * H]);
  m = warp_max(m);
  if (lane == 0) warp_part[warp] = m;
  __syncthreads();
  m = -INFINITY;
  for (int i = 0; i < n_warps; ++i) m = fmaxf(m, warp_part[i]);
  float l = 0.f;
  for (int s = tid; s < n_valid; s += n_threads) {
    const float ws = exp2f(ml[s * 2 * H] - m);
    w[s] = ws;
    l = fmaf(ml[s * 2 * H + 1], ws, l);
  }
  l = warp_sum(l);
  if (lane == 0) warp_part[32 + warp] = l;
  __syncthreads();  // also publishes w
  l = 0.f;
  for (int i = 0; i < n_warps; ++i) l += warp_part[32 + i];  // no split: 0, out 0 / 0 (NaN)

  const int64_t HD = static_cast<int64_t>(H) * D;
  const int n_d = D / 2;  // D is even: float2 columns
  const int d2 = tid % n_d, sg = tid / n_d;
  if (sg < n_sg) {
    const float* acc = part_acc + static_cast<int64_t>(b) * n_splits * HD + h * D + 2 * d2;
    float ax = 0.f, ay = 0.f;
    for (int s = sg; s < n_valid; s += n_sg * kMergeUnroll) {
      float2 v[kMergeUnroll];
#pragma unroll
      for (int u = 0; u < kMergeUnroll; ++u) {
        const int ss = s + u * n_sg;
        v[u] =
            ss < n_valid ? *reinterpret_cast<const float2*>(acc + ss * HD) : make_float2(0.f, 0.f);
      }
#pragma unroll
      for (int u = 0; u < kMergeUnroll; ++u) {
        const int ss = s + u * n_sg;
        if (ss < n_valid) {
          ax = fmaf(v[u].x, w[ss], ax);
          ay = fmaf(v[u].y, w[ss], ay);
        }
      }
    }
    red[sg * D + 2 * d2] = ax;
    red[sg * D + 2 * d2 + 1] = ay;
  }
  __syncthreads();
  for (int i = tid; i < D; i += n_threads) {
    float a = 0.f;
    for (int g = 0; g < n_sg; ++g) a += red[g * D + i];  // fixed order
    out[(static_cast<int64_t>(b) * H + h) * D + i] = from_float<T>(a / l);
  }
}

// ---- v2: streaming kernel (OCR_DECODE_ATTENTION_IMPL=v2) ----------------------------------------
// Block (split, head tile, b) with blockIdx.x = split * n_tiles + tile (the tiles of one key range
// are launched together, so the whole 2 * H * D-byte rows are read at about the same time).
// Threads form groups of G lanes (G = power of two >= head_dim / kVec, <= 32; kPerLane vectors of
// the head per lane); group gi -> (head hl = gi % HT of the tile, stream s = gi / HT). Stream s of
// the block takes the chunk's keys j = it * S * U + u * S + s (u < U): one iteration reads S * U
// consecutive keys of the tile's heads. K and V of those keys are loaded into registers one
// iteration ahead (two register buffers: the loads of iteration it + 1 are in flight while
// iteration it computes), and each group keeps an online softmax in registers, in the log2 domain:
//   s_u = (q . k_u) * log2(e) / sqrt(D),  m' = max(m, s_u),  a = 2^(m - m'),
//   l' = l a + sum_u 2^(s_u - m'),  acc' = acc a + sum_u 2^(s_u - m') v_u.
// No barrier in the loop. At the end the S streams of each head are combined through shared
// memory in a fixed order (M = max m_s, w_s = 2^(m_s - M), L = sum l_s w_s, A = sum acc_s w_s),
// and the block writes out = A / L (one split) or the partial (M, L, A) in v1's layout, which v1's
// merge kernel combines. Deterministic (fixed key -> lane assignment, fixed orders), no barrier
// depends on the data. Shared memory (floats): [S, HT, D] stream sums, [S, HT, 2] (m, l).
struct AttnParamsV2 {
  int n_heads, head_dim, kv_len, chunk, n_splits;
  int group;       // G: lanes per (key, head)
  int tile_heads;  // HT: heads per block
  int n_tiles;     // ceil(n_heads / HT)
  int streams;     // S: key streams per block
  int sort_rows;   // 1: blockIdx.y is a rank, longest row first (shared memory: B + 1 ints)
  int64_t stride_slot;
  float scale_log2;
};

constexpr int kV2MaxThreads = 512;     // __launch_bounds__: <= 128 registers
constexpr int kV2TargetThreads = 256;  // auto: threads per block
constexpr int kV2BlocksPerSm = 8;      // auto: splits until the grid has this many blocks per SM
constexpr int kV2MinChunk = 32;
constexpr int kV2ChunkAlign = 16;

// Element i (< 16 / sizeof(T)) of a 16-byte vector held as raw 32-bit words, as fp32 (exact). The
// buffers stay packed (4 registers per vector); unpacking bf16 into 16-bit values doubles them.
template <typename T>
__device__ __forceinline__ float raw_elem(const uint4& r, int i) {
  const int word = i * static_cast<int>(sizeof(T)) / 4;
  const uint32_t x = word == 0 ? r.x : word == 1 ? r.y : word == 2 ? r.z : r.w;
  if constexpr (std::is_same_v<T, float>) {
    return __uint_as_float(x);
  } else {  // bf16: element 2 k is the low half of word k (little endian)
    return __uint_as_float(i % 2 == 0 ? x << 16 : x & 0xffff0000u);
  }
}

template <int kPerLane, int kU, int kVec>
__device__ __forceinline__ void v2_load(uint4 (&kr)[kU][kPerLane], uint4 (&vr)[kU][kPerLane],
                                        const void* kp, const void* vp, int64_t elt, int it, int s,
                                        int S, int n_keys, int HD, int G,
                                        const bool (&cvalid)[kPerLane]) {
#pragma unroll
  for (int u = 0; u < kU; ++u) {
    const int j = it * S * kU + u * S + s;
    const int64_t off = static_cast<int64_t>(j) * HD;
#pragma unroll
    for (int k = 0; k < kPerLane; ++k) {
      const bool ok = j < n_keys && cvalid[k];
      const int64_t byte = (off + k * G * kVec) * elt;
      // Read once per call: streaming loads (evict-first), the cache is far larger than L2.
      kr[u][k] = ok ? __ldcs(reinterpret_cast<const uint4*>(static_cast<const char*>(kp) + byte))
                    : make_uint4(0, 0, 0, 0);
      vr[u][k] = ok ? __ldcs(reinterpret_cast<const uint4*>(static_cast<const char*>(vp) + byte))
                    : make_uint4(0, 0, 0, 0);
    }
  }
}

template <typename T, int kVec, int kPerLane, int kU>
__device__ __forceinline__ void v2_compute(const uint4 (&kr)[kU][kPerLane],
                                           const uint4 (&vr)[kU][kPerLane],
                                           const float (&qf)[kPerLane][kVec],
                                           float (&acc)[kPerLane][kVec], float& m, float& l, int it,
                                           int s, int S, int n_keys, int G, bool gvalid,
                                           float scale_log2) {
  float dot[kU];
#pragma unroll
  for (int u = 0; u < kU; ++u) {
    dot[u] = 0.f;
#pragma unroll
    for (int k = 0; k < kPerLane; ++k) {
#pragma unroll
      for (int i = 0; i < kVec; ++i) dot[u] = fmaf(qf[k][i], raw_elem<T>(kr[u][k], i), dot[u]);
    }
  }
  // Butterfly over the group's lanes (all 32 lanes execute it): bit-identical in the group; the
  // kU keys' shuffles are independent (in flight together).
  for (int off = G / 2; off > 0; off /= 2) {
#pragma unroll
    for (int u = 0; u < kU; ++u) dot[u] += __shfl_xor_sync(0xffffffffu, dot[u], off);
  }
  float sc[kU];
#pragma unroll
  for (int u = 0; u < kU; ++u) {
    const int j = it * S * kU + u * S + s;
    sc[u] = gvalid && j < n_keys ? dot[u] * scale_log2 : -INFINITY;
  }
  float mn = m;
#pragma unroll
  for (int u = 0; u < kU; ++u) mn = fmaxf(mn, sc[u]);
  if (mn != -INFINITY) {  // else: no key yet (nothing to add, and 2^(-inf - -inf) is NaN)
    const float alpha = exp2f(m - mn);  // m = -inf: 0
    l *= alpha;
#pragma unroll
    for (int k = 0; k < kPerLane; ++k) {
#pragma unroll
      for (int i = 0; i < kVec; ++i) acc[k][i] *= alpha;
    }
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const float p = exp2f(sc[u] - mn);  // invalid key: 0 (its v is zero too)
      l += p;
#pragma unroll
      for (int k = 0; k < kPerLane; ++k) {
#pragma unroll
        for (int i = 0; i < kVec; ++i) acc[k][i] = fmaf(p, raw_elem<T>(vr[u][k], i), acc[k][i]);
      }
    }
    m = mn;
  }
}

template <typename T, int kVec, int kPerLane>
__global__ void __launch_bounds__(kV2MaxThreads)
    decode_attention_stream_kernel(const T* __restrict__ q, const T* __restrict__ k_cache,
                                   const T* __restrict__ v_cache, const int64_t* __restrict__ slots,
                                   const int64_t* __restrict__ positions,
                                   float* __restrict__ part_acc, float* __restrict__ part_ml,
                                   T* __restrict__ out, AttnParamsV2 prm) {
  using V = Vec<T, kVec>;
  constexpr int kU = 4 / kPerLane;  // keys per stream per iteration (64 bytes of K per lane)
  extern __shared__ float4 smem_f4[];
  float* smem = reinterpret_cast<float*>(smem_f4);
  const int H = prm.n_heads, D = prm.head_dim, HD = H * D;
  const int G = prm.group, HT = prm.tile_heads, S = prm.streams;
  const int tid = static_cast<int>(threadIdx.x), n_threads = static_cast<int>(blockDim.x);
  const int tile = static_cast<int>(blockIdx.x) % prm.n_tiles;
  const int split = static_cast<int>(blockIdx.x) / prm.n_tiles;
  int b = static_cast<int>(blockIdx.y);
  if (prm.sort_rows) {
    // Longest rows first (the blocks of the last, short rows drain the tail quickly): blockIdx.y
    // is a rank in (length descending, row ascending), a strict order, so a permutation of rows.
    int* lens = reinterpret_cast<int*>(smem + S * HT * (D + 2));  // [B], then the chosen row
    const int n_b = static_cast<int>(gridDim.y);
    for (int r = tid; r < n_b; r += n_threads) lens[r] = row_length(positions, r, prm.kv_len);
    __syncthreads();
    for (int r = tid; r < n_b; r += n_threads) {
      const int lr = lens[r];
      int rank = 0;
#pragma unroll 8
      for (int o = 0; o < n_b; ++o) rank += lens[o] > lr || (lens[o] == lr && o < r);
      if (rank == b) lens[n_b] = r;  // exactly one row has this rank
    }
    __syncthreads();
    b = lens[n_b];
  }
  const bool direct = prm.n_splits == 1;
  const int len = row_length(positions, b, prm.kv_len);
  const int j0 = split * prm.chunk;
  const int n_keys = max(0, min(prm.chunk, len - j0));
  const int h0 = tile * HT;
  const int n_th = min(HT, H - h0);                                     // heads of this tile
  const int64_t part = static_cast<int64_t>(b) * prm.n_splits + split;  // (b, split)
  if (n_keys == 0 && !direct) {  // block-uniform: the merge never reads it, written for clarity
    for (int i = tid; i < n_th; i += n_threads) {
      part_ml[(part * H + h0 + i) * 2 + 0] = -INFINITY;
      part_ml[(part * H + h0 + i) * 2 + 1] = 0.f;
    }
    return;
  }
  const int gi = tid / G, gl = tid % G;
  const int hl = gi % HT, s = gi / HT;
  const bool gvalid = s < S && hl < n_th;
  const int h = h0 + hl;
  const int vpd = D / kVec;  // vectors per head
  bool cvalid[kPerLane];
  float qf[kPerLane][kVec];
#pragma unroll
  for (int k = 0; k < kPerLane; ++k) {
    const int c = gl + k * G;
    cvalid[k] = gvalid && c < vpd;
    V qv = zero_vec<T, kVec>();
    if (cvalid[k]) qv = load_vec<V>(q + static_cast<int64_t>(b) * HD + h * D + c * kVec);
#pragma unroll
    for (int i = 0; i < kVec; ++i) qf[k][i] = to_float(qv.v[i]);
  }
  // Key j0 of the slot, this lane's first vector of head h (only dereferenced when valid).
  const int64_t base =
      slots[b] * prm.stride_slot + static_cast<int64_t>(j0) * HD + (gvalid ? h * D + gl * kVec : 0);
  const T* kp = k_cache + base;
  const T* vp = v_cache + base;

  float acc[kPerLane][kVec];
#pragma unroll
  for (int k = 0; k < kPerLane; ++k) {
#pragma unroll
    for (int i = 0; i < kVec; ++i) acc[k][i] = 0.f;
  }
  float m = -INFINITY, l = 0.f;
  const int n_iter = (n_keys + S * kU - 1) / (S * kU);  // block-uniform
  constexpr int64_t kElt = sizeof(T);
  uint4 kb0[kU][kPerLane], vb0[kU][kPerLane], kb1[kU][kPerLane], vb1[kU][kPerLane];
  v2_load<kPerLane, kU, kVec>(kb0, vb0, kp, vp, kElt, 0, s, S, n_keys, HD, G, cvalid);
  for (int it = 0; it < n_iter; it += 2) {
    v2_load<kPerLane, kU, kVec>(kb1, vb1, kp, vp, kElt, it + 1, s, S, n_keys, HD, G, cvalid);
    v2_compute<T, kVec, kPerLane, kU>(kb0, vb0, qf, acc, m, l, it, s, S, n_keys, G, gvalid,
                                      prm.scale_log2);
    if (it + 1 < n_iter) {
      v2_load<kPerLane, kU, kVec>(kb0, vb0, kp, vp, kElt, it + 2, s, S, n_keys, HD, G, cvalid);
      v2_compute<T, kVec, kPerLane, kU>(kb1, vb1, qf, acc, m, l, it + 1, s, S, n_keys, G, gvalid,
                                        prm.scale_log2);
    }
  }

  // Combine the streams: [S, HT, D] sums, then [S, HT, 2] (m, l).
  float* acc_s = smem;
  float* ml_s = smem + S * HT * D;
  if (gvalid) {
#pragma unroll
    for (int k = 0; k < kPerLane; ++k) {
      if (cvalid[k]) {
        float* dst = acc_s + (s * HT + hl) * D + (gl + k * G) * kVec;
#pragma unroll
        for (int i = 0; i < kVec; i += 4)  // D % 4 == 0 (kVec >= 4): 16-byte aligned
          *reinterpret_cast<float4*>(dst + i) =
              make_float4(acc[k][i], acc[k][i + 1], acc[k][i + 2], acc[k][i + 3]);
      }
    }
    if (gl == 0) {
      ml_s[(s * HT + hl) * 2 + 0] = m;
      ml_s[(s * HT + hl) * 2 + 1] = l;
    }
  }
  __syncthreads();
  for (int e = tid; e < n_th * D; e += n_threads) {
    const int eh = e / D, d = e - (e / D) * D;
    float M = -INFINITY;
    for (int t = 0; t < S; ++t) M = fmaxf(M, ml_s[(t * HT + eh) * 2]);
    float L = 0.f, A = 0.f;
    for (int t = 0; t < S; ++t) {  // fixed order
      const float mt = ml_s[(t * HT + eh) * 2];
      const float w = mt == -INFINITY ? 0.f : exp2f(mt - M);
      L = fmaf(ml_s[(t * HT + eh) * 2 + 1], w, L);
      A = fmaf(acc_s[(t * HT + eh) * D + d], w, A);
    }
    const int hh = h0 + eh;
    if (direct) {
      out[(static_cast<int64_t>(b) * H + hh) * D + d] = from_float<T>(A / L);
    } else {
      part_acc[part * HD + hh * D + d] = A;
      if (d == 0) {
        part_ml[(part * H + hh) * 2 + 0] = M;
        part_ml[(part * H + hh) * 2 + 1] = L;
      }
    }
  }
}

bool aligned(const void* p, int64_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Keys per block: enough blocks to fill the GPU when rows are full length (B = 1: ~2 per SM of a
// few keys each), at most kMaxChunk (few partials at large batch). Overridable for tuning.
int choose_chunk(int64_t n_b, int64_t kv_len, int n_sms) {
  static const int forced = [] {
    const char* env = std::getenv("OCR_DECODE_ATTENTION_CHUNK");
    return env ? std::atoi(env) : 0;
  }();
  int64_t chunk = forced > 0
                      ? forced
                      : ceil_div(n_b * kv_len, static_cast<int64_t>(n_sms) * kBlocksPerSmTarget);
  chunk = std::max(chunk, ceil_div(kv_len, kMaxSplits));
  chunk = ceil_div(chunk, kChunkAlign) * kChunkAlign;
  chunk = std::clamp<int64_t>(chunk, kMinChunk, kMaxChunk);
  return static_cast<int>(std::min<int64_t>(chunk, ceil_div(kv_len, kChunkAlign) * kChunkAlign));
}

// v1's merge (kernel 2) of the partials [B, n_splits, H, D] and [B, n_splits, H, 2] into out.
template <typename T>
void launch_merge(const at::Tensor& part_acc, const at::Tensor& part_ml,
                  const at::Tensor& positions, const at::Tensor& out, const AttnParams& prm,
                  cudaStream_t stream) {
  const int64_t n_b = out.size(0);
  const int64_t n_d = prm.head_dim / 2;
  int64_t n_sg = 1;
  while (n_sg < prm.n_splits && n_sg * 2 * n_d <= kMergeMaxThreads) n_sg *= 2;
  const int merge_threads = static_cast<int>(ceil_div(n_sg * n_d, 32) * 32);
  const size_t merge_smem =
      sizeof(float) * static_cast<size_t>(n_sg * prm.head_dim + 64 + prm.n_splits);
  decode_attention_merge_kernel<T>
      <<<static_cast<unsigned>(n_b * prm.n_heads), merge_threads, merge_smem, stream>>>(
          part_acc.data_ptr<float>(), part_ml.data_ptr<float>(), positions.data_ptr<int64_t>(),
          reinterpret_cast<T*>(out.data_ptr()), prm, static_cast<int>(n_sg));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// An integer environment knob, read at every call (0 when unset).
int64_t env_int(const char* name) {
  const char* env = std::getenv(name);
  return env ? std::atoll(env) : 0;
}

enum class Impl { kV1, kV2, kAuto };

// OCR_DECODE_ATTENTION_IMPL=auto|v1|v2, read at every call (one process can switch). Default auto.
Impl requested_impl() {
  const char* env = std::getenv("OCR_DECODE_ATTENTION_IMPL");
  if (env == nullptr || *env == '\0' || std::strcmp(env, "auto") == 0) return Impl::kAuto;
  if (std::strcmp(env, "v1") == 0) return Impl::kV1;
  if (std::strcmp(env, "v2") == 0) return Impl::kV2;
  TORCH_CHECK(false, "decode_attention: OCR_DECODE_ATTENTION_IMPL must be v1, v2 or auto, got '",
              env, "'");
}

void decode_attention_v1(const at::Tensor& q, const at::Tensor& kv_cache, int64_t layer,
                         const at::Tensor& slots, const at::Tensor& positions, int64_t kv_len,
                         const at::Tensor& out, const cudaDeviceProp* props, cudaStream_t stream) {
  const int64_t n_b = q.size(0), n_heads = q.size(2), head_dim = q.size(3);
  AttnParams prm{};
  prm.n_heads = static_cast<int>(n_heads);
  prm.head_dim = static_cast<int>(head_dim);
  prm.kv_len = static_cast<int>(kv_len);
  prm.stride_slot = kv_cache.stride(2);
  prm.chunk = choose_chunk(n_b, kv_len, props->multiProcessorCount);
  prm.n_splits = static_cast<int>(ceil_div(kv_len, prm.chunk));
  prm.scale_log2 = static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim)) * kLog2e);
  at::Tensor part_acc, part_ml;
  if (prm.n_splits > 1) {
    const auto f32 = q.options().dtype(at::kFloat);
    part_acc = at::empty({n_b, prm.n_splits, n_heads, head_dim}, f32);  // [B, n_splits, H, D]
    part_ml = at::empty({n_b, prm.n_splits, n_heads, 2}, f32);          // [B, n_splits, H, (m, l)]
  }
  const int64_t layer_elems = kv_cache.stride(0);  // strides: the cache may be a narrowed view
  const int64_t kv_elems = kv_cache.stride(1);

  const auto run = [&](auto zero, auto vec_tag) {
    using T = decltype(zero);
    constexpr int kVec = decltype(vec_tag)::value;
    const int64_t hd = n_heads * head_dim;
    const int64_t E = hd / kVec;  // vectors per key
    const int64_t streams =
        E >= kTargetThreads ? 1 : std::min<int64_t>(ceil_div(kTargetThreads, E), prm.chunk);
    prm.streams = static_cast<int>(streams);
    const int threads = static_cast<int>(
        std::min<int64_t>(kMaxThreads, ceil_div(std::max<int64_t>(E * streams, 32), 32) * 32));
    int group = 1;
    while (group < head_dim / kVec && group < 32) group *= 2;
    prm.group = group;
    const size_t smem = sizeof(float) * static_cast<size_t>(std::max(hd, streams * hd) +
                                                            n_heads * prm.chunk + n_heads);
    const auto kernel = decode_attention_split_kernel<T, kVec>;
    if (smem > 48 * 1024) {
      TORCH_CHECK(smem <= static_cast<size_t>(props->sharedMemPerBlockOptin),
                  "decode_attention: needs ", smem, " bytes of shared memory for q ", q.sizes(),
                  ", the device has ", props->sharedMemPerBlockOptin);
      C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          static_cast<int>(smem)));
    }
    const T* cache = reinterpret_cast<const T*>(kv_cache.data_ptr()) + layer * layer_elems;
    const dim3 grid(static_cast<unsigned>(prm.n_splits), static_cast<unsigned>(n_b));
    kernel<<<grid, threads, smem, stream>>>(reinterpret_cast<const T*>(q.data_ptr()), cache,
                                            cache + kv_elems, slots.data_ptr<int64_t>(),
                                            positions.data_ptr<int64_t>(),
                                            prm.n_splits > 1 ? part_acc.data_ptr<float>() : nullptr,
                                            prm.n_splits > 1 ? part_ml.data_ptr<float>() : nullptr,
                                            reinterpret_cast<T*>(out.data_ptr()), prm);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (prm.n_splits > 1) launch_merge<T>(part_acc, part_ml, positions, out, prm, stream);
  };
  // 16-byte loads need 16-byte aligned bases and strides that keep every key row aligned.
  const int64_t elt = static_cast<int64_t>(q.element_size());
  bool wide_ok = aligned(q.data_ptr(), kVecBytes) && aligned(kv_cache.data_ptr(), kVecBytes);
  for (int d = 0; d < 3; ++d) wide_ok = wide_ok && (kv_cache.stride(d) * elt) % kVecBytes == 0;
  if (q.scalar_type() == at::kBFloat16) {
    if (wide_ok && head_dim % 8 == 0) {
      run(__nv_bfloat16{}, std::integral_constant<int, 8>{});
    } else {
      run(__nv_bfloat16{}, std::integral_constant<int, 1>{});
    }
  } else {
    if (wide_ok && head_dim % 4 == 0) {
      run(float{}, std::integral_constant<int, 4>{});
    } else {
      run(float{}, std::integral_constant<int, 1>{});
    }
  }
}

// v2 (the streaming kernel): false, launching nothing, where it does not handle the shape (16-byte
// vectors must tile head_dim and keep every row aligned; shared memory) and v1 runs instead.
// Knobs, read at every call (0 / unset: automatic):
//   OCR_DECODE_ATTENTION_V2_HEADS   heads per block (auto: one warp covers one key of the tile's
//                                   heads: 32 / G, e.g. 2 for bf16 D = 128);
//   OCR_DECODE_ATTENTION_V2_STREAMS key streams per block (auto: ~kV2TargetThreads threads);
//   OCR_DECODE_ATTENTION_V2_CHUNK   keys per block (auto: one split unless the grid would have
//   fewer
//                                   than kV2BlocksPerSm blocks per SM, e.g. B = 256: no merge);
//   OCR_DECODE_ATTENTION_V2_SORT    1: blocks take the rows longest first (default off; it
//                                   costs O(B^2 / threads) per block).
bool decode_attention_v2(const at::Tensor& q, const at::Tensor& kv_cache, int64_t layer,
                         const at::Tensor& slots, const at::Tensor& positions, int64_t kv_len,
                         const at::Tensor& out, const cudaDeviceProp* props, cudaStream_t stream) {
  const int64_t n_b = q.size(0), n_heads = q.size(2), head_dim = q.size(3);
  const int64_t elt = static_cast<int64_t>(q.element_size());
  const int64_t vec = kVecBytes / elt;
  if (head_dim % vec != 0 || !aligned(q.data_ptr(), kVecBytes) ||
      !aligned(kv_cache.data_ptr(), kVecBytes))
    return false;
  for (int d = 0; d < 3; ++d)
    if ((kv_cache.stride(d) * elt) % kVecBytes != 0) return false;
  const int64_t vpd = head_dim / vec;  // vectors per head
  int64_t group = 1;
  while (group < vpd && group < 32) group *= 2;
  const int64_t per_lane = ceil_div(vpd, group);
  if (per_lane > 2) return false;  // not reached: head_dim <= 256
  int64_t tile_heads = env_int("OCR_DECODE_ATTENTION_V2_HEADS");
  if (tile_heads <= 0) tile_heads = std::max<int64_t>(1, 32 / group);
  tile_heads = std::min({tile_heads, n_heads, int64_t{kV2MaxThreads} / group});
  int64_t streams = env_int("OCR_DECODE_ATTENTION_V2_STREAMS");
  if (streams <= 0) streams = std::max<int64_t>(1, kV2TargetThreads / (tile_heads * group));
  streams = std::min<int64_t>(streams, kV2MaxThreads / (tile_heads * group));
  const int64_t n_tiles = ceil_div(n_heads, tile_heads);
  int64_t chunk = env_int("OCR_DECODE_ATTENTION_V2_CHUNK");
  if (chunk <= 0) {
    const int64_t want_splits =
        ceil_div(int64_t{kV2BlocksPerSm} * props->multiProcessorCount, n_b * n_tiles);
    chunk = std::max<int64_t>(ceil_div(kv_len, want_splits), kV2MinChunk);
    chunk = ceil_div(chunk, kV2ChunkAlign) * kV2ChunkAlign;
  }
  chunk = std::min(std::max(chunk, ceil_div(kv_len, kMaxSplits)), kv_len);
  const int64_t n_splits = ceil_div(kv_len, chunk);
  if (n_splits * n_tiles > std::numeric_limits<int>::max()) return false;
  const int threads = static_cast<int>(ceil_div(tile_heads * group * streams, 32) * 32);
  const int64_t sort_knob = env_int("OCR_DECODE_ATTENTION_V2_SORT");  // 0 auto, 1 on, -1 off
  const bool sort_rows = n_b > 1 && sort_knob > 0 && n_b <= 65535;
  const size_t smem = sizeof(float) * static_cast<size_t>(streams * tile_heads * (head_dim + 2)) +
                      (sort_rows ? sizeof(int) * static_cast<size_t>(n_b + 1) : 0);
  if (smem > static_cast<size_t>(props->sharedMemPerBlockOptin)) return false;

  AttnParamsV2 prm{};
  prm.n_heads = static_cast<int>(n_heads);
  prm.head_dim = static_cast<int>(head_dim);
  prm.kv_len = static_cast<int>(kv_len);
  prm.chunk = static_cast<int>(chunk);
  prm.n_splits = static_cast<int>(n_splits);
  prm.group = static_cast<int>(group);
  prm.tile_heads = static_cast<int>(tile_heads);
  prm.n_tiles = static_cast<int>(n_tiles);
  prm.streams = static_cast<int>(streams);
  prm.sort_rows = sort_rows ? 1 : 0;
  prm.stride_slot = kv_cache.stride(2);
  prm.scale_log2 = static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim)) * kLog2e);
  at::Tensor part_acc, part_ml;
  if (n_splits > 1) {
    const auto f32 = q.options().dtype(at::kFloat);
    part_acc = at::empty({n_b, n_splits, n_heads, head_dim}, f32);  // [B, n_splits, H, D]
    part_ml = at::empty({n_b, n_splits, n_heads, 2}, f32);          // [B, n_splits, H, (m, l)]
  }

  const auto run = [&](auto zero, auto per_lane_tag) {
    using T = decltype(zero);
    constexpr int kVec = kVecBytes / sizeof(T);
    constexpr int kPerLane = decltype(per_lane_tag)::value;
    const auto kernel = decode_attention_stream_kernel<T, kVec, kPerLane>;
    if (smem > 48 * 1024)
      C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          static_cast<int>(smem)));
    const T* cache = reinterpret_cast<const T*>(kv_cache.data_ptr()) + layer * kv_cache.stride(0);
    const dim3 grid(static_cast<unsigned>(n_splits * n_tiles), static_cast<unsigned>(n_b));
    kernel<<<grid, threads, smem, stream>>>(reinterpret_cast<const T*>(q.data_ptr()), cache,
                                            cache + kv_cache.stride(1), slots.data_ptr<int64_t>(),
                                            positions.data_ptr<int64_t>(),
                                            n_splits > 1 ? part_acc.data_ptr<float>() : nullptr,
                                            n_splits > 1 ? part_ml.data_ptr<float>() : nullptr,
                                            reinterpret_cast<T*>(out.data_ptr()), prm);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (n_splits > 1) {
      AttnParams mprm{};
      mprm.n_heads = prm.n_heads;
      mprm.head_dim = prm.head_dim;
      mprm.kv_len = prm.kv_len;
      mprm.chunk = prm.chunk;
      mprm.n_splits = prm.n_splits;
      launch_merge<T>(part_acc, part_ml, positions, out, mprm, stream);
    }
  };
  if (q.scalar_type() == at::kBFloat16) {  // head_dim <= 256 = 32 lanes x 8: one vector per lane
    TORCH_INTERNAL_ASSERT(per_lane == 1);
    run(__nv_bfloat16{}, std::integral_constant<int, 1>{});
  } else {
    if (per_lane == 1) {
      run(float{}, std::integral_constant<int, 1>{});
    } else {
      run(float{}, std::integral_constant<int, 2>{});
    }
  }
  return true;
}

at::Tensor decode_attention_cuda(const at::Tensor& q, const at::Tensor& kv_cache, int64_t layer,
                                 const at::Tensor& slots_in, const at::Tensor& positions_in,
                                 int64_t kv_len) {
  check_decode_attention_args(q, kv_cache, layer, slots_in, positions_in, kv_len);
  TORCH_CHECK(q.is_cuda(), "decode_attention: q must be a CUDA tensor, got ", q.device());
  const c10::cuda::CUDAGuard guard(q.device());
  const int64_t n_b = q.size(0), n_heads = q.size(2), head_dim = q.size(3);
  auto out = at::empty(q.sizes(),
                       q.options().memory_format(at::MemoryFormat::Contiguous));  // [B, 1, H, D]
  if (n_b == 0) return out;
  TORCH_CHECK(n_b <= 65535, "decode_attention: the CUDA kernel supports up to 65535 rows, got ",
              n_b);
  TORCH_CHECK(n_heads * head_dim <= (1 << 20) && kv_len <= int64_t{kMaxChunk} * kMaxSplits,
              "decode_attention: too large: q ", q.sizes(), ", kv_len ", kv_len);
  const auto slots = slots_in.contiguous();
  const auto positions = positions_in.contiguous();
  const auto* props = at::cuda::getCurrentDeviceProperties();
  const auto stream = at::cuda::getCurrentCUDAStream();
  // auto: v2 wherever it handles the shape (expected to win at every batch: see the header).
  const Impl impl = requested_impl();
  if (impl != Impl::kV1 &&
      decode_attention_v2(q, kv_cache, layer, slots, positions, kv_len, out, props, stream))
    return out;
  decode_attention_v1(q, kv_cache, layer, slots, positions, kv_len, out, props, stream);
  return out;
}

// ---- registration: the CUDA kernels, or the plain-ATen reference (benchmark baseline) ----------

at::Tensor decode_attention_op(const at::Tensor& q, const at::Tensor& kv_cache, int64_t layer,
                               const at::Tensor& slots, const at::Tensor& positions,
                               int64_t kv_len) {
  if (use_reference_kernels())
    return decode_attention_reference(q, kv_cache, layer, slots, positions, kv_len);
  return decode_attention_cuda(q, kv_cache, layer, slots, positions, kv_len);
}

}  // namespace

TORCH_LIBRARY_IMPL(ocr, CUDA, m) { m.impl("decode_attention", &decode_attention_op); }

}  // namespace ocr::kernels::cuda
