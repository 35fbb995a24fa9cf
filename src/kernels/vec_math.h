// Fast elementwise math on plain arrays for the CPU kernels (softmax, attention, losses).
//
// All functions take raw pointers and a length and are written as simple loops that GCC -O3
// vectorizes. On x86-64 with GCC each entry point is compiled three times (AVX-512, AVX2,
// baseline SSE2) with `target_clones`, and the loader picks the best one for the running CPU,
// so the project needs no global -march flag.
//
//   vexp(x, y, n)               y[i] = exp(x[i])                    (in place allowed: y == x)
//   vexp_shift(x, shift, y, n)  y[i] = exp(x[i] - shift)               (y == x allowed)
//   vexp_sum(x, shift, y, n)    y[i] = exp(x[i] - shift), returns sum of y   (y == x allowed)
//   vmax(x, n)                  max of x[0..n), -inf for n == 0
//   vsum(x, n)                  sum of x[0..n)
//   vscale(x, a, n)             x[i] *= a
//
// Accuracy: float exp has a relative error below ~2e-7 (Cephes expf polynomial, computed in
// float); double exp has a relative error of a few ulp (degree-13 Taylor on |r| <= ln2/2).
// exp(-inf) = 0 and arguments below about -87.3 (float) / -708 (double) flush to 0;
// arguments above about 88.7 / 709.7 are clamped (give a huge finite value, not inf).
// NaN inputs are not supported (the result is unspecified).
#pragma once
#include <cstdint>
#include <cstring>
#include <limits>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__)
#define TTT_VEC_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define TTT_VEC_CLONES
#endif

namespace ttt::vec {

namespace detail {

// Branch-free selects written with integer masks: with GCC's default -ftrapping-math a
// floating-point `c ? a : b` is not if-converted for SSE/AVX2 and blocks vectorization.
inline __attribute__((always_inline)) float select(bool c, float a, float b) {
  const int32_t m = -static_cast<int32_t>(c);
  int32_t ia, ib;
  std::memcpy(&ia, &a, sizeof ia);
  std::memcpy(&ib, &b, sizeof ib);
  const int32_t r = (ia & m) | (ib & ~m);
  float out;
  std::memcpy(&out, &r, sizeof out);
  return out;
}
inline __attribute__((always_inline)) double select(bool c, double a, double b) {
  const int64_t m = -static_cast<int64_t>(c);
  int64_t ia, ib;
  std::memcpy(&ia, &a, sizeof ia);
  std::memcpy(&ib, &b, sizeof ib);
  const int64_t r = (ia & m) | (ib & ~m);
  double out;
  std::memcpy(&out, &r, sizeof out);
  return out;
}

// exp of one float, branch-free so that a loop calling it vectorizes.
inline __attribute__((always_inline)) float exp1(float x) {
  constexpr float kHi = 88.3762626647949f, kLo = -87.3365447504f;
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kC1 = 0.693359375f, kC2 = -2.12194440e-4f;
  constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float xc = select(x > kHi, kHi, select(x < kLo, kLo, x));
  const float t = xc * kLog2e + kMagic;
  const float n = t - kMagic;  // round(xc * log2(e))
  float r = xc - n * kC1;
  r = r - n * kC2;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  int32_t tb;
  std::memcpy(&tb, &t, sizeof tb);
  const int32_t ni = tb - 0x4B400000;            // the integer n
  const int32_t eb = (ni + 127) << 23;           // 2^n as float bits (n in [-126, 127])
  float e;
  std::memcpy(&e, &eb, sizeof e);
  const float y = p * e;
  return select(x < kLo, 0.0f, y);
}

inline __attribute__((always_inline)) double exp1(double x) {
  constexpr double kHi = 709.0, kLo = -708.0;
  constexpr double kLog2e = 1.4426950408889634074;
  constexpr double kC1 = 6.93145751953125e-1, kC2 = 1.42860682030941723212e-6;
  constexpr double kMagic = 6755399441055744.0;  // 1.5 * 2^52
  const double xc = select(x > kHi, kHi, select(x < kLo, kLo, x));
  const double t = xc * kLog2e + kMagic;
  const double n = t - kMagic;
  double r = xc - n * kC1;
  r = r - n * kC2;
  // Taylor series to degree 13 on |r| <= 0.347: truncation error < 1e-17.
  double p = 1.0 / 6227020800.0;
  p = p * r + 1.0 / 479001600.0;
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
  p = p * (r * r) + r + 1.0;
  int64_t tb;
  std::memcpy(&tb, &t, sizeof tb);
  const int64_t ni = tb - 0x4338000000000000LL;  // the integer n
  const int64_t eb = (ni + 1023) << 52;           // 2^n as double bits (n in [-1022, 1023])
  double e;
  std::memcpy(&e, &eb, sizeof e);
  const double y = p * e;
  return select(x < kLo, 0.0, y);
}

}  // namespace detail

TTT_VEC_CLONES inline void vexp(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = detail::exp1(x[i]);
}
TTT_VEC_CLONES inline void vexp(const double* x, double* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = detail::exp1(x[i]);
}

// y[i] = exp(x[i] - shift). x == y is allowed.
TTT_VEC_CLONES inline void vexp_shift(const float* x, float shift, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = detail::exp1(x[i] - shift);
}
TTT_VEC_CLONES inline void vexp_shift(const double* x, double shift, double* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = detail::exp1(x[i] - shift);
}

namespace detail {
// Reductions use GCC vector extensions: without -ffast-math the loop vectorizer may not
// reorder a floating-point sum or max. Lanes: 64 bytes (one AVX-512 register, two AVX2 or
// four SSE registers, as the clone allows).
typedef float vf16 __attribute__((vector_size(64)));
typedef double vd8 __attribute__((vector_size(64)));

template <class V, class T, int L>
inline __attribute__((always_inline)) T reduce_max(const T* x, int64_t n) {
  constexpr T ninf = -std::numeric_limits<T>::infinity();
  T m = ninf;
  int64_t i = 0;
  if (n >= L) {
    V acc;
    std::memcpy(&acc, x, sizeof acc);
    for (i = L; i + L <= n; i += L) {
      V v;
      std::memcpy(&v, x + i, sizeof v);
      acc = v > acc ? v : acc;
    }
    for (int l = 0; l < L; ++l) m = acc[l] > m ? acc[l] : m;
  }
  for (; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

template <class V, class T, int L>
inline __attribute__((always_inline)) T reduce_sum(const T* x, int64_t n) {
  V acc = {};
  int64_t i = 0;
  for (; i + L <= n; i += L) {
    V v;
    std::memcpy(&v, x + i, sizeof v);
    acc += v;
  }
  T s = 0;
  for (int l = 0; l < L; ++l) s += acc[l];
  for (; i < n; ++i) s += x[i];
  return s;
}
}  // namespace detail

TTT_VEC_CLONES inline float vmax(const float* x, int64_t n) {
  return detail::reduce_max<detail::vf16, float, 16>(x, n);
}
TTT_VEC_CLONES inline double vmax(const double* x, int64_t n) {
  return detail::reduce_max<detail::vd8, double, 8>(x, n);
}
TTT_VEC_CLONES inline float vsum(const float* x, int64_t n) {
  return detail::reduce_sum<detail::vf16, float, 16>(x, n);
}
TTT_VEC_CLONES inline double vsum(const double* x, int64_t n) {
  return detail::reduce_sum<detail::vd8, double, 8>(x, n);
}

// y[i] = exp(x[i] - shift); returns the sum of the y[i]. x == y is allowed.
inline float vexp_sum(const float* x, float shift, float* y, int64_t n) {
  vexp_shift(x, shift, y, n);
  return vsum(y, n);
}
inline double vexp_sum(const double* x, double shift, double* y, int64_t n) {
  vexp_shift(x, shift, y, n);
  return vsum(y, n);
}

TTT_VEC_CLONES inline void vscale(float* x, float a, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] *= a;
}
TTT_VEC_CLONES inline void vscale(double* x, double a, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] *= a;
}

}  // namespace ttt::vec
