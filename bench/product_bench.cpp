// The float32 products on one thread: the engine's AVX-512 tiles (backend/cpu/tile_gemm.h)
// against OpenBLAS on the shapes the bench model's steps and attention run, rate and error
// against float64 sums (relative to the sum of |a b| of each element: the scale of a float sum's
// rounding error).
//
// Usage: product_bench [repeats]   (rates are the best of `repeats` timed calls; default 50)
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "backend/cpu/blas.h"
#include "backend/cpu/tile_gemm.h"

namespace {

using ttt::blas::Trans;
using Clock = std::chrono::steady_clock;

struct Shape {
  const char* what;
  Trans ta, tb;
  int m, n, k;
};

}  // namespace

int main(int argc, char** argv) {
  const int repeats = argc > 1 ? std::max(1, std::atoi(argv[1])) : 50;
  if (!ttt::kernels::tile_gemm_usable()) {
    std::printf("the tiles need AVX-512 (and TTT_NO_TILE_GEMM unset); nothing to compare\n");
    return 0;
  }
  ttt::blas::SingleThreadedBlas one_thread;
  const Shape shapes[] = {
      {"attention Q K^T (128 queries, 1152 keys)", Trans::No, Trans::Yes, 128, 1152, 64},
      {"attention P V", Trans::No, Trans::No, 128, 64, 1152},
      {"attention P^T dO", Trans::Yes, Trans::No, 1152, 64, 128},
      {"chunk MLP up, half of [256,256]x[256,704]", Trans::No, Trans::No, 256, 352, 256},
      {"chunk MLP down^T, half of [256,704]x[704,256]^T", Trans::No, Trans::Yes, 128, 256, 704},
      {"4K MLP up, half of [4096,256]x[256,704]", Trans::No, Trans::No, 2048, 704, 256},
      {"weight gradient, half of [704,4096]^Tx[4096,256]", Trans::Yes, Trans::No, 352, 256, 4096},
      {"head, half of [4096,256]x[256,4096]^T", Trans::No, Trans::Yes, 2048, 4096, 256},
  };
  std::mt19937 gen(7);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::printf("| product | m x n x k | tiles GFLOP/s | OpenBLAS GFLOP/s | tiles error mean / max | OpenBLAS error mean / max |\n");
  std::printf("|---|---|---:|---:|---:|---:|\n");
  for (const Shape& s : shapes) {
    const int lda = s.ta == Trans::No ? s.k : s.m, ldb = s.tb == Trans::No ? s.n : s.k;
    std::vector<float> a(static_cast<size_t>(s.m) * s.k), b(static_cast<size_t>(s.k) * s.n);
    for (auto& x : a) x = dist(gen);
    for (auto& x : b) x = dist(gen);
    auto A = [&](int i, int p) { return double(s.ta == Trans::No ? a[size_t(i) * lda + p] : a[size_t(p) * lda + i]); };
    auto B = [&](int p, int j) { return double(s.tb == Trans::No ? b[size_t(p) * ldb + j] : b[size_t(j) * ldb + p]); };
    // float64 sums on a sample of rows (every row of the small products).
    const int row_step = std::max(1, s.m / 64);
    std::vector<double> ref(static_cast<size_t>(s.m) * s.n), mag(ref.size());
    for (int i = 0; i < s.m; i += row_step)
      for (int p = 0; p < s.k; ++p) {
        const double ai = A(i, p);
        for (int j = 0; j < s.n; ++j) {
          ref[size_t(i) * s.n + j] += ai * B(p, j);
          mag[size_t(i) * s.n + j] += std::abs(ai * B(p, j));
        }
      }
    double gflops[2], err_mean[2], err_max[2];
    for (int tiles = 1; tiles >= 0; --tiles) {
      ttt::kernels::set_tile_gemm_avx512(tiles == 1);
      std::vector<float> c(static_cast<size_t>(s.m) * s.n);
      auto call = [&] {
        ttt::kernels::tile_gemm(s.ta, s.tb, s.m, s.n, s.k, 1.0f, a.data(), lda, b.data(), ldb, 0.0f, c.data(), s.n);
      };
      call();
      double best = 1e300;
      for (int r = 0; r < repeats; ++r) {
        const auto t0 = Clock::now();
        call();
        best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
      }
      gflops[tiles] = 2.0 * s.m * s.n * double(s.k) / best * 1e-9;
      double sum = 0, mx = 0;
      int64_t count = 0;
      for (int i = 0; i < s.m; i += row_step)
        for (int j = 0; j < s.n; ++j) {
          const size_t x = size_t(i) * s.n + j;
          const double e = std::abs(double(c[x]) - ref[x]) / mag[x];
          sum += e;
          mx = std::max(mx, e);
          ++count;
        }
      err_mean[tiles] = sum / double(count);
      err_max[tiles] = mx;
    }
    ttt::kernels::set_tile_gemm_avx512(true);
    std::printf("| %s | %d x %d x %d | %.1f | %.1f | %.1e / %.1e | %.1e / %.1e |\n", s.what, s.m, s.n, s.k, gflops[1],
                gflops[0], err_mean[1], err_max[1], err_mean[0], err_max[0]);
  }
  return 0;
}
