// Token-to-expert alignment (vLLM's moe_align, made stable): counts per expert, exclusive scan,
// the row-tile map of the grouped GEMMs and the permutation, all on the device. Up to
// kMultiMinChunks chunks of kMoeAlignChunk slots (decode): one block. Above (prefill): a counting
// kernel with one block per chunk, then one block per chunk that scans the counts and places its
// chunk's slots.
// Both paths give the same, deterministic permutation: within an expert, ascending slot index.
#include <c10/cuda/CUDAException.h>

#include <cstdlib>
#include <cstring>

#include "kernels/cuda/moe_cuda.cuh"

namespace ocr::kernels::cuda {
namespace {

constexpr int kAlignThreads = 1024;
constexpr int kAlignWarps = kAlignThreads / 32;
constexpr int kMultiMinChunks = 4;  // auto: the two-kernel path above this many chunks of slots
static_assert(kMoeAlignChunk == kAlignThreads, "one slot per thread per chunk");

// Warp 0: exclusive scans of rows and of row tiles per expert, 32 experts per warp step.
// s_cursor[e] = first row of expert e (plus row_base[e] when given), s_tile_off[e] = its first
// tile; *n_tiles_out (when given) = the total tile count.
__device__ void scan_experts(const int* s_count, int* s_cursor, int* s_tile_off, int n_experts, int tile_m,
                             int32_t* n_tiles_out) {
  const int lane = threadIdx.x % 32;
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
  if (lane == 0 && n_tiles_out != nullptr) *n_tiles_out = tile_carry;
}

// Tile map: one warp per expert. s_cursor[e] must still be the expert's first row.
__device__ void write_tile_map(const int* s_count, const int* s_cursor, const int* s_tile_off, int n_experts,
                               int tile_m, const MoeAlignment& out) {
  const int lane = threadIdx.x % 32;
  for (int e = threadIdx.x / 32; e < n_experts; e += kAlignWarps) {
    const int rows = s_count[e];
    const int tiles = (rows + tile_m - 1) / tile_m;
    for (int j = lane; j < tiles; j += 32) {
      const int t = s_tile_off[e] + j;
      out.tile_expert[t] = e;
      out.tile_row0[t] = s_cursor[e] + j * tile_m;
      out.tile_rows[t] = min(tile_m, rows - j * tile_m);
    }
  }
}

// Stable scatter of the kAlignThreads slots from `base`: rank within the warp from
// __match_any_sync, then an exclusive scan over the warps per expert (one warp per expert, a lane
// per warp), then the expert's running cursor, which advances by the chunk's rows.
// Starts and ends with a __syncthreads.
__device__ void scatter_chunk(const int32_t* __restrict__ topk_ids, int base, int n_slots, int n_experts,
                              int* s_cursor, int* s_chunk_rows, int (*s_warp_off)[kMaxExperts + 1],
                              int32_t* __restrict__ sorted_slots) {
  const int tid = threadIdx.x;
  const int lane = tid % 32;
  const int warp = tid / 32;
  const int s = base + tid;
  int e = s < n_slots ? topk_ids[s] : -1;  // issued before the barrier: its latency overlaps the clear
  for (int i = tid; i < kAlignWarps * n_experts; i += kAlignThreads) s_warp_off[i / n_experts][i % n_experts] = 0;
  __syncthreads();  // also orders earlier reads of s_cursor before the update below
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
  if (valid) sorted_slots[s_cursor[e] + s_warp_off[warp][e] + rank] = s;
  __syncthreads();
  if (tid < n_experts) s_cursor[tid] += s_chunk_rows[tid];
  __syncthreads();
}

// One block for all slots.
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

  // 1. Counts (shared-memory atomics: the totals do not depend on the order).
  for (int e = tid; e < n_experts; e += kAlignThreads) s_count[e] = 0;
  __syncthreads();
  for (int s = tid; s < n_slots; s += kAlignThreads) {
    const int e = topk_ids[s];
    if (e >= 0 && e < n_experts) atomicAdd(&s_count[e], 1);
  }
  __syncthreads();
  // 2. Scans; 3. tile map; 4. stable scatter, a chunk of kAlignThreads slots per step.
  if (tid < 32) scan_experts(s_count, s_cursor, s_tile_off, n_experts, tile_m, out.n_tiles);
  __syncthreads();
  write_tile_map(s_count, s_cursor, s_tile_off, n_experts, tile_m, out);
  for (int base = 0; base < n_slots; base += kAlignThreads)
    scatter_chunk(topk_ids, base, n_slots, n_experts, s_cursor, s_chunk_rows, s_warp_off, out.sorted_slots);
}

// Multi-block path, kernel 1: chunk_counts[c][e] = slots of chunk c routed to expert e.
__global__ void __launch_bounds__(kAlignThreads)
    moe_align_count_kernel(const int32_t* __restrict__ topk_ids, int n_slots, int n_experts,
                           int32_t* __restrict__ chunk_counts) {
  __shared__ int s_count[kMaxExperts];
  const int tid = threadIdx.x;
  const int s = blockIdx.x * kMoeAlignChunk + tid;
  const int e = s < n_slots ? topk_ids[s] : -1;
  for (int i = tid; i < n_experts; i += kAlignThreads) s_count[i] = 0;
  __syncthreads();
  if (e >= 0 && e < n_experts) atomicAdd(&s_count[e], 1);
  __syncthreads();
  for (int i = tid; i < n_experts; i += kAlignThreads)
    chunk_counts[static_cast<int64_t>(blockIdx.x) * n_experts + i] = s_count[i];
}

// Multi-block path, kernel 2: block c sums the counts of all chunks (totals: the experts' first
// rows) and of the chunks before it (its offset inside each expert), then places its slots.
// Block 0 also writes the tile map and n_tiles. Integer sums: any order gives the same result.
__global__ void __launch_bounds__(kAlignThreads)
    moe_align_place_kernel(const int32_t* __restrict__ topk_ids, int n_slots, int n_experts, int tile_m,
                           MoeAlignment out) {
  __shared__ int s_count[kMaxExperts];   // all chunks
  __shared__ int s_before[kMaxExperts];  // chunks before this block's
  __shared__ int s_cursor[kMaxExperts];
  __shared__ int s_tile_off[kMaxExperts];
  __shared__ int s_chunk_rows[kMaxExperts];
  __shared__ int s_warp_off[kAlignWarps][kMaxExperts + 1];
  const int tid = threadIdx.x;
  const int chunk = blockIdx.x;
  const int n_chunks = gridDim.x;
  for (int e = tid; e < n_experts; e += kAlignThreads) {
    s_count[e] = 0;
    s_before[e] = 0;
  }
  __syncthreads();
  const int n_counts = n_chunks * n_experts;
  constexpr int kBatch = 4;  // loads issued together before their atomics
  for (int i0 = tid; i0 < n_counts; i0 += kBatch * kAlignThreads) {
    int v[kBatch];
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
      const int i = i0 + j * kAlignThreads;
      v[j] = i < n_counts ? out.chunk_counts[i] : 0;
    }
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
      const int i = i0 + j * kAlignThreads;
      if (v[j] != 0) {
        const int c = i / n_experts;
        const int e = i - c * n_experts;
        atomicAdd(&s_count[e], v[j]);
        if (c < chunk) atomicAdd(&s_before[e], v[j]);
      }
    }
  }
  __syncthreads();
  if (tid < 32) scan_experts(s_count, s_cursor, s_tile_off, n_experts, tile_m, chunk == 0 ? out.n_tiles : nullptr);
  __syncthreads();
  if (chunk == 0) write_tile_map(s_count, s_cursor, s_tile_off, n_experts, tile_m, out);
  __syncthreads();  // the tile map read s_cursor before it moves
  for (int e = tid; e < n_experts; e += kAlignThreads) s_cursor[e] += s_before[e];
  // scatter_chunk's first barrier orders these updates before its reads of s_cursor.
  scatter_chunk(topk_ids, chunk * kMoeAlignChunk, n_slots, n_experts, s_cursor, s_chunk_rows, s_warp_off,
                out.sorted_slots);
}

}  // namespace

void launch_moe_align(const int32_t* topk_ids, int n_slots, int n_experts, int tile_m,
                      const MoeAlignment& out, cudaStream_t stream) {
  static_assert(kMaxExperts <= kAlignThreads, "one thread per expert in the cursor update");
  static_assert(kAlignWarps == 32, "the scan over warps uses one lane per warp");
  const char* force = std::getenv("OCR_MOE_ALIGN");
  // The single block takes one pass per chunk; from a few chunks on, the two kernels win (H200,
  // whole moe_experts call: 1024 tokens 371 -> 364 us, 4096: 1155 -> 1105, 14608: 3842 -> 3615) and
  // give bit-identical results (the MoE sweep checks it on every path). OCR_MOE_ALIGN=single|multi.
  bool multi = n_slots > kMultiMinChunks * kMoeAlignChunk;
  if (force != nullptr && std::strcmp(force, "single") == 0) multi = false;
  if (force != nullptr && std::strcmp(force, "multi") == 0) multi = n_slots > 0;
  if (!multi) {
    moe_align_kernel<<<1, kAlignThreads, 0, stream>>>(topk_ids, n_slots, n_experts, tile_m, out);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return;
  }
  const auto n_chunks = static_cast<unsigned>(moe_align_chunks(n_slots));
  moe_align_count_kernel<<<n_chunks, kAlignThreads, 0, stream>>>(topk_ids, n_slots, n_experts, out.chunk_counts);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  moe_align_place_kernel<<<n_chunks, kAlignThreads, 0, stream>>>(topk_ids, n_slots, n_experts, tile_m, out);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace ocr::kernels::cuda
