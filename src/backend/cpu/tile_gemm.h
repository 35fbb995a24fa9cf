// float32 products on AVX-512 register tiles, on the calling thread, with blas::gemm's contract:
// the fused attention kernels call it for their tiles' products, and blas::gemm sends it each
// float32 product (or per-thread block) of 16 rows or more.
//
// Why not OpenBLAS: the attention's products are small and skinny (a 128-query tile against a
// band of keys, head_dim 64 deep or 64 wide), called thousands of times per step, as are the
// meta-gradient's 256-row chunk products; OpenBLAS packs both operands on every call and reached
// about 70% of one core's rate on them. Here only the right operand is packed (64-column panels,
// 128 rows per pass, 16 x 16 register transposes where it is given transposed) and the left one
// is read where it lies, one broadcast per element, so a transposed left operand costs nothing
// extra; only deep sums over a transposed left operand (the weight gradients) transpose its rows
// per pass. `bench/product_bench` compares the two kernels.
#pragma once
#include <cstdint>

#include "backend/cpu/blas.h"

namespace ttt::kernels {

// C[m,n] = alpha * op(A)[m,k] @ op(B)[k,n] + beta * C, row-major (blas::gemm's contract; beta 0
// never reads C). float32 runs on AVX-512 register tiles where the CPU has them and goes to
// blas::gemm otherwise; double (the float64 oracles) always goes to blas::gemm.
void tile_gemm(blas::Trans ta, blas::Trans tb, int m, int n, int k, float alpha, const float* a, int lda,
               const float* b, int ldb, float beta, float* c, int ldc);
void tile_gemm(blas::Trans ta, blas::Trans tb, int m, int n, int k, double alpha, const double* a, int lda,
               const double* b, int ldb, double beta, double* c, int ldc);

// Where op(A) may be nonzero: row r only in columns [r + lo, r + hi), a band along the diagonal
// such as attention's causal and window masks leave in a block of probabilities. The product
// then skips each row tile's terms outside the band. They are exact zeros, so the result is the
// one without the band (the float32 tile path; others compute every term).
struct TileBand {
  int64_t lo, hi;
};
void tile_gemm(blas::Trans ta, blas::Trans tb, int m, int n, int k, float alpha, const float* a, int lda,
               const float* b, int ldb, float beta, float* c, int ldc, const TileBand& band);
void tile_gemm(blas::Trans ta, blas::Trans tb, int m, int n, int k, double alpha, const double* a, int lda,
               const double* b, int ldb, double beta, double* c, int ldc, const TileBand& band);

// The right operand packed once for many products (attention's keys and values, which every
// query tile of a head multiplies): op(B)[p, j] lies at panels[(j / 64) * panel_stride + p * 64 +
// j % 64], 64-column panels of k rows each. pack_tile_panels writes that layout for op(B)
// [k, n] (panel_stride >= 64 k and a multiple of 16, panels 64-byte aligned,
// tile_panels_floats(n, panel_stride) floats); tile_gemm_packed is tile_gemm with it. A product
// over columns from some offset passes the panel of its first column (a whole panel), one over
// rows from some offset the address of that row in the first panel. Only where
// tile_gemm_usable().
constexpr int kTilePanelColumns = 64;
inline int64_t tile_panels_floats(int64_t n, int64_t panel_stride) {
  return (n + kTilePanelColumns - 1) / kTilePanelColumns * panel_stride;
}
void pack_tile_panels(blas::Trans tb, int k, int n, const float* b, int ldb, float* panels, int64_t panel_stride);
void tile_gemm_packed(blas::Trans ta, int m, int n, int k, float alpha, const float* a, int lda, const float* panels,
                      int64_t panel_stride, float beta, float* c, int ldc, const TileBand* band = nullptr);

// Whether float32 runs on the tiles here (AVX-512, not turned off); blas::gemm sends its float32
// products (or their per-thread blocks) of 16 rows or more to them then.
// TTT_NO_TILE_GEMM=1 keeps every product on OpenBLAS.
bool tile_gemm_usable();
const char* f32_gemm_kernel();  // "avx512 tiles" or "openblas" (`ttt info`)

// Tests: false sends float32 to OpenBLAS everywhere (the two paths compared on the same data).
void set_tile_gemm_avx512(bool on);

}  // namespace ttt::kernels
