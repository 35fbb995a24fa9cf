// The attention kernels' products (backend/cpu/tile_gemm.h) against float64 sums: every
// transpose combination, edge tiles in every dimension, leading dimensions wider than the
// matrices, the beta cases, and nothing written outside C.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "backend/cpu/tile_gemm.h"

namespace {

using ttt::blas::Trans;

struct Case {
  int m, n, k;
};

// Checks C = alpha op(A) op(B) + beta C0 elementwise against the rounding-error bound of a
// k-term float sum, (k + 2) u sum_p |alpha a_ip b_pj| + |beta c0_ij| with u = 2^-24 (twice
// that, for the two roundings of alpha and beta); guards around C must survive.
void check_case(Trans ta, Trans tb, const Case& c, float alpha, float beta, unsigned seed) {
  SCOPED_TRACE(::testing::Message() << "ta=" << (ta == Trans::Yes) << " tb=" << (tb == Trans::Yes) << " m=" << c.m
                                    << " n=" << c.n << " k=" << c.k << " alpha=" << alpha << " beta=" << beta);
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  const int arows = ta == Trans::No ? c.m : c.k, acols = ta == Trans::No ? c.k : c.m;
  const int brows = tb == Trans::No ? c.k : c.n, bcols = tb == Trans::No ? c.n : c.k;
  const int lda = acols + 3, ldb = bcols + 5, ldc = c.n + 7;  // wider than the matrices
  std::vector<float> a(static_cast<size_t>(arows) * lda), b(static_cast<size_t>(brows) * ldb);
  for (auto& x : a) x = dist(gen);
  for (auto& x : b) x = dist(gen);
  const float guard = 12345.0f;
  std::vector<float> c0(static_cast<size_t>(c.m) * ldc, guard);
  for (int i = 0; i < c.m; ++i)
    for (int j = 0; j < c.n; ++j)
      c0[static_cast<size_t>(i) * ldc + j] = beta == 0.0f ? std::numeric_limits<float>::quiet_NaN() : dist(gen);
  auto A = [&](int i, int p) { return double(ta == Trans::No ? a[size_t(i) * lda + p] : a[size_t(p) * lda + i]); };
  auto B = [&](int p, int j) { return double(tb == Trans::No ? b[size_t(p) * ldb + j] : b[size_t(j) * ldb + p]); };

  for (bool avx512 : {true, false}) {
    SCOPED_TRACE(avx512 ? "tile kernels" : "blas");
    ttt::kernels::set_tile_gemm_avx512(avx512);
    std::vector<float> out = c0;
    ttt::kernels::tile_gemm(ta, tb, c.m, c.n, c.k, alpha, a.data(), lda, b.data(), ldb, beta, out.data(), ldc);
    int bad = 0;
    for (int i = 0; i < c.m && bad < 5; ++i) {
      for (int j = 0; j < ldc && bad < 5; ++j) {
        const size_t x = static_cast<size_t>(i) * ldc + j;
        if (j >= c.n) {  // the padding of C's rows
          if (out[x] != guard) ++bad, ADD_FAILURE() << "wrote outside C at row " << i << " column " << j;
          continue;
        }
        double ref = 0, mag = 0;
        for (int p = 0; p < c.k; ++p) {
          ref += double(alpha) * A(i, p) * B(p, j);
          mag += std::abs(double(alpha) * A(i, p) * B(p, j));
        }
        if (beta != 0.0f) {
          ref += double(beta) * double(c0[x]);
          mag += std::abs(double(beta) * double(c0[x]));
        }
        const double bound = 2.0 * (c.k + 2) * std::ldexp(1.0, -24) * mag + 1e-30;
        if (!(std::abs(double(out[x]) - ref) <= bound))
          ++bad, ADD_FAILURE() << "C[" << i << "," << j << "] = " << out[x] << ", float64 " << ref << ", bound " << bound;
      }
    }
  }
  ttt::kernels::set_tile_gemm_avx512(true);
}

TEST(TileGemm, MatchesFloat64SumsInEveryLayout) {
  // Edge tiles: rows not a multiple of 6, columns not of 16 or 64, depth beyond one panel pass
  // (128) and not a multiple of 16 (the transposing pack's element-wise edges).
  const Case cases[] = {{1, 1, 1},    {5, 17, 3},     {6, 64, 128},  {7, 65, 129},
                        {13, 130, 300}, {128, 200, 64}, {70, 64, 257}, {200, 48, 33}};
  unsigned seed = 1;
  for (Trans ta : {Trans::No, Trans::Yes})
    for (Trans tb : {Trans::No, Trans::Yes})
      for (const Case& c : cases) {
        check_case(ta, tb, c, 1.0f, 0.0f, seed++);
        check_case(ta, tb, c, 0.125f, 1.0f, seed++);
        check_case(ta, tb, c, -2.0f, 0.5f, seed++);
      }
}

// With op(A) zero outside a band, the banded product skips those terms and must give the very
// same bits as the full one (the attention kernels rely on it: results do not change).
TEST(TileGemm, BandSkipsOnlyZeroTerms) {
  std::mt19937 gen(77);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  struct BandCase {
    int m, n, k;
    int64_t lo, hi;
  };
  // Windows inside, bands that leave some row tiles without terms, a causal band (no lower end).
  const BandCase cases[] = {{128, 64, 300, -20, 40}, {130, 70, 260, 100, 150}, {40, 64, 300, -300, -20},
                            {64, 48, 200, std::numeric_limits<int64_t>::min() / 4, 9}, {200, 64, 128, -5, 1},
                            {40, 64, 100, 100, 130}};  // the last: no row has a term
  for (Trans ta : {Trans::No, Trans::Yes})
    for (const BandCase& bc : cases)
      for (float beta : {0.0f, 1.0f, 0.5f}) {
        SCOPED_TRACE(::testing::Message() << "ta=" << (ta == Trans::Yes) << " m=" << bc.m << " k=" << bc.k
                                          << " band [" << bc.lo << ", " << bc.hi << ") beta=" << beta);
        const int lda = ta == Trans::No ? bc.k : bc.m;
        std::vector<float> a(static_cast<size_t>(ta == Trans::No ? bc.m : bc.k) * lda);
        for (int i = 0; i < bc.m; ++i)
          for (int p = 0; p < bc.k; ++p) {
            const bool inside = p >= i + bc.lo && p < i + bc.hi;
            (ta == Trans::No ? a[size_t(i) * lda + p] : a[size_t(p) * lda + i]) = inside ? dist(gen) : 0.0f;
          }
        std::vector<float> b(static_cast<size_t>(bc.k) * bc.n), c0(static_cast<size_t>(bc.m) * bc.n);
        for (auto& x : b) x = dist(gen);
        for (auto& x : c0) x = dist(gen);
        std::vector<float> full = c0, banded = c0;
        ttt::kernels::tile_gemm(ta, Trans::No, bc.m, bc.n, bc.k, 0.125f, a.data(), lda, b.data(), bc.n, beta,
                                full.data(), bc.n);
        ttt::kernels::tile_gemm(ta, Trans::No, bc.m, bc.n, bc.k, 0.125f, a.data(), lda, b.data(), bc.n, beta,
                                banded.data(), bc.n, ttt::kernels::TileBand{bc.lo, bc.hi});
        for (size_t x = 0; x < full.size(); ++x)
          ASSERT_EQ(std::memcmp(&full[x], &banded[x], sizeof(float)), 0)
              << "element " << x << ": " << full[x] << " vs " << banded[x];
      }
}

TEST(TileGemm, PackedOperandGivesTheSameBits) {
  // B packed once (pack_tile_panels) and multiplied from a whole panel or a row onwards, as the
  // attention kernels do with keys and values, against tile_gemm packing it itself.
  if (!ttt::kernels::tile_gemm_usable()) GTEST_SKIP() << "no AVX-512 tiles here";
  std::mt19937 gen(91);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  const int K = 300, N = 200;  // op(B) [K, N]: columns and rows not multiples of 64, 16 or 128
  for (Trans tb : {Trans::No, Trans::Yes}) {
    const int ldb = (tb == Trans::No ? N : K) + 3;
    std::vector<float> b(static_cast<size_t>(tb == Trans::No ? K : N) * ldb);
    for (auto& x : b) x = dist(gen);
    const int64_t stride = int64_t{K} * 64 + 16;  // wider than one panel needs
    std::vector<float> store(static_cast<size_t>(ttt::kernels::tile_panels_floats(N, stride)) + 16);
    float* panels = store.data() + (16 - reinterpret_cast<uintptr_t>(store.data()) / sizeof(float) % 16) % 16;
    ttt::kernels::pack_tile_panels(tb, K, N, b.data(), ldb, panels, stride);
    auto at = [&](int p, int j) { return tb == Trans::No ? b.data() + size_t(p) * ldb + j : b.data() + size_t(j) * ldb + p; };
    struct Sub {
      int row0, col0, m, n, k;  // op(B) rows [row0, row0 + k), columns [col0, col0 + n); col0 % 64 == 0
    };
    const Sub subs[] = {{0, 0, 37, N, K}, {0, 64, 128, 100, K}, {0, 128, 6, 72, 64}, {45, 0, 50, 64, 255},
                        {171, 64, 13, 136, 129}, {299, 192, 7, 8, 1}};
    for (const Sub& u : subs)
      for (Trans ta : {Trans::No, Trans::Yes})
        for (float beta : {0.0f, 1.0f}) {
          SCOPED_TRACE(::testing::Message() << "tb=" << (tb == Trans::Yes) << " ta=" << (ta == Trans::Yes) << " rows "
                                            << u.row0 << " cols " << u.col0 << " m=" << u.m << " beta=" << beta);
          const int lda = ta == Trans::No ? u.k : u.m;
          std::vector<float> a(static_cast<size_t>(ta == Trans::No ? u.m : u.k) * lda);
          for (auto& x : a) x = dist(gen);
          std::vector<float> c0(static_cast<size_t>(u.m) * u.n);
          for (auto& x : c0) x = dist(gen);
          std::vector<float> want = c0, got = c0;
          ttt::kernels::tile_gemm(ta, tb, u.m, u.n, u.k, 0.5f, a.data(), lda, at(u.row0, u.col0), ldb, beta,
                                  want.data(), u.n);
          ttt::kernels::tile_gemm_packed(ta, u.m, u.n, u.k, 0.5f, a.data(), lda,
                                         panels + u.col0 / 64 * stride + int64_t{u.row0} * 64, stride, beta,
                                         got.data(), u.n);
          for (size_t x = 0; x < want.size(); ++x)
            ASSERT_EQ(std::memcmp(&want[x], &got[x], sizeof(float)), 0)
                << "element " << x << ": " << want[x] << " vs " << got[x];
        }
  }
}

TEST(TileGemm, ZeroDepthScalesC) {
  // k = 0: C = beta C, as BLAS defines it.
  std::vector<float> c = {1.0f, 2.0f, 3.0f, 4.0f};
  float dummy = 0.0f;
  ttt::kernels::tile_gemm(Trans::No, Trans::No, 2, 2, 0, 1.0f, &dummy, 1, &dummy, 2, 0.5f, c.data(), 2);
  EXPECT_EQ(c, (std::vector<float>{0.5f, 1.0f, 1.5f, 2.0f}));
}

}  // namespace
