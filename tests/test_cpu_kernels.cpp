// CPU backend kernels at the edges: large |x| for exp / sigmoid / silu and its derivatives,
// extreme softmax and cross-entropy logits, fully masked attention rows, sum_to on odd shapes
// (every reduction layout), rope at large positions, and bitwise determinism across thread counts.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "autodiff/ops.h"
#include "backend/backend.h"
#include "backend/thread_pool.h"
#include "backend/cpu/attention_cpu.h"
#include "backend/cpu/fused_cpu.h"
#include "backend/cpu/vec_math.h"

namespace ttt {
namespace {

std::vector<double> random_values(size_t n, uint32_t seed, double stddev = 1.0) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> dist(0.0, stddev);
  std::vector<double> v(n);
  for (auto& e : v) e = dist(gen);
  return v;
}

// Inputs spanning the whole range, an odd count so the vector tails run too.
std::vector<double> edge_inputs() {
  return {-1e30, -1e4, -1000, -745, -709, -708, -200, -100, -88.7, -87.5, -87, -50, -20, -1, -1e-3, 0,
          1e-3,  1,    20,    50,   87,   88,   88.3, 100,  200,   700,   709, 1000, 1e4, 1e30, -3, 3, 0.5};
}

double sigmoid_ref(double x) { return x >= 0 ? 1 / (1 + std::exp(-x)) : std::exp(x) / (1 + std::exp(x)); }
double silu_deriv_ref(int k, double x) {
  const double s = sigmoid_ref(x);
  switch (k) {
    case 0: return x * s;
    case 1: return s * (1 + x * (1 - s));
    case 2: return s * (1 - s) * (2 + x * (1 - 2 * s));
    default: return s * (1 - s) * (3 * (1 - 2 * s) + x * (1 - 6 * s + 6 * s * s));
  }
}

template <class T>
void check_silu_family() {
  const std::vector<double> xd = edge_inputs();
  std::vector<T> x(xd.begin(), xd.end()), y(x.size());
  const double tol = sizeof(T) == 4 ? 1e-6 : 1e-13;
  for (int k = 0; k <= 3; ++k) {
    vec::vsilu_deriv(k, x.data(), y.data(), static_cast<int64_t>(x.size()));
    for (size_t i = 0; i < x.size(); ++i) {
      const double ref = silu_deriv_ref(k, static_cast<double>(x[i]));
      ASSERT_TRUE(std::isfinite(y[i])) << "order " << k << " x=" << x[i];
      EXPECT_NEAR(y[i], ref, tol * std::max(1.0, std::fabs(ref))) << "order " << k << " x=" << x[i];
    }
  }
  vec::vsigmoid(x.data(), y.data(), static_cast<int64_t>(x.size()));
  for (size_t i = 0; i < x.size(); ++i) {
    ASSERT_TRUE(y[i] >= 0 && y[i] <= 1) << "x=" << x[i];
    EXPECT_NEAR(y[i], sigmoid_ref(static_cast<double>(x[i])), tol) << "x=" << x[i];
  }
}

TEST(CpuKernels, SiluFamilyFiniteForLargeMagnitudes) {
  check_silu_family<float>();
  check_silu_family<double>();
}

TEST(CpuKernels, ExpSigmoidSiluOpsAtLargeMagnitudes) {
  for (DType dt : {DType::F32, DType::F64}) {
    const std::vector<double> xd = edge_inputs();
    const Tensor x = from_vector(xd, {static_cast<int64_t>(xd.size())}, dt);
    const std::vector<double> xs = x.to_vector();  // as rounded to the dtype
    const std::vector<double> sg = sigmoid(x).to_vector(), sl = silu(x).to_vector(), ex = exp(x).to_vector();
    const double overflow = dt == DType::F32 ? 88.72 : 709.78;
    const double tol = dt == DType::F32 ? 1e-6 : 1e-13;
    for (size_t i = 0; i < xs.size(); ++i) {
      EXPECT_NEAR(sg[i], sigmoid_ref(xs[i]), tol) << "x=" << xs[i];
      EXPECT_TRUE(std::isfinite(sl[i])) << "x=" << xs[i];
      EXPECT_NEAR(sl[i], silu_deriv_ref(0, xs[i]), tol * std::max(1.0, std::fabs(xs[i]))) << "x=" << xs[i];
      if (xs[i] > overflow) {
        EXPECT_EQ(ex[i], std::numeric_limits<double>::infinity()) << "x=" << xs[i];
      } else {
        ASSERT_TRUE(std::isfinite(ex[i])) << "x=" << xs[i];
        const double ref = std::exp(xs[i]);
        const double floor = dt == DType::F32 ? 1e-37 : 1e-306;  // flushed denormals
        EXPECT_NEAR(ex[i], ref, 4 * tol * ref + floor) << "x=" << xs[i];
      }
    }
    // the documented extremes
    const Tensor big = from_vector({-100.0, 100.0}, {2}, dt);
    const std::vector<double> s = sigmoid(big).to_vector(), l = silu(big).to_vector();
    EXPECT_LT(s[0], 1e-30);
    EXPECT_EQ(s[1], 1.0);
    EXPECT_LE(std::fabs(l[0]), 1e-30);
    EXPECT_EQ(l[1], 100.0);
  }
}

std::vector<double> softmax_ref(const std::vector<double>& row) {
  double mx = -std::numeric_limits<double>::infinity();
  for (double v : row) mx = std::max(mx, v);
  std::vector<double> out(row.size(), 0.0);
  if (mx == -std::numeric_limits<double>::infinity()) return out;
  double sum = 0;
  for (size_t i = 0; i < row.size(); ++i) sum += out[i] = std::exp(row[i] - mx);
  for (auto& e : out) e /= sum;
  return out;
}

TEST(CpuKernels, SoftmaxExtremeLogits) {
  const double inf = std::numeric_limits<double>::infinity();
  const std::vector<std::vector<double>> rows = {
      {1000, -1000, 0, 999, 998.5, -1e30, 1e3, 3},
      {-1e30, -1e30, -1e30, -1e30, -1e30, -1e30, -1e30, -1e30},
      {80, 80, 80, 80, 80, 80, 80, 80},
      {-inf, -inf, 5, -inf, -inf, -inf, -inf, -inf},
      {-inf, -inf, -inf, -inf, -inf, -inf, -inf, -inf},  // nothing finite: zeros
      {1e30, 0, 0, 0, 0, 0, 0, -1e30},
  };
  for (DType dt : {DType::F32, DType::F64}) {
    std::vector<double> flat;
    for (auto& r : rows) flat.insert(flat.end(), r.begin(), r.end());
    const Tensor x = from_vector(flat, {static_cast<int64_t>(rows.size()), 8}, dt);
    const std::vector<double> xs = x.to_vector(), y = softmax(x).to_vector();
    for (size_t r = 0; r < rows.size(); ++r) {
      const std::vector<double> ref = softmax_ref(std::vector<double>(xs.begin() + r * 8, xs.begin() + (r + 1) * 8));
      for (size_t j = 0; j < 8; ++j) {
        ASSERT_TRUE(std::isfinite(y[r * 8 + j])) << "row " << r;
        EXPECT_NEAR(y[r * 8 + j], ref[j], 1e-6) << "row " << r << " col " << j;
      }
    }
  }
  // A long row (several accumulation blocks) with a wide spread of logits.
  const Tensor xl = from_vector(random_values(5000, 11, 30.0), {1, 5000}, DType::F32);
  const std::vector<double> v = xl.to_vector();  // the float32 logits
  const std::vector<double> ref = softmax_ref(v);
  const std::vector<double> y = softmax(xl).to_vector();
  double total = 0;
  for (size_t j = 0; j < v.size(); ++j) {
    EXPECT_NEAR(y[j], ref[j], 1e-6 * std::max(1e-3, ref[j]) + 1e-12);
    total += y[j];
  }
  EXPECT_NEAR(total, 1.0, 1e-5);
}

// Per-element reference of the masked softmax (kernels/attention.h visibility rule).
std::vector<double> masked_softmax_ref(const std::vector<double>& x, const AttentionShape& s, int64_t heads) {
  std::vector<double> out(x.size(), 0.0);
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t i = 0; i < s.tq; ++i) {
      const int64_t p = s.q_pos0 + i;
      const double* row = &x[(h * s.tq + i) * s.tk];
      double mx = -std::numeric_limits<double>::infinity();
      auto vis = [&](int64_t j) {
        const int64_t q = s.k_pos0 + j;
        return q <= p && (s.window == 0 || q > p - s.window);
      };
      for (int64_t j = 0; j < s.tk; ++j)
        if (vis(j)) mx = std::max(mx, row[j]);
      if (mx == -std::numeric_limits<double>::infinity()) continue;
      double sum = 0;
      for (int64_t j = 0; j < s.tk; ++j)
        if (vis(j)) sum += std::exp(row[j] - mx);
      for (int64_t j = 0; j < s.tk; ++j)
        if (vis(j)) out[(h * s.tq + i) * s.tk + j] = std::exp(row[j] - mx) / sum;
    }
  return out;
}

TEST(CpuKernels, MaskedSoftmaxFullyMaskedRowsAndWindows) {
  struct Case {
    int64_t tq, tk, q_pos0, k_pos0, window;
  };
  // k_pos0 > q_pos0: the first queries see no key at all; windows cut rows at both ends.
  const std::vector<Case> cases = {{5, 7, 0, 2, 0}, {6, 6, 0, 0, 2}, {4, 9, 5, 0, 3},
                                   {3, 4, 0, 10, 0}, {7, 20, 13, 0, 0}, {5, 40, 30, 3, 17}};
  for (const Case& c : cases) {
    AttentionShape s;
    s.tq = c.tq;
    s.tk = c.tk;
    s.heads = 2;
    s.head_dim = 4;
    s.q_pos0 = c.q_pos0;
    s.k_pos0 = c.k_pos0;
    s.window = c.window;
    s.scale = 0.5;
    std::vector<double> x = random_values(static_cast<size_t>(2 * c.tq * c.tk), 3, 4.0);
    x[1] = 500;  // an extreme logit (masked or not, depending on the case)
    const std::vector<double> ref = masked_softmax_ref(x, s, 2);
    for (DType dt : {DType::F32, DType::F64}) {
      const std::vector<double> y = masked_softmax(from_vector(x, {2, c.tq, c.tk}, dt), s).to_vector();
      for (size_t i = 0; i < y.size(); ++i) {
        if (ref[i] == 0) {
          EXPECT_EQ(y[i], 0.0) << "case tq=" << c.tq << " k_pos0=" << c.k_pos0 << " index " << i;
        } else {
          EXPECT_NEAR(y[i], ref[i], dt == DType::F32 ? 1e-6 : 1e-14) << "index " << i;
        }
      }
    }
  }
}

TEST(CpuKernels, CrossEntropyExtremeLogits) {
  const std::vector<double> logits = {50,  -50, 0,     80,  // target 1: nll ~ 130
                                      -1e4, -1e4, -1e4, -1e4,
                                      1e4, -1e4, 0, 1e4,
                                      88, 87, -87, -88};
  const std::vector<int32_t> tg = {1, 2, 0, 3};
  for (DType dt : {DType::F32, DType::F64}) {
    const Tensor x = from_vector(logits, {4, 4}, dt);
    const std::vector<double> xs = x.to_vector(), nll = cross_entropy(x, tg).to_vector();
    for (int r = 0; r < 4; ++r) {
      double mx = -1e300, sum = 0;
      for (int j = 0; j < 4; ++j) mx = std::max(mx, xs[r * 4 + j]);
      for (int j = 0; j < 4; ++j) sum += std::exp(xs[r * 4 + j] - mx);
      const double ref = std::log(sum) + mx - xs[r * 4 + tg[r]];
      ASSERT_TRUE(std::isfinite(nll[r])) << "row " << r;
      EXPECT_NEAR(nll[r], ref, 1e-6 * std::max(1.0, std::fabs(ref))) << "row " << r;
    }
  }
  // Long rows (several accumulation blocks): float32 within 1e-5 of float64.
  const int64_t rows = 3, v = 7001;
  const std::vector<double> big = random_values(static_cast<size_t>(rows * v), 5, 5.0);
  const std::vector<int32_t> t2 = {0, 3500, 7000};
  const std::vector<double> a = cross_entropy(from_vector(big, {rows, v}, DType::F32), t2).to_vector();
  const std::vector<double> b = cross_entropy(from_vector(big, {rows, v}, DType::F64), t2).to_vector();
  for (int64_t r = 0; r < rows; ++r) EXPECT_NEAR(a[r], b[r], 1e-5 * std::max(1.0, std::fabs(b[r])));
}

// Reference sum_to in double.
std::vector<double> sum_to_ref(const std::vector<double>& x, const Shape& xs, const Shape& ys) {
  int64_t m = 1;
  for (int64_t e : ys) m *= e;
  std::vector<double> out(m, 0.0);
  const int64_t rank = static_cast<int64_t>(xs.size());
  for (size_t i = 0; i < x.size(); ++i) {
    int64_t rem = static_cast<int64_t>(i), off = 0, stride = 1;
    for (int64_t d = rank - 1; d >= 0; --d) {
      const int64_t idx = rem % xs[d];
      rem /= xs[d];
      if (ys[d] != 1) off += idx * stride;
      stride *= ys[d];
    }
    out[off] += x[i];
  }
  return out;
}

TEST(CpuKernels, SumToOddShapes) {
  const std::vector<std::pair<Shape, Shape>> cases = {
      {{7, 13}, {1, 13}},          {{13, 7}, {13, 1}},         {{3, 5, 7}, {3, 1, 7}},
      {{3, 5, 7}, {1, 5, 1}},      {{3, 5, 7}, {1, 1, 7}},     {{3, 5, 7}, {3, 1, 1}},
      {{300, 37}, {1, 37}},        {{2, 601, 3}, {2, 1, 3}},   {{1, 513, 1, 2050}, {1, 1, 1, 2050}},
      {{3, 2100}, {3, 1}},         {{5001}, {1}},              {{40001}, {1}},
      {{2, 1, 3, 1}, {1, 1, 3, 1}}, {{1, 1}, {1, 1}},           {{4, 1, 6}, {4, 1, 1}},
      {{5, 3, 2, 7}, {5, 1, 1, 7}},
  };
  for (const auto& [xs, ys] : cases) {
    int64_t n = 1;
    for (int64_t e : xs) n *= e;
    const std::vector<double> x = random_values(static_cast<size_t>(n), static_cast<uint32_t>(n));
    const std::vector<double> ref = sum_to_ref(x, xs, ys);
    for (DType dt : {DType::F32, DType::F64}) {
      const Tensor t = from_vector(x, xs, dt);
      const std::vector<double> y = sum_to(t, ys).to_vector();
      ASSERT_EQ(y.size(), ref.size());
      // float: inputs rounded to float (relative 6e-8 each) plus the float partial sums
      const double tol = dt == DType::F32 ? 2e-5 : 1e-11;
      for (size_t j = 0; j < y.size(); ++j)
        EXPECT_NEAR(y[j], ref[j], tol * std::sqrt(static_cast<double>(n / static_cast<int64_t>(ref.size())) + 1))
            << "x " << ::testing::PrintToString(xs) << " -> " << ::testing::PrintToString(ys) << " at " << j;
    }
  }
}

TEST(CpuKernels, RopeAtLargePositionsMatchesDirectAngles) {
  const int64_t t = 150, h = 3, d = 10;
  const double theta = 10000.0;
  for (int64_t pos0 : {int64_t{0}, int64_t{5}, int64_t{63}, int64_t{1000}, int64_t{123457}}) {
    const std::vector<double> x = random_values(static_cast<size_t>(t * h * d), 9);
    for (bool inverse : {false, true}) {
      const std::vector<double> y = rope(from_vector(x, {t, h, d}, DType::F64), pos0, theta, inverse).to_vector();
      double err = 0;
      for (int64_t p = 0; p < t; ++p)
        for (int64_t hh = 0; hh < h; ++hh)
          for (int64_t i = 0; i < d / 2; ++i) {
            const double ang = static_cast<double>(pos0 + p) * std::pow(theta, -2.0 * i / d);
            const double c = std::cos(ang), s = inverse ? -std::sin(ang) : std::sin(ang);
            const int64_t o = (p * h + hh) * d + 2 * i;
            err = std::max(err, std::fabs(y[o] - (x[o] * c - x[o + 1] * s)));
            err = std::max(err, std::fabs(y[o + 1] - (x[o] * s + x[o + 1] * c)));
          }
      // angle rounding alone is ~1e-16 * angle
      EXPECT_LT(err, 1e-12 + 1e-15 * static_cast<double>(pos0 + t)) << "pos0 " << pos0;
    }
  }
}

// Restores the pool size on scope exit.
struct ThreadCountGuard {
  int saved = num_threads();
  ~ThreadCountGuard() { set_num_threads(saved); }
};

std::vector<std::vector<double>> run_all_kernels() {
  std::vector<std::vector<double>> out;
  const Tensor a = from_vector(random_values(257 * 1003, 21, 3.0), {257, 1003}, DType::F32);
  const Tensor w = from_vector(random_values(1003, 22), {1003}, DType::F32);
  const std::vector<int32_t> tg = [] {
    std::vector<int32_t> t(257);
    for (int i = 0; i < 257; ++i) t[i] = (i * 37) % 1003;
    return t;
  }();
  out.push_back(softmax(a).to_vector());
  out.push_back(cross_entropy(a, tg).to_vector());
  out.push_back(silu(a).to_vector());
  out.push_back(sigmoid(a).to_vector());
  out.push_back(exp(a).to_vector());
  out.push_back(rmsnorm(a, w, 1e-6).to_vector());
  out.push_back(sum_to(a, {1, 1003}).to_vector());
  out.push_back(sum_to(a, {257, 1}).to_vector());
  out.push_back(sum_to(a, {1, 1}).to_vector());
  out.push_back(sum_to(reshape(a, {257, 17, 59}), {257, 1, 59}).to_vector());
  out.push_back(rope(reshape(contiguous(slice(a, 1, 0, 1000)), {257, 25, 40}), 7, 10000.0).to_vector());
  AttentionShape s;
  s.tq = 257;
  s.tk = 1003;
  s.heads = 1;
  s.head_dim = 8;
  s.q_pos0 = 700;
  s.k_pos0 = 0;
  s.window = 300;
  s.scale = 1.0;
  out.push_back(masked_softmax(reshape(a, {1, 257, 1003}), s).to_vector());
  return out;
}

// Same-shape contiguous operands take a flat loop (an AVX-512 copy where the CPU has it): one
// IEEE operation per element, so the bits of the plain float arithmetic, for all four ops.
TEST(CpuKernels, FlatBinaryOpsRoundAsThePlainOperation) {
  const int64_t rows = 37, cols = 1001;  // vector tails, several pieces of the pool
  const std::vector<double> ad = random_values(rows * cols, 21), bd = random_values(rows * cols, 22);
  const Tensor a = from_vector(ad, {rows, cols}, DType::F32), b = from_vector(bd, {rows, cols}, DType::F32);
  const std::vector<double> got[4] = {add(a, b).to_vector(), sub(a, b).to_vector(), mul(a, b).to_vector(),
                                      div(a, b).to_vector()};
  for (size_t i = 0; i < ad.size(); ++i) {
    const float x = static_cast<float>(ad[i]), y = static_cast<float>(bd[i]);
    const float want[4] = {x + y, x - y, x * y, x / y};
    for (int op = 0; op < 4; ++op)
      ASSERT_EQ(static_cast<float>(got[op][i]), want[op]) << "op " << op << " element " << i;
  }
}

TEST(CpuKernels, ResultsIndependentOfThreadCount) {
  ThreadCountGuard guard;
  set_num_threads(1);
  const auto one = run_all_kernels();
  set_num_threads(2);
  const auto two = run_all_kernels();
  set_num_threads(3);
  const auto three = run_all_kernels();
  ASSERT_EQ(one.size(), two.size());
  for (size_t k = 0; k < one.size(); ++k) {
    ASSERT_EQ(one[k].size(), two[k].size());
    EXPECT_EQ(0, std::memcmp(one[k].data(), two[k].data(), one[k].size() * sizeof(double))) << "kernel " << k;
    EXPECT_EQ(0, std::memcmp(one[k].data(), three[k].data(), one[k].size() * sizeof(double))) << "kernel " << k;
  }
}

}  // namespace
}  // namespace ttt

// rmsnorm_backward's elementwise loops run in an AVX-512 copy where the CPU has it; it rounds
// each product and sum as the plain loops (below, compiled for the baseline) do, so the result
// is bit for bit the same on every CPU.
TEST(CpuKernels, RmsnormBackwardRoundsAsThePlainLoops) {
  std::mt19937 gen(11);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  for (int64_t n : {int64_t{1}, int64_t{17}, int64_t{256}, int64_t{771}}) {
    const int64_t rows = 37;
    std::vector<float> x(static_cast<size_t>(rows * n)), g(x.size()), w(static_cast<size_t>(n));
    for (auto& e : x) e = dist(gen);
    for (auto& e : g) e = dist(gen);
    for (auto& e : w) e = 1.0f + 0.1f * dist(gen);
    const double eps = 1e-6;
    std::vector<float> dx(x.size()), dw(w.size());
    ttt::kernels::rmsnorm_backward(x.data(), w.data(), g.data(), rows, n, eps, dx.data(), dw.data());
    // The plain loops, with the kernel's fixed split of the rows for dw.
    const int64_t pieces = std::min<int64_t>(16, rows);
    std::vector<double> partial(static_cast<size_t>(pieces * n), 0.0);
    std::vector<float> ref_dx(x.size()), ref_dw(w.size()), gw(static_cast<size_t>(n));
    for (int64_t p = 0; p < pieces; ++p)
      for (int64_t r = rows * p / pieces; r < rows * (p + 1) / pieces; ++r) {
        const float* xr = x.data() + r * n;
        const float* gr = g.data() + r * n;
        const double ss = ttt::vec::vdot(xr, xr, n);
        const double rstd = 1.0 / std::sqrt(ss / n + eps);
        for (int64_t i = 0; i < n; ++i) gw[i] = gr[i] * w[i];
        const double proj = ttt::vec::vdot(gw.data(), xr, n) / n;
        const float a = static_cast<float>(rstd), c = static_cast<float>(rstd * rstd * rstd * proj);
        for (int64_t i = 0; i < n; ++i) ref_dx[r * n + i] = a * gw[i] - c * xr[i];
        for (int64_t i = 0; i < n; ++i) partial[p * n + i] += static_cast<double>(gr[i]) * xr[i] * rstd;
      }
    for (int64_t i = 0; i < n; ++i) {
      double s = 0;
      for (int64_t p = 0; p < pieces; ++p) s += partial[p * n + i];
      ref_dw[i] = static_cast<float>(s);
    }
    EXPECT_EQ(std::memcmp(dx.data(), ref_dx.data(), dx.size() * sizeof(float)), 0) << "n " << n;
    EXPECT_EQ(std::memcmp(dw.data(), ref_dw.data(), dw.size() * sizeof(float)), 0) << "n " << n;
  }
}

// vsilu_pair (silu_mul_backward's one exponential for silu and silu') gives vsilu's and
// vsilu_deriv(1)'s bits, including vector tails and large magnitudes.
template <class T>
void check_silu_pair(const std::vector<T>& x) {
  const int64_t n = static_cast<int64_t>(x.size());
  std::vector<T> p0(x.size()), p1(x.size()), s0(x.size()), s1(x.size());
  ttt::vec::vsilu_pair(x.data(), p0.data(), p1.data(), n);
  ttt::vec::vsilu(x.data(), s0.data(), n);
  ttt::vec::vsilu_deriv(1, x.data(), s1.data(), n);
  EXPECT_EQ(std::memcmp(p0.data(), s0.data(), x.size() * sizeof(T)), 0) << "n " << n << " bytes " << sizeof(T);
  EXPECT_EQ(std::memcmp(p1.data(), s1.data(), x.size() * sizeof(T)), 0) << "n " << n << " bytes " << sizeof(T);
}

TEST(CpuKernels, SiluPairEqualsSiluAndItsDerivative) {
  std::mt19937 gen(5);
  std::normal_distribution<double> dist(0.0, 4.0);
  for (int64_t n : {int64_t{1}, int64_t{15}, int64_t{16}, int64_t{1000}}) {
    std::vector<float> xf(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) xf[i] = static_cast<float>(i % 7 == 3 ? 120.0 * dist(gen) : dist(gen));
    check_silu_pair(xf);
    check_silu_pair(std::vector<double>(xf.begin(), xf.end()));
  }
}

// The TTT_WIDE_LOOP copies (vec_math.h) of loops where contraction into FMAs could change a
// result (a * b - c * d, a * b + c * e) round as the plain loops below, compiled for the
// baseline, do: rotary embedding and AdamW, bit for bit.
TEST(CpuKernels, WideLoopsRoundAsThePlainLoops) {
  using namespace ttt;
  std::mt19937 gen(13);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  {  // rope: y = (u c - v s, u s + v c) per pair; c and s read back from unit vectors.
    const int64_t T = 37, H = 3, D = 40, pos0 = 1000;
    std::vector<double> xd(static_cast<size_t>(T * H * D)), ed(xd.size(), 0.0);
    for (auto& e : xd) e = dist(gen);
    for (size_t i = 0; i < ed.size(); i += 2) ed[i] = 1.0;  // (1, 0): the rotation gives (c, s)
    const Tensor x = from_vector(xd, {T, H, D}, DType::F32), e = from_vector(ed, {T, H, D}, DType::F32);
    const std::vector<double> y = rope(x, pos0, 10000.0).to_vector(), cs = rope(e, pos0, 10000.0).to_vector();
    for (size_t i = 0; i < xd.size(); i += 2) {
      const float u = static_cast<float>(xd[i]), v = static_cast<float>(xd[i + 1]);
      const float c = static_cast<float>(cs[i]), s = static_cast<float>(cs[i + 1]);
      const float p = u * c, q = v * s, r = u * s, t = v * c;  // each product rounded
      ASSERT_EQ(static_cast<float>(y[i]), p - q) << "element " << i;
      ASSERT_EQ(static_cast<float>(y[i + 1]), r + t) << "element " << i + 1;
    }
  }
  {  // AdamW, in place.
    const int64_t n = 1001;
    std::vector<float> p0(n), g0(n), m0(n), v0(n);
    for (int64_t i = 0; i < n; ++i) {
      p0[i] = dist(gen);
      g0[i] = dist(gen);
      m0[i] = 0.1f * dist(gen);
      v0[i] = 0.01f * std::fabs(dist(gen));
    }
    auto tensor = [](const std::vector<float>& a) {
      return from_vector(std::vector<double>(a.begin(), a.end()), {static_cast<int64_t>(a.size())}, DType::F32);
    };
    const Tensor p = tensor(p0), g = tensor(g0), m = tensor(m0), v = tensor(v0);
    AdamWStep h;
    h.beta1 = 0.9f;
    h.beta2 = 0.95f;
    h.step = 3e-3f;
    h.inv_bc2 = 1.7f;
    h.eps = 1e-8f;
    h.decay = 0.9999f;
    backend_for(Device::cpu()).adamw_step(p, g, m, v, h);
    const std::vector<double> pg = p.to_vector(), mg = m.to_vector(), vg = v.to_vector();
    for (int64_t j = 0; j < n; ++j) {
      const float a = h.beta1 * m0[j], b = (1.0f - h.beta1) * g0[j];
      const float mj = a + b;
      const float c = h.beta2 * v0[j], d = (1.0f - h.beta2) * g0[j] * g0[j];
      const float vj = c + d;
      const float e = p0[j] * h.decay, f = h.step * mj / (std::sqrt(vj * h.inv_bc2) + h.eps);
      ASSERT_EQ(static_cast<float>(mg[j]), mj) << "m " << j;
      ASSERT_EQ(static_cast<float>(vg[j]), vj) << "v " << j;
      ASSERT_EQ(static_cast<float>(pg[j]), e - f) << "p " << j;
    }
  }
}
