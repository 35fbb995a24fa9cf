// Fused CPU attention kernels: fast paths against the O(Tq*Tk) reference, and the reference
// backward against central finite differences.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "backend/thread_pool.h"
#include "backend/cpu/attention_cpu.h"
#include "tensor/bf16.h"

namespace {

using ttt::AttentionShape;

AttentionShape make_shape(int64_t tq, int64_t tk, int64_t heads, int64_t dim, int64_t q_pos0,
                          int64_t k_pos0, int64_t window) {
  AttentionShape s;
  s.tq = tq;
  s.tk = tk;
  s.heads = heads;
  s.head_dim = dim;
  s.q_pos0 = q_pos0;
  s.k_pos0 = k_pos0;
  s.window = window;
  s.scale = 1.0 / std::sqrt(static_cast<double>(dim));
  return s;
}

template <class T>
std::vector<T> random_vec(size_t n, std::mt19937& gen, double stddev = 1.0) {
  std::normal_distribution<double> dist(0.0, stddev);
  std::vector<T> x(n);
  for (auto& e : x) e = static_cast<T>(dist(gen));
  return x;
}

// Largest |a - b| relative to max(max |b|, floor).
template <class T>
double rel_err(const std::vector<T>& a, const std::vector<T>& b, double floor = 1e-3) {
  double diff = 0, mag = floor;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
    mag = std::max(mag, std::abs(static_cast<double>(b[i])));
  }
  return diff / mag;
}

bool row_visible(const AttentionShape& s, int64_t i) {
  const int64_t p = s.q_pos0 + i;
  const int64_t hi = std::min(s.tk, p - s.k_pos0 + 1);
  const int64_t lo = s.window > 0 ? std::max<int64_t>(0, p - s.window + 1 - s.k_pos0) : 0;
  return hi > lo;
}

template <class T>
constexpr double tolerance() {
  return std::is_same_v<T, float> ? 2e-5 : 1e-12;
}

// Runs fast and reference forward + backward on random data and compares everything.
template <class T>
void check_against_reference(const AttentionShape& s, unsigned seed, double q_scale = 1.0) {
  SCOPED_TRACE(::testing::Message()
               << "tq=" << s.tq << " tk=" << s.tk << " H=" << s.heads << " D=" << s.head_dim
               << " q_pos0=" << s.q_pos0 << " k_pos0=" << s.k_pos0 << " window=" << s.window
               << " seed=" << seed << (std::is_same_v<T, float> ? " float" : " double"));
  std::mt19937 gen(seed);
  const size_t nq = static_cast<size_t>(s.tq * s.heads * s.head_dim);
  const size_t nk = static_cast<size_t>(s.tk * s.heads * s.head_dim);
  const size_t nl = static_cast<size_t>(s.heads * s.tq);
  const auto q = random_vec<T>(nq, gen, q_scale), k = random_vec<T>(nk, gen, q_scale);
  const auto v = random_vec<T>(nk, gen), dout = random_vec<T>(nq, gen);

  std::vector<T> o(nq, T(7)), lse(nl, T(7)), o_ref(nq), lse_ref(nl);
  ttt::kernels::attention_forward(s, q.data(), k.data(), v.data(), o.data(), lse.data());
  ttt::kernels::attention_forward_reference(s, q.data(), k.data(), v.data(), o_ref.data(),
                                            lse_ref.data());
  const double tol = tolerance<T>();
  EXPECT_LE(rel_err(o, o_ref, 1.0), tol);
  double lse_err = 0;
  for (int64_t h = 0; h < s.heads; ++h)
    for (int64_t i = 0; i < s.tq; ++i) {
      const size_t x = static_cast<size_t>(h * s.tq + i);
      if (!row_visible(s, i)) {
        EXPECT_TRUE(std::isinf(lse[x]) && lse[x] < 0) << "row " << i << " lse " << lse[x];
        EXPECT_TRUE(std::isinf(lse_ref[x]) && lse_ref[x] < 0);
        for (int64_t d = 0; d < s.head_dim; ++d)
          EXPECT_EQ(o[static_cast<size_t>((i * s.heads + h) * s.head_dim + d)], T(0));
      } else {
        lse_err = std::max(lse_err, std::abs(static_cast<double>(lse[x] - lse_ref[x])) /
                                        std::max(1.0, std::abs(static_cast<double>(lse_ref[x]))));
      }
    }
  EXPECT_LE(lse_err, tol);

  std::vector<T> dq(nq, T(7)), dk(nk, T(7)), dv(nk, T(7));
  std::vector<T> dq_ref(nq), dk_ref(nk), dv_ref(nk);
  ttt::kernels::attention_backward(s, q.data(), k.data(), v.data(), o.data(), lse.data(),
                                   dout.data(), dq.data(), dk.data(), dv.data());
  ttt::kernels::attention_backward_reference(s, q.data(), k.data(), v.data(), o_ref.data(),
                                             lse_ref.data(), dout.data(), dq_ref.data(),
                                             dk_ref.data(), dv_ref.data());
  // Gradients can vanish exactly (window 1: P = 1, dS = dP - dP), where float cancellation
  // leaves O(1e-7) noise: measure errors against at least 0.1, the natural gradient scale.
  EXPECT_LE(rel_err(dq, dq_ref, 0.1), 5 * tol);
  EXPECT_LE(rel_err(dk, dk_ref, 0.1), 5 * tol);
  EXPECT_LE(rel_err(dv, dv_ref, 0.1), 5 * tol);
  for (int64_t i = 0; i < s.tq; ++i) {
    if (row_visible(s, i)) continue;
    for (int64_t x = 0; x < s.heads * s.head_dim; ++x)
      EXPECT_EQ(dq[static_cast<size_t>(i * s.heads * s.head_dim + x)], T(0)) << "row " << i;
  }
  // Constant keys (k_grad_from): their dk, dv rows are zero, everything else as before (dq
  // exactly: its products do not change).
  for (int64_t from : {int64_t{1}, s.tk / 2, s.tk - 1}) {
    if (from <= 0 || from >= s.tk) continue;
    AttentionShape sc = s;
    sc.k_grad_from = from;
    std::vector<T> dq2(nq, T(7)), dk2(nk, T(7)), dv2(nk, T(7)), dk2_ref(nk), dv2_ref(nk), dq2_ref(nq);
    ttt::kernels::attention_backward(sc, q.data(), k.data(), v.data(), o.data(), lse.data(), dout.data(), dq2.data(),
                                     dk2.data(), dv2.data());
    ttt::kernels::attention_backward_reference(sc, q.data(), k.data(), v.data(), o_ref.data(), lse_ref.data(),
                                               dout.data(), dq2_ref.data(), dk2_ref.data(), dv2_ref.data());
    EXPECT_EQ(dq2, dq) << "k_grad_from " << from;
    const size_t cut = static_cast<size_t>(from * s.heads * s.head_dim);
    for (size_t x = 0; x < cut; ++x) {
      ASSERT_EQ(dk2[x], T(0)) << "k_grad_from " << from;
      ASSERT_EQ(dv2[x], T(0)) << "k_grad_from " << from;
    }
    EXPECT_LE(rel_err(dk2, dk2_ref, 0.1), 5 * tol) << "k_grad_from " << from;
    EXPECT_LE(rel_err(dv2, dv2_ref, 0.1), 5 * tol) << "k_grad_from " << from;
    const std::vector<T> dk_tail(dk.begin() + static_cast<std::ptrdiff_t>(cut), dk.end()),
        dk2_tail(dk2.begin() + static_cast<std::ptrdiff_t>(cut), dk2.end());
    EXPECT_LE(rel_err(dk2_tail, dk_tail, 0.1), 5 * tol) << "k_grad_from " << from;
  }
}

template <class T>
void check_both(const AttentionShape& s, unsigned seed) {
  check_against_reference<T>(s, seed);
}

template <class T>
class AttentionKernel : public ::testing::Test {};
using Types = ::testing::Types<float, double>;
TYPED_TEST_SUITE(AttentionKernel, Types);

TYPED_TEST(AttentionKernel, PlainCausal) {
  using T = TypeParam;
  for (int64_t tq : {1, 2, 7, 64, 129, 300}) check_both<T>(make_shape(tq, tq, 2, 16, 0, 0, 0), 1);
  check_both<T>(make_shape(257, 257, 3, 32, 1000, 1000, 0), 2);  // non-zero start position
}

TYPED_TEST(AttentionKernel, SlidingWindowSmallerThanTq) {
  using T = TypeParam;
  check_both<T>(make_shape(300, 300, 2, 16, 0, 0, 16), 3);
  check_both<T>(make_shape(257, 257, 1, 8, 0, 0, 1), 4);  // each query sees only itself
  check_both<T>(make_shape(200, 200, 2, 24, 50, 50, 130), 5);
}

TYPED_TEST(AttentionKernel, SlidingWindowLargerThanTq) {
  using T = TypeParam;
  check_both<T>(make_shape(100, 100, 2, 16, 0, 0, 500), 6);
  check_both<T>(make_shape(150, 350, 2, 16, 200, 0, 260), 7);  // window inside the cache
}

TYPED_TEST(AttentionKernel, KeyCache) {
  using T = TypeParam;
  // keys = [cache; chunk]: Tk = cache + Tq, k_pos0 = q_pos0 - cache.
  check_both<T>(make_shape(128, 256, 4, 16, 128, 0, 0), 8);
  check_both<T>(make_shape(128, 256, 4, 16, 128, 0, 128), 9);
  check_both<T>(make_shape(200, 300, 2, 32, 400, 300, 100), 10);
  check_both<T>(make_shape(130, 2600, 1, 8, 2470, 0, 0), 11);  // band longer than a key block
}

TYPED_TEST(AttentionKernel, FullyMaskedRows) {
  using T = TypeParam;
  // Queries far beyond all keys with a window: the later rows see nothing.
  check_both<T>(make_shape(150, 50, 2, 16, 100, 0, 60), 12);
  check_both<T>(make_shape(40, 50, 2, 16, 1000, 0, 60), 13);  // every row masked
  // Queries before all keys: causally nothing visible for the first rows.
  check_both<T>(make_shape(200, 100, 2, 16, 0, 150, 0), 14);
}

TYPED_TEST(AttentionKernel, TqNotMultipleOfTile) {
  using T = TypeParam;
  for (int64_t tq : {127, 129, 255, 383}) check_both<T>(make_shape(tq, tq + 37, 2, 8, 37, 0, 90), 15);
}

TYPED_TEST(AttentionKernel, HeadDims) {
  using T = TypeParam;
  unsigned seed = 16;
  for (int64_t d : {1, 2, 3, 17, 64, 100, 128})
    check_both<T>(make_shape(70, 90, 2, d, 20, 0, 50), seed++);
}

TYPED_TEST(AttentionKernel, Decode) {
  using T = TypeParam;
  check_both<T>(make_shape(1, 300, 4, 64, 299, 0, 0), 30);
  check_both<T>(make_shape(1, 300, 3, 32, 299, 0, 100), 31);
  check_both<T>(make_shape(1, 1, 2, 8, 0, 0, 0), 32);
}

TYPED_TEST(AttentionKernel, LargeScores) {
  using T = TypeParam;
  // Sharp softmax (scores of order 100): exercises the max subtraction.
  check_against_reference<T>(make_shape(150, 200, 2, 16, 50, 0, 120), 33, 10.0);
}

TYPED_TEST(AttentionKernel, RandomShapes) {
  using T = TypeParam;
  std::mt19937 gen(1234);
  for (int iter = 0; iter < 12; ++iter) {
    std::uniform_int_distribution<int64_t> tq_d(1, 300), cache_d(0, 200), h_d(1, 4), d_d(1, 48),
        w_d(0, 3);
    const int64_t tq = tq_d(gen), cache = cache_d(gen), heads = h_d(gen), dim = d_d(gen);
    const int64_t wsel = w_d(gen);
    const int64_t window = wsel == 0 ? 0 : std::uniform_int_distribution<int64_t>(1, 2 * tq)(gen);
    const int64_t q_pos0 = cache + std::uniform_int_distribution<int64_t>(0, 50)(gen);
    check_both<T>(make_shape(tq, cache + tq, heads, dim, q_pos0, q_pos0 - cache, window),
                  100 + static_cast<unsigned>(iter));
  }
}

// The backward fast path has two schedules (one item per head when the heads divide evenly
// over the threads, per-chunk dK/dV buffers otherwise); run both with 3 threads.
TYPED_TEST(AttentionKernel, ThreadCounts) {
  using T = TypeParam;
  const int saved = ttt::num_threads();
  for (int nt : {1, 3}) {
    ttt::set_num_threads(nt);
    check_both<T>(make_shape(600, 600, 1, 16, 0, 0, 0), 40);
    check_both<T>(make_shape(500, 800, 2, 16, 300, 0, 200), 41);
    check_both<T>(make_shape(400, 400, 4, 8, 0, 0, 0), 42);
  }
  ttt::set_num_threads(saved);
}

// Reference backward against central finite differences of L = sum(o * R), in double.
TEST(AttentionKernelReference, BackwardMatchesFiniteDifferences) {
  for (const auto& s : {make_shape(5, 9, 2, 3, 4, 0, 4), make_shape(6, 6, 1, 4, 0, 0, 0),
                        make_shape(4, 6, 2, 2, 6, 0, 3)}) {
    std::mt19937 gen(7);
    const size_t nq = static_cast<size_t>(s.tq * s.heads * s.head_dim);
    const size_t nk = static_cast<size_t>(s.tk * s.heads * s.head_dim);
    auto q = random_vec<double>(nq, gen), k = random_vec<double>(nk, gen),
         v = random_vec<double>(nk, gen);
    const auto R = random_vec<double>(nq, gen);
    std::vector<double> o(nq), lse(static_cast<size_t>(s.heads * s.tq));
    auto loss = [&] {
      ttt::kernels::attention_forward_reference(s, q.data(), k.data(), v.data(), o.data(),
                                                lse.data());
      double l = 0;
      for (size_t i = 0; i < nq; ++i) l += o[i] * R[i];
      return l;
    };
    loss();
    std::vector<double> dq(nq), dk(nk), dv(nk);
    ttt::kernels::attention_backward_reference(s, q.data(), k.data(), v.data(), o.data(),
                                               lse.data(), R.data(), dq.data(), dk.data(),
                                               dv.data());
    std::vector<double> dq2(nq), dk2(nk), dv2(nk);
    ttt::kernels::attention_backward(s, q.data(), k.data(), v.data(), o.data(), lse.data(),
                                     R.data(), dq2.data(), dk2.data(), dv2.data());
    auto numeric = [&](std::vector<double>& x, const std::vector<double>& grad, const char* name) {
      const double eps = 1e-6;
      for (size_t i = 0; i < x.size(); ++i) {
        const double x0 = x[i];
        x[i] = x0 + eps;
        const double lp = loss();
        x[i] = x0 - eps;
        const double lm = loss();
        x[i] = x0;
        EXPECT_NEAR(grad[i], (lp - lm) / (2 * eps), 1e-7) << name << "[" << i << "]";
      }
    };
    numeric(q, dq, "dq");
    numeric(k, dk, "dk");
    numeric(v, dv, "dv");
    EXPECT_LE(rel_err(dq2, dq), 1e-12);
    EXPECT_LE(rel_err(dk2, dk), 1e-12);
    EXPECT_LE(rel_err(dv2, dv), 1e-12);
  }
}

}  // namespace

namespace {

// --compute bf16 on AMX (attention_amx.cpp): against the float64 reference of the bf16-rounded
// q, k, v. The scores of rounded operands are exact products summed in float32; the
// probabilities are rounded to bf16 for the product with v (relative 2^-9 each), so o is within
// a few thousandths of max |v|, lse within float32 rounding. Bands over several key blocks,
// windows, offsets, rows that see no key, ragged tails.
TEST(AttentionKernelAmx, MatchesTheReferenceOfRoundedOperands) {
  const std::vector<std::vector<int64_t>> cases = {
      // tq, tk, heads, dim, q_pos0, k_pos0, window
      {100, 100, 2, 64, 0, 0, 0},   {70, 150, 3, 32, 80, 0, 40},  {48, 700, 2, 64, 652, 0, 600},
      {33, 40, 1, 64, 10, 15, 0},   {16, 16, 1, 32, 0, 0, 1},     {300, 1400, 2, 64, 1100, 0, 1024}};
  std::mt19937 gen(5);
  for (const auto& c : cases) {
    const auto s0 = make_shape(c[0], c[1], c[2], c[3], c[4], c[5], c[6]);
    auto s = s0;
    s.bf16_products = true;
    const int64_t ld = s.heads * s.head_dim;
    auto round = [](std::vector<float> x) {
      for (auto& e : x) e = ttt::bf16_to_float(ttt::float_to_bf16(e));
      return x;
    };
    const auto q = random_vec<float>(static_cast<size_t>(s.tq * ld), gen, 2.0);
    const auto k = random_vec<float>(static_cast<size_t>(s.tk * ld), gen, 2.0);
    const auto v = random_vec<float>(static_cast<size_t>(s.tk * ld), gen);
    std::vector<float> o(q.size(), -7.0f), lse(static_cast<size_t>(s.heads * s.tq), -7.0f);
    if (!ttt::kernels::attention_forward_amx(s, q.data(), k.data(), v.data(), o.data(), lse.data()))
      GTEST_SKIP() << "no AMX here (or TTT_NO_AMX)";
    const auto qr = round(q), kr = round(k), vr = round(v);
    std::vector<double> qd(qr.begin(), qr.end()), kd(kr.begin(), kr.end()), vd(vr.begin(), vr.end());
    std::vector<double> od(o.size()), lsed(lse.size());
    ttt::kernels::attention_forward_reference(s0, qd.data(), kd.data(), vd.data(), od.data(), lsed.data());
    double vmax = 0;
    for (float x : vr) vmax = std::max(vmax, std::fabs(static_cast<double>(x)));
    for (size_t i = 0; i < o.size(); ++i)
      ASSERT_NEAR(o[i], od[i], 6e-3 * vmax) << "o[" << i << "], case tq " << c[0] << " tk " << c[1];
    for (size_t i = 0; i < lse.size(); ++i) {
      if (std::isinf(lsed[i])) {
        EXPECT_TRUE(std::isinf(lse[i]) && lse[i] < 0) << "lse[" << i << "] should be -inf";
        continue;
      }
      ASSERT_NEAR(lse[i], lsed[i], 1e-4 * (1 + std::fabs(lsed[i]))) << "lse[" << i << "], case tq " << c[0];
    }
  }
}

TEST(AttentionKernelAmx, DeclinesWhatItDoesNotCover) {
  std::vector<float> x(16 * 2 * 128, 0.5f), o(x.size()), lse(64);
  auto s = make_shape(16, 16, 2, 16, 0, 0, 0);  // head_dim 16
  s.bf16_products = true;
  EXPECT_FALSE(ttt::kernels::attention_forward_amx(s, x.data(), x.data(), x.data(), o.data(), lse.data()));
  s = make_shape(8, 8, 2, 64, 0, 0, 0);  // fewer than 16 queries
  EXPECT_FALSE(ttt::kernels::attention_forward_amx(s, x.data(), x.data(), x.data(), o.data(), lse.data()));
}

}  // namespace

namespace {

// The same with a bf16 window cache (--kv-dtype bf16 under --compute bf16): the cache's rows as
// they are, the chunk's rounded; against the reference over the rows the kernel reads.
TEST(AttentionKernelAmx, ReadsABf16CacheAsItIs) {
  std::mt19937 gen(8);
  auto s = make_shape(40, 300, 2, 64, 260, 0, 256);
  const int64_t cached = 200, ld = s.heads * s.head_dim;
  const auto q = random_vec<float>(static_cast<size_t>(s.tq * ld), gen, 2.0);
  const auto kf = random_vec<float>(static_cast<size_t>(s.tk * ld), gen, 2.0);
  const auto vf = random_vec<float>(static_cast<size_t>(s.tk * ld), gen);
  // The cache holds other rows than kf, vf's first ones (which the kernel must not read).
  const auto kcf = random_vec<float>(static_cast<size_t>(cached * ld), gen, 2.0);
  const auto vcf = random_vec<float>(static_cast<size_t>(cached * ld), gen);
  std::vector<uint16_t> kc(kcf.size()), vc(vcf.size());
  for (size_t i = 0; i < kc.size(); ++i) {
    kc[i] = ttt::float_to_bf16(kcf[i]);
    vc[i] = ttt::float_to_bf16(vcf[i]);
  }
  std::vector<float> o(q.size()), lse(static_cast<size_t>(s.heads * s.tq));
  auto sb = s;
  sb.bf16_products = true;
  const ttt::kernels::Bf16CacheKV kv{kc.data(), vc.data(), cached, kf.data() + cached * ld, vf.data() + cached * ld};
  if (!ttt::kernels::attention_forward_amx(sb, q.data(), kv, o.data(), lse.data())) GTEST_SKIP() << "no AMX here";
  auto rounded = [](const std::vector<float>& x) {
    std::vector<double> d(x.size());
    for (size_t i = 0; i < x.size(); ++i) d[i] = ttt::bf16_to_float(ttt::float_to_bf16(x[i]));
    return d;
  };
  auto kd = rounded(kf), vd = rounded(vf);
  const auto qd = rounded(q), kcd = rounded(kcf), vcd = rounded(vcf);
  std::copy(kcd.begin(), kcd.end(), kd.begin());
  std::copy(vcd.begin(), vcd.end(), vd.begin());
  std::vector<double> od(o.size()), lsed(lse.size());
  ttt::kernels::attention_forward_reference(s, qd.data(), kd.data(), vd.data(), od.data(), lsed.data());
  double vmax = 0;
  for (double x : vd) vmax = std::max(vmax, std::fabs(x));
  for (size_t i = 0; i < o.size(); ++i) ASSERT_NEAR(o[i], od[i], 6e-3 * vmax) << "o[" << i << "]";
  for (size_t i = 0; i < lse.size(); ++i) ASSERT_NEAR(lse[i], lsed[i], 1e-4 * (1 + std::fabs(lsed[i]))) << "lse[" << i << "]";
}

// Keys and values packed once per run of query tiles (PackedKV) against every tile packing its
// own band: the same bits in the forward and the backward. Windows, a chunk after a cache of
// keys, query counts off the 128-row tiles, head counts that are and are not multiples of the
// threads, head sizes off the 64-column panels, and a band longer than one packing holds.
TEST(AttentionKernelPacking, PackedKeysChangeNoBit) {
  struct Case {
    int64_t tq, tk, heads, dim, q_pos0, k_pos0, window;
  };
  const Case cases[] = {{1000, 1000, 4, 64, 0, 0, 300},  {256, 1280, 4, 64, 1024, 0, 1024},
                        {300, 300, 3, 32, 0, 0, 0},      {200, 650, 2, 80, 450, 0, 257},
                        {130, 16600, 1, 64, 16470, 0, 0},  {129, 129, 1, 16, 0, 0, 64},
                        {2000, 2000, 2, 64, 0, 0, 256}};
  const int saved = ttt::num_threads();
  for (int nt : {1, 2, 3})
    for (const Case& c : cases) {
      SCOPED_TRACE(::testing::Message() << "threads " << nt << " tq " << c.tq << " tk " << c.tk << " H " << c.heads
                                        << " D " << c.dim << " window " << c.window);
      ttt::set_num_threads(nt);
      const auto s = make_shape(c.tq, c.tk, c.heads, c.dim, c.q_pos0, c.k_pos0, c.window);
      std::mt19937 gen(static_cast<unsigned>(c.tq * 7 + c.dim));
      const int64_t ld = c.heads * c.dim;
      const auto q = random_vec<float>(static_cast<size_t>(c.tq * ld), gen, 2.0);
      const auto k = random_vec<float>(static_cast<size_t>(c.tk * ld), gen, 2.0);
      const auto v = random_vec<float>(static_cast<size_t>(c.tk * ld), gen);
      const auto dout = random_vec<float>(static_cast<size_t>(c.tq * ld), gen);
      std::vector<float> out[2][6];
      for (int packed = 0; packed < 2; ++packed) {
        ttt::kernels::set_attention_key_packing(packed == 1);
        auto& r = out[packed];
        r[0].assign(q.size(), 0.0f);
        r[1].assign(static_cast<size_t>(c.heads * c.tq), 0.0f);
        r[2].assign(q.size(), 0.0f);
        r[3].assign(k.size(), 0.0f);
        r[4].assign(v.size(), 0.0f);
        ttt::kernels::attention_forward(s, q.data(), k.data(), v.data(), r[0].data(), r[1].data());
        ttt::kernels::attention_backward(s, q.data(), k.data(), v.data(), r[0].data(), r[1].data(), dout.data(),
                                         r[2].data(), r[3].data(), r[4].data());
      }
      ttt::kernels::set_attention_key_packing(true);
      const char* names[] = {"o", "lse", "dq", "dk", "dv"};
      for (int t = 0; t < 5; ++t)
        for (size_t x = 0; x < out[0][t].size(); ++x)
          ASSERT_EQ(std::memcmp(&out[0][t][x], &out[1][t][x], sizeof(float)), 0)
              << names[t] << "[" << x << "]: " << out[0][t][x] << " unpacked, " << out[1][t][x] << " packed";
    }
  ttt::set_num_threads(saved);
}

}  // namespace
