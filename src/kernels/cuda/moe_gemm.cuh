// Grouped expert GEMMs of the SwiGLU experts, driven by the tile map of moe_align:
//   gate_up: act[p]  = silu(x[token(p)] . W_gate[e]^T) * (x[token(p)] . W_up[e]^T)   [rows, inter]
//   down:    y[slot(p)] = act[p] . W_down[e]^T                                       [rows, hidden]
// p is a row of the expert-sorted order, e its expert. Every row is computed on its own (the
// accumulation order of a row does not depend on the other rows of its tile), so results do not
// depend on how the rows were grouped. Two kernels:
//   * moe_gemm_mma_kernel: bf16 tensor cores (mma.sync m16n8k16, fp32 accumulate), cp.async
//     multistage pipeline; needs K % 8 == 0 and 16-byte aligned rows.
//   * moe_gemm_stream_kernel: the same tiles and numerics (kWarpsK = 1), persistent blocks whose
//     pipeline streams on across work items (decode, bound by reading the weights).
//   * moe_gemm_simt_kernel: plain fp32 FMA for float32 and for bf16 shapes the first cannot take.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "kernels/cuda/moe_common.cuh"

namespace ocr::kernels::cuda {

template <typename T>
struct MoeGemmParams {
  const T* a;                 // gate_up: hidden [n_tokens, K]; down: act [n_slots, K]
  const T* w;                 // gate_up: [n_experts, 2 * N, K]; down: [n_experts, N, K]
  T* out;                     // gate_up: act [n_slots, N]; down: y [n_slots, N]
  const int32_t* sorted_slots;  // [n_slots]
  const int32_t* tile_expert;   // [max_tiles]
  const int32_t* tile_row0;     // [max_tiles]
  const int32_t* tile_rows;     // [max_tiles]
  const int32_t* n_tiles;       // [1]
  int K;                        // reduction length: hidden (gate_up) or inter (down)
  int N;                        // output columns: inter (gate_up) or hidden (down)
  int top_k;
};

// Source row (in p.a) and destination row (in p.out) of row r of a tile, or -1 for padding rows.
template <bool kGateUp, typename T>
__device__ __forceinline__ void tile_row_map(const MoeGemmParams<T>& p, int row0, int rows, int r,
                                             int& src, int& dst) {
  src = -1;
  dst = -1;
  if (r < rows) {
    const int pos = row0 + r;
    const int slot = p.sorted_slots[pos];
    src = kGateUp ? slot / p.top_k : pos;
    dst = kGateUp ? pos : slot;
  }
}

// ---- bf16 tensor-core kernel -------------------------------------------------------------------
// Block tile: kBM rows x kBN output columns (gate_up loads kBN gate rows and kBN up rows of W so
// that SiLU-and-multiply happens in the epilogue), kBK-deep stages. Warps: kWarpsM x kWarpsN over
// the output tile, times kWarpsK splitting each stage's k range (for decode, where kBM is 16 and
// the weights stream through once, more warps per block keep more loads in flight); the kWarpsK
// partial sums are added in a fixed order at the end, so results are deterministic.
template <int kBM, int kBN, int kBK, int kWarpsM, int kWarpsN, int kWarpsK, int kStages, bool kGateUp>
struct MmaTile {
  static constexpr int kThreads = 32 * kWarpsM * kWarpsN * kWarpsK;
  static constexpr int kBRows = kGateUp ? 2 * kBN : kBN;  // weight rows per stage
  static constexpr int kLd = kBK + 8;                      // padded smem row: ldmatrix without bank conflicts
  static constexpr int kWarpTileM = kBM / kWarpsM;
  static constexpr int kWarpTileN = kBN / kWarpsN;
  static constexpr int kMTiles = kWarpTileM / 16;
  static constexpr int kNTiles = kWarpTileN / 8;
  static constexpr int kKSteps = kBK / 16 / kWarpsK;       // k16 steps per warp per stage
  static constexpr int kGroups = kGateUp ? 2 : 1;          // gate and up accumulators
  static constexpr int kAcc = kGroups * kMTiles * kNTiles * 4;
  static constexpr int kPipeBytes = kStages * (kBM + kBRows) * kLd * 2;
  static constexpr int kReduceBytes = (kWarpsK - 1) * kWarpsM * kWarpsN * kAcc * 32 * 4;
  static constexpr int kSmemBytes = kPipeBytes > kReduceBytes ? kPipeBytes : kReduceBytes;
  static_assert(kBM % (16 * kWarpsM) == 0 && kBN % (16 * kWarpsN) == 0, "warp tile must be 16x16-aligned");
  static_assert(kBK % (16 * kWarpsK) == 0, "each warp needs whole k16 steps");
  static_assert(kNTiles % 2 == 0, "B fragments are loaded 16 columns at a time");
  static_assert(kStages >= 2, "at least double buffering");
};

template <int kBM, int kBN, int kBK, int kWarpsM, int kWarpsN, int kWarpsK, int kStages, bool kGateUp>
__global__ void __launch_bounds__(32 * kWarpsM * kWarpsN * kWarpsK)
    moe_gemm_mma_kernel(const MoeGemmParams<__nv_bfloat16> p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  using Tile = MmaTile<kBM, kBN, kBK, kWarpsM, kWarpsN, kWarpsK, kStages, kGateUp>;
  using bf16 = __nv_bfloat16;
  constexpr int kLd = Tile::kLd;
  constexpr int kChunksPerRow = kBK / 8;  // 16-byte chunks per smem row

  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* s_a = reinterpret_cast<bf16*>(smem_raw);       // [kStages][kBM][kLd]
  bf16* s_b = s_a + kStages * kBM * kLd;               // [kStages][kBRows][kLd]
  __shared__ int s_src[kBM];
  __shared__ int s_dst[kBM];

  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const int warp_k = warp / (kWarpsM * kWarpsN);
  const int warp_mn = warp % (kWarpsM * kWarpsN);
  const int warp_m = warp_mn / kWarpsN;
  const int warp_n = warp_mn % kWarpsN;
  const int K = p.K;
  const int N = p.N;
  const int n0 = blockIdx.x * kBN;
  const int k_tiles = (K + kBK - 1) / kBK;
  const int n_tiles = *p.n_tiles;

  for (int tile = blockIdx.y; tile < n_tiles; tile += gridDim.y) {
    const int expert = p.tile_expert[tile];
    const int row0 = p.tile_row0[tile];
    const int rows = p.tile_rows[tile];
    __syncthreads();  // the previous tile is done with s_src/s_dst and the pipeline buffers
    for (int r = threadIdx.x; r < kBM; r += Tile::kThreads) tile_row_map<kGateUp>(p, row0, rows, r, s_src[r], s_dst[r]);
    __syncthreads();

    const bf16* w_e = p.w + static_cast<int64_t>(expert) * (kGateUp ? 2 * N : N) * K;
    auto load_stage = [&](int stage, int kt) {
      const int k0 = kt * kBK;
      bf16* a_dst = s_a + stage * kBM * kLd;
      for (int c = threadIdx.x; c < kBM * kChunksPerRow; c += Tile::kThreads) {
        const int r = c / kChunksPerRow;
        const int kc = (c % kChunksPerRow) * 8;
        const int src = s_src[r];
        const bool ok = src >= 0 && k0 + kc < K;
        const bf16* g = ok ? p.a + static_cast<int64_t>(src) * K + k0 + kc : p.a;
        cp_async16(a_dst + r * kLd + kc, g, ok);
      }
      bf16* b_dst = s_b + stage * Tile::kBRows * kLd;
      for (int c = threadIdx.x; c < Tile::kBRows * kChunksPerRow; c += Tile::kThreads) {
        const int r = c / kChunksPerRow;
        const int kc = (c % kChunksPerRow) * 8;
        const int n = n0 + (r < kBN ? r : r - kBN);            // output column this row feeds
        const int w_row = (kGateUp && r >= kBN) ? N + n : n;  // up rows follow the gate rows
        const bool ok = n < N && k0 + kc < K;
        const bf16* g = ok ? w_e + static_cast<int64_t>(w_row) * K + k0 + kc : p.w;
        cp_async16(b_dst + r * kLd + kc, g, ok);
      }
    };

    float acc[Tile::kGroups][Tile::kMTiles][Tile::kNTiles][4];
#pragma unroll
    for (int g = 0; g < Tile::kGroups; ++g)
#pragma unroll
      for (int mi = 0; mi < Tile::kMTiles; ++mi)
#pragma unroll
        for (int ni = 0; ni < Tile::kNTiles; ++ni)
#pragma unroll
          for (int q = 0; q < 4; ++q) acc[g][mi][ni][q] = 0.f;

#pragma unroll
    for (int s = 0; s < kStages - 1; ++s) {
      if (s < k_tiles) load_stage(s, s);
      cp_async_commit();
    }
    for (int kt = 0; kt < k_tiles; ++kt) {
      cp_async_wait<kStages - 2>();
      __syncthreads();  // stage kt has landed for every thread; stage kt - 1 is free to refill
      const int next = kt + kStages - 1;
      if (next < k_tiles) load_stage(next % kStages, next);
      cp_async_commit();

      const bf16* a_s = s_a + (kt % kStages) * kBM * kLd;
      const bf16* b_s = s_b + (kt % kStages) * Tile::kBRows * kLd;
#pragma unroll
      for (int ks = 0; ks < Tile::kKSteps; ++ks) {
        const int kk = (warp_k * Tile::kKSteps + ks) * 16;
        uint32_t a_frag[Tile::kMTiles][4];
#pragma unroll
        for (int mi = 0; mi < Tile::kMTiles; ++mi) {
          const int r = warp_m * Tile::kWarpTileM + mi * 16 + lane % 16;
          ldmatrix_x4(a_frag[mi], a_s + r * kLd + kk + (lane / 16) * 8);
        }
#pragma unroll
        for (int g = 0; g < Tile::kGroups; ++g) {
#pragma unroll
          for (int nj = 0; nj < Tile::kNTiles / 2; ++nj) {
            // x4: (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15)
            const int n = g * kBN + warp_n * Tile::kWarpTileN + nj * 16 + lane % 8 + (lane / 16) * 8;
            uint32_t b_frag[4];
            ldmatrix_x4(b_frag, b_s + n * kLd + kk + ((lane / 8) % 2) * 8);
#pragma unroll
            for (int mi = 0; mi < Tile::kMTiles; ++mi) {
              mma_bf16_16816(acc[g][mi][2 * nj], a_frag[mi], b_frag[0], b_frag[1]);
              mma_bf16_16816(acc[g][mi][2 * nj + 1], a_frag[mi], b_frag[2], b_frag[3]);
            }
          }
        }
      }
    }
    cp_async_wait<0>();
    __syncthreads();  // all reads of the pipeline buffers are done before they hold partial sums

    if constexpr (kWarpsK > 1) {
      float* red = reinterpret_cast<float*>(smem_raw);  // [kWarpsK - 1][kWarpsM * kWarpsN][kAcc][32]
      if (warp_k > 0) {
        float* mine = red + ((warp_k - 1) * kWarpsM * kWarpsN + warp_mn) * Tile::kAcc * 32 + lane;
        int i = 0;
#pragma unroll
        for (int g = 0; g < Tile::kGroups; ++g)
#pragma unroll
          for (int mi = 0; mi < Tile::kMTiles; ++mi)
#pragma unroll
            for (int ni = 0; ni < Tile::kNTiles; ++ni)
#pragma unroll
              for (int q = 0; q < 4; ++q, ++i) mine[i * 32] = acc[g][mi][ni][q];
      }
      __syncthreads();
      if (warp_k == 0) {
        for (int wk = 1; wk < kWarpsK; ++wk) {  // fixed order: deterministic
          const float* theirs = red + ((wk - 1) * kWarpsM * kWarpsN + warp_mn) * Tile::kAcc * 32 + lane;
          int i = 0;
#pragma unroll
          for (int g = 0; g < Tile::kGroups; ++g)
#pragma unroll
            for (int mi = 0; mi < Tile::kMTiles; ++mi)
#pragma unroll
              for (int ni = 0; ni < Tile::kNTiles; ++ni)
#pragma unroll
                for (int q = 0; q < 4; ++q, ++i) acc[g][mi][ni][q] += theirs[i * 32];
        }
      }
    }

    if (warp_k == 0) {
#pragma unroll
      for (int mi = 0; mi < Tile::kMTiles; ++mi) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const int r = warp_m * Tile::kWarpTileM + mi * 16 + lane / 4 + half * 8;
          const int dst = s_dst[r];
          if (dst < 0) continue;
          bf16* out_row = p.out + static_cast<int64_t>(dst) * N;
#pragma unroll
          for (int ni = 0; ni < Tile::kNTiles; ++ni) {
            const int c = n0 + warp_n * Tile::kWarpTileN + ni * 8 + (lane % 4) * 2;
            if (c >= N) continue;  // N % 8 == 0 here, so c + 1 < N as well
            float v0;
            float v1;
            if constexpr (kGateUp) {
              v0 = swiglu<bf16>(acc[0][mi][ni][half * 2], acc[1][mi][ni][half * 2]);
              v1 = swiglu<bf16>(acc[0][mi][ni][half * 2 + 1], acc[1][mi][ni][half * 2 + 1]);
            } else {
              v0 = acc[0][mi][ni][half * 2];
              v1 = acc[0][mi][ni][half * 2 + 1];
            }
            *reinterpret_cast<__nv_bfloat162*>(out_row + c) = __floats2bfloat162_rn(v0, v1);
          }
        }
      }
    }
  }
#else
  __trap();  // built only for sm_80+; the host side never launches it on older devices
#endif
}

// ---- bf16 tensor-core kernel, persistent and streaming (decode) --------------------------------
// The same tiles and numerics as moe_gemm_mma_kernel with kWarpsK = 1 (each output one fp32 mma
// chain over k in ascending 16-deep steps), but each block walks a fixed, round-robin list of
// (row tile, column tile) work items, item i = blockIdx.x + j * gridDim.x, item -> (i / n_col,
// i % n_col), and its cp.async pipeline runs on across items: the next item's weights are already
// in flight while the current one finishes, so a block never drains its pipeline (no per-block
// start-up bubble, no wave tail of short blocks). Sized for 1 (or 2) blocks per SM with many
// stages: kStages - 1 stages of weights in flight per block at all times. Tile-map lookups happen
// when the producer enters an item (A source rows) and in the epilogue (destination rows); their
// L2 latency is covered by the stages still in flight.
template <int kBM, int kBN, int kBK, int kWarpsM, int kWarpsN, int kStages, bool kGateUp>
__global__ void __launch_bounds__(32 * kWarpsM * kWarpsN, 1)
    moe_gemm_stream_kernel(const MoeGemmParams<__nv_bfloat16> p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  using Tile = MmaTile<kBM, kBN, kBK, kWarpsM, kWarpsN, 1, kStages, kGateUp>;
  using bf16 = __nv_bfloat16;
  constexpr int kThreads = Tile::kThreads;
  constexpr int kLd = Tile::kLd;
  constexpr int kChunksPerRow = kBK / 8;  // 16-byte chunks per smem row
  constexpr int kAChunks = kBM * kChunksPerRow;
  constexpr int kAPerThread = (kAChunks + kThreads - 1) / kThreads;
  constexpr int kBChunks = Tile::kBRows * kChunksPerRow;

  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* s_a = reinterpret_cast<bf16*>(smem_raw);  // [kStages][kBM][kLd]
  bf16* s_b = s_a + kStages * kBM * kLd;          // [kStages][kBRows][kLd]

  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const int warp_m = warp / kWarpsN;
  const int warp_n = warp % kWarpsN;
  const int K = p.K;
  const int N = p.N;
  const int n_col = (N + kBN - 1) / kBN;
  const int k_tiles = (K + kBK - 1) / kBK;
  const int n_items = *p.n_tiles * n_col;
  const int my_items = n_items > static_cast<int>(blockIdx.x)
                           ? (n_items - 1 - static_cast<int>(blockIdx.x)) / static_cast<int>(gridDim.x) + 1
                           : 0;
  const int total_steps = my_items * k_tiles;

  // Producer: the item it loads (index j into this block's list), the next k tile, and per item the
  // source row of each A chunk row this thread copies (-1: padding row) and the expert's weights.
  int prod_j = -1;
  int prod_kt = k_tiles;  // forces an item switch on the first load
  int prod_n0 = 0;
  const bf16* prod_w = p.w;
  int a_src[kAPerThread];
#pragma unroll
  for (int i = 0; i < kAPerThread; ++i) a_src[i] = -1;

  auto produce = [&](int stage) {
    if (prod_kt == k_tiles) {  // enter the next item
      prod_kt = 0;
      ++prod_j;
      const int item = static_cast<int>(blockIdx.x) + prod_j * static_cast<int>(gridDim.x);
      const int tile = item / n_col;
      prod_n0 = (item - tile * n_col) * kBN;
      const int expert = p.tile_expert[tile];
      const int row0 = p.tile_row0[tile];
      const int rows = p.tile_rows[tile];
      prod_w = p.w + static_cast<int64_t>(expert) * (kGateUp ? 2 * N : N) * K;
#pragma unroll
      for (int i = 0; i < kAPerThread; ++i) {
        const int c = threadIdx.x + i * kThreads;
        const int r = c / kChunksPerRow;
        int src = -1;
        if (c < kAChunks && r < rows) src = kGateUp ? p.sorted_slots[row0 + r] / p.top_k : row0 + r;
        a_src[i] = src;
      }
    }
    const int k0 = prod_kt * kBK;
    bf16* a_dst = s_a + stage * kBM * kLd;
#pragma unroll
    for (int i = 0; i < kAPerThread; ++i) {
      const int c = threadIdx.x + i * kThreads;
      if (c < kAChunks) {
        const int r = c / kChunksPerRow;
        const int kc = (c % kChunksPerRow) * 8;
        const bool ok = a_src[i] >= 0 && k0 + kc < K;
        const bf16* g = ok ? p.a + static_cast<int64_t>(a_src[i]) * K + k0 + kc : p.a;
        cp_async16(a_dst + r * kLd + kc, g, ok);
      }
    }
    bf16* b_dst = s_b + stage * Tile::kBRows * kLd;
#pragma unroll 4
    for (int c = threadIdx.x; c < kBChunks; c += kThreads) {
      const int r = c / kChunksPerRow;
      const int kc = (c % kChunksPerRow) * 8;
      const int n = prod_n0 + (r < kBN ? r : r - kBN);        // output column this row feeds
      const int w_row = (kGateUp && r >= kBN) ? N + n : n;  // up rows follow the gate rows
      const bool ok = n < N && k0 + kc < K;
      const bf16* g = ok ? prod_w + static_cast<int64_t>(w_row) * K + k0 + kc : p.w;
      cp_async16(b_dst + r * kLd + kc, g, ok);
    }
    ++prod_kt;
  };

  float acc[Tile::kGroups][Tile::kMTiles][Tile::kNTiles][4];
  auto zero_acc = [&]() {
#pragma unroll
    for (int g = 0; g < Tile::kGroups; ++g)
#pragma unroll
      for (int mi = 0; mi < Tile::kMTiles; ++mi)
#pragma unroll
        for (int ni = 0; ni < Tile::kNTiles; ++ni)
#pragma unroll
          for (int q = 0; q < 4; ++q) acc[g][mi][ni][q] = 0.f;
  };
  zero_acc();

#pragma unroll 1
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < total_steps) produce(s);
    cp_async_commit();
  }
  int cons_j = 0;
  int cons_kt = 0;
#pragma unroll 1
  for (int q = 0; q < total_steps; ++q) {
    cp_async_wait<kStages - 2>();
    __syncthreads();  // step q has landed for every thread; the stage of step q - 1 is free to refill
    if (q + kStages - 1 < total_steps) produce((q + kStages - 1) % kStages);
    cp_async_commit();

    const int stage = q % kStages;
    const bf16* a_s = s_a + stage * kBM * kLd;
    const bf16* b_s = s_b + stage * Tile::kBRows * kLd;
#pragma unroll
    for (int ks = 0; ks < Tile::kKSteps; ++ks) {
      const int kk = ks * 16;
      uint32_t a_frag[Tile::kMTiles][4];
#pragma unroll
      for (int mi = 0; mi < Tile::kMTiles; ++mi) {
        const int r = warp_m * Tile::kWarpTileM + mi * 16 + lane % 16;
        ldmatrix_x4(a_frag[mi], a_s + r * kLd + kk + (lane / 16) * 8);
      }
#pragma unroll
      for (int g = 0; g < Tile::kGroups; ++g) {
#pragma unroll
        for (int nj = 0; nj < Tile::kNTiles / 2; ++nj) {
          // x4: (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15)
          const int n = g * kBN + warp_n * Tile::kWarpTileN + nj * 16 + lane % 8 + (lane / 16) * 8;
          uint32_t b_frag[4];
          ldmatrix_x4(b_frag, b_s + n * kLd + kk + ((lane / 8) % 2) * 8);
#pragma unroll
          for (int mi = 0; mi < Tile::kMTiles; ++mi) {
            mma_bf16_16816(acc[g][mi][2 * nj], a_frag[mi], b_frag[0], b_frag[1]);
            mma_bf16_16816(acc[g][mi][2 * nj + 1], a_frag[mi], b_frag[2], b_frag[3]);
          }
        }
      }
    }

    if (++cons_kt == k_tiles) {  // the item is complete: epilogue, then start the next one
      const int item = static_cast<int>(blockIdx.x) + cons_j * static_cast<int>(gridDim.x);
      const int tile = item / n_col;
      const int n0 = (item - tile * n_col) * kBN;
      const int row0 = p.tile_row0[tile];
      const int rows = p.tile_rows[tile];
#pragma unroll
      for (int mi = 0; mi < Tile::kMTiles; ++mi) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const int r = warp_m * Tile::kWarpTileM + mi * 16 + lane / 4 + half * 8;
          if (r >= rows) continue;
          const int dst = kGateUp ? row0 + r : p.sorted_slots[row0 + r];
          bf16* out_row = p.out + static_cast<int64_t>(dst) * N;
#pragma unroll
          for (int ni = 0; ni < Tile::kNTiles; ++ni) {
            const int c = n0 + warp_n * Tile::kWarpTileN + ni * 8 + (lane % 4) * 2;
            if (c >= N) continue;  // N % 8 == 0 here, so c + 1 < N as well
            float v0;
            float v1;
            if constexpr (kGateUp) {
              v0 = swiglu<bf16>(acc[0][mi][ni][half * 2], acc[1][mi][ni][half * 2]);
              v1 = swiglu<bf16>(acc[0][mi][ni][half * 2 + 1], acc[1][mi][ni][half * 2 + 1]);
            } else {
              v0 = acc[0][mi][ni][half * 2];
              v1 = acc[0][mi][ni][half * 2 + 1];
            }
            *reinterpret_cast<__nv_bfloat162*>(out_row + c) = __floats2bfloat162_rn(v0, v1);
          }
        }
      }
      zero_acc();
      cons_kt = 0;
      ++cons_j;
    }
  }
  cp_async_wait<0>();  // only empty groups can be left; nothing may be in flight at exit
#else
  __trap();  // built only for sm_80+; the host side never launches it on older devices
#endif
}

// ---- SIMT kernel (float32, and bf16 shapes the tensor-core path does not take) -----------------
// 64x64 output tile, 16-deep k steps, 16x16 threads with 4x4 outputs each (rows ty + 16 i,
// columns tx + 16 j). Each output is one fp32 FMA chain over k in ascending order.
constexpr int kSimtBM = 64;
constexpr int kSimtBN = 64;
constexpr int kSimtBK = 16;
constexpr int kSimtThreads = 256;

template <typename T, bool kGateUp>
__global__ void __launch_bounds__(kSimtThreads) moe_gemm_simt_kernel(const MoeGemmParams<T> p) {
  constexpr int kGroups = kGateUp ? 2 : 1;
  __shared__ float s_a[kSimtBM][kSimtBK + 1];
  __shared__ float s_b[kGroups][kSimtBN][kSimtBK + 1];
  __shared__ int s_src[kSimtBM];
  __shared__ int s_dst[kSimtBM];
  const int tx = threadIdx.x % 16;
  const int ty = threadIdx.x / 16;
  const int K = p.K;
  const int N = p.N;
  const int n0 = blockIdx.x * kSimtBN;
  const int n_tiles = *p.n_tiles;

  for (int tile = blockIdx.y; tile < n_tiles; tile += gridDim.y) {
    const int expert = p.tile_expert[tile];
    const int row0 = p.tile_row0[tile];
    const int rows = p.tile_rows[tile];
    __syncthreads();
    for (int r = threadIdx.x; r < kSimtBM; r += kSimtThreads) tile_row_map<kGateUp>(p, row0, rows, r, s_src[r], s_dst[r]);
    __syncthreads();
    const T* w_e = p.w + static_cast<int64_t>(expert) * (kGateUp ? 2 * N : N) * K;

    float acc[kGroups][4][4];
#pragma unroll
    for (int g = 0; g < kGroups; ++g)
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[g][i][j] = 0.f;

    for (int k0 = 0; k0 < K; k0 += kSimtBK) {
      for (int c = threadIdx.x; c < kSimtBM * kSimtBK; c += kSimtThreads) {
        const int r = c / kSimtBK;
        const int k = k0 + c % kSimtBK;
        const int src = s_src[r];
        s_a[r][c % kSimtBK] = (src >= 0 && k < K) ? to_float(p.a[static_cast<int64_t>(src) * K + k]) : 0.f;
      }
      for (int c = threadIdx.x; c < kGroups * kSimtBN * kSimtBK; c += kSimtThreads) {
        const int g = c / (kSimtBN * kSimtBK);
        const int r = (c / kSimtBK) % kSimtBN;
        const int k = k0 + c % kSimtBK;
        const int n = n0 + r;
        const int w_row = g == 1 ? N + n : n;
        s_b[g][r][c % kSimtBK] = (n < N && k < K) ? to_float(w_e[static_cast<int64_t>(w_row) * K + k]) : 0.f;
      }
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < kSimtBK; ++kk) {
        float a[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) a[i] = s_a[ty + 16 * i][kk];
#pragma unroll
        for (int g = 0; g < kGroups; ++g)
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            const float b = s_b[g][tx + 16 * j][kk];
#pragma unroll
            for (int i = 0; i < 4; ++i) acc[g][i][j] = fmaf(a[i], b, acc[g][i][j]);
          }
      }
      __syncthreads();
    }

#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int dst = s_dst[ty + 16 * i];
      if (dst < 0) continue;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int c = n0 + tx + 16 * j;
        if (c >= N) continue;
        float v;
        if constexpr (kGateUp) {
          v = swiglu<T>(acc[0][i][j], acc[1][i][j]);
        } else {
          v = acc[0][i][j];
        }
        p.out[static_cast<int64_t>(dst) * N + c] = from_float<T>(v);
      }
    }
  }
}

}  // namespace ocr::kernels::cuda
