// Routed SwiGLU experts on CUDA: align (device-side counts and permutation) -> grouped gate_up GEMM
// with SiLU-and-multiply in the epilogue -> grouped down GEMM -> weighted combine in slot order.
// No host synchronisation and no allocation outside PyTorch's caching allocator, so the whole op
// can be captured in a CUDA graph.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "kernels/cuda/moe_cuda.cuh"
#include "kernels/cuda/moe_gemm.cuh"

namespace ocr::kernels::cuda {
namespace {

constexpr int kCombineThreads = 256;

// out[t, h] = cast( sum_k w[t, k] * float(y[t * top_k + k, h]) ), summed in fp32 from 0 in slot
// order with separate multiply and add (no FMA contraction), exactly as the reference's
// per_slot = y.float() * w; per_slot.sum(1). Slots with an out-of-range expert id add nothing.
// Each thread owns kVec consecutive columns (16-byte loads when the rows allow it).
template <typename T, int kVec>
__global__ void __launch_bounds__(kCombineThreads)
    moe_combine_kernel(const T* __restrict__ y, const float* __restrict__ topk_weights,
                       const int32_t* __restrict__ topk_ids, T* __restrict__ out, int top_k,
                       int hidden, int n_experts) {
  struct alignas(sizeof(T) * kVec) Pack {
    T v[kVec];
  };
  const int t = blockIdx.x;
  const int h = (blockIdx.y * kCombineThreads + threadIdx.x) * kVec;
  if (h >= hidden) return;
  float acc[kVec];
#pragma unroll
  for (int i = 0; i < kVec; ++i) acc[i] = 0.f;
  for (int k = 0; k < top_k; ++k) {
    const int64_t slot = static_cast<int64_t>(t) * top_k + k;
    const int e = topk_ids[slot];
    if (e < 0 || e >= n_experts) continue;
    const float w = topk_weights[slot];
    const Pack in = *reinterpret_cast<const Pack*>(y + slot * hidden + h);
#pragma unroll
    for (int i = 0; i < kVec; ++i) acc[i] = __fadd_rn(acc[i], __fmul_rn(to_float(in.v[i]), w));
  }
  Pack res;
#pragma unroll
  for (int i = 0; i < kVec; ++i) res.v[i] = from_float<T>(acc[i]);
  *reinterpret_cast<Pack*>(out + static_cast<int64_t>(t) * hidden + h) = res;
}

template <typename T>
void launch_combine(const T* y, const float* weights, const int32_t* ids, T* out, int n_tokens,
                    int top_k, int hidden, int n_experts, cudaStream_t stream) {
  constexpr int kVec = 16 / sizeof(T);
  if (hidden % kVec == 0) {  // y and out are fresh allocations, so 16-byte aligned rows
    const dim3 grid(n_tokens, (hidden / kVec + kCombineThreads - 1) / kCombineThreads);
    moe_combine_kernel<T, kVec><<<grid, kCombineThreads, 0, stream>>>(y, weights, ids, out, top_k,
                                                                      hidden, n_experts);
  } else {
    const dim3 grid(n_tokens, (hidden + kCombineThreads - 1) / kCombineThreads);
    moe_combine_kernel<T, 1><<<grid, kCombineThreads, 0, stream>>>(y, weights, ids, out, top_k,
                                                                   hidden, n_experts);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Tensor-core tile configurations, chosen by the mean rows per expert m = n_tokens * top_k / n_experts
// (thresholds from H200 timings of the real layer, tests/kernels/README.md).
// Small (m <= 16): decode, bound by HBM as each used expert's weights stream through once; 16-row
// tiles, narrow column tiles and 128-deep stages (256 contiguous bytes per weight row) give enough
// blocks and bytes in flight even for one token. Medium (m <= 28): the same streaming with 32-row
// tiles, so an expert's weights are still read about once. Large64 (m <= 96) and Large: 64x64 tiles
// for prefill, where the op turns bound by math.
struct SmallGateUp {
  static constexpr int kBM = 16, kBN = 16, kBK = 128, kWM = 1, kWN = 1, kWK = 4, kStages = 4;
};
struct SmallDown {
  static constexpr int kBM = 16, kBN = 32, kBK = 128, kWM = 1, kWN = 1, kWK = 4, kStages = 4;
};
struct MediumGateUp {
  static constexpr int kBM = 32, kBN = 32, kBK = 128, kWM = 2, kWN = 1, kWK = 2, kStages = 3;
};
struct MediumDown {
  static constexpr int kBM = 32, kBN = 32, kBK = 128, kWM = 2, kWN = 1, kWK = 2, kStages = 4;
};
struct LargeGateUp {
  static constexpr int kBM = 64, kBN = 64, kBK = 32, kWM = 2, kWN = 2, kWK = 1, kStages = 4;
};
struct LargeDown {
  static constexpr int kBM = 64, kBN = 64, kBK = 32, kWM = 2, kWN = 2, kWK = 1, kStages = 4;
};
struct Large64GateUp {
  static constexpr int kBM = 64, kBN = 64, kBK = 64, kWM = 2, kWN = 2, kWK = 1, kStages = 3;
};
struct Large64Down {
  static constexpr int kBM = 64, kBN = 64, kBK = 64, kWM = 2, kWN = 2, kWK = 1, kStages = 3;
};
// Wide (decode, m ~ 8..40): medium's 32-row tiles with 4x wider column tiles (gate_up 64 columns
// = 128 weight rows, down 128), so the gathered A rows are reread from L2 a quarter as often (at
// 32-wide column tiles the A traffic equals the weight traffic); 64-deep stages, 4 stages = 92 KB:
// 2 blocks per SM with 2-3 stages (64-96 KB of weights) in flight per SM.
struct WideGateUp {
  static constexpr int kBM = 32, kBN = 64, kBK = 64, kWM = 2, kWN = 2, kWK = 1, kStages = 4;
};
struct WideDown {
  static constexpr int kBM = 32, kBN = 128, kBK = 64, kWM = 2, kWN = 2, kWK = 1, kStages = 4;
};
static_assert(WideGateUp::kBM == WideDown::kBM, "both GEMMs of a configuration share one tile map");
// Stream (decode): wide's tiles in the persistent streaming kernel (moe_gemm_stream_kernel), one
// block per SM with 8 stages (184 KB): 7 stages = 112 KB of weights in flight per SM at all times.
// Stream2: two blocks per SM with 4 stages each (92 KB).
struct StreamGateUp {
  static constexpr int kBM = 32, kBN = 64, kBK = 64, kWM = 2, kWN = 2, kStages = 8, kBlocksPerSm = 1;
};
struct StreamDown {
  static constexpr int kBM = 32, kBN = 128, kBK = 64, kWM = 2, kWN = 2, kStages = 8, kBlocksPerSm = 1;
};
struct Stream2GateUp {
  static constexpr int kBM = 32, kBN = 64, kBK = 64, kWM = 2, kWN = 2, kStages = 4, kBlocksPerSm = 2;
};
struct Stream2Down {
  static constexpr int kBM = 32, kBN = 128, kBK = 64, kWM = 2, kWN = 2, kStages = 4, kBlocksPerSm = 2;
};
static_assert(StreamGateUp::kBM == StreamDown::kBM && Stream2GateUp::kBM == Stream2Down::kBM,
              "both GEMMs of a configuration share one tile map");
// Large128 (prefill, m >= ~100 rows per expert): 128-row tiles, 4 warps of 64x64 outputs each
// (gate_up: 64 rows x 32 columns of gate and of up), the warp tile that keeps ldmatrix traffic at
// a quarter of the mma rate; 4 stages of 32-deep slices, 80 KB of smem: 2 blocks per SM.
// Large128k64: the same with 64-deep slices and 3 stages (110 KB: still 2 blocks per SM), half
// the barriers per k.
struct Large128GateUp {
  static constexpr int kBM = 128, kBN = 64, kBK = 32, kWM = 2, kWN = 2, kWK = 1, kStages = 4;
};
struct Large128Down {
  static constexpr int kBM = 128, kBN = 128, kBK = 32, kWM = 2, kWN = 2, kWK = 1, kStages = 4;
};
struct Large128k64GateUp {
  static constexpr int kBM = 128, kBN = 64, kBK = 64, kWM = 2, kWN = 2, kWK = 1, kStages = 3;
};
struct Large128k64Down {
  static constexpr int kBM = 128, kBN = 128, kBK = 64, kWM = 2, kWN = 2, kWK = 1, kStages = 3;
};
// Large256: 128 x 256 tiles (gate_up 128 columns = 256 weight rows), 8 warps of 64x64, 4 stages
// of 32 (123 KB, 1 block per SM): 85 FLOP per byte moved from L2 into the SM (large128: 64, the
// 64x64 tiles: 32), for when L2 bandwidth rather than the tensor cores bounds the prefill.
struct Large256GateUp {
  static constexpr int kBM = 128, kBN = 128, kBK = 32, kWM = 2, kWN = 4, kWK = 1, kStages = 4;
};
struct Large256Down {
  static constexpr int kBM = 128, kBN = 256, kBK = 32, kWM = 2, kWN = 4, kWK = 1, kStages = 4;
};
// Large256k64: the same with 64-deep slices and 3 stages (166 KB), half the barriers per k.
struct Large256k64GateUp {
  static constexpr int kBM = 128, kBN = 128, kBK = 64, kWM = 2, kWN = 4, kWK = 1, kStages = 3;
};
struct Large256k64Down {
  static constexpr int kBM = 128, kBN = 256, kBK = 64, kWM = 2, kWN = 4, kWK = 1, kStages = 3;
};
static_assert(Large256GateUp::kBM == Large256Down::kBM && Large256k64GateUp::kBM == Large256k64Down::kBM,
              "both GEMMs of a configuration share one tile map");
static_assert(Large128GateUp::kBM == Large128Down::kBM && Large128k64GateUp::kBM == Large128k64Down::kBM,
              "both GEMMs of a configuration share one tile map");
static_assert(SmallGateUp::kBM == SmallDown::kBM && MediumGateUp::kBM == MediumDown::kBM &&
                  LargeGateUp::kBM == LargeDown::kBM && Large64GateUp::kBM == Large64Down::kBM,
              "both GEMMs of a configuration share one tile map");
// Mean rows per expert up to which each path is the default (H200, hidden 1280, inter 896, 64
// experts, top-6; us per call, default before -> now, tests/bench/results/2026-11-29-h200-session5.json):
//   small      <= 8   (64 tokens: small 147, stream2 152)
//   stream2    <= 36  (128 tokens: small 164 -> 157; 256 tokens, a 256-row decoding step: medium 209 -> 162)
//   large64    <= 72  (512 tokens: large64 217, stream2 252, large256k64 300)
//   large256k64 above (1024 tokens: large64 379 -> 323; 4096: large 1153 -> 968; 14608: 3824 -> 3067)
// medium, wide, stream, large, large128, large128k64 and large256 stay available (OCR_MOE_GEMM).
constexpr int kSmallMaxRows = 8;
constexpr int kStream2MaxRows = 36;
constexpr int kLarge64MaxRows = 72;

// Raises a kernel's dynamic shared-memory limit once per device (a host-side attribute, no sync).
template <typename Kernel>
void allow_smem(Kernel kernel, int bytes, int device, std::atomic<uint64_t>& done_mask) {
  const uint64_t bit = device < 64 ? (uint64_t{1} << device) : 0;
  if (bit != 0 && (done_mask.load(std::memory_order_acquire) & bit)) return;
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
  done_mask.fetch_or(bit, std::memory_order_acq_rel);
}

template <typename Cfg, bool kGateUp>
void launch_mma_gemm(const MoeGemmParams<__nv_bfloat16>& p, int64_t max_tiles, int device,
                     cudaStream_t stream) {
  using Tile = MmaTile<Cfg::kBM, Cfg::kBN, Cfg::kBK, Cfg::kWM, Cfg::kWN, Cfg::kWK, Cfg::kStages, kGateUp>;
  auto kernel = moe_gemm_mma_kernel<Cfg::kBM, Cfg::kBN, Cfg::kBK, Cfg::kWM, Cfg::kWN, Cfg::kWK,
                                    Cfg::kStages, kGateUp>;
  static std::atomic<uint64_t> smem_done{0};
  if (Tile::kSmemBytes > 48 * 1024) allow_smem(kernel, Tile::kSmemBytes, device, smem_done);
  const dim3 grid((p.N + Cfg::kBN - 1) / Cfg::kBN, static_cast<unsigned>(std::min<int64_t>(max_tiles, 65535)));
  kernel<<<grid, Tile::kThreads, Tile::kSmemBytes, stream>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename Cfg, bool kGateUp>
void launch_stream_gemm(const MoeGemmParams<__nv_bfloat16>& p, int64_t max_tiles, int device, int n_sms,
                        cudaStream_t stream) {
  using Tile = MmaTile<Cfg::kBM, Cfg::kBN, Cfg::kBK, Cfg::kWM, Cfg::kWN, 1, Cfg::kStages, kGateUp>;
  auto kernel = moe_gemm_stream_kernel<Cfg::kBM, Cfg::kBN, Cfg::kBK, Cfg::kWM, Cfg::kWN, Cfg::kStages, kGateUp>;
  static std::atomic<uint64_t> smem_done{0};
  if (Tile::kSmemBytes > 48 * 1024) allow_smem(kernel, Tile::kSmemBytes, device, smem_done);
  // Persistent: as many blocks as fit at once, never more than the work items can use.
  const int64_t max_items = max_tiles * ((p.N + Cfg::kBN - 1) / Cfg::kBN);
  const auto blocks = static_cast<unsigned>(
      std::max<int64_t>(1, std::min<int64_t>(max_items, int64_t{n_sms} * Cfg::kBlocksPerSm)));
  kernel<<<blocks, Tile::kThreads, Tile::kSmemBytes, stream>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename T, bool kGateUp>
void launch_simt_gemm(const MoeGemmParams<T>& p, int64_t max_tiles, cudaStream_t stream) {
  const dim3 grid((p.N + kSimtBN - 1) / kSimtBN, static_cast<unsigned>(std::min<int64_t>(max_tiles, 65535)));
  moe_gemm_simt_kernel<T, kGateUp><<<grid, kSimtThreads, 0, stream>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

enum class GemmPath { kSimt, kMmaSmall, kMmaMedium, kMmaLarge, kMmaLarge64, kMmaLarge128, kMmaLarge128k64,
                      kMmaWide, kMmaStream, kMmaStream2, kMmaLarge256,
                      kMmaLarge256k64 };

// OCR_MOE_GEMM=simt|small|medium|wide|stream|stream2|large|large64|large128|large128k64|large256|large256k64
// forces a path (tests and tuning).
GemmPath choose_path(bool mma_ok, int64_t n_slots, int64_t n_experts) {
  if (!mma_ok) return GemmPath::kSimt;
  if (const char* force = std::getenv("OCR_MOE_GEMM")) {
    if (std::strcmp(force, "simt") == 0) return GemmPath::kSimt;
    if (std::strcmp(force, "small") == 0) return GemmPath::kMmaSmall;
    if (std::strcmp(force, "medium") == 0) return GemmPath::kMmaMedium;
    if (std::strcmp(force, "large") == 0) return GemmPath::kMmaLarge;
    if (std::strcmp(force, "large64") == 0) return GemmPath::kMmaLarge64;
    if (std::strcmp(force, "wide") == 0) return GemmPath::kMmaWide;
    if (std::strcmp(force, "stream") == 0) return GemmPath::kMmaStream;
    if (std::strcmp(force, "stream2") == 0) return GemmPath::kMmaStream2;
    if (std::strcmp(force, "large256") == 0) return GemmPath::kMmaLarge256;
    if (std::strcmp(force, "large256k64") == 0) return GemmPath::kMmaLarge256k64;
    if (std::strcmp(force, "large128") == 0) return GemmPath::kMmaLarge128;
    if (std::strcmp(force, "large128k64") == 0) return GemmPath::kMmaLarge128k64;
  }
  if (n_slots <= kSmallMaxRows * n_experts) return GemmPath::kMmaSmall;
  if (n_slots <= kStream2MaxRows * n_experts) return GemmPath::kMmaStream2;
  if (n_slots <= kLarge64MaxRows * n_experts) return GemmPath::kMmaLarge64;
  return GemmPath::kMmaLarge256k64;
}

int tile_rows_of(GemmPath path) {
  switch (path) {
    case GemmPath::kMmaSmall: return SmallGateUp::kBM;
    case GemmPath::kMmaMedium: return MediumGateUp::kBM;
    case GemmPath::kMmaLarge: return LargeGateUp::kBM;
    case GemmPath::kMmaLarge64: return Large64GateUp::kBM;
    case GemmPath::kMmaWide: return WideGateUp::kBM;
    case GemmPath::kMmaStream: return StreamGateUp::kBM;
    case GemmPath::kMmaStream2: return Stream2GateUp::kBM;
    case GemmPath::kMmaLarge256: return Large256GateUp::kBM;
    case GemmPath::kMmaLarge256k64: return Large256k64GateUp::kBM;
    case GemmPath::kMmaLarge128: return Large128GateUp::kBM;
    case GemmPath::kMmaLarge128k64: return Large128k64GateUp::kBM;
    case GemmPath::kSimt: break;
  }
  return kSimtBM;
}

bool aligned16(const at::Tensor& t) { return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0; }

template <typename T>
void run_experts(const at::Tensor& x, const at::Tensor& weights, const at::Tensor& ids,
                 const at::Tensor& w_gate_up, const at::Tensor& w_down, at::Tensor& out, GemmPath path,
                 int n_experts, int inter) {
  const int n_tokens = static_cast<int>(x.size(0));
  const int hidden = static_cast<int>(x.size(1));
  const int top_k = static_cast<int>(ids.size(1));
  const int n_slots = n_tokens * top_k;
  const int tile_m = tile_rows_of(path);
  const int64_t max_tiles = moe_max_tiles(n_slots, n_experts, tile_m);
  const int device = x.get_device();
  const auto stream = at::cuda::getCurrentCUDAStream();

  // One int32 workspace: sorted_slots [n_slots], tile map 3 x [max_tiles], n_tiles [1], the
  // alignment's chunk counts [moe_align_chunks(n_slots), n_experts].
  const int64_t n_counts = moe_align_chunks(n_slots) * n_experts;
  auto ws = at::empty({n_slots + 3 * max_tiles + 1 + n_counts}, x.options().dtype(at::kInt));
  int32_t* ws_ptr = ws.data_ptr<int32_t>();
  MoeAlignment align{ws_ptr, ws_ptr + n_slots, ws_ptr + n_slots + max_tiles,
                     ws_ptr + n_slots + 2 * max_tiles, ws_ptr + n_slots + 3 * max_tiles,
                     ws_ptr + n_slots + 3 * max_tiles + 1};
  launch_moe_align(ids.data_ptr<int32_t>(), n_slots, n_experts, tile_m, align, stream);

  auto act = at::empty({n_slots, inter}, x.options());   // [n_slots, inter], rows in sorted order
  auto y = at::empty({n_slots, hidden}, x.options());    // [n_slots, hidden], rows by slot
  const auto* x_ptr = static_cast<const T*>(x.data_ptr());
  auto* act_ptr = static_cast<T*>(act.data_ptr());
  auto* y_ptr = static_cast<T*>(y.data_ptr());
  MoeGemmParams<T> gate_up{x_ptr, static_cast<const T*>(w_gate_up.data_ptr()), act_ptr,
                           align.sorted_slots, align.tile_expert, align.tile_row0, align.tile_rows,
                           align.n_tiles, hidden, inter, top_k};
  MoeGemmParams<T> down{act_ptr, static_cast<const T*>(w_down.data_ptr()), y_ptr,
                        align.sorted_slots, align.tile_expert, align.tile_row0, align.tile_rows,
                        align.n_tiles, inter, hidden, top_k};
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    if (path == GemmPath::kMmaSmall) {
      launch_mma_gemm<SmallGateUp, true>(gate_up, max_tiles, device, stream);
      launch_mma_gemm<SmallDown, false>(down, max_tiles, device, stream);
    } else if (path == GemmPath::kMmaMedium) {
      launch_mma_gemm<MediumGateUp, true>(gate_up, max_tiles, device, stream);
      launch_mma_gemm<MediumDown, false>(down, max_tiles, device, stream);
    } else if (path == GemmPath::kMmaLarge) {
      launch_mma_gemm<LargeGateUp, true>(gate_up, max_tiles, device, stream);
      launch_mma_gemm<LargeDown, false>(down, max_tiles, device, stream);
    } else if (path == GemmPath::kMmaLarge64) {
      launch_mma_gemm<Large64GateUp, true>(gate_up, max_tiles, device, stream);
      launch_mma_gemm<Large64Down, false>(down, max_tiles, device, stream);
    } else if (path == GemmPath::kMmaWide) {
      launch_mma_gemm<WideGateUp, true>(gate_up, max_tiles, device, stream);
      launch_mma_gemm<WideDown, false>(down, max_tiles, device, stream);
    } else if (path == GemmPath::kMmaStream || path == GemmPath::kMmaStream2) {
      const int n_sms = at::cuda::getDeviceProperties(device)->multiProcessorCount;
      if (path == GemmPath::kMmaStream) {
        launch_stream_gemm<StreamGateUp, true>(gate_up, max_tiles, device, n_sms, stream);
        launch_stream_gemm<StreamDown, false>(down, max_tiles, device, n_sms, stream);
      } else {
        launch_stream_gemm<Stream2GateUp, true>(gate_up, max_tiles, device, n_sms, stream);
        launch_stream_gemm<Stream2Down, false>(down, max_tiles, device, n_sms, stream);
      }
    } else if (path == GemmPath::kMmaLarge256) {
      launch_mma_gemm<Large256GateUp, true>(gate_up, max_tiles, device, stream);
      launch_mma_gemm<Large256Down, false>(down, max_tiles, device, stream);
    } else if (path == GemmPath::kMmaLarge256k64) {
      launch_mma_gemm<Large256k64GateUp, true>(gate_up, max_tiles, device, stream);
      launch_mma_gemm<Large256k64Down, false>(down, max_tiles, device, stream);
    } else if (path == GemmPath::kMmaLarge128) {
      launch_mma_gemm<Large128GateUp, true>(gate_up, max_tiles, device, stream);
      launch_mma_gemm<Large128Down, false>(down, max_tiles, device, stream);
    } else if (path == GemmPath::kMmaLarge128k64) {
      launch_mma_gemm<Large128k64GateUp, true>(gate_up, max_tiles, device, stream);
      launch_mma_gemm<Large128k64Down, false>(down, max_tiles, device, stream);
    }
  }
  if (path == GemmPath::kSimt) {
    launch_simt_gemm<T, true>(gate_up, max_tiles, stream);
    launch_simt_gemm<T, false>(down, max_tiles, stream);
  }
  launch_combine<T>(y_ptr, weights.data_ptr<float>(), ids.data_ptr<int32_t>(),
                    static_cast<T*>(out.data_ptr()), n_tokens, top_k, hidden, n_experts, stream);
}

}  // namespace

at::Tensor moe_experts_cuda(const at::Tensor& hidden, const at::Tensor& topk_weights,
                            const at::Tensor& topk_ids, const at::Tensor& w_gate_up,
                            const at::Tensor& w_down) {
  const auto device = hidden.device();
  TORCH_CHECK(hidden.is_cuda(), "moe_experts: hidden must be a CUDA tensor, got ", device);
  for (const auto* t : {&topk_weights, &topk_ids, &w_gate_up, &w_down}) {
    TORCH_CHECK(t->device() == device, "moe_experts: all tensors must be on ", device,
                ", got one on ", t->device());
  }
  TORCH_CHECK(hidden.dim() == 2, "moe_experts: hidden must be [n_tokens, hidden], got ", hidden.sizes());
  const auto dtype = hidden.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kBFloat16,
              "moe_experts: hidden must be float32 or bfloat16 on CUDA, got ", dtype);
  TORCH_CHECK(topk_ids.dim() == 2 && topk_ids.size(0) == hidden.size(0),
              "moe_experts: topk_ids must be [n_tokens, top_k] with n_tokens = ", hidden.size(0), ", got ",
              topk_ids.sizes());
  TORCH_CHECK(topk_ids.scalar_type() == at::kInt || topk_ids.scalar_type() == at::kLong,
              "moe_experts: topk_ids must be int32 (or int64), got ", topk_ids.scalar_type());
  TORCH_CHECK(topk_weights.sizes() == topk_ids.sizes(), "moe_experts: topk_weights ", topk_weights.sizes(),
              " vs topk_ids ", topk_ids.sizes());
  TORCH_CHECK(topk_weights.is_floating_point(), "moe_experts: topk_weights must be floating point, got ",
              topk_weights.scalar_type());
  TORCH_CHECK(w_gate_up.dim() == 3 && w_down.dim() == 3,
              "moe_experts: expert weights must be 3-D, got w_gate_up ", w_gate_up.sizes(), ", w_down ",
              w_down.sizes());
  TORCH_CHECK(w_gate_up.scalar_type() == dtype && w_down.scalar_type() == dtype,
              "moe_experts: expert weights must have hidden's dtype ", dtype, ", got w_gate_up ",
              w_gate_up.scalar_type(), ", w_down ", w_down.scalar_type());
  const int64_t n_tokens = hidden.size(0);
  const int64_t hidden_size = hidden.size(1);
  const int64_t top_k = topk_ids.size(1);
  const int64_t n_experts = w_gate_up.size(0);
  TORCH_CHECK(w_gate_up.size(1) % 2 == 0, "moe_experts: w_gate_up rows must be 2 * inter, got ",
              w_gate_up.size(1));
  const int64_t inter = w_gate_up.size(1) / 2;
  TORCH_CHECK(w_gate_up.size(2) == hidden_size && w_down.size(0) == n_experts &&
                  w_down.size(1) == hidden_size && w_down.size(2) == inter,
              "moe_experts: shapes disagree: hidden ", hidden.sizes(), ", w_gate_up ", w_gate_up.sizes(),
              " (expected [n_experts, 2 * inter, ", hidden_size, "]), w_down ", w_down.sizes(),
              " (expected [", n_experts, ", ", hidden_size, ", ", inter, "])");
  TORCH_CHECK(n_experts >= 1 && n_experts <= kMaxExperts, "moe_experts: the CUDA kernels support 1..",
              kMaxExperts, " experts, got ", n_experts);
  TORCH_CHECK(n_tokens * top_k < INT_MAX / 2 && n_tokens * std::max(hidden_size, inter) < INT_MAX &&
                  top_k * std::max(hidden_size, inter) < INT_MAX,
              "moe_experts: problem too large for 32-bit row indices: ", n_tokens, " tokens x top_k ",
              top_k, ", hidden ", hidden_size, ", inter ", inter);

  const c10::cuda::CUDAGuard device_guard(device);
  if (n_tokens == 0 || top_k == 0 || hidden_size == 0) return at::zeros_like(hidden);
  const auto x = hidden.contiguous();                                    // [n_tokens, hidden]
  const auto weights = topk_weights.to(at::kFloat).contiguous();        // [n_tokens, top_k]
  const auto ids = topk_ids.to(at::kInt).contiguous();                  // [n_tokens, top_k]
  const auto wgu = w_gate_up.contiguous();                              // [n_experts, 2 * inter, hidden]
  const auto wd = w_down.contiguous();                                  // [n_experts, hidden, inter]
  auto out = at::empty_like(x);                                         // [n_tokens, hidden]
  if (inter == 0) return out.zero_();

  const auto* props = at::cuda::getDeviceProperties(device.index());
  const bool mma_ok = dtype == at::kBFloat16 && props->major >= 8 && hidden_size % 8 == 0 &&
                      inter % 8 == 0 && aligned16(x) && aligned16(wgu) && aligned16(wd);
  const GemmPath path = choose_path(mma_ok, n_tokens * top_k, n_experts);
  if (dtype == at::kBFloat16) {
    run_experts<__nv_bfloat16>(x, weights, ids, wgu, wd, out, path, static_cast<int>(n_experts),
                               static_cast<int>(inter));
  } else {
    run_experts<float>(x, weights, ids, wgu, wd, out, path, static_cast<int>(n_experts),
                       static_cast<int>(inter));
  }
  return out;
}

}  // namespace ocr::kernels::cuda
