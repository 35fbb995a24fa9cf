// Times the fused CPU attention kernels on the TTT-E2E training shape and compares them with
// the machine's sgemm rate measured in the same run.
//
// Shape: a chunk of Tq = 1024 queries attending, with a sliding window of 1024, to keys
// [cache of the 1024 previous tokens; the chunk itself] (Tk = 2048, k_pos0 = q_pos0 - 1024),
// H = 4 heads of head_dim D = 64, float32.
//
// Only useful FLOPs are counted, per visible (query, key) pair:
//   forward  = 2 GEMM-equivalents (S = Q K^T, O = P V)               = 4 * D flops,
//   backward = 5 GEMM-equivalents (S again, dP, dV, dQ, dK)           = 10 * D flops.
// Masked pairs a kernel computes anyway, exponentials and row reductions are not counted.
//
// Usage: attention_bench [repeats]   (timings are the best of `repeats` runs; default 20)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "backend/cpu/blas.h"
#include "backend/thread_pool.h"
#include "backend/cpu/attention_cpu.h"

namespace {

using Clock = std::chrono::steady_clock;

template <class F>
double best_seconds(int repeats, const F& fn) {
  fn();  // warm-up: scratch buffers, page faults, BLAS initialization
  double best = 1e30;
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = Clock::now();
    fn();
    const auto t1 = Clock::now();
    best = std::min(best, std::chrono::duration<double>(t1 - t0).count());
  }
  return best;
}

std::vector<float> random_vector(size_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> x(n);
  for (auto& e : x) e = dist(gen);
  return x;
}

}  // namespace

int main(int argc, char** argv) {
  const int repeats = argc > 1 ? std::max(1, std::atoi(argv[1])) : 20;
  const auto& bi = ttt::blas::info();
  std::printf("BLAS: %s, core %s (%s); threads %d (the pool, shared by BLAS products)\n",
              bi.library.c_str(), bi.core.c_str(), bi.how.c_str(), ttt::num_threads());

  // sgemm 1024^3 split over the pool.
  const int n = 1024;
  const auto a = random_vector(size_t(n) * n, 1), b = random_vector(size_t(n) * n, 2);
  std::vector<float> c(size_t(n) * n);
  const double t_gemm = best_seconds(repeats, [&] {
    ttt::blas::gemm(ttt::blas::Trans::No, ttt::blas::Trans::No, n, n, n, 1.0f, a.data(), n,
                    b.data(), n, 0.0f, c.data(), n);
  });
  const double gemm_gflops = 2.0 * n * n * n / t_gemm * 1e-9;

  ttt::AttentionShape s;
  s.tq = 1024;
  s.tk = 2048;
  s.heads = 4;
  s.head_dim = 64;
  s.q_pos0 = 1024;
  s.k_pos0 = 0;
  s.window = 1024;
  s.scale = 1.0 / 8.0;
  const size_t nq = size_t(s.tq * s.heads * s.head_dim), nk = size_t(s.tk * s.heads * s.head_dim);
  const auto q = random_vector(nq, 3), k = random_vector(nk, 4), v = random_vector(nk, 5);
  const auto dout = random_vector(nq, 6);
  std::vector<float> o(nq), lse(size_t(s.heads * s.tq)), dq(nq), dk(nk), dv(nk);

  int64_t visible = 0;  // visible (query, key) pairs per head
  for (int64_t i = 0; i < s.tq; ++i) {
    const int64_t p = s.q_pos0 + i;
    const int64_t hi = std::min(s.tk, p - s.k_pos0 + 1);
    const int64_t lo = std::max<int64_t>(0, p - s.window + 1 - s.k_pos0);
    visible += std::max<int64_t>(0, hi - lo);
  }
  const double pairs = double(visible) * double(s.heads);
  const double fwd_flops = pairs * 4.0 * double(s.head_dim);
  const double bwd_flops = pairs * 10.0 * double(s.head_dim);

  const double t_fwd = best_seconds(repeats, [&] {
    ttt::kernels::attention_forward(s, q.data(), k.data(), v.data(), o.data(), lse.data());
  });
  const double t_bwd = best_seconds(repeats, [&] {
    ttt::kernels::attention_backward(s, q.data(), k.data(), v.data(), o.data(), lse.data(),
                                     dout.data(), dq.data(), dk.data(), dv.data());
  });
  const double fwd_gflops = fwd_flops / t_fwd * 1e-9, bwd_gflops = bwd_flops / t_bwd * 1e-9;

  std::printf("shape: Tq=%lld Tk=%lld (cache %lld) H=%lld D=%lld window=%lld, float32\n",
              (long long)s.tq, (long long)s.tk, (long long)(s.q_pos0 - s.k_pos0),
              (long long)s.heads, (long long)s.head_dim, (long long)s.window);
  std::printf("visible pairs: %.0f (%.1f%% of Tq x Tk x H)\n", pairs,
              100.0 * pairs / (double(s.tq) * double(s.tk) * double(s.heads)));
  std::printf("sgemm 1024^3        : %8.3f ms  %7.1f GFLOP/s\n", t_gemm * 1e3, gemm_gflops);
  std::printf("attention forward   : %8.3f ms  %7.1f GFLOP/s  (%5.1f%% of sgemm)\n", t_fwd * 1e3,
              fwd_gflops, 100.0 * fwd_gflops / gemm_gflops);
  std::printf("attention backward  : %8.3f ms  %7.1f GFLOP/s  (%5.1f%% of sgemm)\n", t_bwd * 1e3,
              bwd_gflops, 100.0 * bwd_gflops / gemm_gflops);
  std::printf("checksum: %g\n", double(o[17] + dq[5] + dk[123] + dv[77]));
  return 0;
}
