// Autodiff engine invariants beyond the per-op harness: Hessian-vector products of a small MLP,
// no-grad mode, error messages, fused vs composite attention, memory pool reuse, threading.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <random>
#include <thread>
#include <vector>

#include "autodiff/ops.h"
#include "backend/cpu/blas.h"
#include "backend/thread_pool.h"
#include "gradcheck.h"
#include "backend/cpu/pool.h"

namespace ttt::test {
namespace {

// Two-layer SwiGLU MLP with a cross-entropy head: the shape of the TTT inner model.
Tensor mlp_loss(const std::vector<Tensor>& w, const Tensor& x, const std::vector<int32_t>& tg) {
  Tensor h = mul(silu(matmul(x, w[0])), matmul(x, w[1]));
  Tensor y = add(rmsnorm(matmul(h, w[2]), w[3], 1e-6), x);
  return mean(cross_entropy(y, tg));
}

TEST(Autodiff, MlpHessianVectorProductMatchesFiniteDifferences) {
  Rng rng(7);
  const int64_t d = 6, f = 8, n = 5;
  Tensor x = randn({n, d}, rng, 1.0, DType::F64);
  std::vector<int32_t> tg = {0, 3, 5, 1, 2};
  std::vector<Tensor> w = {randn({d, f}, rng, 0.5, DType::F64).set_requires_grad(true),
                           randn({d, f}, rng, 0.5, DType::F64).set_requires_grad(true),
                           randn({f, d}, rng, 0.5, DType::F64).set_requires_grad(true),
                           add_scalar(randn({d}, rng, 0.1, DType::F64), 1.0).detach().set_requires_grad(true)};
  std::vector<Tensor> v;
  for (auto& t : w) v.push_back(randn(t.shape(), rng, 1.0, DType::F64));
  auto g = grad({mlp_loss(w, x, tg)}, w, {}, true);
  Tensor gv;
  for (size_t i = 0; i < w.size(); ++i) {
    Tensor t = sum(mul(g[i], v[i]));
    gv = gv.defined() ? add(gv, t) : t;
  }
  auto hv = grad({gv}, w);
  const double e = 1e-5;
  auto grad_at = [&](double s) {
    std::vector<Tensor> ws;
    for (size_t i = 0; i < w.size(); ++i) ws.push_back(add(w[i].detach(), mul_scalar(v[i], s)).detach().set_requires_grad(true));
    return grad({mlp_loss(ws, x, tg)}, ws);
  };
  auto gp = grad_at(e), gm = grad_at(-e);
  for (size_t i = 0; i < w.size(); ++i) {
    auto a = hv[i].to_vector(), p = gp[i].to_vector(), m = gm[i].to_vector();
    std::vector<double> fd(a.size());
    for (size_t j = 0; j < a.size(); ++j) fd[j] = (p[j] - m[j]) / (2 * e);
    EXPECT_LT(rel_err(a, fd), 1e-7) << "parameter " << i;
  }
}

TEST(Autodiff, InnerSgdStepMetaGradientWithZeroLearningRateEqualsPlainGradient) {
  // outer(phi0) = L2(phi0 - lr * grad L1(phi0)); at lr = 0 its gradient is grad L2(phi0).
  Rng rng(3);
  Tensor x1 = randn({4, 3}, rng, 1.0, DType::F64), x2 = randn({4, 3}, rng, 1.0, DType::F64);
  Tensor phi0 = randn({3, 3}, rng, 1.0, DType::F64).set_requires_grad(true);
  auto l = [](const Tensor& x, const Tensor& p) { return mean(square(silu(matmul(x, p)))); };
  auto outer = [&](double lr) {
    Tensor g = grad({l(x1, phi0)}, {phi0}, {}, true)[0];
    return l(x2, sub(phi0, mul_scalar(g, lr)));
  };
  auto meta0 = grad({outer(0.0)}, {phi0})[0].to_vector();
  auto plain = grad({l(x2, phi0)}, {phi0})[0].to_vector();
  EXPECT_LT(rel_err(meta0, plain), 1e-14);
  auto meta1 = grad({outer(0.5)}, {phi0})[0].to_vector();
  EXPECT_GT(rel_err(meta1, plain), 1e-3);  // second-order terms matter at lr > 0
}

TEST(Autodiff, NoGradRecordsNothing) {
  Tensor a = ones({2, 2}).set_requires_grad(true);
  {
    NoGrad ng;
    Tensor b = mul(a, a);
    EXPECT_FALSE(b.requires_grad());
    EXPECT_EQ(b.grad_fn(), nullptr);
  }
  Tensor c = mul(a, a);
  EXPECT_TRUE(c.requires_grad());
  ASSERT_NE(c.grad_fn(), nullptr);
  auto g = grad({sum(c)}, {a});  // create_graph off: the gradient has no graph
  EXPECT_FALSE(g[0].requires_grad());
}

TEST(Autodiff, UnusedInputsGetZerosOrAnError) {
  Tensor a = ones({2}).set_requires_grad(true), b = ones({3}).set_requires_grad(true);
  auto g = grad({sum(a)}, {a, b});
  EXPECT_EQ(g[1].to_vector(), std::vector<double>(3, 0.0));
  EXPECT_THROW(grad({sum(a)}, {a, b}, {}, false, /*allow_unused=*/false), std::invalid_argument);
}

TEST(Autodiff, GradientOfIntermediateTensor) {
  Tensor a = from_vector({1, 2, 3}, {3}).set_requires_grad(true);
  Tensor h = mul_scalar(a, 2.0);
  Tensor y = sum(square(h));
  auto g = grad({y}, {h, a});
  EXPECT_EQ(g[0].to_vector(), (std::vector<double>{4, 8, 12}));
  EXPECT_EQ(g[1].to_vector(), (std::vector<double>{8, 16, 24}));
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}

TEST(Autodiff, WrongShapesGiveClearErrors) {
  Tensor a = ones({2, 3}), b = ones({4, 5});
  EXPECT_NE(error_of([&] { matmul(a, b); }).find("inner dimensions differ"), std::string::npos);
  EXPECT_NE(error_of([&] { add(a, b); }).find("do not broadcast"), std::string::npos);
  EXPECT_NE(error_of([&] { reshape(a, {4, 2}); }).find("cannot reshape"), std::string::npos);
  EXPECT_NE(error_of([&] { rmsnorm(a, ones({4}), 1e-6); }).find("does not match"), std::string::npos);
  EXPECT_NE(error_of([&] { cross_entropy(a, {0, 7}); }).find("out of range"), std::string::npos);
  EXPECT_NE(error_of([&] { embedding(a, {2}); }).find("out of range"), std::string::npos);
  EXPECT_NE(error_of([&] { slice(a, 1, 2, 5); }).find("out of bounds"), std::string::npos);
  EXPECT_NE(error_of([&] { rope(ones({2, 1, 3}), 0, 1e4); }).find("even D"), std::string::npos);
  EXPECT_NE(error_of([&] { add(a, ones({2, 3}, DType::F64)); }).find("dtype mismatch"), std::string::npos);
  EXPECT_NE(error_of([&] { attention(ones({2, 1, 4}), ones({3, 1, 4}), ones({3, 2, 4}), {}); }).find("expected q"),
            std::string::npos);
}

TEST(Autodiff, FusedAttentionGradientsMatchCompositeInFloat32) {
  // Sizes beyond the kernel's tiles, with a key cache and a window, as in a TTT chunk.
  Rng rng(11);
  const int64_t tq = 150, cache = 90, h = 2, d = 32;
  AttentionOptions o;
  o.window = 100;
  o.k_pos0 = 500;
  o.q_pos0 = 500 + cache;
  Tensor q = randn({tq, h, d}, rng).set_requires_grad(true);
  Tensor k = randn({tq + cache, h, d}, rng).set_requires_grad(true);
  Tensor v = randn({tq + cache, h, d}, rng).set_requires_grad(true);
  Tensor r = randn({tq, h, d}, rng);
  Tensor of = attention(q, k, v, o), oc = attention_composite(q, k, v, o);
  EXPECT_LT(rel_err(of.to_vector(), oc.to_vector()), 1e-5);
  auto gf = grad({sum(mul(of, r))}, {q, k, v});
  auto gc = grad({sum(mul(oc, r))}, {q, k, v});
  for (int i = 0; i < 3; ++i) EXPECT_LT(rel_err(gf[i].to_vector(), gc[i].to_vector()), 1e-4) << "input " << i;
}

TEST(Pool, SteadyStateLoopDoesNotCallTheSystemAllocator) {
  Rng rng(5);
  Tensor w = randn({64, 64}, rng).set_requires_grad(true);
  Tensor x = randn({32, 64}, rng);
  auto step = [&] { return grad({mean(square(silu(matmul(x, w))))}, {w}, {}, true); };
  for (int i = 0; i < 3; ++i) step();  // warm up the pool
  const auto before = pool::stats();
  for (int i = 0; i < 5; ++i) step();
  const auto after = pool::stats();
  EXPECT_GT(after.allocations, before.allocations);
  if (std::getenv("TTT_NO_POOL") == nullptr) {
    EXPECT_EQ(after.system_allocs, before.system_allocs);
  }
}

// A buffer that grows by appends (each copy a new size, none reused) must not leave every old
// size cached: the pool's footprint stays near the highest in-use mark.
TEST(Pool, GrowingBuffersDoNotPileUpInTheCache) {
  if (std::getenv("TTT_NO_POOL") != nullptr) GTEST_SKIP() << "pool disabled";
  pool::trim();
  const size_t mb = size_t(1) << 20;
  void* prev = nullptr;
  size_t prev_bytes = 0;
  for (size_t n = 1; n <= 12; ++n) {  // 96 MB, 192 MB, ... never touched: no resident pages
    const size_t bytes = n * 96 * mb;
    void* p = pool::allocate(bytes);
    if (prev) pool::release(prev, prev_bytes);
    prev = p;
    prev_bytes = bytes;
  }
  const auto st = pool::stats();
  pool::release(prev, prev_bytes);
  // Without the limit, every earlier size (96 + 192 + ... + 1056 MB = 6.3 GB) would stay cached.
  EXPECT_LE(st.bytes_cached, 2 * 1152 * mb + 64 * mb);
  pool::trim();
}

// Stale sizes fill the cache (a grown buffer's old copies); a block of a size still in use must
// then evict them rather than be given back itself: otherwise every later allocation of it is a
// fresh, page-faulting one from the system.
TEST(Pool, StaleSizesAreEvictedBeforeTheBlockInHand) {
  if (std::getenv("TTT_NO_POOL") != nullptr) GTEST_SKIP() << "pool disabled";
  pool::trim();
  const size_t mb = size_t(1) << 20;
  std::vector<std::pair<void*, size_t>> stale;
  for (size_t n : {30, 34, 38}) stale.push_back({pool::allocate(n * mb), n * mb});  // never touched
  for (auto& [p, n] : stale) pool::release(p, n);
  const size_t x = 70 * mb;  // with the stale blocks cached, over the pool's slack
  pool::release(pool::allocate(x), x);
  const auto before = pool::stats();
  for (int i = 0; i < 5; ++i) pool::release(pool::allocate(x), x);
  EXPECT_EQ(pool::stats().system_allocs, before.system_allocs);
  pool::trim();
}

TEST(ThreadPool, ParallelForCoversTheRangeOnceAndPropagatesErrors) {
  std::vector<std::atomic<int>> hits(10007);
  parallel_for(0, 10007, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) hits[i]++;
  });
  for (auto& h : hits) EXPECT_EQ(h.load(), 1);
  EXPECT_THROW(parallel_for(0, 100, 1, [](int64_t lo, int64_t) {
                 if (lo == 0) throw std::runtime_error("boom");
               }),
               std::runtime_error);
}

TEST(ThreadPool, BackToBackJobsNeverRunAPieceTwice) {
  // Stress test for a fixed race: a worker finishing the last piece of one job could claim a
  // piece of the next job with a stale counter and run it twice, after its caller had returned.
  // The race needs a preemption at the wrong instant, so this catches it only under load.
  for (int job = 0; job < 20000; ++job) {
    std::atomic<int> ran{0};
    int local[8] = {0};
    parallel_for(0, 8, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) {
        ++local[i];
        ran.fetch_add(1);
      }
    });
    ASSERT_EQ(ran.load(), 8) << "job " << job;
    for (int i = 0; i < 8; ++i) ASSERT_EQ(local[i], 1) << "job " << job << " piece " << i;
  }
}

TEST(ThreadPool, WorkersAsleepStillTakePart) {
  // Workers spin between regions for TTT_SPIN_US (100 us by default), then sleep. Jobs right
  // after a region and after a sleep must both be covered exactly once, and the workers must be
  // woken to help.
  bool helped = false;
  for (int job = 0; job < 300; ++job) {
    if (job % 2 == 1) std::this_thread::sleep_for(std::chrono::microseconds(300));  // past the spin
    std::vector<std::atomic<int>> hits(64);
    std::atomic<bool> other{false};
    parallel_for(0, 64, 8, [&](int64_t lo, int64_t hi) {
      if (thread_index() != 0) other = true;
      const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(50);
      while (std::chrono::steady_clock::now() < until) {
      }
      for (int64_t i = lo; i < hi; ++i) hits[static_cast<size_t>(i)]++;
    });
    for (auto& h : hits) {
      ASSERT_EQ(h.load(), 1) << "job " << job;
    }
    helped = helped || other.load();
  }
  if (num_threads() > 1) {
    EXPECT_TRUE(helped);
  }
}

TEST(Blas, ReportsItsKernelAndComputesCorrectly) {
  const auto& info = blas::info();
  EXPECT_FALSE(info.library.empty());
  EXPECT_FALSE(info.core.empty());
  // Odd sizes and all transpositions against a naive loop.
  Rng rng(9);
  for (int t = 0; t < 4; ++t) {
    const bool ta = t & 1, tb = t & 2;
    Tensor a = randn(ta ? Shape{37, 45} : Shape{45, 37}, rng, 1.0, DType::F64);
    Tensor b = randn(tb ? Shape{29, 37} : Shape{37, 29}, rng, 1.0, DType::F64);
    auto c = matmul(a, b, ta, tb).to_vector();
    double err = 0;
    for (int i = 0; i < 45; ++i)
      for (int j = 0; j < 29; ++j) {
        double s = 0;
        for (int p = 0; p < 37; ++p) s += (ta ? a.at({p, i}) : a.at({i, p})) * (tb ? b.at({j, p}) : b.at({p, j}));
        err = std::max(err, std::fabs(s - c[i * 29 + j]));
      }
    EXPECT_LT(err, 1e-12);
  }
}

// Products big enough to be split into blocks over the pool (long sides of either orientation,
// all transpositions, odd sizes, leading dimensions wider than the operands, beta != 0) match a
// naive loop and the same product run whole on one thread to rounding (not bit for bit: OpenBLAS
// takes other kernels for small blocks), repeat bit for bit, and leave C's padding alone.
template <class T>
void check_split_products(double tol) {
  std::mt19937 gen(5);
  std::normal_distribution<double> nd;
  const int shapes[][3] = {{300, 77, 45}, {61, 531, 70}, {256, 256, 256}, {1000, 40, 33}};
  for (const auto& sh : shapes) {
    const int m = sh[0], n = sh[1], k = sh[2];
    for (int t = 0; t < 4; ++t) {
      const auto ta = (t & 1) ? blas::Trans::Yes : blas::Trans::No;
      const auto tb = (t & 2) ? blas::Trans::Yes : blas::Trans::No;
      const int ar = ta == blas::Trans::Yes ? k : m, ac = ta == blas::Trans::Yes ? m : k;
      const int br = tb == blas::Trans::Yes ? n : k, bc = tb == blas::Trans::Yes ? k : n;
      const int lda = ac + 3, ldb = bc + 5, ldc = n + 7;
      std::vector<T> a(static_cast<size_t>(ar) * lda), b(static_cast<size_t>(br) * ldb), c0(static_cast<size_t>(m) * ldc);
      for (auto& x : a) x = static_cast<T>(nd(gen));
      for (auto& x : b) x = static_cast<T>(nd(gen));
      for (auto& x : c0) x = static_cast<T>(nd(gen));
      auto split = c0, again = c0, whole = c0;
      blas::gemm(ta, tb, m, n, k, T(0.75), a.data(), lda, b.data(), ldb, T(0.5), split.data(), ldc);
      blas::gemm(ta, tb, m, n, k, T(0.75), a.data(), lda, b.data(), ldb, T(0.5), again.data(), ldc);
      ASSERT_EQ(split, again) << m << "x" << n << "x" << k << " transposes " << t;
      {
        blas::SingleThreadedBlas single;
        blas::gemm(ta, tb, m, n, k, T(0.75), a.data(), lda, b.data(), ldb, T(0.5), whole.data(), ldc);
      }
      double err = 0, err_whole = 0;
      for (int i = 0; i < m; ++i)
        for (int j = n; j < ldc; ++j) ASSERT_EQ(split[static_cast<size_t>(i) * ldc + j], c0[static_cast<size_t>(i) * ldc + j]);
      for (int i = 0; i < m; ++i)
        for (int j = 0; j < n; ++j) {
          double s = 0;
          for (int p = 0; p < k; ++p) {
            const double av = ta == blas::Trans::Yes ? a[static_cast<size_t>(p) * lda + i] : a[static_cast<size_t>(i) * lda + p];
            const double bv = tb == blas::Trans::Yes ? b[static_cast<size_t>(j) * ldb + p] : b[static_cast<size_t>(p) * ldb + j];
            s += av * bv;
          }
          const double want = 0.75 * s + 0.5 * static_cast<double>(c0[static_cast<size_t>(i) * ldc + j]);
          const double got = static_cast<double>(split[static_cast<size_t>(i) * ldc + j]);
          err = std::max(err, std::fabs(want - got) / (1.0 + std::fabs(want)));
          err_whole = std::max(err_whole, std::fabs(static_cast<double>(whole[static_cast<size_t>(i) * ldc + j]) - got) / (1.0 + std::fabs(want)));
        }
      EXPECT_LT(err, tol) << m << "x" << n << "x" << k << " transposes " << t;
      EXPECT_LT(err_whole, tol) << m << "x" << n << "x" << k << " transposes " << t;
    }
  }
}

TEST(Blas, ProductsSplitOverThePoolEqualWholeProducts) {
  check_split_products<float>(1e-4);
  check_split_products<double>(1e-12);
}

}  // namespace
}  // namespace ttt::test

namespace ttt::test {
namespace {

// append_rows: the values of concat + slice; in place when nothing was appended after the view;
// earlier views never change, also when an old view is appended to again (copy on divergence).
TEST(AppendRows, InPlaceAppendsKeepEveryEarlierViewIntact) {
  NoGrad ng;
  Rng r(3);
  auto rows = [&](int64_t n) { return randn({n, 2, 3}, r); };
  auto expect_equal = [](const Tensor& a, const Tensor& b) {
    ASSERT_EQ(a.shape(), b.shape());
    EXPECT_EQ(a.to_vector(), b.to_vector());
  };
  Tensor c0 = rows(5);
  Tensor c1 = append_rows(c0, rows(1), 0);  // a new buffer with spare room
  expect_equal(slice(c1, 0, 0, 5), c0);
  const std::vector<double> c1_values = c1.to_vector();
  Tensor x = rows(1);
  Tensor c2 = append_rows(c1, x, 4);  // in place, trimmed to the last 4 rows
  EXPECT_EQ(c2.impl()->storage.get(), c1.impl()->storage.get()) << "not appended in place";
  expect_equal(c2, slice(concat({c1, x}, 0), 0, 3, 7));
  Tensor y = rows(2);
  Tensor c2b = append_rows(c1, y, 0);  // c1 again: rows after it are taken, so a copy
  EXPECT_NE(c2b.impl()->storage.get(), c1.impl()->storage.get());
  expect_equal(c2b, concat({c1, y}, 0));
  expect_equal(c2, slice(concat({c1, x}, 0), 0, 3, 7));  // untouched by the divergent append
  EXPECT_EQ(c1.to_vector(), c1_values);
  // Many appends with a window: always equal to the reference, buffers reused most of the time.
  Tensor ref = c2, cur = c2;
  int copies = 0;
  for (int i = 0; i < 300; ++i) {
    Tensor t = rows(1 + i % 3);
    Tensor next = append_rows(cur, t, 40);
    copies += next.impl()->storage.get() != cur.impl()->storage.get();
    Tensor all = concat({ref, t}, 0);
    ref = slice(all, 0, std::max<int64_t>(0, all.size(0) - 40), all.size(0));
    expect_equal(next, ref);
    cur = next;
  }
  EXPECT_LT(copies, 60) << "append_rows copied the cache on most appends";
  EXPECT_THROW(append_rows(c0, randn({1, 3, 2}, r), 0), std::invalid_argument);
}

// A constant cache whose buffer already holds the appended rows (a session's inner step
// recomputing with a graph the keys its feed appended): a view over them, not a copy, with the
// gradient of concat; other rows still copy. same_rows_in finds a chunk's start
// state again in the buffer a later append moved the cache to, and leaves anything else alone.
TEST(AppendRows, ConstantCacheSharesRowsItsBufferAlreadyHolds) {
  Rng r(5);
  Tensor start;  // the state at a chunk's start: 4 rows, with room after them
  {
    NoGrad ng;
    start = append_rows(randn({3, 2}, r), randn({1, 2}, r), 0);
  }
  const Tensor fed = randn({2, 2}, r);
  Tensor after;
  {
    NoGrad ng;
    after = append_rows(start, fed, 0);  // the feed: in place
  }
  ASSERT_EQ(after.impl()->storage, start.impl()->storage);
  const Tensor again = from_vector(fed.to_vector(), fed.shape()).set_requires_grad(true);
  const Tensor y = append_rows(start, again, 5);
  EXPECT_EQ(y.impl()->storage, start.impl()->storage) << "copied rows its buffer holds";
  EXPECT_EQ(y.to_vector(), slice(concat({start, fed}, 0), 0, 1, 6).to_vector());
  const Tensor w = randn({5, 2}, r);
  const auto g = grad({sum(mul(y, w))}, {again})[0].to_vector();
  const auto wv = w.to_vector();
  EXPECT_EQ(g, std::vector<double>(wv.begin() + 6, wv.end()));
  auto other = fed.to_vector();
  other[3] += 0.5;
  const Tensor y2 = append_rows(start, from_vector(other, fed.shape()).set_requires_grad(true), 0);
  EXPECT_NE(y2.impl()->storage, start.impl()->storage);
  EXPECT_EQ(slice(y2, 0, 4, 6).to_vector(), from_vector(other, fed.shape()).to_vector());
  // A later append that needs a new buffer: the start state is found there, bit for bit.
  Tensor moved;
  {
    NoGrad ng;
    moved = append_rows(after, randn({70, 2}, r), 0);  // past the room one-row appends left
  }
  ASSERT_NE(moved.impl()->storage, start.impl()->storage);
  const Tensor found = same_rows_in(start, moved, 2 + 70);
  EXPECT_EQ(found.impl()->storage, moved.impl()->storage);
  EXPECT_EQ(found.to_vector(), start.to_vector());
  EXPECT_EQ(same_rows_in(start, moved, 2 + 69).impl()->storage, start.impl()->storage);  // wrong place: differs
  EXPECT_EQ(same_rows_in(start, moved, 90).impl()->storage, start.impl()->storage);     // before the buffer
}

TEST(AppendRows, WithAGraphItIsDifferentiableConcat) {
  Rng r(4);
  Tensor a = randn({3, 2}, r, 1.0, DType::F64), b = randn({2, 2}, r, 1.0, DType::F64);
  a.set_requires_grad(true);
  b.set_requires_grad(true);
  Tensor y = append_rows(a, b, 4);
  auto g = grad({sum(mul(y, y))}, {a, b});
  const auto ga = g[0].to_vector(), av = a.to_vector();
  EXPECT_EQ(ga[0], 0.0);  // the dropped first row gets no gradient
  EXPECT_EQ(ga[1], 0.0);
  EXPECT_DOUBLE_EQ(ga[2], 2 * av[2]);
  EXPECT_DOUBLE_EQ(g[1].to_vector()[3], 2 * b.to_vector()[3]);
}

}  // namespace
}  // namespace ttt::test
