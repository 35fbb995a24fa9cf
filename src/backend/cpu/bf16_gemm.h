// float32 x bfloat16 matrix products for models whose large weights stay bfloat16 in memory
// (inference only; tensor/tensor.h). The weights are widened exactly, and every product and sum
// is float32, so the result is the float32 product of the bf16-rounded weights up to float32
// summation order.
//
// One row (a decode step) is a GEMV bound by memory bandwidth: it reads the bf16 weights once and
// widens them in registers (AVX-512 when the CPU has it, else portable loops), which is why
// bf16 weights nearly double decode speed. Several rows widen the weights panel by panel into a
// float32 buffer the size of a cache-friendly block and run sgemm on it: the conversion is
// amortized over the rows and the compute stays BLAS's.
#pragma once
#include <cstdint>

namespace ttt::kernels {

// c[m, n] = a[m, k] @ op(b): a row-major with leading dimension lda; b row-major bf16 bits, [n, k]
// if tb (rows are the output columns: a tied embedding used as the head) else [k, n]; c row-major
// with leading dimension ldc, overwritten.
void gemm_f32_bf16(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const uint16_t* b, bool tb,
                   float* c, int64_t ldc);

// The one-row product y[n] = x[k] @ op(b) for float32 weights (decoding): the same kernels as
// the bf16 GEMV, reading b once, split over the pool. BLAS's sgemm with one row packs and
// threads as for a large product and ran at a few GFLOP/s on a decode step.
void gemv_f32(int64_t n, int64_t k, const float* x, const float* b, bool tb, float* y);

// bf16 x bf16 -> float32 products (`--compute bf16`, bf16_dot_gemm.cpp): the same contract as
// gemm_f32_bf16, but a is rounded to bf16 first and the pair products run on AVX512_BF16
// (vdpbf16ps) with float32 accumulation. Needs cpu_has_avx512_bf16().
bool cpu_has_avx512_bf16();
void gemm_bf16_bf16(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const uint16_t* b, bool tb,
                    float* c, int64_t ldc);
// Where the CPU has AMX-BF16 (and the OS grants the tile state) the products run on the tile
// unit instead, with the same rounding of a and float32 accumulation (TTT_NO_AMX=1: never).
// bf16_dot_kernel() names the kernel in use: "amx", "avx512_bf16" or "none (...)";
// set_bf16_dot_no_amx(true) (tests) keeps the vdpbf16ps kernel on an AMX CPU.
const char* bf16_dot_kernel();
// dst[0:n] = float_to_bf16(src[0:n]), vectorized, except that denormal inputs become zeros (the
// bf16 products flush them anyway): the activations' rounding of the bf16 kernels (needs
// cpu_has_avx512_bf16()).
void round_to_bf16(const float* src, uint16_t* dst, int64_t n);
void set_bf16_dot_no_amx(bool no_amx);
// Which products use it is a property of the weights (Storage::bf16_products, set per model by
// --compute bf16): products of two rows or more (one row, a decode step, stays the GEMV).

// Which GEMV kernel runs: "avx512" or "scalar". force_scalar (tests) selects the portable one.
const char* bf16_gemv_kernel();
void set_bf16_force_scalar(bool force);

}  // namespace ttt::kernels
