// Fast elementwise math on plain arrays for the CPU kernels (softmax, attention, losses).
//
//   vexp(x, y, n)               y[i] = exp(x[i])
//   vexp_shift(x, shift, y, n)  y[i] = exp(x[i] - shift)
//   vexp_sum(x, shift, y, n)    y[i] = exp(x[i] - shift), returns the sum of the y[i]
//   vmax(x, n)                  max of x[0..n), -inf for n == 0
//   vsum(x, n)                  sum of x[0..n)
//   vscale(x, a, n)             x[i] *= a
//   vsum_exp(x, shift, n)       sum of exp(x[i] - shift) (nothing stored)
//   vdot(x, y, n)               sum of x[i] * y[i]
//   vsigmoid(x, y, n)           y[i] = 1 / (1 + exp(-x[i]))
//   vsilu(x, y, n)              y[i] = x[i] * sigmoid(x[i])
//   vsilu_deriv(k, x, y, n)     y[i] = k-th derivative of silu at x[i], k in 0..3 (0: silu)
//   vsilu_pair(x, y0, y1, n)    y0[i] = silu(x[i]), y1[i] = silu'(x[i]) (one exponential)
// for float and double; y == x (in place) is allowed everywhere.
//
// sigmoid / silu use e = exp(-|x|) in (0, 1] and s = (x < 0 ? e : 1) / (1 + e), so no
// intermediate overflows: for very negative x (below -87 float, -708 double) s is exactly 0
// (silu gives -0), for large positive x s is exactly 1.
//
// Accuracy: float exp has a relative error below ~1e-7 (Cephes expf range reduction and
// polynomial, computed in float); double exp a few ulp (degree-13 Taylor on |r| <= ln2/2).
// exp(-inf) = 0, arguments below -87 (float) / -708 (double) flush to 0 (no denormals), arguments
// above about 88.3 / 709 are clamped (a huge finite value, not inf). NaN inputs are not
// supported (unspecified result).
//
// How it is vectorized: the bodies use GCC vector extensions (written once as templates over
// the vector type), because without -ffast-math the loop vectorizer will not reorder a float
// sum or max, nor if-convert float selects under the default -ftrapping-math. On x86-64 each
// entry point has AVX-512 (64-byte vectors), AVX2+FMA (32-byte) and baseline SSE2 (16-byte)
// variants compiled with target attributes, and the CPU is checked once at run time, so the
// project needs no global -march flag. Other targets use 16-byte vectors.
#pragma once
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define TTT_VEC_X86_DISPATCH 1
#else
#define TTT_VEC_X86_DISPATCH 0
#endif

// A plain elementwise loop (one fixed sequence of IEEE operations per element, no reduction)
// compiled twice, for the build's baseline and for AVX-512, the copy chosen once when the program
// loads (GCC's target_clones). Contraction into FMAs is off in both, so both round every
// operation alike: the loop's results do not depend on the CPU. The baseline ran these 4 float
// lanes wide; the AVX-512 copy runs 16.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define TTT_WIDE_LOOP __attribute__((target_clones("avx512f", "default"), optimize("fp-contract=off")))
#else
#define TTT_WIDE_LOOP
#endif

namespace ttt::vec {
namespace detail {

#define TTT_VEC_INLINE inline __attribute__((always_inline))

typedef float vf4 __attribute__((vector_size(16)));
typedef float vf8 __attribute__((vector_size(32)));
typedef float vf16 __attribute__((vector_size(64)));
typedef double vd2 __attribute__((vector_size(16)));
typedef double vd4 __attribute__((vector_size(32)));
typedef double vd8 __attribute__((vector_size(64)));

// Integer vector of the same shape (the type comparisons return).
template <class V>
struct IntOf;
template <> struct IntOf<vf4> { typedef int32_t type __attribute__((vector_size(16))); };
template <> struct IntOf<vf8> { typedef int32_t type __attribute__((vector_size(32))); };
template <> struct IntOf<vf16> { typedef int32_t type __attribute__((vector_size(64))); };
template <> struct IntOf<vd2> { typedef int64_t type __attribute__((vector_size(16))); };
template <> struct IntOf<vd4> { typedef int64_t type __attribute__((vector_size(32))); };
template <> struct IntOf<vd8> { typedef int64_t type __attribute__((vector_size(64))); };

// Branch-free scalar select (for the tails): with -ftrapping-math a float `c ? a : b` is not
// if-converted.
template <class T, class I>
TTT_VEC_INLINE T select_bits(bool c, T a, T b) {
  const I m = -static_cast<I>(c);
  I ia, ib;
  std::memcpy(&ia, &a, sizeof ia);
  std::memcpy(&ib, &b, sizeof ib);
  const I r = (ia & m) | (ib & ~m);
  T out;
  std::memcpy(&out, &r, sizeof out);
  return out;
}

// Constants of the exp approximation.
template <class T>
struct ExpC;
template <>
struct ExpC<float> {
  static constexpr float hi = 88.3762626647949f, lo = -87.0f;  // exp(lo) is still normal
  static constexpr float log2e = 1.44269504088896341f;
  static constexpr float c1 = 0.693359375f, c2 = -2.12194440e-4f;  // ln 2 = c1 + c2
  static constexpr float magic = 12582912.0f;                       // 1.5 * 2^23
  static constexpr int32_t magic_bits = 0x4B400000, bias = 127, mant = 23;
};
template <>
struct ExpC<double> {
  static constexpr double hi = 709.0, lo = -708.0;
  static constexpr double log2e = 1.4426950408889634074;
  static constexpr double c1 = 6.93145751953125e-1, c2 = 1.42860682030941723212e-6;
  static constexpr double magic = 6755399441055744.0;  // 1.5 * 2^52
  static constexpr int64_t magic_bits = 0x4338000000000000LL, bias = 1023, mant = 52;
};

// p(r) ~ exp(r) on |r| <= ln2/2, written for scalars and vectors alike.
// (Arguments by reference: passing 32/64-byte vectors by value would make the ABI differ
// between the ISA variants, -Wpsabi.)
template <class T, class V>
TTT_VEC_INLINE void exp_poly(const V& r, V& out) {
  if constexpr (sizeof(T) == 4) {  // Cephes expf
    V p = r * T(1.9875691500e-4) + T(1.3981999507e-3);
    p = p * r + T(8.3334519073e-3);
    p = p * r + T(4.1665795894e-2);
    p = p * r + T(1.6666665459e-1);
    p = p * r + T(5.0000001201e-1);
    out = p * (r * r) + r + T(1);
  } else {  // Taylor to degree 13: truncation error < 1e-17
    V p = r * (1.0 / 6227020800.0) + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    out = p * (r * r) + r + 1.0;
  }
}

// Scalar exp, used for the tails of the vector loops (same algorithm and result).
template <class T>
TTT_VEC_INLINE T exp1(T x) {
  using C = ExpC<T>;
  using I = std::conditional_t<sizeof(T) == 4, int32_t, int64_t>;
  const T xc = select_bits<T, I>(x > C::hi, C::hi, select_bits<T, I>(x < C::lo, C::lo, x));
  const T t = xc * C::log2e + C::magic;  // adding 1.5 * 2^mant rounds to an integer
  const T n = t - C::magic;
  T r = xc - n * C::c1;
  r = r - n * C::c2;
  T p;
  exp_poly<T>(r, p);
  I tb;
  std::memcpy(&tb, &t, sizeof tb);
  const I eb = (tb - C::magic_bits + C::bias) << C::mant;  // 2^n
  T e;
  std::memcpy(&e, &eb, sizeof e);
  return select_bits<T, I>(x < C::lo, T(0), p * e);
}

// exp on a whole vector, in place.
template <class T, class V>
TTT_VEC_INLINE void exp_inplace(V& x) {
  using C = ExpC<T>;
  using VI = typename IntOf<V>::type;
  const V zero = {};
  const V hi = zero + C::hi, lo = zero + C::lo;
  const VI under = x < lo;
  V xc = x > hi ? hi : x;
  xc = xc < lo ? lo : xc;
  const V t = xc * C::log2e + C::magic;
  const V n = t - C::magic;
  V r = xc - n * C::c1;
  r = r - n * C::c2;
  V p;
  exp_poly<T>(r, p);
  const VI eb = (((VI)t) - C::magic_bits + C::bias) << C::mant;  // vector casts: bit casts
  const V y = p * (V)eb;
  x = under ? zero : y;
}

template <class V, class T>
TTT_VEC_INLINE void loadv(V& v, const T* p) {
  std::memcpy(&v, p, sizeof v);
}

// y = exp(x - shift), optionally summed; with kStore false nothing is written (y unused).
template <class V, class T, bool kSum, bool kStore = true>
TTT_VEC_INLINE T exp_shift_impl(const T* x, T shift, T* y, int64_t n) {
  constexpr int L = sizeof(V) / sizeof(T);
  V acc = {};
  int64_t i = 0;
  for (; i + L <= n; i += L) {
    V e;
    loadv(e, x + i);
    e -= shift;
    exp_inplace<T>(e);
    if (kStore) std::memcpy(y + i, &e, sizeof e);
    if (kSum) acc += e;
  }
  T s = 0;
  const int64_t rem = n - i;
  for (int64_t j = 0; j < rem; ++j) {
    const T e = exp1(x[i + j] - shift);
    if (kStore) y[i + j] = e;
    s += e;
  }
  if (kSum)
    for (int l = 0; l < L; ++l) s += acc[l];
  return s;
}

template <class V, class T>
TTT_VEC_INLINE T max_impl(const T* x, int64_t n) {
  constexpr int L = sizeof(V) / sizeof(T);
  T m = -std::numeric_limits<T>::infinity();
  int64_t i = 0;
  if (n >= L) {
    V acc, v;
    loadv(acc, x);
    for (i = L; i + L <= n; i += L) {
      loadv(v, x + i);
      acc = v > acc ? v : acc;
    }
    for (int l = 0; l < L; ++l) m = acc[l] > m ? acc[l] : m;
  }
  const int64_t rem = n - i;
  for (int64_t j = 0; j < rem; ++j) m = x[i + j] > m ? x[i + j] : m;
  return m;
}

template <class V, class T>
TTT_VEC_INLINE T sum_impl(const T* x, int64_t n) {
  constexpr int L = sizeof(V) / sizeof(T);
  V acc = {};
  int64_t i = 0;
  for (; i + L <= n; i += L) {
    V v;
    loadv(v, x + i);
    acc += v;
  }
  T s = 0;
  for (int l = 0; l < L; ++l) s += acc[l];
  const int64_t rem = n - i;
  for (int64_t j = 0; j < rem; ++j) s += x[i + j];
  return s;
}

template <class V, class T>
TTT_VEC_INLINE void scale_impl(T* x, T a, int64_t n) {
  constexpr int L = sizeof(V) / sizeof(T);
  int64_t i = 0;
  for (; i + L <= n; i += L) {
    V v;
    loadv(v, x + i);
    v *= a;
    std::memcpy(x + i, &v, sizeof v);
  }
  const int64_t rem = n - i;
  for (int64_t j = 0; j < rem; ++j) x[i + j] *= a;
}

template <class V, class T>
TTT_VEC_INLINE T dot_impl(const T* x, const T* y, int64_t n) {
  constexpr int L = sizeof(V) / sizeof(T);
  V acc = {};
  int64_t i = 0;
  for (; i + L <= n; i += L) {
    V a, b;
    loadv(a, x + i);
    loadv(b, y + i);
    acc += a * b;
  }
  T s = 0;
  for (int l = 0; l < L; ++l) s += acc[l];
  const int64_t rem = n - i;
  for (int64_t j = 0; j < rem; ++j) s += x[i + j] * y[i + j];
  return s;
}

// K = -1: sigmoid; K = 0..3: silu and its first three derivatives (see the header comment).
template <class T, int K, class V>
TTT_VEC_INLINE void silu_vec(const V& x, V& y) {
  const V zero = {};
  const V one = zero + T(1);
  V e = x < zero ? x : -x;  // -|x|
  exp_inplace<T>(e);        // in [0, 1]
  const V num = x < zero ? e : one;
  const V s = num / (one + e);
  if constexpr (K == -1) {
    y = s;
  } else if constexpr (K == 0) {
    y = x * s;
  } else if constexpr (K == 1) {
    y = s * (one + x * (one - s));
  } else if constexpr (K == 2) {
    y = s * (one - s) * (T(2) + x * (one - T(2) * s));
  } else {
    y = s * (one - s) * (T(3) * (one - T(2) * s) + x * (one - T(6) * s + T(6) * s * s));
  }
}

template <class V, class T, int K>
TTT_VEC_INLINE void silu_impl(const T* x, T* y, int64_t n) {
  constexpr int L = sizeof(V) / sizeof(T);
  int64_t i = 0;
  for (; i + L <= n; i += L) {
    V v, r;
    loadv(v, x + i);
    silu_vec<T, K>(v, r);
    std::memcpy(y + i, &r, sizeof r);
  }
  if (i < n) {  // tail: the same vector code on a zero-padded copy
    const size_t bytes = static_cast<size_t>(n - i) * sizeof(T);
    V v = {}, r;
    std::memcpy(&v, x + i, bytes);
    silu_vec<T, K>(v, r);
    std::memcpy(y + i, &r, bytes);
  }
}

// silu and its first derivative from one exponential: the expressions of silu_vec's K = 0 and
// K = 1, so the results are theirs bit for bit.
template <class T, class V>
TTT_VEC_INLINE void silu_pair_vec(const V& x, V& y0, V& y1) {
  const V zero = {};
  const V one = zero + T(1);
  V e = x < zero ? x : -x;
  exp_inplace<T>(e);
  const V num = x < zero ? e : one;
  const V s = num / (one + e);
  y0 = x * s;
  y1 = s * (one + x * (one - s));
}

template <class V, class T>
TTT_VEC_INLINE void silu_pair_impl(const T* x, T* y0, T* y1, int64_t n) {
  constexpr int L = sizeof(V) / sizeof(T);
  int64_t i = 0;
  for (; i + L <= n; i += L) {
    V v, r0, r1;
    loadv(v, x + i);
    silu_pair_vec<T>(v, r0, r1);
    std::memcpy(y0 + i, &r0, sizeof r0);
    std::memcpy(y1 + i, &r1, sizeof r1);
  }
  if (i < n) {
    const size_t bytes = static_cast<size_t>(n - i) * sizeof(T);
    V v = {}, r0, r1;
    std::memcpy(&v, x + i, bytes);
    silu_pair_vec<T>(v, r0, r1);
    std::memcpy(y0 + i, &r0, bytes);
    std::memcpy(y1 + i, &r1, bytes);
  }
}

// Each operation as a functor templated on the float and double vector types to use.
struct OpExp {
  template <class VF, class VD, class T>
  static TTT_VEC_INLINE void run(const T* x, T* y, int64_t n) {
    exp_shift_impl<std::conditional_t<sizeof(T) == 4, VF, VD>, T, false>(x, T(0), y, n);
  }
};
struct OpExpShift {
  template <class VF, class VD, class T>
  static TTT_VEC_INLINE void run(const T* x, T shift, T* y, int64_t n) {
    exp_shift_impl<std::conditional_t<sizeof(T) == 4, VF, VD>, T, false>(x, shift, y, n);
  }
};
struct OpExpSum {
  template <class VF, class VD, class T>
  static TTT_VEC_INLINE T run(const T* x, T shift, T* y, int64_t n) {
    return exp_shift_impl<std::conditional_t<sizeof(T) == 4, VF, VD>, T, true>(x, shift, y, n);
  }
};
struct OpMax {
  template <class VF, class VD, class T>
  static TTT_VEC_INLINE T run(const T* x, int64_t n) {
    return max_impl<std::conditional_t<sizeof(T) == 4, VF, VD>>(x, n);
  }
};
struct OpSum {
  template <class VF, class VD, class T>
  static TTT_VEC_INLINE T run(const T* x, int64_t n) {
    return sum_impl<std::conditional_t<sizeof(T) == 4, VF, VD>>(x, n);
  }
};
struct OpScale {
  template <class VF, class VD, class T>
  static TTT_VEC_INLINE void run(T* x, T a, int64_t n) {
    scale_impl<std::conditional_t<sizeof(T) == 4, VF, VD>>(x, a, n);
  }
};

struct OpSumExp {
  template <class VF, class VD, class T>
  static TTT_VEC_INLINE T run(const T* x, T shift, int64_t n) {
    return exp_shift_impl<std::conditional_t<sizeof(T) == 4, VF, VD>, T, true, false>(
        x, shift, static_cast<T*>(nullptr), n);
  }
};
struct OpDot {
  template <class VF, class VD, class T>
  static TTT_VEC_INLINE T run(const T* x, const T* y, int64_t n) {
    return dot_impl<std::conditional_t<sizeof(T) == 4, VF, VD>>(x, y, n);
  }
};
struct OpSilu {
  template <class VF, class VD, class T>
  static TTT_VEC_INLINE void run(int kind, const T* x, T* y, int64_t n) {
    using V = std::conditional_t<sizeof(T) == 4, VF, VD>;
    switch (kind) {
      case -1: silu_impl<V, T, -1>(x, y, n); break;
      case 0: silu_impl<V, T, 0>(x, y, n); break;
      case 1: silu_impl<V, T, 1>(x, y, n); break;
      case 2: silu_impl<V, T, 2>(x, y, n); break;
      default: silu_impl<V, T, 3>(x, y, n); break;
    }
  }
};

struct OpSiluPair {
  template <class VF, class VD, class T>
  static TTT_VEC_INLINE void run(const T* x, T* y0, T* y1, int64_t n) {
    using V = std::conditional_t<sizeof(T) == 4, VF, VD>;
    silu_pair_impl<V, T>(x, y0, y1, n);
  }
};

#if TTT_VEC_X86_DISPATCH
enum class Isa { kSse2, kAvx2, kAvx512 };
inline Isa isa() {
  static const Isa v = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return Isa::kAvx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::kAvx2;
    return Isa::kSse2;
  }();
  return v;
}

template <class Op, class... A>
__attribute__((target("avx512f"))) inline auto run_avx512(A... a) {
  return Op::template run<vf16, vd8>(a...);
}
template <class Op, class... A>
__attribute__((target("avx2,fma"))) inline auto run_avx2(A... a) {
  return Op::template run<vf8, vd4>(a...);
}
#endif

template <class Op, class... A>
inline auto dispatch(A... a) {
#if TTT_VEC_X86_DISPATCH
  switch (isa()) {
    case Isa::kAvx512: return run_avx512<Op>(a...);
    case Isa::kAvx2: return run_avx2<Op>(a...);
    case Isa::kSse2: break;
  }
#endif
  return Op::template run<vf4, vd2>(a...);
}

}  // namespace detail

inline void vexp(const float* x, float* y, int64_t n) { detail::dispatch<detail::OpExp>(x, y, n); }
inline void vexp(const double* x, double* y, int64_t n) {
  detail::dispatch<detail::OpExp>(x, y, n);
}
inline void vexp_shift(const float* x, float shift, float* y, int64_t n) {
  detail::dispatch<detail::OpExpShift>(x, shift, y, n);
}
inline void vexp_shift(const double* x, double shift, double* y, int64_t n) {
  detail::dispatch<detail::OpExpShift>(x, shift, y, n);
}
inline float vexp_sum(const float* x, float shift, float* y, int64_t n) {
  return detail::dispatch<detail::OpExpSum>(x, shift, y, n);
}
inline double vexp_sum(const double* x, double shift, double* y, int64_t n) {
  return detail::dispatch<detail::OpExpSum>(x, shift, y, n);
}
inline float vmax(const float* x, int64_t n) { return detail::dispatch<detail::OpMax>(x, n); }
inline double vmax(const double* x, int64_t n) { return detail::dispatch<detail::OpMax>(x, n); }
inline float vsum(const float* x, int64_t n) { return detail::dispatch<detail::OpSum>(x, n); }
inline double vsum(const double* x, int64_t n) { return detail::dispatch<detail::OpSum>(x, n); }
inline void vscale(float* x, float a, int64_t n) { detail::dispatch<detail::OpScale>(x, a, n); }
inline void vscale(double* x, double a, int64_t n) { detail::dispatch<detail::OpScale>(x, a, n); }

inline float vsum_exp(const float* x, float shift, int64_t n) {
  return detail::dispatch<detail::OpSumExp>(x, shift, n);
}
inline double vsum_exp(const double* x, double shift, int64_t n) {
  return detail::dispatch<detail::OpSumExp>(x, shift, n);
}
inline float vdot(const float* x, const float* y, int64_t n) {
  return detail::dispatch<detail::OpDot>(x, y, n);
}
inline double vdot(const double* x, const double* y, int64_t n) {
  return detail::dispatch<detail::OpDot>(x, y, n);
}
// order must be in 0..3.
inline void vsilu_deriv(int order, const float* x, float* y, int64_t n) {
  detail::dispatch<detail::OpSilu>(order, x, y, n);
}
inline void vsilu_deriv(int order, const double* x, double* y, int64_t n) {
  detail::dispatch<detail::OpSilu>(order, x, y, n);
}
// y0 = silu(x), y1 = silu'(x), as vsilu and vsilu_deriv(1) give them, from one exponential.
inline void vsilu_pair(const float* x, float* y0, float* y1, int64_t n) {
  detail::dispatch<detail::OpSiluPair>(x, y0, y1, n);
}
inline void vsilu_pair(const double* x, double* y0, double* y1, int64_t n) {
  detail::dispatch<detail::OpSiluPair>(x, y0, y1, n);
}
inline void vsilu(const float* x, float* y, int64_t n) { vsilu_deriv(0, x, y, n); }
inline void vsilu(const double* x, double* y, int64_t n) { vsilu_deriv(0, x, y, n); }
inline void vsigmoid(const float* x, float* y, int64_t n) {
  detail::dispatch<detail::OpSilu>(-1, x, y, n);
}
inline void vsigmoid(const double* x, double* y, int64_t n) {
  detail::dispatch<detail::OpSilu>(-1, x, y, n);
}

#undef TTT_VEC_INLINE

}  // namespace ttt::vec
