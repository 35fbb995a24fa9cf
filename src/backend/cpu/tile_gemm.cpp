#include "backend/cpu/tile_gemm.h"

#include <immintrin.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#include <utility>

#include "backend/cpu/amx.h"  // transpose16x16

namespace ttt::kernels {
namespace {

using blas::Trans;

#define TTT_AVX512 __attribute__((target("avx512f")))

// A register tile is kRows x kPanel: 6 x 4 accumulators of 16 floats, the 4 panel vectors of one
// k step and a broadcast (29 of the 32 zmm registers); per k step 10 loads feed 24 FMAs.
constexpr int kRows = 6;
constexpr int kPanel = 64;
// Panel rows per pass: 128 x 64 floats (32 KB) stay in L1 while every row tile of C reads them.
constexpr int kPanelDepth = 128;

std::atomic<bool> g_avx512_off{false};

bool avx512_usable() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") != 0 && std::getenv("TTT_NO_TILE_GEMM") == nullptr;
  }();
  return has && !g_avx512_off.load(std::memory_order_relaxed);
}

// Packs op(B)[k0 + p, j0 + jj] for p < kc, jj < nc into panel[p * kPanel + jj], zeros up to the
// panel's last used vector (they feed only columns that are never stored, but stay finite).
TTT_AVX512 void pack_panel(Trans tb, const float* b, int64_t ldb, int64_t k0, int kc, int64_t j0, int nc,
                           float* panel) {
  const int width = (nc + 15) / 16 * 16;
  if (tb == Trans::No) {
    for (int p = 0; p < kc; ++p) {
      const float* src = b + (k0 + p) * ldb + j0;
      float* dst = panel + p * kPanel;
      for (int v = 0; v < width; v += 16) {
        const int left = nc - v;
        const __mmask16 m = left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1);
        _mm512_store_ps(dst + v, _mm512_maskz_loadu_ps(m, src + v));
      }
    }
    return;
  }
  // op(B)[p, jj] = b[(j0 + jj) * ldb + k0 + p]: whole 16 x 16 blocks in registers, edges by element.
  const float* base = b + j0 * ldb + k0;
  const int kfull = kc / 16 * 16, jfull = nc / 16 * 16;
  for (int jj = 0; jj < jfull; jj += 16)
    for (int p = 0; p < kfull; p += 16) transpose16x16(base + jj * ldb + p, ldb, panel + p * kPanel + jj, kPanel);
  for (int p = 0; p < kc; ++p) {
    float* dst = panel + p * kPanel;
    const int jstart = p < kfull ? jfull : 0;
    for (int jj = jstart; jj < nc; ++jj) dst[jj] = base[jj * ldb + p];
    for (int jj = nc; jj < width; ++jj) dst[jj] = 0.0f;
  }
}

// C tile [R x 16 NV] (+)= alpha * A[R x kc] panel[kc x 16 NV]. A(i, p) is a[i * lda + p], or
// a[p * lda + i] when ATRANS. beta: 0 writes C, 1 adds to it, else scales it first. The last
// vector of each row stores the columns in `last`.
template <int R, int NV, bool ATRANS>
TTT_AVX512 void tile_kernel(int kc, const float* a, int64_t lda, const float* panel, float* c, int64_t ldc,
                            float alpha, float beta, __mmask16 last) {
  __m512 acc[R][NV];
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_setzero_ps();
  for (int p = 0; p < kc; ++p) {
    __m512 bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = _mm512_load_ps(panel + p * kPanel + 16 * v);
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i) {
      const __m512 av = _mm512_set1_ps(ATRANS ? a[p * lda + i] : a[i * lda + p]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_fmadd_ps(av, bv[v], acc[i][v]);
    }
  }
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      const __mmask16 m = v == NV - 1 ? last : __mmask16(0xFFFF);
      float* cp = c + i * ldc + 16 * v;
      __m512 r;
      if (beta == 0.0f) {
        r = alpha == 1.0f ? acc[i][v] : _mm512_mul_ps(acc[i][v], va);
      } else if (beta == 1.0f) {
        r = _mm512_fmadd_ps(acc[i][v], va, _mm512_maskz_loadu_ps(m, cp));
      } else {
        r = _mm512_fmadd_ps(acc[i][v], va, _mm512_mul_ps(vb, _mm512_maskz_loadu_ps(m, cp)));
      }
      _mm512_mask_storeu_ps(cp, m, r);
    }
}

using TileFn = void (*)(int, const float*, int64_t, const float*, float*, int64_t, float, float, __mmask16);

template <bool ATRANS, int R, int... NVs>
constexpr auto tile_row(std::integer_sequence<int, NVs...>) {
  return std::array<TileFn, sizeof...(NVs)>{&tile_kernel<R, NVs + 1, ATRANS>...};
}
template <bool ATRANS, int... Rs>
constexpr auto tile_table(std::integer_sequence<int, Rs...>) {
  return std::array<std::array<TileFn, kPanel / 16>, sizeof...(Rs)>{
      tile_row<ATRANS, Rs + 1>(std::make_integer_sequence<int, kPanel / 16>{})...};
}
// [a transposed][rows - 1][vectors - 1]
const std::array<std::array<std::array<TileFn, kPanel / 16>, kRows>, 2> kTiles = {
    tile_table<false>(std::make_integer_sequence<int, kRows>{}),
    tile_table<true>(std::make_integer_sequence<int, kRows>{})};

// C rows [i0, i0 + rows), columns [j0, j0 + nc) = beta C (beta 0: zeros), for row tiles whose
// band holds no term.
void scale_rows(float* c, int ldc, int i0, int rows, int j0, int nc, float beta) {
  for (int i = i0; i < i0 + rows; ++i) {
    float* row = c + static_cast<int64_t>(i) * ldc + j0;
    for (int j = 0; j < nc; ++j) row[j] = beta == 0.0f ? 0.0f : beta * row[j];
  }
}

// Columns packed per pass: kPanelDepth x kPackedColumns floats (512 KB) stay in L2.
constexpr int kPackedColumns = 1024;
// Row tiles per block: their slices of A (4 x 6 x 128 floats, 12 KB) and one panel (32 KB) share L1.
// Up to kWholeRows rows, A's slice (at most 256 KB) stays in L2 and one block holds every row, so
// each panel is packed into L1 once and read there by every tile (the attention products).
constexpr int kBlockTiles = 4;
constexpr int kWholeRows = 512;

// Rows of op(A) per block when A^T is packed: a multiple of 16 (the transposes) and of 6 (the
// tiles); 48 x 128 floats (24 KB).
constexpr int kPackedRows = 48;

// ablk[r * kPanelDepth + p] = a[(k0 + p) * lda + i0 + r] for r < rows, p < kc: rows i0.. of
// op(A) = A^T over one pass, 16 x 16 blocks in registers, edges by element.
TTT_AVX512 void pack_rows_of_transposed(const float* a, int64_t lda, int k0, int kc, int i0, int rows,
                                        float* ablk) {
  const float* base = a + static_cast<int64_t>(k0) * lda + i0;
  const int rfull = rows / 16 * 16, pfull = kc / 16 * 16;
  for (int r = 0; r < rfull; r += 16)
    for (int p = 0; p < pfull; p += 16) transpose16x16(base + p * lda + r, lda, ablk + r * kPanelDepth + p, kPanelDepth);
  for (int r = 0; r < rows; ++r) {
    float* dst = ablk + r * kPanelDepth;
    for (int p = r < rfull ? pfull : 0; p < kc; ++p) dst[p] = base[p * lda + r];
  }
}

// Loop order (BLIS's, with the left operand unpacked): for each pass of at most 128 rows of B and
// 1024 columns, pack its panels; then for each block of 4 row tiles, for each panel, for each
// tile: the register tile. A block's slice of A is read from L1 for every panel, a panel from L1
// for every tile of the block. Every element of C sums its terms in k order, pass after pass.
// With `pre`, op(B) is already packed (tile_gemm_packed's layout) and b, ldb, tb are unused.
TTT_AVX512 void gemm_avx512(Trans ta, Trans tb, int m, int n, int k, float alpha, const float* a, int lda,
                            const float* b, int ldb, float beta, float* c, int ldc, const TileBand* band,
                            const float* pre = nullptr, int64_t pre_stride = 0) {
  struct AlignedFree {
    void operator()(float* p) const { std::free(p); }
  };
  thread_local std::unique_ptr<float, AlignedFree> store;
  thread_local size_t store_floats = 0;
  const int packed_cols = std::min(kPackedColumns, (n + kPanel - 1) / kPanel * kPanel);
  const size_t need = pre ? 0 : static_cast<size_t>(kPanelDepth) * packed_cols;
  if (store_floats < need) {
    store.reset(static_cast<float*>(std::aligned_alloc(64, need * sizeof(float))));
    if (!store) throw std::bad_alloc();
    store_floats = need;
  }
  float* panels = store.get();
  const bool at = ta == Trans::Yes;
  // A^T summed over more than one pass (the weight gradients X^T dY): each block's rows of op(A)
  // are transposed into L1 per pass, so the tiles read rows instead of walking columns.
  const bool pack_a = at && !band && k > kPanelDepth;
  thread_local std::unique_ptr<float, AlignedFree> astore;
  if (pack_a && !astore) {
    astore.reset(static_cast<float*>(std::aligned_alloc(64, sizeof(float) * kPackedRows * kPanelDepth)));
    if (!astore) throw std::bad_alloc();
  }
  float* ablk = pack_a ? astore.get() : nullptr;
  // The terms [p0, p1) of the row tile at i0: all of k, or its rows' band.
  auto terms = [&](int i0, int rows) {
    if (!band) return std::pair<int64_t, int64_t>(0, k);
    return std::pair<int64_t, int64_t>(std::max<int64_t>(0, i0 + band->lo),
                                       std::min<int64_t>(k, i0 + rows - 1 + band->hi));
  };
  for (int jc = 0; jc < n; jc += kPackedColumns) {
    const int ncols = std::min(kPackedColumns, n - jc), npanels = (ncols + kPanel - 1) / kPanel;
    for (int k0 = 0; k0 < k; k0 += kPanelDepth) {
      const int kc = std::min(kPanelDepth, k - k0);
      if (!pre)
        for (int jp = 0; jp < npanels; ++jp)
          pack_panel(tb, b, ldb, k0, kc, jc + jp * kPanel, std::min(kPanel, ncols - jp * kPanel),
                     panels + static_cast<size_t>(jp) * kPanelDepth * kPanel);
      const int block_rows = pack_a ? kPackedRows : m <= kWholeRows ? m : kBlockTiles * kRows;
      for (int ib = 0; ib < m; ib += block_rows) {
        const int iend = std::min(m, ib + block_rows);
        if (pack_a) pack_rows_of_transposed(a, lda, k0, kc, ib, iend - ib, ablk);
        for (int jp = 0; jp < npanels; ++jp) {
          const int j0 = jc + jp * kPanel, nc = std::min(kPanel, n - j0), nv = (nc + 15) / 16;
          const int tail = nc - 16 * (nv - 1);
          const __mmask16 last = tail == 16 ? __mmask16(0xFFFF) : __mmask16((1u << tail) - 1);
          const float* panel = pre ? pre + (jc / kPanel + jp) * pre_stride + static_cast<int64_t>(k0) * kPanel
                                   : panels + static_cast<size_t>(jp) * kPanelDepth * kPanel;
          for (int i0 = ib; i0 < iend; i0 += kRows) {
            const int rows = std::min(kRows, iend - i0);
            const auto [p0, p1] = terms(i0, rows);
            const int q0 = static_cast<int>(std::max<int64_t>(p0, k0));
            const int q1 = static_cast<int>(std::min<int64_t>(p1, k0 + kc));
            if (q1 <= q0) continue;
            // beta once, in the first pass that holds some of the tile's terms.
            const float beta_k = q0 == p0 ? beta : 1.0f;
            const float* ap = pack_a ? ablk + (i0 - ib) * kPanelDepth + (q0 - k0)
                              : at   ? a + static_cast<int64_t>(q0) * lda + i0
                                     : a + static_cast<int64_t>(i0) * lda + q0;
            kTiles[at && !pack_a][static_cast<size_t>(rows - 1)][static_cast<size_t>(nv - 1)](
                q1 - q0, ap, pack_a ? kPanelDepth : lda, panel + (q0 - k0) * kPanel,
                c + static_cast<int64_t>(i0) * ldc + j0, ldc, alpha, beta_k, last);
          }
        }
      }
    }
    if (band)
      for (int i0 = 0; i0 < m; i0 += kRows) {
        const int rows = std::min(kRows, m - i0);
        const auto [p0, p1] = terms(i0, rows);
        if (p1 <= p0) scale_rows(c, ldc, i0, rows, jc, ncols, beta);
      }
  }
}

}  // namespace

bool tile_gemm_usable() { return avx512_usable(); }

const char* f32_gemm_kernel() { return avx512_usable() ? "avx512 tiles" : "openblas"; }

void set_tile_gemm_avx512(bool on) { g_avx512_off.store(!on, std::memory_order_relaxed); }

namespace {
void tile_gemm_f32(Trans ta, Trans tb, int m, int n, int k, float alpha, const float* a, int lda, const float* b,
                   int ldb, float beta, float* c, int ldc, const TileBand* band) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0 || !avx512_usable()) {
    blas::gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  gemm_avx512(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, band);
}
}  // namespace

void tile_gemm(Trans ta, Trans tb, int m, int n, int k, float alpha, const float* a, int lda, const float* b,
               int ldb, float beta, float* c, int ldc) {
  tile_gemm_f32(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, nullptr);
}

void tile_gemm(Trans ta, Trans tb, int m, int n, int k, float alpha, const float* a, int lda, const float* b,
               int ldb, float beta, float* c, int ldc, const TileBand& band) {
  tile_gemm_f32(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, &band);
}

void pack_tile_panels(Trans tb, int k, int n, const float* b, int ldb, float* panels, int64_t panel_stride) {
  for (int j0 = 0; j0 < n; j0 += kPanel)
    pack_panel(tb, b, ldb, 0, k, j0, std::min(kPanel, n - j0), panels + j0 / kPanel * panel_stride);
}

void tile_gemm_packed(Trans ta, int m, int n, int k, float alpha, const float* a, int lda, const float* panels,
                      int64_t panel_stride, float beta, float* c, int ldc, const TileBand* band) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {
    scale_rows(c, ldc, 0, m, 0, n, beta);
    return;
  }
  gemm_avx512(ta, Trans::No, m, n, k, alpha, a, lda, nullptr, 0, beta, c, ldc, band, panels, panel_stride);
}

void tile_gemm(Trans ta, Trans tb, int m, int n, int k, double alpha, const double* a, int lda, const double* b,
               int ldb, double beta, double* c, int ldc, const TileBand&) {
  blas::gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void tile_gemm(Trans ta, Trans tb, int m, int n, int k, double alpha, const double* a, int lda, const double* b,
               int ldb, double beta, double* c, int ldc) {
  blas::gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

}  // namespace ttt::kernels
