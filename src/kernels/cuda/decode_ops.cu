// Fused decode-step ops on CUDA: rms_norm, add_rms_norm, rope_kv_write and moe_route, each one
// kernel in place of a handful of small ATen kernels. Every rounding follows the CPU reference
// (src/kernels/cpu/decode_cpu.cpp): rope_kv_write and add_rms_norm's sum are bit-identical to it;
// the norms and the router logits differ only by the fp32 summation order. No host sync anywhere,
// so the ops can be captured in a CUDA graph. Schemas: src/kernels/ops.cpp.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_bf16.h>
#include <torch/library.h>

#include <algorithm>
#include <cfloat>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

#include "kernels/cuda/moe_common.cuh"
#include "kernels/decode_reference.h"
#include "kernels/reference.h"

namespace ocr::kernels::cuda {
namespace {

constexpr int kVecBytes = 16;  // widest load: 8 bf16 or 4 fp32

template <typename T, int kN>
struct alignas(sizeof(T) * kN) Vec {
  T v[kN];
};

template <typename V>
__device__ __forceinline__ V load_vec(const void* p) {
  return *reinterpret_cast<const V*>(p);
}

template <typename V>
__device__ __forceinline__ void store_vec(void* p, const V& v) {
  *reinterpret_cast<V*>(p) = v;
}

__device__ __forceinline__ float warp_sum(float v) {
  // Butterfly: every lane ends with the same, bit-identical total.
#pragma unroll
  for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

bool aligned(const void* p, int64_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Calls f(T{}) with T = float or __nv_bfloat16 for the tensor's dtype.
template <typename F>
void dispatch_dtype(at::ScalarType dtype, const char* op, F&& f) {
  if (dtype == at::kFloat) {
    f(float{});
  } else if (dtype == at::kBFloat16) {
    f(__nv_bfloat16{});
  } else {
    TORCH_CHECK(false, op, ": unsupported dtype ", dtype);
  }
}

template <typename T>
const T* ptr(const at::Tensor& t) {
  return reinterpret_cast<const T*>(t.data_ptr());
}

template <typename T>
T* mut_ptr(const at::Tensor& t) {
  return reinterpret_cast<T*>(t.data_ptr());
}

// ---- rms_norm / add_rms_norm --------------------------------------------------------------------

// Element offset of row r of a [..., dim] tensor whose leading dims have arbitrary strides
// (coalesced on the host, so a contiguous tensor has one leading dim).
constexpr int kMaxRowDims = 6;
struct RowIndex {
  int n_dims = 0;
  int64_t sizes[kMaxRowDims] = {};
  int64_t strides[kMaxRowDims] = {};

  __device__ __forceinline__ int64_t offset(int64_t row) const {
    if (n_dims <= 1) return n_dims == 0 ? 0 : row * strides[0];  // row < sizes[0]
    int64_t off = 0;
    // Constant indices only (unrolled), so the struct stays in the parameter bank, not the stack.
#pragma unroll
    for (int d = kMaxRowDims - 1; d >= 0; --d) {
      if (d < n_dims) {
        off += (row % sizes[d]) * strides[d];
        row /= sizes[d];
      }
    }
    return off;
  }
};

// Leading dims of t (size-1 dims dropped, mergeable neighbours merged); false if too many.
bool row_index(const at::Tensor& t, RowIndex& out) {
  std::vector<std::pair<int64_t, int64_t>> dims;  // (size, stride), innermost first
  for (int64_t d = t.dim() - 2; d >= 0; --d) {
    if (t.size(d) == 1) continue;
    if (!dims.empty() && dims.back().second * dims.back().first == t.stride(d)) {
      dims.back().first *= t.size(d);
    } else {
      dims.emplace_back(t.size(d), t.stride(d));
    }
  }
  if (dims.size() > static_cast<size_t>(kMaxRowDims)) return false;
  out.n_dims = static_cast<int>(dims.size());
  for (size_t i = 0; i < dims.size(); ++i) {  // stored outermost first
    out.sizes[dims.size() - 1 - i] = dims[i].first;
    out.strides[dims.size() - 1 - i] = dims[i].second;
  }
  return true;
}

// t itself when its last dim is contiguous and its leading dims fit a RowIndex, else a copy.
at::Tensor rows_view(const at::Tensor& t, RowIndex& index) {
  if (t.stride(-1) == 1 && row_index(t, index)) return t;
  const auto c = t.contiguous();
  row_index(c, index);
  return c;
}

bool rows_vectorizable(const at::Tensor& t, const RowIndex& index, int vec) {
  if (!aligned(t.data_ptr(), kVecBytes)) return false;
  for (int d = 0; d < index.n_dims; ++d)
    if (index.strides[d] % vec != 0) return false;
  return true;
}

constexpr int kNormWarpRows = 8;       // rows per block in the warp-per-row kernel
constexpr int kNormMaxThreads = 512;   // block-per-row kernel
constexpr int kNormWarpMaxDim = 1024;  // widest row a single warp handles

// One row per warp (kBlockPerRow = false) or per block. s = x (or round(x + r), also written to
// sum_out); out = round(weight * round(s * 1 / sqrt(sum(s * s) / dim + eps))), as the reference.
// Pass 2 re-reads s (from sum_out when adding: the same thread wrote those elements).
template <typename T, int kVec, bool kAdd, bool kBlockPerRow>
__global__ void __launch_bounds__(kBlockPerRow ? kNormMaxThreads : kNormWarpRows * 32)
    rms_norm_kernel(const T* __restrict__ x, RowIndex x_index, const T* __restrict__ r,
                    RowIndex r_index, const T* __restrict__ weight, T* __restrict__ sum_out,
                    T* __restrict__ out, int64_t n_rows, int dim, float eps) {
  using V = Vec<T, kVec>;
  const int lane =
      kBlockPerRow ? static_cast<int>(threadIdx.x) : static_cast<int>(threadIdx.x % 32);
  const int n_lanes = kBlockPerRow ? static_cast<int>(blockDim.x) : 32;
  const int64_t row = kBlockPerRow
                          ? static_cast<int64_t>(blockIdx.x)
                          : static_cast<int64_t>(blockIdx.x) * kNormWarpRows + threadIdx.x / 32;
  if (!kBlockPerRow && row >= n_rows) return;  // whole warps leave together
  const T* x_row = x + x_index.offset(row);
  const T* r_row = kAdd ? r + r_index.offset(row) : nullptr;
  T* sum_row = kAdd ? sum_out + row * dim : nullptr;
  T* out_row = out + row * dim;
  const int n_chunks = dim / kVec;

  float acc = 0.f;
  for (int c = lane; c < n_chunks; c += n_lanes) {
    V s = load_vec<V>(x_row + c * kVec);
    if constexpr (kAdd) {
      const V rv = load_vec<V>(r_row + c * kVec);
#pragma unroll
      for (int i = 0; i < kVec; ++i)
        s.v[i] = from_float<T>(__fadd_rn(to_float(s.v[i]), to_float(rv.v[i])));
      store_vec(sum_row + c * kVec, s);
    }
#pragma unroll
    for (int i = 0; i < kVec; ++i) {
      const float f = to_float(s.v[i]);
      acc = __fadd_rn(acc, __fmul_rn(f, f));
    }
  }
  acc = warp_sum(acc);
  if constexpr (kBlockPerRow) {
    __shared__ float warp_sums[kNormMaxThreads / 32];
    if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = acc;
    __syncthreads();
    acc = 0.f;
    for (int w = 0; w < static_cast<int>(blockDim.x / 32); ++w)
      acc += warp_sums[w];  // same order everywhere
  }
  // The CPU reference: mean = sum / dim, rsqrt = 1 / sqrt (each correctly rounded).
  const float inv =
      __fdiv_rn(1.f, __fsqrt_rn(__fadd_rn(__fdiv_rn(acc, static_cast<float>(dim)), eps)));

  for (int c = lane; c < n_chunks; c += n_lanes) {
    const V s = load_vec<V>(kAdd ? sum_row + c * kVec : x_row + c * kVec);
    const V w = load_vec<V>(weight + c * kVec);
    V o;
#pragma unroll
    for (int i = 0; i < kVec; ++i) {
      const float y = round_to<T>(__fmul_rn(to_float(s.v[i]), inv));
      o.v[i] = from_float<T>(__fmul_rn(to_float(w.v[i]), y));
    }
    store_vec(out_row + c * kVec, o);
  }
}

// out (and sum_out when r is defined) are fresh contiguous [..., dim] tensors.
void launch_rms_norm(const at::Tensor& x_in, const at::Tensor& r_in, const at::Tensor& weight_in,
                     const at::Tensor& sum_out, const at::Tensor& out, double eps, const char* op) {
  const bool add = r_in.defined();
  const int64_t dim = x_in.size(-1);
  const int64_t n_rows = x_in.numel() / dim;
  if (n_rows == 0) return;
  TORCH_CHECK(dim <= INT_MAX && n_rows <= INT_MAX, op, ": too large: ", n_rows, " rows of ", dim);
  RowIndex x_index, r_index;
  const auto x = rows_view(x_in, x_index);
  const auto r = add ? rows_view(r_in, r_index) : at::Tensor();
  const auto weight = weight_in.contiguous();
  const auto stream = at::cuda::getCurrentCUDAStream();

  dispatch_dtype(x.scalar_type(), op, [&](auto zero) {
    using T = decltype(zero);
    constexpr int kWide = kVecBytes / static_cast<int>(sizeof(T));
    const bool wide = dim % kWide == 0 && rows_vectorizable(x, x_index, kWide) &&
                      (!add || rows_vectorizable(r, r_index, kWide)) &&
                      aligned(weight.data_ptr(), kVecBytes) && aligned(out.data_ptr(), kVecBytes) &&
                      (!add || aligned(sum_out.data_ptr(), kVecBytes));
    const int vec = wide ? kWide : 1;
    const bool block_per_row = dim > kNormWarpMaxDim;
    const int threads =
        block_per_row
            ? static_cast<int>(std::min<int64_t>(kNormMaxThreads, ceil_div(dim / vec, 32) * 32))
            : kNormWarpRows * 32;
    const int64_t blocks = block_per_row ? n_rows : ceil_div(n_rows, kNormWarpRows);
    const T* r_ptr = add ? ptr<T>(r) : nullptr;
    T* sum_ptr = add ? mut_ptr<T>(sum_out) : nullptr;
    const auto go = [&](auto kernel) {
      kernel<<<static_cast<unsigned>(blocks), threads, 0, stream>>>(
          ptr<T>(x), x_index, r_ptr, r_index, ptr<T>(weight), sum_ptr, mut_ptr<T>(out), n_rows,
          static_cast<int>(dim), static_cast<float>(eps));
    };
    // 2 x 2 x 2 instantiations: (wide, add, block_per_row).
    if (wide) {
      if (add) {
        block_per_row ? go(rms_norm_kernel<T, kWide, true, true>)
                      : go(rms_norm_kernel<T, kWide, true, false>);
      } else {
        block_per_row ? go(rms_norm_kernel<T, kWide, false, true>)
                      : go(rms_norm_kernel<T, kWide, false, false>);
      }
    } else {
      if (add) {
        block_per_row ? go(rms_norm_kernel<T, 1, true, true>)
                      : go(rms_norm_kernel<T, 1, true, false>);
      } else {
        block_per_row ? go(rms_norm_kernel<T, 1, false, true>)
                      : go(rms_norm_kernel<T, 1, false, false>);
      }
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

at::Tensor rms_norm_cuda(const at::Tensor& x, const at::Tensor& weight, double eps) {
  check_rms_norm_args("rms_norm", x, weight);
  TORCH_CHECK(x.is_cuda(), "rms_norm: x must be a CUDA tensor, got ", x.device());
  const c10::cuda::CUDAGuard guard(x.device());
  auto out =
      at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));  // [..., dim]
  launch_rms_norm(x, at::Tensor(), weight, at::Tensor(), out, eps, "rms_norm");
  return out;
}

std::tuple<at::Tensor, at::Tensor> add_rms_norm_cuda(const at::Tensor& x,
                                                     const at::Tensor& residual,
                                                     const at::Tensor& weight, double eps) {
  check_rms_norm_args("add_rms_norm", x, weight);
  TORCH_CHECK(x.is_cuda() && residual.device() == x.device(),
              "add_rms_norm: x and residual must be on one CUDA ", "device, got ", x.device(),
              " and ", residual.device());
  TORCH_CHECK(residual.sizes() == x.sizes() && residual.scalar_type() == x.scalar_type(),
              "add_rms_norm: residual ", residual.scalar_type(), " ", residual.sizes(),
              " differs from x ", x.scalar_type(), " ", x.sizes());
  const c10::cuda::CUDAGuard guard(x.device());
  const auto options = x.options().memory_format(at::MemoryFormat::Contiguous);
  auto sum = at::empty(x.sizes(), options);  // [..., dim]
  auto out = at::empty(x.sizes(), options);  // [..., dim]
  launch_rms_norm(x, residual, weight, sum, out, eps, "add_rms_norm");
  return {sum, out};
}

// ---- rope_kv_write ------------------------------------------------------------------------------

constexpr int kRopeMaxThreads = 256;

// One block per token (b, t); a work item is kVec consecutive elements j of the first half of one
// head of q, k or v together with the matching j + half. q and k get the rotary embedding
// (p1 = round(x * cos), p2 = round(rotate_half(x) * sin), round(p1 + p2)); k and v go to the cache.
template <typename T, int kVec>
__global__ void __launch_bounds__(kRopeMaxThreads)
    rope_kv_write_kernel(const T* __restrict__ qkv, const T* __restrict__ cos,
                         const T* __restrict__ sin, T* __restrict__ kv_cache,
                         const int64_t* __restrict__ slots, const int64_t* __restrict__ positions,
                         T* __restrict__ q_out, int n_t, int n_heads, int head_dim, int64_t layer,
                         int64_t stride_layer, int64_t stride_kv, int64_t stride_slot,
                         int64_t stride_pos) {
  using V = Vec<T, kVec>;
  const int64_t token = blockIdx.x;  // b * n_t + t
  const int64_t b = token / n_t;
  const int half = head_dim / 2;
  const int chunks = half / kVec;  // per head and half
  const int items = 3 * n_heads * chunks;
  const int64_t width = static_cast<int64_t>(n_heads) * head_dim;
  // The caller guarantees 0 <= slot < n_slots and 0 <= pos < max_len (checked on the CPU only).
  const int64_t slot = slots[b];
  const int64_t pos = positions[token];
  const T* src_token = qkv + token * 3 * width;
  const T* cos_token = cos + token * head_dim;
  const T* sin_token = sin + token * head_dim;
  // kv_cache[layer, kv, slot, pos] for kv = 0 (keys) and 1 (values): [n_heads, head_dim] each.
  const int64_t cache_k = layer * stride_layer + slot * stride_slot + pos * stride_pos;
  const int64_t cache_v = cache_k + stride_kv;

  for (int item = threadIdx.x; item < items; item += blockDim.x) {
    const int part = item / (n_heads * chunks);  // 0 q, 1 k, 2 v
    const int rem = item - part * n_heads * chunks;
    const int head = rem / chunks;
    const int j = (rem - head * chunks) * kVec;
    const T* src = src_token + part * width + static_cast<int64_t>(head) * head_dim;
    const V lo = load_vec<V>(src + j);
    const V hi = load_vec<V>(src + half + j);
    if (part == 2) {
      T* dst = kv_cache + cache_v + static_cast<int64_t>(head) * head_dim;
      store_vec(dst + j, lo);
      store_vec(dst + half + j, hi);
      continue;
    }
    const V c_lo = load_vec<V>(cos_token + j), c_hi = load_vec<V>(cos_token + half + j);
    const V s_lo = load_vec<V>(sin_token + j), s_hi = load_vec<V>(sin_token + half + j);
    V o_lo, o_hi;
#pragma unroll
    for (int i = 0; i < kVec; ++i) {
      const float x1 = to_float(lo.v[i]), x2 = to_float(hi.v[i]);
      // rotate_half: element j is -x[j + half], element j + half is x[j].
      const float a1 = round_to<T>(__fmul_rn(x1, to_float(c_lo.v[i])));
      const float b1 = round_to<T>(__fmul_rn(-x2, to_float(s_lo.v[i])));
      const float a2 = round_to<T>(__fmul_rn(x2, to_float(c_hi.v[i])));
      const float b2 = round_to<T>(__fmul_rn(x1, to_float(s_hi.v[i])));
      o_lo.v[i] = from_float<T>(__fadd_rn(a1, b1));
      o_hi.v[i] = from_float<T>(__fadd_rn(a2, b2));
    }
    T* dst = part == 0 ? q_out + token * width + static_cast<int64_t>(head) * head_dim
                       : kv_cache + cache_k + static_cast<int64_t>(head) * head_dim;
    store_vec(dst + j, o_lo);
    store_vec(dst + half + j, o_hi);
  }
}

at::Tensor rope_kv_write_cuda(const at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& sin,
                              const at::Tensor& kv_cache, int64_t layer, const at::Tensor& slots,
                              const at::Tensor& positions) {
  TORCH_CHECK(qkv.is_cuda(), "rope_kv_write: qkv must be a CUDA tensor, got ", qkv.device());
  const int64_t n_heads =
      check_rope_kv_write_args(qkv, cos, sin, kv_cache, layer, slots, positions);
  const int64_t n_b = qkv.size(0), n_t = qkv.size(1), head_dim = cos.size(-1);
  const c10::cuda::CUDAGuard guard(qkv.device());
  auto q_out =
      at::empty({n_b, n_t, n_heads, head_dim}, qkv.options());  // [n_b, n_t, n_heads, head_dim]
  const int64_t n_tokens = n_b * n_t;
  if (n_tokens == 0) return q_out;
  TORCH_CHECK(n_tokens <= INT_MAX && n_t <= INT_MAX && 3 * n_heads * head_dim <= INT_MAX,
              "rope_kv_write: too large: qkv ", qkv.sizes());
  const auto slots_c = slots.contiguous();
  const auto positions_c = positions.contiguous();
  const auto stream = at::cuda::getCurrentCUDAStream();
  dispatch_dtype(qkv.scalar_type(), "rope_kv_write", [&](auto zero) {
    using T = decltype(zero);
    constexpr int kWide = kVecBytes / static_cast<int>(sizeof(T));
    const int64_t half = head_dim / 2;
    // Every offset the kernel forms is a multiple of half, so aligned bases + half % kWide suffice.
    const bool wide = half % kWide == 0 && aligned(qkv.data_ptr(), kVecBytes) &&
                      aligned(cos.data_ptr(), kVecBytes) && aligned(sin.data_ptr(), kVecBytes) &&
                      aligned(kv_cache.data_ptr(), kVecBytes) &&
                      aligned(q_out.data_ptr(), kVecBytes) && kv_cache.stride(0) % kWide == 0 &&
                      kv_cache.stride(1) % kWide == 0 && kv_cache.stride(2) % kWide == 0 &&
                      kv_cache.stride(3) % kWide == 0;
    const int vec = wide ? kWide : 1;
    const int64_t items = 3 * n_heads * (half / vec);
    const int threads =
        static_cast<int>(std::min<int64_t>(kRopeMaxThreads, ceil_div(items, 32) * 32));
    const auto go = [&](auto kernel) {
      kernel<<<static_cast<unsigned>(n_tokens), threads, 0, stream>>>(
          ptr<T>(qkv), ptr<T>(cos), ptr<T>(sin), mut_ptr<T>(kv_cache), slots_c.data_ptr<int64_t>(),
          positions_c.data_ptr<int64_t>(), mut_ptr<T>(q_out), static_cast<int>(n_t),
          static_cast<int>(n_heads), static_cast<int>(head_dim), layer, kv_cache.stride(0),
          kv_cache.stride(1), kv_cache.stride(2), kv_cache.stride(3));
    };
    wide ? go(rope_kv_write_kernel<T, kWide>) : go(rope_kv_write_kernel<T, 1>);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return q_out;
}

// ---- moe_route ----------------------------------------------------------------------------------

constexpr int kRouteWarps = 32;  // one block of 1024 threads per token (per 4 tokens when many): few experts per warp
constexpr int kRoutePerLane = kMaxExperts / 32;  // scores each lane holds in the top-k phase

// (value, index) order of moe_topk_softmax: higher score first, then the lower expert index.
__device__ __forceinline__ bool ranks_before(float v, int i, float best_v, int best_i) {
  return v > best_v || (v == best_v && i < best_i);
}

// Softmax + top-k of one token's logits (in shared memory) by one warp: the device logic of
// topk_softmax_kernel in moe_router.cu, unchanged, so moe_route == moe_topk_softmax(logits).
__device__ void warp_topk_softmax(const float* logits, float* __restrict__ w_out,
                                  int32_t* __restrict__ id_out, int n_experts, int top_k,
                                  bool renormalize) {
  const int lane = threadIdx.x % 32;
  float p[kRoutePerLane];
  float row_max = -INFINITY;
#pragma unroll
  for (int j = 0; j < kRoutePerLane; ++j) {
    const int e = j * 32 + lane;
    p[j] = e < n_experts ? logits[e] : -INFINITY;
    row_max = fmaxf(row_max, p[j]);
  }
#pragma unroll
  for (int off = 16; off > 0; off /= 2)
    row_max = fmaxf(row_max, __shfl_xor_sync(0xffffffffu, row_max, off));
  float sum = 0.f;
#pragma unroll
  for (int j = 0; j < kRoutePerLane; ++j) {
    if (j * 32 + lane < n_experts) {
      p[j] = expf(p[j] - row_max);
      sum += p[j];
    }
  }
  sum = warp_sum(sum);
  const float inv_sum = 1.f / sum;
#pragma unroll
  for (int j = 0; j < kRoutePerLane; ++j) p[j] *= inv_sum;

  uint32_t taken = 0;  // bit j: expert j * 32 + lane already selected
  float sel_sum = 0.f;
  float my_w[kRoutePerLane];
  int my_id[kRoutePerLane];
#pragma unroll
  for (int j = 0; j < kRoutePerLane; ++j) {
    my_w[j] = 0.f;
    my_id[j] = 0;
  }
  for (int k = 0; k < top_k; ++k) {
    float best_v = -INFINITY;
    int best_i = INT_MAX;
#pragma unroll
    for (int j = 0; j < kRoutePerLane; ++j) {
      const int e = j * 32 + lane;
      if (e < n_experts && !((taken >> j) & 1u) && ranks_before(p[j], e, best_v, best_i)) {
        best_v = p[j];
        best_i = e;
      }
    }
#pragma unroll
    for (int off = 16; off > 0; off /= 2) {
      const float v = __shfl_xor_sync(0xffffffffu, best_v, off);
      const int i = __shfl_xor_sync(0xffffffffu, best_i, off);
      if (ranks_before(v, i, best_v, best_i)) {
        best_v = v;
        best_i = i;
      }
    }
    if (best_i < n_experts && best_i % 32 == lane) taken |= 1u << (best_i / 32);
    sel_sum += best_v;
#pragma unroll
    for (int j = 0; j < kRoutePerLane; ++j) {
      if (k == j * 32 + lane) {
        my_w[j] = best_v;
        my_id[j] = best_i;
      }
    }
  }
#pragma unroll
  for (int j = 0; j < kRoutePerLane; ++j) {
    const int k = j * 32 + lane;
    if (k < top_k) {
      w_out[k] = renormalize ? __fdiv_rn(my_w[j], sel_sum) : my_w[j];
      id_out[k] = my_id[j];
    }
  }
}

// kTokens tokens per block: the warps split the experts, each lane strides the hidden dim with
// kVec-wide loads and keeps one fp32 partial dot per token; warp sums go to shared memory; then
// warp t runs softmax + top-k for token t.
template <typename T, int kVec, int kTokens>
__global__ void __launch_bounds__(kRouteWarps * 32)
    moe_route_kernel(const T* __restrict__ x, const T* __restrict__ router,
                     float* __restrict__ topk_weights, int32_t* __restrict__ topk_ids, int n_tokens,
                     int hidden, int n_experts, int top_k, bool renormalize) {
  using V = Vec<T, kVec>;
  __shared__ float logits[kTokens][kMaxExperts];
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int token0 = blockIdx.x * kTokens;
  const int n_chunks = hidden / kVec;
  for (int e = warp; e < n_experts; e += kRouteWarps) {
    const T* w_row = router + static_cast<int64_t>(e) * hidden;
    float acc[kTokens];
#pragma unroll
    for (int t = 0; t < kTokens; ++t) acc[t] = 0.f;
    for (int c = lane; c < n_chunks; c += 32) {
      const V wv = load_vec<V>(w_row + c * kVec);
#pragma unroll
      for (int t = 0; t < kTokens; ++t) {
        if (token0 + t >= n_tokens) break;
        const V xv = load_vec<V>(x + static_cast<int64_t>(token0 + t) * hidden + c * kVec);
#pragma unroll
        for (int i = 0; i < kVec; ++i) acc[t] = fmaf(to_float(xv.v[i]), to_float(wv.v[i]), acc[t]);
      }
    }
#pragma unroll
    for (int t = 0; t < kTokens; ++t) {
      const float dot = warp_sum(acc[t]);
      if (lane == 0) logits[t][e] = dot;
    }
  }
  __syncthreads();
  if (warp < kTokens && token0 + warp < n_tokens) {
    const int64_t token = token0 + warp;
    warp_topk_softmax(logits[warp], topk_weights + token * top_k, topk_ids + token * top_k,
                      n_experts, top_k, renormalize);
  }
}

// Many tokens (prefill), bf16, up to 64 experts: the logits are a [n_tokens, 1280] x [1280, 64]
// GEMM, so a block takes 64 tokens and all experts on the tensor cores (mma.sync m16n8k16, fp32
// accumulation; only the fp32 summation order differs from the reference, as in the warp kernel)
// with a 4-stage cp.async pipeline over 32-deep k slices, instead of rereading each token's x once
// per expert. The logits go to shared memory and each of the 16 warps runs warp_topk_softmax for
// 4 of the tokens. Identical router rows give identical logits (same inputs to the same mma), so
// exact ties stay exact.
constexpr int kRouteMmaTokens = 64;   // tokens per block
constexpr int kRouteMmaExperts = 64;  // experts per block (all of them)
constexpr int kRouteMmaBK = 32;       // k slice per pipeline stage
constexpr int kRouteMmaLd = kRouteMmaBK + 8;  // padded smem row: conflict-free ldmatrix
constexpr int kRouteMmaStages = 4;
constexpr int kRouteMmaWarps = 16;    // 4 (tokens) x 4 (experts), 16x16 outputs each

struct RouteMmaSmem {
  union {
    struct {
      __nv_bfloat16 a[kRouteMmaStages][kRouteMmaTokens][kRouteMmaLd];   // x slices
      __nv_bfloat16 b[kRouteMmaStages][kRouteMmaExperts][kRouteMmaLd];  // router slices
    } pipe;
    float logits[kRouteMmaTokens][kRouteMmaExperts];
  };
};

__global__ void __launch_bounds__(kRouteMmaWarps * 32)
    moe_route_mma_kernel(const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ router,
                         float* __restrict__ topk_weights, int32_t* __restrict__ topk_ids, int n_tokens,
                         int hidden, int n_experts, int top_k, bool renormalize) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  static_assert(kRouteMmaTokens * kRouteMmaBK / 8 + kRouteMmaExperts * kRouteMmaBK / 8 == kRouteMmaWarps * 32,
                "one 16-byte chunk per thread per stage");
  __shared__ __align__(16) RouteMmaSmem sm;
  const int tid = threadIdx.x;
  const int lane = tid % 32;
  const int warp = tid / 32;
  const int warp_t = warp / 4;  // tokens warp_t * 16 ...
  const int warp_e = warp % 4;  // experts warp_e * 16 ...
  const int token0 = blockIdx.x * kRouteMmaTokens;
  const int k_tiles = (hidden + kRouteMmaBK - 1) / kRouteMmaBK;

  // This thread's chunk of every stage: a row of x (tid < 256) or of the router, 8 columns.
  constexpr int kChunks = kRouteMmaBK / 8;
  const bool is_a = tid < kRouteMmaTokens * kChunks;
  const int c = is_a ? tid : tid - kRouteMmaTokens * kChunks;
  const int row = c / kChunks;
  const int kc = (c % kChunks) * 8;
  const bool row_ok = is_a ? token0 + row < n_tokens : row < n_experts;
  const __nv_bfloat16* g_row = is_a ? x + static_cast<int64_t>(token0 + row) * hidden
                                    : router + static_cast<int64_t>(row) * hidden;
  auto load_stage = [&](int stage, int kt) {
    const int k = kt * kRouteMmaBK + kc;
    const bool ok = row_ok && k < hidden;
    __nv_bfloat16* dst = is_a ? &sm.pipe.a[stage][row][kc] : &sm.pipe.b[stage][row][kc];
    cp_async16(dst, ok ? g_row + k : (is_a ? x : router), ok);
  };

  float acc[2][4];
#pragma unroll
  for (int ni = 0; ni < 2; ++ni)
#pragma unroll
    for (int q = 0; q < 4; ++q) acc[ni][q] = 0.f;

#pragma unroll
  for (int s = 0; s < kRouteMmaStages - 1; ++s) {
    if (s < k_tiles) load_stage(s, s);
    cp_async_commit();
  }
  for (int kt = 0; kt < k_tiles; ++kt) {
    cp_async_wait<kRouteMmaStages - 2>();
    __syncthreads();  // stage kt has landed everywhere; stage kt - 1 is free to refill
    const int next = kt + kRouteMmaStages - 1;
    if (next < k_tiles) load_stage(next % kRouteMmaStages, next);
    cp_async_commit();
    const int stage = kt % kRouteMmaStages;
#pragma unroll
    for (int ks = 0; ks < kRouteMmaBK / 16; ++ks) {
      uint32_t a_frag[4];
      uint32_t b_frag[4];
      ldmatrix_x4(a_frag, &sm.pipe.a[stage][warp_t * 16 + lane % 16][ks * 16 + (lane / 16) * 8]);
      // x4: (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15)
      ldmatrix_x4(b_frag, &sm.pipe.b[stage][warp_e * 16 + lane % 8 + (lane / 16) * 8]
                                     [ks * 16 + ((lane / 8) % 2) * 8]);
      mma_bf16_16816(acc[0], a_frag, b_frag[0], b_frag[1]);
      mma_bf16_16816(acc[1], a_frag, b_frag[2], b_frag[3]);
    }
  }
  cp_async_wait<0>();
  __syncthreads();  // every read of the pipeline buffers is done before the logits overwrite them
#pragma unroll
  for (int ni = 0; ni < 2; ++ni)
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const int t = warp_t * 16 + lane / 4 + (q / 2) * 8;
      const int e = warp_e * 16 + ni * 8 + (lane % 4) * 2 + q % 2;
      sm.logits[t][e] = acc[ni][q];
    }
  __syncthreads();
  for (int t = warp; t < kRouteMmaTokens; t += kRouteMmaWarps) {
    if (token0 + t >= n_tokens) break;
    const int64_t token = token0 + t;
    warp_topk_softmax(sm.logits[t], topk_weights + token * top_k, topk_ids + token * top_k, n_experts,
                      top_k, renormalize);
  }
#else
  __trap();  // built only for sm_80+; the host side never launches it on older devices
#endif
}

// OCR_MOE_ROUTE=warp|mma forces a kernel (tests and tuning); auto: the tensor-core kernel from
// kRouteMmaMinTokens tokens on (where the warp kernel rereads x once per expert from L2); unset:
// the warp kernel, until H200 timings pick the tensor-core one.
constexpr int64_t kRouteMmaMinTokens = 1024;

std::tuple<at::Tensor, at::Tensor> moe_route_cuda(const at::Tensor& x_in,
                                                  const at::Tensor& router_in, int64_t top_k,
                                                  bool renormalize) {
  check_moe_route_args(x_in, router_in, top_k);
  TORCH_CHECK(x_in.is_cuda(), "moe_route: x must be a CUDA tensor, got ", x_in.device());
  const int64_t n_tokens = x_in.size(0), hidden = x_in.size(1), n_experts = router_in.size(0);
  TORCH_CHECK(n_experts <= kMaxExperts, "moe_route: the CUDA kernel supports up to ", kMaxExperts,
              " experts, got ", n_experts);
  TORCH_CHECK(n_tokens <= INT_MAX / 2 && hidden <= INT_MAX, "moe_route: too large: x ",
              x_in.sizes());
  const c10::cuda::CUDAGuard guard(x_in.device());
  const auto x = x_in.contiguous();
  const auto router = router_in.contiguous();
  auto weights = at::empty({n_tokens, top_k}, x.options().dtype(at::kFloat));  // [n_tokens, top_k]
  auto ids = at::empty({n_tokens, top_k}, x.options().dtype(at::kInt));        // [n_tokens, top_k]
  if (n_tokens == 0) return {weights, ids};
  const auto stream = at::cuda::getCurrentCUDAStream();
  dispatch_dtype(x.scalar_type(), "moe_route", [&](auto zero) {
    using T = decltype(zero);
    constexpr int kWide = kVecBytes / static_cast<int>(sizeof(T));
    const bool wide = hidden % kWide == 0 && aligned(x.data_ptr(), kVecBytes) &&
                      aligned(router.data_ptr(), kVecBytes);
    // bf16 with up to 64 experts and many tokens: the tensor-core kernel (OCR_MOE_ROUTE overrides).
    if constexpr (std::is_same_v<T, __nv_bfloat16>) {
      const char* force = std::getenv("OCR_MOE_ROUTE");
      const bool mma_ok = at::cuda::getDeviceProperties(x.get_device())->major >= 8 && hidden % 8 == 0 &&
                          n_experts <= kRouteMmaExperts && aligned(x.data_ptr(), kVecBytes) &&
                          aligned(router.data_ptr(), kVecBytes);
      const bool want_mma = force != nullptr && (std::strcmp(force, "mma") == 0 ||
                                                 (std::strcmp(force, "auto") == 0 && n_tokens >= kRouteMmaMinTokens));
      if (mma_ok && want_mma) {
        moe_route_mma_kernel<<<static_cast<unsigned>(ceil_div(n_tokens, kRouteMmaTokens)), kRouteMmaWarps * 32, 0,
                               stream>>>(ptr<T>(x), ptr<T>(router), weights.data_ptr<float>(),
                                         ids.data_ptr<int32_t>(), static_cast<int>(n_tokens),
                                         static_cast<int>(hidden), static_cast<int>(n_experts),
                                         static_cast<int>(top_k), renormalize);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        return;
      }
    }
    // Several tokens per block share each router row load once there are blocks enough to fill the
    // GPU.
    const bool many = n_tokens >= 1024;
    const int per_block = many ? 4 : 1;
    const auto blocks = static_cast<unsigned>(ceil_div(n_tokens, per_block));
    const auto go = [&](auto kernel) {
      kernel<<<blocks, kRouteWarps * 32, 0, stream>>>(
          ptr<T>(x), ptr<T>(router), weights.data_ptr<float>(), ids.data_ptr<int32_t>(),
          static_cast<int>(n_tokens), static_cast<int>(hidden), static_cast<int>(n_experts),
          static_cast<int>(top_k), renormalize);
    };
    if (wide) {
      many ? go(moe_route_kernel<T, kWide, 4>) : go(moe_route_kernel<T, kWide, 1>);
    } else {
      many ? go(moe_route_kernel<T, 1, 4>) : go(moe_route_kernel<T, 1, 1>);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {weights, ids};
}

// ---- registration: the fused kernels, or the plain-ATen references (benchmark baseline) ------

at::Tensor rms_norm_op(const at::Tensor& x, const at::Tensor& weight, double eps) {
  if (use_reference_kernels()) return rms_norm_reference(x, weight, eps);
  return rms_norm_cuda(x, weight, eps);
}

std::tuple<at::Tensor, at::Tensor> add_rms_norm_op(const at::Tensor& x, const at::Tensor& residual,
                                                   const at::Tensor& weight, double eps) {
  if (use_reference_kernels()) return add_rms_norm_reference(x, residual, weight, eps);
  return add_rms_norm_cuda(x, residual, weight, eps);
}

at::Tensor rope_kv_write_op(const at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& sin,
                            const at::Tensor& kv_cache, int64_t layer, const at::Tensor& slots,
                            const at::Tensor& positions) {
  if (use_reference_kernels())
    return rope_kv_write_reference(qkv, cos, sin, kv_cache, layer, slots, positions);
  return rope_kv_write_cuda(qkv, cos, sin, kv_cache, layer, slots, positions);
}

std::tuple<at::Tensor, at::Tensor> moe_route_op(const at::Tensor& x, const at::Tensor& router,
                                                int64_t top_k, bool renormalize) {
  if (use_reference_kernels()) return moe_route_reference(x, router, top_k, renormalize);
  return moe_route_cuda(x, router, top_k, renormalize);
}

}  // namespace

TORCH_LIBRARY_IMPL(ocr, CUDA, m) {
  m.impl("rms_norm", &rms_norm_op);
  m.impl("add_rms_norm", &add_rms_norm_op);
  m.impl("rope_kv_write", &rope_kv_write_op);
  m.impl("moe_route", &moe_route_op);
}

}  // namespace ocr::kernels::cuda
