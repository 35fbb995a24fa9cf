// CPU backend: plain loops threaded over the pool, GEMM through BLAS (backend/blas.h),
// attention through the fused kernels (kernels/attention.h). float and double share the code.
#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "backend/backend.h"
#include "backend/blas.h"
#include "backend/thread_pool.h"

namespace ttt {
namespace {

constexpr int64_t kGrain = 16384;  // elements per parallel piece for streaming kernels

template <class F>
void for_dtype(DType dt, F&& f) {
  if (dt == DType::F32)
    f.template operator()<float>();
  else
    f.template operator()<double>();
}

template <class T>
T silu_d(int order, T x) {
  const T s = T(1) / (T(1) + std::exp(-x));
  switch (order) {
    case 0: return x * s;
    case 1: return s * (T(1) + x * (T(1) - s));
    case 2: return s * (T(1) - s) * (T(2) + x * (T(1) - T(2) * s));
    default: return s * (T(1) - s) * (T(3) * (T(1) - T(2) * s) + x * (T(1) - T(6) * s + T(6) * s * s));
  }
}

template <class T>
void unary_kernel(UnaryOp op, const T* x, T* y, int64_t n, T a) {
  parallel_for(0, n, kGrain, [&](int64_t lo, int64_t hi) {
    switch (op) {
      case UnaryOp::Neg: for (int64_t i = lo; i < hi; ++i) y[i] = -x[i]; break;
      case UnaryOp::Exp: for (int64_t i = lo; i < hi; ++i) y[i] = std::exp(x[i]); break;
      case UnaryOp::Log: for (int64_t i = lo; i < hi; ++i) y[i] = std::log(x[i]); break;
      case UnaryOp::Sqrt: for (int64_t i = lo; i < hi; ++i) y[i] = std::sqrt(x[i]); break;
      case UnaryOp::Rsqrt: for (int64_t i = lo; i < hi; ++i) y[i] = T(1) / std::sqrt(x[i]); break;
      case UnaryOp::Reciprocal: for (int64_t i = lo; i < hi; ++i) y[i] = T(1) / x[i]; break;
      case UnaryOp::Square: for (int64_t i = lo; i < hi; ++i) y[i] = x[i] * x[i]; break;
      case UnaryOp::Sigmoid: for (int64_t i = lo; i < hi; ++i) y[i] = T(1) / (T(1) + std::exp(-x[i])); break;
      case UnaryOp::Silu: for (int64_t i = lo; i < hi; ++i) y[i] = x[i] / (T(1) + std::exp(-x[i])); break;
      case UnaryOp::SiluGrad: for (int64_t i = lo; i < hi; ++i) y[i] = silu_d<T>(1, x[i]); break;
      case UnaryOp::SiluGrad2: for (int64_t i = lo; i < hi; ++i) y[i] = silu_d<T>(2, x[i]); break;
      case UnaryOp::SiluGrad3: for (int64_t i = lo; i < hi; ++i) y[i] = silu_d<T>(3, x[i]); break;
      case UnaryOp::AddScalar: for (int64_t i = lo; i < hi; ++i) y[i] = x[i] + a; break;
      case UnaryOp::MulScalar: for (int64_t i = lo; i < hi; ++i) y[i] = x[i] * a; break;
      case UnaryOp::MaxScalar: for (int64_t i = lo; i < hi; ++i) y[i] = x[i] > a ? x[i] : a; break;
      case UnaryOp::StepScalar: for (int64_t i = lo; i < hi; ++i) y[i] = x[i] > a ? T(1) : T(0); break;
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

// Sums x over the dimensions where `out` has extent 1. Accumulates in double for float inputs.
template <class T>
void sum_to_kernel(const Tensor& X, const Tensor& Y) {
  const T* x = X.data<T>();
  T* y = Y.data<T>();
  const int64_t rank = X.dim();
  const int64_t n = X.numel(), m = Y.numel();
  if (m == n) {
    std::copy(x, x + n, y);
    return;
  }
  if (m == 1) {  // full reduction: per-piece partial sums, then a fixed-order total
    const int64_t pieces = std::max<int64_t>(1, std::min<int64_t>(64, n / kGrain));
    std::vector<double> part(pieces, 0.0);
    parallel_for(0, pieces, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t p = lo; p < hi; ++p) {
        double acc = 0;
        for (int64_t i = n * p / pieces; i < n * (p + 1) / pieces; ++i) acc += x[i];
        part[p] = acc;
      }
    });
    double total = 0;
    for (double v : part) total += v;
    y[0] = static_cast<T>(total);
    return;
  }
  // Split x's dims into [outer kept/reduced pattern]. Find the common fast cases first.
  // Case A: reduce trailing dims only -> rows of length `inner`.
  int64_t kept_prefix = 0;
  while (kept_prefix < rank && Y.shape()[kept_prefix] == X.shape()[kept_prefix]) ++kept_prefix;
  bool trailing_reduced = true;
  for (int64_t d = kept_prefix; d < rank; ++d)
    if (Y.shape()[d] != 1) trailing_reduced = false;
  if (trailing_reduced) {
    const int64_t inner = n / m;
    parallel_for(0, m, std::max<int64_t>(1, kGrain / std::max<int64_t>(inner, 1)), [&](int64_t lo, int64_t hi) {
      for (int64_t r = lo; r < hi; ++r) {
        double acc = 0;
        const T* row = x + r * inner;
        for (int64_t i = 0; i < inner; ++i) acc += row[i];
        y[r] = static_cast<T>(acc);
      }
    });
    return;
  }
  // Case B: reduce leading dims only -> columns of length m.
  int64_t kept_suffix = rank;
  while (kept_suffix > 0 && Y.shape()[kept_suffix - 1] == X.shape()[kept_suffix - 1]) --kept_suffix;
  bool leading_reduced = true;
  for (int64_t d = 0; d < kept_suffix; ++d)
    if (Y.shape()[d] != 1) leading_reduced = false;
  if (leading_reduced) {
    const int64_t outer = n / m;
    parallel_for(0, m, std::max<int64_t>(64, kGrain / std::max<int64_t>(outer, 1)), [&](int64_t lo, int64_t hi) {
      std::vector<double> acc(hi - lo, 0.0);
      for (int64_t o = 0; o < outer; ++o) {
        const T* row = x + o * m;
        for (int64_t j = lo; j < hi; ++j) acc[j - lo] += row[j];
      }
      for (int64_t j = lo; j < hi; ++j) y[j] = static_cast<T>(acc[j - lo]);
    });
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

template <class T>
void rmsnorm_kernel(const T* x, const T* w, T* y, int64_t rows, int64_t n, double eps, bool with_y) {
  parallel_for(0, rows, std::max<int64_t>(1, kGrain / std::max<int64_t>(n, 1)), [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      const T* xr = x + r * n;
      double ss = 0;
      for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(xr[i]) * xr[i];
      const T rstd = static_cast<T>(1.0 / std::sqrt(ss / n + eps));
      if (!with_y) {
        y[r] = rstd;
        continue;
      }
      T* yr = y + r * n;
      for (int64_t i = 0; i < n; ++i) yr[i] = xr[i] * rstd * w[i];
    }
  });
}

template <class T>
void rope_kernel(const T* x, T* y, int64_t t, int64_t h, int64_t d, int64_t pos0, double theta, bool inverse) {
  const int64_t half = d / 2;
  std::vector<double> inv_freq(half);
  for (int64_t i = 0; i < half; ++i) inv_freq[i] = std::pow(theta, -2.0 * i / d);
  parallel_for(0, t, std::max<int64_t>(1, kGrain / std::max<int64_t>(h * d, 1)), [&](int64_t lo, int64_t hi) {
    std::vector<T> c(half), s(half);
    for (int64_t p = lo; p < hi; ++p) {
      for (int64_t i = 0; i < half; ++i) {
        const double ang = static_cast<double>(pos0 + p) * inv_freq[i];
        c[i] = static_cast<T>(std::cos(ang));
        s[i] = static_cast<T>(inverse ? -std::sin(ang) : std::sin(ang));
      }
      for (int64_t hh = 0; hh < h; ++hh) {
        const T* xr = x + (p * h + hh) * d;
        T* yr = y + (p * h + hh) * d;
        for (int64_t i = 0; i < half; ++i) {
          const T a = xr[2 * i], b = xr[2 * i + 1];
          yr[2 * i] = a * c[i] - b * s[i];
          yr[2 * i + 1] = a * s[i] + b * c[i];
        }
      }
    }
  });
}

inline bool visible(const kernels::AttentionShape& s, int64_t i, int64_t j) {
  const int64_t p = s.q_pos0 + i, q = s.k_pos0 + j;
  return q <= p && (s.window == 0 || q > p - s.window);
}

template <class T>
void softmax_rows(const T* x, T* y, int64_t rows, int64_t n,
                  const kernels::AttentionShape* mask) {
  parallel_for(0, rows, std::max<int64_t>(1, kGrain / std::max<int64_t>(n, 1)), [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      const T* xr = x + r * n;
      T* yr = y + r * n;
      const int64_t qi = mask ? r % mask->tq : 0;
      T mx = -std::numeric_limits<T>::infinity();
      for (int64_t j = 0; j < n; ++j)
        if (!mask || visible(*mask, qi, j)) mx = std::max(mx, xr[j]);
      if (mx == -std::numeric_limits<T>::infinity()) {  // nothing visible
        std::fill(yr, yr + n, T(0));
        continue;
      }
      double sum = 0;
      for (int64_t j = 0; j < n; ++j) {
        const T e = (!mask || visible(*mask, qi, j)) ? std::exp(xr[j] - mx) : T(0);
        yr[j] = e;
        sum += e;
      }
      const T inv = static_cast<T>(1.0 / sum);
      for (int64_t j = 0; j < n; ++j) yr[j] *= inv;
    }
  });
}

template <class T>
void cross_entropy_kernel(const T* logits, const std::vector<int32_t>& tg, T* nll, int64_t rows, int64_t v) {
  parallel_for(0, rows, std::max<int64_t>(1, kGrain / std::max<int64_t>(v, 1)), [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      const T* xr = logits + r * v;
      T mx = xr[0];
      for (int64_t j = 1; j < v; ++j) mx = std::max(mx, xr[j]);
      double sum = 0;
      for (int64_t j = 0; j < v; ++j) sum += std::exp(static_cast<double>(xr[j] - mx));
      nll[r] = static_cast<T>(std::log(sum) + mx - xr[tg[r]]);
    }
  });
}

class CpuBackend final : public Backend {
 public:
  const char* name() const override { return "cpu"; }

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
    for_dtype(out.dtype(), [&]<class T>() {
      const T* pa = a.data<T>();
      const T* pb = b.data<T>();
      T* pc = out.data<T>();
      const int lda = static_cast<int>(ta ? m : k), ldb = static_cast<int>(tb ? k : n);
      for (int64_t i = 0; i < batch; ++i)
        blas::gemm(ta ? blas::Trans::Yes : blas::Trans::No, tb ? blas::Trans::Yes : blas::Trans::No,
                   static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), T(1),
                   pa + i * stride_a, lda, pb + i * stride_b, ldb, T(0), pc + i * m * n,
                   static_cast<int>(n));
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
    for_dtype(o.dtype(), [&]<class T>() {
      kernels::attention_forward<T>(s, q.data<T>(), k.data<T>(), v.data<T>(), o.data<T>(), lse.data<T>());
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
};

}  // namespace

Backend& backend_for(Device device) {
  static CpuBackend cpu;
  switch (device) {
    case Device::CPU: return cpu;
  }
  throw std::invalid_argument("no backend for this device");
}

}  // namespace ttt
