// Host entry points of the CUDA MoE ops (registered in moe_register.cu) and the alignment step
// shared between them. Schemas and semantics: src/kernels/ops.cpp; references: cpu/moe_cpu.cpp.
#pragma once

#include <ATen/ATen.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <tuple>

#include "kernels/cuda/moe_common.cuh"

namespace ocr::kernels::cuda {

std::tuple<at::Tensor, at::Tensor> moe_topk_softmax_cuda(const at::Tensor& router_logits,
                                                         int64_t top_k, bool renormalize);

at::Tensor moe_experts_cuda(const at::Tensor& hidden, const at::Tensor& topk_weights,
                            const at::Tensor& topk_ids, const at::Tensor& w_gate_up,
                            const at::Tensor& w_down);

// Token-to-expert alignment, computed on the device (no host sync). The (token, slot) pairs
// s = token * top_k + k are grouped by expert, ascending s within an expert (a stable counting
// sort, so the permutation is deterministic), and each expert's run of rows is cut into tiles
// of at most tile_m rows for the grouped GEMMs.
struct MoeAlignment {
  int32_t* sorted_slots;  // [n_slots] slot indices grouped by expert; out-of-range ids are dropped
  int32_t* tile_expert;   // [max_tiles] expert of each row tile
  int32_t* tile_row0;     // [max_tiles] first row of the tile in sorted_slots
  int32_t* tile_rows;     // [max_tiles] rows in the tile, 1..tile_m
  int32_t* n_tiles;       // [1] number of tiles actually used (<= max_tiles)
  int32_t* chunk_counts;  // [moe_align_chunks(n_slots), n_experts] scratch of the multi-block path
};

// The multi-block alignment cuts the slots into chunks of kMoeAlignChunk: one block per chunk.
constexpr int kMoeAlignChunk = 1024;
inline int64_t moe_align_chunks(int64_t n_slots) { return (n_slots + kMoeAlignChunk - 1) / kMoeAlignChunk; }

// Upper bound of the tiles that moe_align can produce: sum_e ceil(count_e / tile_m).
inline int64_t moe_max_tiles(int64_t n_slots, int64_t n_experts, int64_t tile_m) {
  const int64_t bound = n_slots / tile_m + n_experts;
  return bound < n_slots ? bound : n_slots;
}

// topk_ids [n_slots] int32 on the device; writes every field of `out` on `stream`. One block for
// up to 4 * kMoeAlignChunk slots; above, two kernels: per-chunk expert counts, then one block per chunk
// that places its slots (the same permutation: the result does not depend on the path).
// OCR_MOE_ALIGN=single|multi forces the one-block kernel or the two-kernel path (tests and tuning).
void launch_moe_align(const int32_t* topk_ids, int n_slots, int n_experts, int tile_m,
                      const MoeAlignment& out, cudaStream_t stream);

}  // namespace ocr::kernels::cuda
