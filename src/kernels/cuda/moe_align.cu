// Token-to-expert alignment (vLLM's moe_align, made stable): counts per expert, exclusive scan,
// the row-tile map of the grouped GEMMs and the permutation, all in one block on the device.
#include <c10/cuda/CUDAException.h>

#include "kernels/cuda/moe_cuda.cuh"

namespace ocr::kernels::cuda {
namespace {

constexpr int kAlignThreads = 1024;
constexpr int kAlignWarps = kAlignThreads / 32;

__global__ void __launch_bounds__(kAlignThreads)
    moe_align_kernel(const int32_t* __restrict__ topk_ids, int n_slots, int n_experts, int tile_m,
                     MoeAlignment out) {
  __shared__ int s_count[kMaxExperts];
  __shared__ int s_cursor[kMaxExperts];                // next free row of each expert
  __shared__ int s_tile_off[kMaxExperts];              // first tile of each expert
  __shared__ int s_chunk_rows[kMaxExperts];            // per chunk: rows of each expert
  // Per chunk: rows of expert e in warps < w. Padded rows: the scan reads a column across warps.
  __shared__ int s_warp_off[kAlignWarps][kMaxExperts + 1];
  const int tid = threadIdx.x;
  const int lane = tid % 32;
  const int warp = tid / 32;

  // 1. Counts (shared-memory atomics: the totals do not depend on the order).
  for (int e = tid; e < n_experts; e += kAlignThreads) s_count[e] = 0;
  __syncthreads();
  for (int s = tid; s < n_slots; s += kAlignThreads) {
    const int e = topk_ids[s];
    if (e >= 0 && e < n_experts) atomicAdd(&s_count[e], 1);
  }
  __syncthreads();

  // 2. Exclusive scans of rows and of row tiles per expert, 32 experts per warp step.
  if (warp == 0) {
    int row_carry = 0;
    int tile_carry = 0;
    for (int base = 0; base < n_experts; base += 32) {
      const int e = base + lane;
      const int rows = e < n_experts ? s_count[e] : 0;
      const int tiles = (rows + tile_m - 1) / tile_m;
      int rows_incl = rows;
      int tiles_incl = tiles;
#pragma unroll
      for (int off = 1; off < 32; off *= 2) {
        const int r = __shfl_up_sync(0xffffffffu, rows_incl, off);
        const int t = __shfl_up_sync(0xffffffffu, tiles_incl, off);
        if (lane >= off) {
          rows_incl += r;
          tiles_incl += t;
        }
      }
      if (e < n_experts) {
        s_cursor[e] = row_carry + rows_incl - rows;
        s_tile_off[e] = tile_carry + tiles_incl - tiles;
      }
      row_carry += __shfl_sync(0xffffffffu, rows_incl, 31);
      tile_carry += __shfl_sync(0xffffffffu, tiles_incl, 31);
    }
    if (lane == 0) *out.n_tiles = tile_carry;
  }
  __syncthreads();

  // 3. Tile map: one warp per expert.
  for (int e = warp; e < n_experts; e += kAlignWarps) {
    const int rows = s_count[e];
    const int tiles = (rows + tile_m - 1) / tile_m;
    for (int j = lane; j < tiles; j += 32) {
      const int t = s_tile_off[e] + j;
      out.tile_expert[t] = e;
      out.tile_row0[t] = s_cursor[e] + j * tile_m;
      out.tile_rows[t] = min(tile_m, rows - j * tile_m);
    }
  }

  // 4. Stable scatter, kAlignThreads slots per step: rank within the warp from __match_any_sync,
  // then an exclusive scan over the warps per expert (one warp per expert, a lane per warp), then
  // the expert's running cursor.
  for (int base = 0; base < n_slots; base += kAlignThreads) {
    for (int i = tid; i < kAlignWarps * n_experts; i += kAlignThreads) s_warp_off[i / n_experts][i % n_experts] = 0;
    __syncthreads();  // also orders step 3's reads of s_cursor before the first update below
    const int s = base + tid;
    int e = s < n_slots ? topk_ids[s] : -1;
    const bool valid = e >= 0 && e < n_experts;
    if (!valid) e = -1;
    const unsigned peers = __match_any_sync(0xffffffffu, e);
    const int rank = __popc(peers & ((1u << lane) - 1u));
    if (valid && rank == 0) s_warp_off[warp][e] = __popc(peers);
    __syncthreads();
    for (int ex = warp; ex < n_experts; ex += kAlignWarps) {
      const int rows = s_warp_off[lane][ex];
      int incl = rows;
#pragma unroll
      for (int off = 1; off < 32; off *= 2) {
        const int r = __shfl_up_sync(0xffffffffu, incl, off);
        if (lane >= off) incl += r;
      }
      s_warp_off[lane][ex] = incl - rows;
      if (lane == 31) s_chunk_rows[ex] = incl;
    }
    __syncthreads();
    if (valid) out.sorted_slots[s_cursor[e] + s_warp_off[warp][e] + rank] = s;
    __syncthreads();
    if (tid < n_experts) s_cursor[tid] += s_chunk_rows[tid];
  }
}

}  // namespace

void launch_moe_align(const int32_t* topk_ids, int n_slots, int n_experts, int tile_m,
                      const MoeAlignment& out, cudaStream_t stream) {
  static_assert(kMaxExperts <= kAlignThreads, "one thread per expert in the cursor update");
  static_assert(kAlignWarps == 32, "the scan over warps uses one lane per warp");
  moe_align_kernel<<<1, kAlignThreads, 0, stream>>>(topk_ids, n_slots, n_experts, tile_m, out);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace ocr::kernels::cuda
