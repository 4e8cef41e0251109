// Device helpers shared by the CUDA MoE kernels: cp.async, ldmatrix, bf16 tensor-core mma,
// dtype conversion and the SwiGLU epilogue that rounds exactly where the CPU reference does.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace ocr::kernels::cuda {

// Both ops keep per-expert state in shared memory and one warp holds a token's scores in
// registers (8 per lane), so the expert count is bounded.
constexpr int kMaxExperts = 256;

// ---- dtype conversion --------------------------------------------------------------------------
template <typename T>
__device__ __forceinline__ float to_float(T v);
template <>
__device__ __forceinline__ float to_float<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// Rounds to T and back: the value the reference holds after an op whose result has dtype T.
template <typename T>
__device__ __forceinline__ float round_to(float v) {
  return to_float<T>(from_float<T>(v));
}

// silu(gate(x)) * up(x) as the reference computes it in dtype T: gate and up are matmul outputs
// (rounded to T), at::silu computes x / (1 + exp(-x)) in float and rounds to T, and the product
// of two T tensors is computed in float and rounded to T (the caller stores it as T).
template <typename T>
__device__ __forceinline__ float swiglu(float gate_acc, float up_acc) {
  const float g = round_to<T>(gate_acc);
  const float u = round_to<T>(up_acc);
  const float s = round_to<T>(__fdiv_rn(g, __fadd_rn(1.0f, expf(-g))));
  return __fmul_rn(s, u);
}

// ---- asynchronous copies and tensor-core fragments (sm_80+) ------------------------------------
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte global -> shared copy that bypasses L1; when !pred, writes 16 zero bytes instead.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool pred) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const int src_bytes = pred ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(smem)),
               "l"(gmem), "r"(src_bytes));
#endif
}

__device__ __forceinline__ void cp_async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}

template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
#endif
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* smem) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(smem)));
#endif
}

// d += a * b for one 16x8x16 tile: a row-major bf16 [16, 16], b column-major bf16 [16, 8],
// d fp32 [16, 8] (lane holds rows lane/4 and lane/4 + 8, columns 2 * (lane % 4) + {0, 1}).
__device__ __forceinline__ void mma_bf16_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                               uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

}  // namespace ocr::kernels::cuda
