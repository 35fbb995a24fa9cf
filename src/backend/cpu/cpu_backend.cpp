// CPU backend: plain loops threaded over the pool, GEMM through BLAS (backend/cpu/blas.h),
// attention through the fused kernels (backend/cpu/attention_cpu.h). float and double share the
// code. Its memory is a DeviceMemory given at construction: the host pool for the CPU device,
// guarded pages for the checked one (backend/checked).
#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/profiler.h"
#include "backend/cpu/bf16_gemm.h"
#include "backend/cpu/attention_cpu.h"
#include "backend/cpu/blas.h"
#include "backend/cpu/pool.h"
#include "backend/thread_pool.h"
#include "backend/cpu/fused_cpu.h"
#include "backend/cpu/vec_math.h"
#include "tensor/bf16.h"

namespace ttt {
namespace {

constexpr int64_t kGrain = 16384;  // elements per parallel piece for streaming kernels
// Below this many FLOPs per product, a batched matmul runs its products in parallel on our pool
// (one single-threaded BLAS call each) rather than one after another with BLAS threads.
constexpr double kSmallGemmFlops = 64e6;

// BF16 (inference weights) reaches only copy, matmul and gather_rows, which handle it first;
// anything else is a bug upstream, not a reason to read the bits as doubles.
template <class F>
void for_dtype(DType dt, F&& f) {
  for_compute_dtype(dt, "cpu backend", std::forward<F>(f));
}

// exp through the vectorized vec::vexp; arguments it does not cover exactly (overflow to inf,
// NaN) are redone with std::exp, so the op keeps IEEE results at the edges.
template <class T>
void exp_range(const T* x, T* y, int64_t n) {
  vec::vexp(x, y, n);
  constexpr T kHi = sizeof(T) == 4 ? T(88.3f) : T(709.0);
  for (int64_t i = 0; i < n; ++i)
    if (!(x[i] <= kHi)) y[i] = std::exp(x[i]);
}

// The unary ops of one IEEE operation per element (or a select), in TTT_WIDE_LOOP copies.
template <class T>
TTT_WIDE_LOOP void unary_simple(UnaryOp op, const T* x, T* y, int64_t n, T a) {
  switch (op) {
    case UnaryOp::Neg: for (int64_t i = 0; i < n; ++i) y[i] = -x[i]; break;
    case UnaryOp::Square: for (int64_t i = 0; i < n; ++i) y[i] = x[i] * x[i]; break;
    case UnaryOp::AddScalar: for (int64_t i = 0; i < n; ++i) y[i] = x[i] + a; break;
    case UnaryOp::MulScalar: for (int64_t i = 0; i < n; ++i) y[i] = x[i] * a; break;
    case UnaryOp::MaxScalar: for (int64_t i = 0; i < n; ++i) y[i] = x[i] > a ? x[i] : a; break;
    case UnaryOp::StepScalar: for (int64_t i = 0; i < n; ++i) y[i] = x[i] > a ? T(1) : T(0); break;
    default: break;
  }
}

template <class T>
void unary_kernel(UnaryOp op, const T* x, T* y, int64_t n, T a) {
  parallel_for(0, n, kGrain, [&](int64_t lo, int64_t hi) {
    switch (op) {
      case UnaryOp::Neg:
      case UnaryOp::Square:
      case UnaryOp::AddScalar:
      case UnaryOp::MulScalar:
      case UnaryOp::MaxScalar:
      case UnaryOp::StepScalar:
        unary_simple(op, x + lo, y + lo, hi - lo, a);
        break;
      case UnaryOp::Exp: exp_range(x + lo, y + lo, hi - lo); break;
      case UnaryOp::Log: for (int64_t i = lo; i < hi; ++i) y[i] = std::log(x[i]); break;
      case UnaryOp::Sqrt: for (int64_t i = lo; i < hi; ++i) y[i] = std::sqrt(x[i]); break;
      case UnaryOp::Rsqrt: for (int64_t i = lo; i < hi; ++i) y[i] = T(1) / std::sqrt(x[i]); break;
      case UnaryOp::Reciprocal: for (int64_t i = lo; i < hi; ++i) y[i] = T(1) / x[i]; break;
      case UnaryOp::Sigmoid: vec::vsigmoid(x + lo, y + lo, hi - lo); break;
      case UnaryOp::Softplus:  // log(1 + e^x) without overflow: x + log1p(e^-x) for x > 0
        for (int64_t i = lo; i < hi; ++i) y[i] = x[i] > T(0) ? x[i] + std::log1p(std::exp(-x[i])) : std::log1p(std::exp(x[i]));
        break;
      case UnaryOp::Silu: vec::vsilu_deriv(0, x + lo, y + lo, hi - lo); break;
      case UnaryOp::SiluGrad: vec::vsilu_deriv(1, x + lo, y + lo, hi - lo); break;
      case UnaryOp::SiluGrad2: vec::vsilu_deriv(2, x + lo, y + lo, hi - lo); break;
      case UnaryOp::SiluGrad3: vec::vsilu_deriv(3, x + lo, y + lo, hi - lo); break;
    }
  });
}

template <class T>
inline T binary_apply(BinaryOp op, T a, T b) {
  switch (op) {
    case BinaryOp::Add: return a + b;
    case BinaryOp::Sub: return a - b;
    case BinaryOp::Mul: return a * b;
    case BinaryOp::Div: return a / b;
  }
  return T(0);
}

template <class T, BinaryOp OP>
void binary_rows(const T* a, int64_t sa, const T* b, int64_t sb, T* y, int64_t n) {
  if (sa == 1 && sb == 1) {
    for (int64_t i = 0; i < n; ++i) y[i] = binary_apply(OP, a[i], b[i]);
  } else if (sa == 1 && sb == 0) {
    const T bv = b[0];
    for (int64_t i = 0; i < n; ++i) y[i] = binary_apply(OP, a[i], bv);
  } else if (sa == 0 && sb == 1) {
    const T av = a[0];
    for (int64_t i = 0; i < n; ++i) y[i] = binary_apply(OP, av, b[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) y[i] = binary_apply(OP, a[i * sa], b[i * sb]);
  }
}

// Operands of Y's own shape, all contiguous (most of the meta-gradient step's thousands of adds
// and products): one flat loop per piece, in TTT_WIDE_LOOP copies. One IEEE operation per
// element either way: the same bits.
template <class T, BinaryOp OP>
TTT_WIDE_LOOP void binary_flat_loop(const T* a, const T* b, T* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = binary_apply(OP, a[i], b[i]);
}
template <class T, BinaryOp OP>
void binary_flat(const T* a, const T* b, T* y, int64_t n) {
  parallel_for(0, n, kGrain, [&](int64_t lo, int64_t hi) { binary_flat_loop<T, OP>(a + lo, b + lo, y + lo, hi - lo); });
}

template <class T, BinaryOp OP>
void binary_kernel(const Tensor& A, const Tensor& B, const Tensor& Y) {
  const T* a = A.data<T>();
  const T* b = B.data<T>();
  T* y = Y.data<T>();
  const int64_t rank = Y.dim();
  if (rank == 0) {
    y[0] = binary_apply(OP, a[0], b[0]);
    return;
  }
  if (A.shape() == Y.shape() && B.shape() == Y.shape() && A.is_contiguous() && B.is_contiguous() &&
      Y.is_contiguous()) {
    binary_flat<T, OP>(a, b, y, Y.numel());
    return;
  }
  const int64_t inner = Y.shape()[rank - 1];
  const int64_t rows = inner == 0 ? 0 : Y.numel() / inner;
  const int64_t sa = A.strides()[rank - 1], sb = B.strides()[rank - 1];
  parallel_for(0, rows, std::max<int64_t>(1, kGrain / std::max<int64_t>(inner, 1)),
               [&](int64_t lo, int64_t hi) {
                 for (int64_t r = lo; r < hi; ++r) {
                   int64_t oa = 0, ob = 0, rem = r;
                   for (int64_t d = rank - 2; d >= 0; --d) {
                     const int64_t i = rem % Y.shape()[d];
                     rem /= Y.shape()[d];
                     oa += i * A.strides()[d];
                     ob += i * B.strides()[d];
                   }
                   binary_rows<T, OP>(a + oa, sa, b + ob, sb, y + r * inner, inner);
                 }
               });
}

template <class T>
void copy_kernel(const Tensor& S, const Tensor& Y) {
  const T* s = S.data<T>();
  T* y = Y.data<T>();
  const int64_t rank = Y.dim();
  if ((S.is_contiguous() && Y.is_contiguous()) || rank == 0) {
    const int64_t n = Y.numel();
    parallel_for(0, n, kGrain, [&](int64_t lo, int64_t hi) { std::copy(s + lo, s + hi, y + lo); });
    return;
  }
  const int64_t inner = Y.shape()[rank - 1];
  const int64_t rows = inner == 0 ? 0 : Y.numel() / inner;
  const int64_t si = S.strides()[rank - 1], yi = Y.strides()[rank - 1];
  parallel_for(0, rows, std::max<int64_t>(1, kGrain / std::max<int64_t>(inner, 1)),
               [&](int64_t lo, int64_t hi) {
                 for (int64_t r = lo; r < hi; ++r) {
                   int64_t so = 0, yo = 0, rem = r;
                   for (int64_t d = rank - 2; d >= 0; --d) {
                     const int64_t i = rem % Y.shape()[d];
                     rem /= Y.shape()[d];
                     so += i * S.strides()[d];
                     yo += i * Y.strides()[d];
                   }
                   const T* src = s + so;
                   T* dst = y + yo;
                   for (int64_t i = 0; i < inner; ++i) dst[i * yi] = src[i * si];
                 }
               });
}

// ---------------------------------------------------------------- reductions
//
// Float sums run in vector registers (vec_math.h) over blocks of at most kSumBlock terms, and
// the block sums are combined in double. Every partition depends only on the shapes, never on
// the thread count, so results are bitwise reproducible.
constexpr int64_t kSumBlock = 2048;

template <class T>
double sum_blocked(const T* x, int64_t n) {
  if (n <= kSumBlock) return vec::vsum(x, n);
  double acc = 0;
  for (int64_t i = 0; i < n; i += kSumBlock) acc += vec::vsum(x + i, std::min(kSumBlock, n - i));
  return acc;
}

template <class T>
double sumsq_blocked(const T* x, int64_t n) {
  if (n <= kSumBlock) return vec::vdot(x, x, n);
  double acc = 0;
  for (int64_t i = 0; i < n; i += kSumBlock) acc += vec::vdot(x + i, x + i, std::min(kSumBlock, n - i));
  return acc;
}

// Prefetches [p, p + n) into the caches (nothing for p == nullptr).
template <class T>
inline void prefetch_range(const T* p, int64_t n) {
  if (!p) return;
  const char* c = reinterpret_cast<const char*>(p);
  for (int64_t b = 0; b < n * static_cast<int64_t>(sizeof(T)); b += 64) __builtin_prefetch(c + b);
}

// sum of exp(x[i] - shift); with y, also stores the terms. The exp work is compute-bound, so
// it is interleaved with prefetches of `next` (the row processed after this one, same length;
// may be null): its first pass then reads from cache instead of waiting on memory.
constexpr int64_t kExpBlock = 512;
template <class T>
double sum_exp_blocked(const T* x, T shift, T* y, int64_t n, const T* next) {
  double acc = 0;
  for (int64_t i = 0; i < n; i += kExpBlock) {
    const int64_t len = std::min(kExpBlock, n - i);
    if (next) prefetch_range(next + i, len);
    acc += y ? vec::vexp_sum(x + i, shift, y + i, len) : vec::vsum_exp(x + i, shift, len);
  }
  return acc;
}

constexpr int64_t kColRows = 256;    // rows per float partial column sum
constexpr int64_t kColWidth = 2048;  // columns per column-sum task

// x viewed as [P, Q, S] (contiguous), y [P, S] = sum over Q. Work is split into fixed tiles of
// kColRows x kColWidth; each tile sums its rows in order into a partial row, and the partials of
// a column are added in double in tile order.
template <class T>
void sum_middle(const T* x, T* y, int64_t P, int64_t Q, int64_t S) {
  const int64_t nrb = (Q + kColRows - 1) / kColRows;
  const int64_t ncb = (S + kColWidth - 1) / kColWidth;
  std::vector<T> part_buf(nrb > 1 ? static_cast<size_t>(P * nrb * S) : 0);
  T* part = nrb > 1 ? part_buf.data() : y;  // with one row block the partials are the result
  const int64_t tasks = P * nrb * ncb;
  const int64_t tile = std::min(Q, kColRows) * std::min(S, kColWidth);
  parallel_for(0, tasks, std::max<int64_t>(1, kGrain / std::max<int64_t>(tile, 1)), [&](int64_t lo, int64_t hi) {
    for (int64_t t = lo; t < hi; ++t) {
      const int64_t cb = t % ncb, rb = (t / ncb) % nrb, p = t / (ncb * nrb);
      const int64_t c0 = cb * kColWidth, w = std::min(kColWidth, S - c0);
      const int64_t r0 = rb * kColRows, r1 = std::min(Q, r0 + kColRows);
      T* __restrict acc = part + (p * nrb + rb) * S + c0;
      const T* base = x + p * Q * S + c0;
      std::copy(base + r0 * S, base + r0 * S + w, acc);
      for (int64_t r = r0 + 1; r < r1; ++r) {
        const T* __restrict row = base + r * S;
        for (int64_t j = 0; j < w; ++j) acc[j] += row[j];
      }
    }
  });
  if (nrb == 1) return;
  parallel_for(0, P * S, kGrain / 4, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      const int64_t p = i / S, j = i % S;
      const T* col = part + p * nrb * S + j;
      double acc = 0;
      for (int64_t b = 0; b < nrb; ++b) acc += col[b * S];
      y[i] = static_cast<T>(acc);
    }
  });
}

// Sums x over the dimensions where `out` has extent 1.
template <class T>
void sum_to_kernel(const Tensor& X, const Tensor& Y) {
  const T* x = X.data<T>();
  T* y = Y.data<T>();
  const int64_t rank = X.dim();
  const int64_t n = X.numel(), m = Y.numel();
  if (m == n) {
    parallel_for(0, n, kGrain, [&](int64_t lo, int64_t hi) { std::copy(x + lo, x + hi, y + lo); });
    return;
  }
  if (m == 1) {  // full reduction: fixed pieces (by size only), then a fixed-order total
    const int64_t pieces = std::max<int64_t>(1, std::min<int64_t>(64, n / kGrain));
    std::vector<double> part(pieces, 0.0);
    parallel_for(0, pieces, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t p = lo; p < hi; ++p) {
        const int64_t b = n * p / pieces, e = n * (p + 1) / pieces;
        part[p] = sum_blocked(x + b, e - b);
      }
    });
    double total = 0;
    for (double v : part) total += v;
    y[0] = static_cast<T>(total);
    return;
  }
  // Common case: the reduced dims form one contiguous group -> x is [P, Q, S], y is [P, S].
  int64_t first = -1, last = -1;
  for (int64_t d = 0; d < rank; ++d)
    if (Y.shape()[d] == 1 && X.shape()[d] != 1) {
      if (first < 0) first = d;
      last = d;
    }
  bool grouped = first >= 0;
  for (int64_t d = first + 1; grouped && d < last; ++d)
    if (Y.shape()[d] != 1) grouped = false;
  if (grouped) {
    int64_t P = 1, Q = 1, S = 1;
    for (int64_t d = 0; d < first; ++d) P *= X.shape()[d];
    for (int64_t d = first; d <= last; ++d) Q *= X.shape()[d];
    for (int64_t d = last + 1; d < rank; ++d) S *= X.shape()[d];
    if (S == 1) {  // trailing reduction: one contiguous row per output
      parallel_for(0, P, std::max<int64_t>(1, kGrain / std::max<int64_t>(Q, 1)), [&](int64_t lo, int64_t hi) {
        for (int64_t r = lo; r < hi; ++r) y[r] = static_cast<T>(sum_blocked(x + r * Q, Q));
      });
    } else {
      sum_middle(x, y, P, Q, S);
    }
    return;
  }
  // General case (serial): map every element of x to its slot in y.
  std::vector<double> acc(m, 0.0);
  const Shape ystr = contiguous_strides(Y.shape());
  for (int64_t i = 0; i < n; ++i) {
    int64_t rem = i, off = 0;
    for (int64_t d = rank - 1; d >= 0; --d) {
      const int64_t idx = rem % X.shape()[d];
      rem /= X.shape()[d];
      if (Y.shape()[d] != 1) off += idx * ystr[d];
    }
    acc[off] += x[i];
  }
  for (int64_t j = 0; j < m; ++j) y[j] = static_cast<T>(acc[j]);
}

// ---------------------------------------------------------------- model kernels

template <class T>
TTT_WIDE_LOOP void rms_scale_row(const T* x, T rstd, const T* w, T* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * rstd * w[i];
}

// One position's rotation of every head: pairs (u, v) -> (u c - v s, u s + v c).
template <class T>
TTT_WIDE_LOOP void rope_rows(const T* x, T* y, const T* c, const T* s,
                             int64_t h, int64_t d) {
  const int64_t half = d / 2;
  for (int64_t hh = 0; hh < h; ++hh) {
    const T* xr = x + hh * d;
    T* yr = y + hh * d;
    for (int64_t i = 0; i < half; ++i) {
      const T u = xr[2 * i], v = xr[2 * i + 1];
      yr[2 * i] = u * c[i] - v * s[i];
      yr[2 * i + 1] = u * s[i] + v * c[i];
    }
  }
}

template <class T>
void rmsnorm_kernel(const T* x, const T* w, T* y, int64_t rows, int64_t n, double eps, bool with_y) {
  parallel_for(0, rows, std::max<int64_t>(1, kGrain / std::max<int64_t>(n, 1)), [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      const T* xr = x + r * n;
      const double ss = sumsq_blocked(xr, n);
      const T rstd = static_cast<T>(1.0 / std::sqrt(ss / static_cast<double>(n) + eps));
      if (!with_y) {
        y[r] = rstd;
        continue;
      }
      rms_scale_row(xr, rstd, w, y + r * n, n);
    }
  });
}

// Rotary embedding. The angle of absolute position P and frequency i is P * inv_freq[i]; with
// P = A * kRopeBlock + b its cosine and sine come from two small tables (positions that are
// multiples of kRopeBlock, and offsets 0..kRopeBlock-1) by the angle-addition formulas, in
// double, so only about T / kRopeBlock * D / 2 sin/cos pairs are evaluated per call instead of
// T * D / 2. The offsets' table depends only on theta and D and is built once per process (it
// was most of the sin/cos work of a 256-token inner-step chunk). Each position's row is built
// once and applied to all heads.
constexpr int64_t kRopeBlock = 64;

struct RopeTables {
  double theta;
  int64_t d;
  std::vector<double> inv_freq, fc, fs;  // inv_freq[half]; fc, fs [kRopeBlock, half]
};

// The per-(theta, D) tables, built on first use; entries live until the process ends.
const RopeTables& rope_tables(double theta, int64_t d) {
  static std::mutex mu;
  static std::vector<std::unique_ptr<RopeTables>> cache;
  std::lock_guard<std::mutex> g(mu);
  for (const auto& e : cache)
    if (e->theta == theta && e->d == d) return *e;
  auto e = std::make_unique<RopeTables>();
  const int64_t half = d / 2;
  e->theta = theta;
  e->d = d;
  e->inv_freq.resize(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) e->inv_freq[i] = std::pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(d));
  e->fc.resize(static_cast<size_t>(kRopeBlock * half));
  e->fs.resize(static_cast<size_t>(kRopeBlock * half));
  for (int64_t b = 0; b < kRopeBlock; ++b)
    for (int64_t i = 0; i < half; ++i) {
      const double ang = static_cast<double>(b) * e->inv_freq[i];
      e->fc[b * half + i] = std::cos(ang);
      e->fs[b * half + i] = std::sin(ang);
    }
  cache.push_back(std::move(e));
  return *cache.back();
}

template <class T>
void rope_kernel(const T* x, T* y, int64_t t, int64_t h, int64_t d, int64_t pos0, double theta, bool inverse) {
  const int64_t half = d / 2;
  if (t == 0 || half == 0) return;
  const RopeTables& tab = rope_tables(theta, d);
  const double* inv_freq = tab.inv_freq.data();
  const double* fc = tab.fc.data();
  const double* fs = tab.fs.data();
  auto floor_div = [](int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); };
  const int64_t a0 = floor_div(pos0, kRopeBlock), a1 = floor_div(pos0 + t - 1, kRopeBlock);
  const int64_t na = a1 - a0 + 1;
  std::vector<double> cc(na * half), cs(na * half);
  // A few positions (decoding): only the table rows they use, on this thread. The same formula
  // per entry as the full table below, so the angles are bit for bit those of a prefill.
  const bool few = t <= 8;
  std::vector<char> need(static_cast<size_t>(na), few ? 0 : 1);
  if (few)
    for (int64_t p = 0; p < t; ++p) need[static_cast<size_t>(floor_div(pos0 + p, kRopeBlock) - a0)] = 1;
  parallel_for(0, na, few ? na : std::max<int64_t>(1, 512 / half), [&](int64_t lo, int64_t hi) {
    for (int64_t k = lo; k < hi; ++k) {
      if (!need[static_cast<size_t>(k)]) continue;
      const double p = static_cast<double>((a0 + k) * kRopeBlock);
      for (int64_t i = 0; i < half; ++i) {
        const double ang = p * inv_freq[i];
        cc[k * half + i] = std::cos(ang);
        cs[k * half + i] = std::sin(ang);
      }
    }
  });
  const double sign = inverse ? -1.0 : 1.0;
  parallel_for(0, t, std::max<int64_t>(1, kGrain / std::max<int64_t>(h * d, 1)), [&](int64_t lo, int64_t hi) {
    std::vector<T> cbuf(half), sbuf(half);
    T* __restrict c = cbuf.data();
    T* __restrict s = sbuf.data();
    for (int64_t p = lo; p < hi; ++p) {
      const int64_t P = pos0 + p, a = floor_div(P, kRopeBlock), b = P - a * kRopeBlock;
      const double* ca = &cc[(a - a0) * half];
      const double* sa = &cs[(a - a0) * half];
      const double* cb = fc + b * half;
      const double* sb = fs + b * half;
      for (int64_t i = 0; i < half; ++i) {
        c[i] = static_cast<T>(ca[i] * cb[i] - sa[i] * sb[i]);
        s[i] = static_cast<T>(sign * (sa[i] * cb[i] + ca[i] * sb[i]));
      }
      rope_rows(x + p * h * d, y + p * h * d, c, s, h, d);
    }
  });
}

// Keys [lo, hi) of a row that query i may see (kernels/attention.h rule); lo >= hi: none.
inline void visible_range(const kernels::AttentionShape& s, int64_t i, int64_t n, int64_t& lo, int64_t& hi) {
  const int64_t p = s.q_pos0 + i;
  hi = std::clamp<int64_t>(p - s.k_pos0 + 1, 0, n);
  lo = s.window == 0 ? 0 : std::clamp<int64_t>(p - s.window - s.k_pos0 + 1, 0, n);
}

template <class T>
void softmax_rows(const T* x, T* y, int64_t rows, int64_t n,
                  const kernels::AttentionShape* mask) {
  parallel_for(0, rows, std::max<int64_t>(1, kGrain / std::max<int64_t>(n, 1)), [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      const T* xr = x + r * n;
      T* yr = y + r * n;
      int64_t a = 0, b = n;
      if (mask) visible_range(*mask, r % mask->tq, n, a, b);
      const T mx = a < b ? vec::vmax(xr + a, b - a) : -std::numeric_limits<T>::infinity();
      if (mx == -std::numeric_limits<T>::infinity()) {  // nothing visible
        std::fill(yr, yr + n, T(0));
        continue;
      }
      std::fill(yr, yr + a, T(0));
      std::fill(yr + b, yr + n, T(0));
      const double sum = sum_exp_blocked(xr + a, mx, yr + a, b - a, r + 1 < hi ? xr + n + a : nullptr);
      vec::vscale(yr + a, static_cast<T>(1.0 / sum), b - a);
    }
  });
}

template <class T>
void cross_entropy_kernel(const T* logits, const std::vector<int32_t>& tg, T* nll, int64_t rows, int64_t v) {
  parallel_for(0, rows, std::max<int64_t>(1, kGrain / std::max<int64_t>(v, 1)), [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      const T* xr = logits + r * v;
      const T mx = vec::vmax(xr, v);
      const double sum = sum_exp_blocked(xr, mx, static_cast<T*>(nullptr), v, r + 1 < hi ? xr + v : nullptr);
      nll[r] = static_cast<T>(std::log(sum) + (static_cast<double>(mx) - static_cast<double>(xr[tg[r]])));
    }
  });
}

TTT_WIDE_LOOP void adamw_loop(float* p, float* m, float* v, const float* g, float b1, float b2, float step,
                              float inv_bc2, float eps, float decay, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    m[j] = b1 * m[j] + (1.0f - b1) * g[j];
    v[j] = b2 * v[j] + (1.0f - b2) * g[j] * g[j];
    p[j] = p[j] * decay - step * m[j] / (std::sqrt(v[j] * inv_bc2) + eps);
  }
}

class CpuBackend final : public Backend {
 public:
  CpuBackend(DeviceMemory& memory, Device device, const char* name) : mem_(memory), device_(device), name_(name) {}
  const char* name() const override { return name_; }
  Device device() const override { return device_; }

  // ---- memory: the DeviceMemory this instance was given
  void* allocate(size_t bytes) override { return mem_.allocate(bytes); }
  void release(void* p, size_t bytes) override { mem_.release(p, bytes); }
  void copy_to_host(const void* src, void* dst, size_t bytes) override { mem_.copy_to_host(src, dst, bytes); }
  void copy_from_host(const void* src, void* dst, size_t bytes) override { mem_.copy_from_host(src, dst, bytes); }
  bool host_addressable() const override { return mem_.host_addressable(); }
  MemoryStats memory_stats() const override { return mem_.memory_stats(); }
  void reset_peak() override { mem_.reset_peak(); }
  void trim() override { mem_.trim(); }

  void convert(const Tensor& src, const Tensor& out) override {
    if (src.shape() != out.shape() || !src.is_contiguous() || !out.is_contiguous())
      throw std::logic_error("backend convert: shapes differ or an operand is strided");
    const int64_t n = out.numel();
    auto read = [&](int64_t i) -> double {
      switch (src.dtype()) {
        case DType::F32: return src.data<float>()[i];
        case DType::F64: return src.data<double>()[i];
        case DType::BF16: return bf16_to_float(src.data<uint16_t>()[i]);
      }
      return 0;
    };
    parallel_for(0, n, kGrain, [&](int64_t lo, int64_t hi) {
      switch (out.dtype()) {
        case DType::F32: for (int64_t i = lo; i < hi; ++i) out.data<float>()[i] = static_cast<float>(read(i)); break;
        case DType::F64: for (int64_t i = lo; i < hi; ++i) out.data<double>()[i] = read(i); break;
        case DType::BF16:
          for (int64_t i = lo; i < hi; ++i) out.data<uint16_t>()[i] = float_to_bf16(static_cast<float>(read(i)));
          break;
      }
    });
  }

  int64_t count_nonfinite(const Tensor& x, bool negative_too) override {
    if (!x.is_contiguous()) throw std::logic_error("backend count_nonfinite: strided operand");
    const int64_t n = x.numel();
    int64_t bad = 0;
    if (x.dtype() == DType::BF16) {  // exponent bits all ones; the sign bit with a nonzero value
      const uint16_t* p = x.data<uint16_t>();
      for (int64_t i = 0; i < n; ++i)
        bad += (p[i] & 0x7f80u) == 0x7f80u || (negative_too && (p[i] & 0x8000u) && (p[i] & 0x7fffu));
      return bad;
    }
    for_dtype(x.dtype(), [&]<class T>() {
      const T* p = x.data<T>();
      for (int64_t i = 0; i < n; ++i) bad += !std::isfinite(p[i]) || (negative_too && p[i] < 0);
    });
    return bad;
  }

  void adamw_step(const Tensor& param, const Tensor& grad, const Tensor& mom, const Tensor& var,
                  const AdamWStep& h) override {
    float* p = param.data<float>();
    float* m = mom.data<float>();
    float* v = var.data<float>();
    const float* gp = grad.data<float>();
    const float b1 = h.beta1, b2 = h.beta2, step = h.step, inv_bc2 = h.inv_bc2, eps = h.eps, decay = h.decay;
    parallel_for(0, param.numel(), kGrain, [&](int64_t lo, int64_t hi) {
      adamw_loop(p + lo, m + lo, v + lo, gp + lo, b1, b2, step, inv_bc2, eps, decay, hi - lo);
    });
  }

  void fill(const Tensor& out, double value) override {
    for_dtype(out.dtype(), [&]<class T>() {
      T* y = out.data<T>();
      const T v = static_cast<T>(value);
      parallel_for(0, out.numel(), kGrain, [&](int64_t lo, int64_t hi) { std::fill(y + lo, y + hi, v); });
    });
  }

  void copy(const Tensor& src, const Tensor& out) override {
    if (src.shape() != out.shape() || src.dtype() != out.dtype())
      throw std::logic_error("backend copy: shape or dtype mismatch");
    if (out.dtype() == DType::BF16) return copy_kernel<uint16_t>(src, out);
    for_dtype(out.dtype(), [&]<class T>() { copy_kernel<T>(src, out); });
  }

  void unary(UnaryOp op, const Tensor& x, const Tensor& out, double alpha) override {
    for_dtype(out.dtype(), [&]<class T>() {
      unary_kernel<T>(op, x.data<T>(), out.data<T>(), out.numel(), static_cast<T>(alpha));
    });
  }

  void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) override {
    for_dtype(out.dtype(), [&]<class T>() {
      switch (op) {
        case BinaryOp::Add: binary_kernel<T, BinaryOp::Add>(a, b, out); break;
        case BinaryOp::Sub: binary_kernel<T, BinaryOp::Sub>(a, b, out); break;
        case BinaryOp::Mul: binary_kernel<T, BinaryOp::Mul>(a, b, out); break;
        case BinaryOp::Div: binary_kernel<T, BinaryOp::Div>(a, b, out); break;
      }
    });
  }

  void sum_to(const Tensor& x, const Tensor& out) override {
    for_dtype(out.dtype(), [&]<class T>() { sum_to_kernel<T>(x, out); });
  }

  void matmul(const Tensor& a, bool ta, const Tensor& b, bool tb, const Tensor& out, int64_t batch,
              int64_t m, int64_t n, int64_t k, int64_t stride_a, int64_t stride_b) override {
    if (b.dtype() == DType::BF16) {  // float32 activations times bf16 weights (ops.cpp checks the rest)
      if (ta || a.dtype() != DType::F32 || out.dtype() != DType::F32)
        throw std::logic_error("cpu backend: bf16 matmul needs a float32, untransposed left operand");
      const bool dot = m > 1 && b.impl()->storage->bf16_products && kernels::cpu_has_avx512_bf16();
      for (int64_t i = 0; i < batch; ++i)
        (dot ? kernels::gemm_bf16_bf16 : kernels::gemm_f32_bf16)(m, n, k, a.data<float>() + i * stride_a, k,
                                                                 b.data<uint16_t>() + i * stride_b, tb,
                                                                 out.data<float>() + i * m * n, n);
      return;
    }
    if (m == 1 && !ta && out.dtype() == DType::F32) {  // one row (decoding): a GEMV that reads b once
      for (int64_t i = 0; i < batch; ++i)
        kernels::gemv_f32(n, k, a.data<float>() + i * stride_a, b.data<float>() + i * stride_b, tb,
                          out.data<float>() + i * n);
      return;
    }
    for_dtype(out.dtype(), [&]<class T>() {
      const T* pa = a.data<T>();
      const T* pb = b.data<T>();
      T* pc = out.data<T>();
      const int lda = static_cast<int>(ta ? m : k), ldb = static_cast<int>(tb ? k : n);
      auto one = [&](int64_t i) {
        blas::gemm(ta ? blas::Trans::Yes : blas::Trans::No, tb ? blas::Trans::Yes : blas::Trans::No,
                   static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), T(1),
                   pa + i * stride_a, lda, pb + i * stride_b, ldb, T(0), pc + i * m * n,
                   static_cast<int>(n));
      };
      // Many small products (the chunked scans' per-head blocks): whole products spread over the
      // pool, rather than each split into blocks (blas.h) with a pool round trip per call.
      const double item_flops = 2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
      if (batch >= 2 && num_threads() > 1 && item_flops < kSmallGemmFlops) {
        blas::SingleThreadedBlas single;
        parallel_for(0, batch, 1, [&](int64_t lo, int64_t hi) {
          for (int64_t i = lo; i < hi; ++i) one(i);
        });
        return;
      }
      for (int64_t i = 0; i < batch; ++i) one(i);
    });
  }

  void rmsnorm(const Tensor& x, const Tensor& w, double eps, const Tensor& out) override {
    const int64_t n = x.size(-1);
    for_dtype(out.dtype(), [&]<class T>() {
      rmsnorm_kernel<T>(x.data<T>(), w.data<T>(), out.data<T>(), x.numel() / n, n, eps, true);
    });
  }

  void rms_rstd(const Tensor& x, double eps, const Tensor& out) override {
    const int64_t n = x.size(-1);
    for_dtype(out.dtype(), [&]<class T>() {
      rmsnorm_kernel<T>(x.data<T>(), static_cast<const T*>(nullptr), out.data<T>(), x.numel() / n, n, eps, false);
    });
  }

  void rope(const Tensor& x, int64_t pos0, double theta, bool inverse, const Tensor& out) override {
    for_dtype(out.dtype(), [&]<class T>() {
      rope_kernel<T>(x.data<T>(), out.data<T>(), x.size(0), x.size(1), x.size(2), pos0, theta, inverse);
    });
  }

  void unit_lower_inverse(const Tensor& l, const Tensor& out) override {
    const int64_t n = l.size(-1), batch = l.numel() / std::max<int64_t>(n * n, 1);
    for_dtype(out.dtype(), [&]<class T>() {
      const T* L = l.data<T>();
      T* O = out.data<T>();
      parallel_for(0, batch, 1, [&](int64_t lo, int64_t hi) {
        std::vector<double> row(static_cast<size_t>(n)), inv(static_cast<size_t>(n * n));
        for (int64_t b = lo; b < hi; ++b) {
          const T* Lb = L + b * n * n;
          // Row i of the inverse: e_i - sum_{j<i} L[i, j] inv[j] (inv[j] is zero beyond column j).
          // Accumulated in double: the entries can grow with n when keys are aligned.
          for (int64_t i = 0; i < n; ++i) {
            std::fill(row.begin(), row.end(), 0.0);
            row[static_cast<size_t>(i)] = 1.0;
            for (int64_t j = 0; j < i; ++j) {
              const double lij = static_cast<double>(Lb[i * n + j]);
              if (lij == 0.0) continue;
              const double* ij = inv.data() + j * n;
              for (int64_t c = 0; c <= j; ++c) row[static_cast<size_t>(c)] -= lij * ij[c];
            }
            std::copy(row.begin(), row.end(), inv.begin() + i * n);
          }
          T* Ob = O + b * n * n;
          for (int64_t k = 0; k < n * n; ++k) Ob[k] = static_cast<T>(inv[static_cast<size_t>(k)]);
        }
      });
    });
  }

  void causal_decay(const Tensor& cs, const Tensor& out) override {
    const int64_t n = cs.size(-1), rows = cs.numel();
    for_dtype(out.dtype(), [&]<class T>() {
      const T* c = cs.data<T>();
      T* o = out.data<T>();
      parallel_for(0, rows, 16, [&](int64_t lo, int64_t hi) {
        std::vector<T> neg(static_cast<size_t>(n));
        int64_t cur = -1;
        for (int64_t r = lo; r < hi; ++r) {
          const int64_t b = r / n, i = r % n;
          if (b != cur) {  // -cs of this batch row, so that exp(-cs_j - (-cs_i)) is one vexp_shift
            for (int64_t j = 0; j < n; ++j) neg[static_cast<size_t>(j)] = -c[b * n + j];
            cur = b;
          }
          T* row = o + r * n;
          vec::vexp_shift(neg.data(), neg[static_cast<size_t>(i)], row, i + 1);
          std::fill(row + i + 1, row + n, T(0));
        }
      });
    });
  }

  void softmax(const Tensor& x, const Tensor& out) override {
    const int64_t n = x.size(-1);
    for_dtype(out.dtype(), [&]<class T>() {
      softmax_rows<T>(x.data<T>(), out.data<T>(), x.numel() / n, n, nullptr);
    });
  }

  void masked_softmax(const Tensor& x, const kernels::AttentionShape& s, const Tensor& out) override {
    const int64_t n = x.size(-1);
    for_dtype(out.dtype(), [&]<class T>() {
      softmax_rows<T>(x.data<T>(), out.data<T>(), x.numel() / n, n, &s);
    });
  }

  void cross_entropy(const Tensor& logits, const std::vector<int32_t>& targets, const Tensor& nll) override {
    for_dtype(nll.dtype(), [&]<class T>() {
      cross_entropy_kernel<T>(logits.data<T>(), targets, nll.data<T>(), logits.size(0), logits.size(1));
    });
  }

  void onehot_sub(const Tensor& x, const std::vector<int32_t>& targets, const Tensor& out) override {
    copy(x, out);
    const int64_t v = x.size(1);
    for_dtype(out.dtype(), [&]<class T>() {
      T* y = out.data<T>();
      for (size_t r = 0; r < targets.size(); ++r) y[static_cast<int64_t>(r) * v + targets[r]] -= T(1);
    });
  }

  void gather_rows(const Tensor& table, const std::vector<int32_t>& ids, const Tensor& out) override {
    const int64_t d = table.size(1);
    if (table.dtype() == DType::BF16) {  // a bf16 embedding: rows widen to float32 (exact)
      const uint16_t* t = table.data<uint16_t>();
      float* y = out.data<float>();
      parallel_for(0, static_cast<int64_t>(ids.size()), std::max<int64_t>(1, kGrain / std::max<int64_t>(d, 1)),
                   [&](int64_t lo, int64_t hi) {
                     for (int64_t r = lo; r < hi; ++r)
                       for (int64_t j = 0; j < d; ++j) y[r * d + j] = bf16_to_float(t[ids[r] * d + j]);
                   });
      return;
    }
    for_dtype(out.dtype(), [&]<class T>() {
      const T* t = table.data<T>();
      T* y = out.data<T>();
      parallel_for(0, static_cast<int64_t>(ids.size()), std::max<int64_t>(1, kGrain / std::max<int64_t>(d, 1)),
                   [&](int64_t lo, int64_t hi) {
                     for (int64_t r = lo; r < hi; ++r) std::copy(t + ids[r] * d, t + (ids[r] + 1) * d, y + r * d);
                   });
    });
  }

  void scatter_add_rows(const Tensor& rows, const std::vector<int32_t>& ids, const Tensor& out) override {
    const int64_t d = rows.size(1);
    fill(out, 0.0);
    for_dtype(out.dtype(), [&]<class T>() {
      const T* g = rows.data<T>();
      T* y = out.data<T>();
      // Parallel over columns so no two threads touch the same element; row order is fixed,
      // so the result is deterministic.
      parallel_for(0, d, 64, [&](int64_t lo, int64_t hi) {
        for (size_t r = 0; r < ids.size(); ++r) {
          const T* gr = g + static_cast<int64_t>(r) * d;
          T* yr = y + ids[r] * d;
          for (int64_t j = lo; j < hi; ++j) yr[j] += gr[j];
        }
      });
    });
  }

  void attention_forward(const kernels::AttentionShape& s, const Tensor& q, const Tensor& k,
                         const Tensor& v, const Tensor& o, const Tensor& lse) override {
    if (s.bf16_products && o.dtype() == DType::F32 &&
        kernels::attention_forward_amx(s, q.data<float>(), k.data<float>(), v.data<float>(), o.data<float>(),
                                       lse.data<float>()))
      return;
    for_dtype(o.dtype(), [&]<class T>() {
      kernels::attention_forward<T>(s, q.data<T>(), k.data<T>(), v.data<T>(), o.data<T>(), lse.data<T>());
    });
  }

  void attention_forward_bf16_cache(const kernels::AttentionShape& s, const Tensor& q, const Tensor& kc,
                                    const Tensor& vc, const Tensor& k, const Tensor& v, const Tensor& o,
                                    const Tensor& lse) override {
    if (s.bf16_products && kernels::attention_forward_amx(s, q.data<float>(), bf16_kv(kc, vc, k, v), o.data<float>(),
                                                          lse.data<float>()))
      return;
    kernels::attention_forward_bf16_cache(s, q.data<float>(), bf16_kv(kc, vc, k, v), o.data<float>(), lse.data<float>());
  }

  void attention_backward_bf16_cache(const kernels::AttentionShape& s, const Tensor& q, const Tensor& kc,
                                     const Tensor& vc, const Tensor& k, const Tensor& v, const Tensor& o,
                                     const Tensor& lse, const Tensor& dout, const Tensor& dq, const Tensor& dk,
                                     const Tensor& dv) override {
    kernels::attention_backward_bf16_cache(s, q.data<float>(), bf16_kv(kc, vc, k, v), o.data<float>(),
                                           lse.data<float>(), dout.data<float>(), dq.data<float>(), dk.data<float>(),
                                           dv.data<float>());
  }

  void silu_mul(const Tensor& a, const Tensor& b, const Tensor& out) override {
    for_dtype(out.dtype(), [&]<class T>() { kernels::silu_mul<T>(a.data<T>(), b.data<T>(), out.numel(), out.data<T>()); });
  }

  void silu_mul_backward(const Tensor& a, const Tensor& b, const Tensor& g, const Tensor& da,
                         const Tensor& db) override {
    for_dtype(da.dtype(), [&]<class T>() {
      kernels::silu_mul_backward<T>(a.data<T>(), b.data<T>(), g.data<T>(), da.numel(), da.data<T>(), db.data<T>());
    });
  }

  void rmsnorm_backward(const Tensor& x, const Tensor& w, const Tensor& g, double eps, const Tensor& dx,
                        const Tensor& dw) override {
    const int64_t n = x.size(-1);
    for_dtype(dx.dtype(), [&]<class T>() {
      kernels::rmsnorm_backward<T>(x.data<T>(), w.data<T>(), g.data<T>(), x.numel() / n, n, eps, dx.data<T>(),
                                   dw.data<T>());
    });
  }

  void cross_entropy_backward(const Tensor& logits, const std::vector<int32_t>& targets, const Tensor& g,
                              const Tensor& dlogits) override {
    for_dtype(dlogits.dtype(), [&]<class T>() {
      kernels::cross_entropy_backward<T>(logits.data<T>(), targets.data(), g.data<T>(), logits.size(0), logits.size(1),
                                         dlogits.data<T>());
    });
  }

  void cross_entropy_backward_backward(const Tensor& logits, const Tensor& b, const std::vector<int32_t>& targets,
                                       const Tensor& g, const Tensor& dz, const Tensor& c, const Tensor& dg) override {
    for_dtype(dz.dtype(), [&]<class T>() {
      kernels::cross_entropy_backward_backward<T>(logits.data<T>(), b.data<T>(), targets.data(), g.data<T>(),
                                                  logits.size(0), logits.size(1), dz.data<T>(), c.data<T>(),
                                                  dg.data<T>());
    });
  }

  void attention_backward(const kernels::AttentionShape& s, const Tensor& q, const Tensor& k,
                          const Tensor& v, const Tensor& o, const Tensor& lse, const Tensor& dout,
                          const Tensor& dq, const Tensor& dk, const Tensor& dv) override {
    for_dtype(o.dtype(), [&]<class T>() {
      kernels::attention_backward<T>(s, q.data<T>(), k.data<T>(), v.data<T>(), o.data<T>(), lse.data<T>(),
                                     dout.data<T>(), dq.data<T>(), dk.data<T>(), dv.data<T>());
    });
  }

  void attention_backward_backward(const kernels::AttentionShape& s, const Tensor& q, const Tensor& k,
                                   const Tensor& v, const Tensor& o, const Tensor& lse, const Tensor& dout,
                                   const Tensor& aq, const Tensor& ak, const Tensor& av, const Tensor& gq,
                                   const Tensor& gk, const Tensor& gv, const Tensor& gdout) override {
    for_dtype(o.dtype(), [&]<class T>() {
      kernels::attention_backward_backward<T>(s, q.data<T>(), k.data<T>(), v.data<T>(), o.data<T>(), lse.data<T>(),
                                              dout.data<T>(), aq.data<T>(), ak.data<T>(), av.data<T>(), gq.data<T>(),
                                              gk.data<T>(), gv.data<T>(), gdout.data<T>());
    });
  }

 private:
  static kernels::Bf16CacheKV bf16_kv(const Tensor& kc, const Tensor& vc, const Tensor& k, const Tensor& v) {
    return {kc.data<uint16_t>(), vc.data<uint16_t>(), kc.size(0), k.data<float>(), v.data<float>()};
  }

  DeviceMemory& mem_;
  Device device_;
  const char* name_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(DeviceMemory& memory, Device device, const char* name) {
  return std::make_unique<CpuBackend>(memory, device, name);
}

Backend& cpu_backend() {
  // Never destroyed: tensors in static objects may outlive any static destructor order.
  static Backend* const cpu = make_cpu_backend(pool::host_memory(), Device::cpu(), "cpu").release();
  return *cpu;
}

}  // namespace ttt
