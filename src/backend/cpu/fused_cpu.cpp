#include "backend/cpu/fused_cpu.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/thread_pool.h"
#include "backend/cpu/vec_math.h"

namespace ttt::kernels {

// The elementwise loops of one row of rmsnorm_backward, in TTT_WIDE_LOOP copies (the row's two
// dot products stay in vec_math, outside them).
template <class T>
TTT_WIDE_LOOP void rms_gw_row(const T* g, const T* w, T* gw, int64_t n) {
  for (int64_t i = 0; i < n; ++i) gw[i] = g[i] * w[i];
}
template <class T>
TTT_WIDE_LOOP void rms_update_row(const T* x, const T* g, const T* gw, T a, T c, double rstd, T* dx, double* dwp,
                                  int64_t n) {
  for (int64_t i = 0; i < n; ++i) dx[i] = a * gw[i] - c * x[i];
  for (int64_t i = 0; i < n; ++i) dwp[i] += static_cast<double>(g[i]) * x[i] * rstd;
}

template <class T>
void rmsnorm_backward(const T* x, const T* w, const T* g, int64_t rows, int64_t n, double eps, T* dx, T* dw) {
  constexpr int64_t kPieces = 16;  // fixed split: the dw reduction order never depends on threads
  const int64_t pieces = std::max<int64_t>(1, std::min(kPieces, rows));
  std::vector<double> partial(static_cast<size_t>(pieces * n), 0.0);
  parallel_for(0, pieces, 1, [&](int64_t lo, int64_t hi) {
    std::vector<T> gw(n);
    for (int64_t p = lo; p < hi; ++p) {
      double* dwp = partial.data() + p * n;
      for (int64_t r = rows * p / pieces; r < rows * (p + 1) / pieces; ++r) {
        const T* xr = x + r * n;
        const T* gr = g + r * n;
        T* dxr = dx + r * n;
        const double ss = vec::vdot(xr, xr, n);
        const double rstd = 1.0 / std::sqrt(ss / n + eps);
        rms_gw_row(gr, w, gw.data(), n);
        const double proj = vec::vdot(gw.data(), xr, n) / n;
        const T a = static_cast<T>(rstd), c = static_cast<T>(rstd * rstd * rstd * proj);
        rms_update_row(xr, gr, gw.data(), a, c, rstd, dxr, dwp, n);
      }
    }
  });
  for (int64_t i = 0; i < n; ++i) {
    double s = 0;
    for (int64_t p = 0; p < pieces; ++p) s += partial[p * n + i];
    dw[i] = static_cast<T>(s);
  }
}

template <class T>
void cross_entropy_backward(const T* logits, const int32_t* targets, const T* g, int64_t rows, int64_t v,
                            T* dlogits) {
  parallel_for(0, rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(v, 1)), [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      const T* xr = logits + r * v;
      T* yr = dlogits + r * v;
      const T mx = vec::vmax(xr, v);
      const T s = vec::vexp_sum(xr, mx, yr, v);  // yr = exp(x - max), returns the sum
      vec::vscale(yr, g[r] / s, v);
      yr[targets[r]] -= g[r];
    }
  });
}

// The tail of one row of cross_entropy_backward_backward: C = g P (b - rowsum(P b)) into c,
// g P into z (z holds exp(x - max) on entry).
template <class T>
TTT_WIDE_LOOP void ce_bb_row(T* zr, T* cr, const T* br, T gi, T pb, int64_t v) {
  for (int64_t j = 0; j < v; ++j) {
    const T gp = gi * zr[j];  // g P
    cr[j] = gp * (br[j] - pb);
    zr[j] = gp;
  }
}

template <class T>
void cross_entropy_backward_backward(const T* logits, const T* b, const int32_t* targets, const T* g, int64_t rows,
                                     int64_t v, T* dz, T* c, T* dg) {
  parallel_for(0, rows, std::max<int64_t>(1, 8192 / std::max<int64_t>(v, 1)), [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      const T* xr = logits + r * v;
      const T* br = b + r * v;
      T* zr = dz + r * v;
      T* cr = c + r * v;
      const T mx = vec::vmax(xr, v);
      const T inv = T(1) / vec::vexp_sum(xr, mx, zr, v);  // zr = exp(x - max)
      const T pb = vec::vdot(zr, br, v) * inv;            // rowsum(P b)
      const int32_t t = targets[r];
      dg[r] = pb - br[t];
      ce_bb_row(zr, cr, br, g[r] * inv, pb, v);
      zr[t] -= g[r];
    }
  });
}

// Elements per block: silu and its derivative go through a small buffer that stays in L1, so
// each input is read once from memory and each output written once.
constexpr int64_t kSiluBlock = 1024;

template <class T>
TTT_WIDE_LOOP void mul_rows(const T* a, const T* b, T* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = a[i] * b[i];
}
template <class T>
TTT_WIDE_LOOP void silu_mul_backward_loop(const T* s, const T* s1, const T* b,
                                          const T* g, T* da, T* db, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const T gb = g[i] * b[i];
    da[i] = gb * s1[i];
    db[i] = g[i] * s[i];
  }
}

template <class T>
void silu_mul(const T* a, const T* b, int64_t n, T* y) {
  parallel_for(0, (n + kSiluBlock - 1) / kSiluBlock, 16, [&](int64_t lo, int64_t hi) {
    T s[kSiluBlock];
    for (int64_t blk = lo; blk < hi; ++blk) {
      const int64_t i0 = blk * kSiluBlock, len = std::min(kSiluBlock, n - i0);
      vec::vsilu(a + i0, s, len);
      mul_rows(s, b + i0, y + i0, len);
    }
  });
}

template <class T>
void silu_mul_backward(const T* a, const T* b, const T* g, int64_t n, T* da, T* db) {
  parallel_for(0, (n + kSiluBlock - 1) / kSiluBlock, 8, [&](int64_t lo, int64_t hi) {
    T s[kSiluBlock], s1[kSiluBlock];
    for (int64_t blk = lo; blk < hi; ++blk) {
      const int64_t i0 = blk * kSiluBlock, len = std::min(kSiluBlock, n - i0);
      vec::vsilu_pair(a + i0, s, s1, len);
      silu_mul_backward_loop(s, s1, b + i0, g + i0, da + i0, db + i0, len);
    }
  });
}

template void silu_mul<float>(const float*, const float*, int64_t, float*);
template void silu_mul<double>(const double*, const double*, int64_t, double*);
template void silu_mul_backward<float>(const float*, const float*, const float*, int64_t, float*, float*);
template void silu_mul_backward<double>(const double*, const double*, const double*, int64_t, double*, double*);
template void rmsnorm_backward<float>(const float*, const float*, const float*, int64_t, int64_t, double, float*, float*);
template void rmsnorm_backward<double>(const double*, const double*, const double*, int64_t, int64_t, double, double*,
                                       double*);
template void cross_entropy_backward<float>(const float*, const int32_t*, const float*, int64_t, int64_t, float*);
template void cross_entropy_backward<double>(const double*, const int32_t*, const double*, int64_t, int64_t, double*);
template void cross_entropy_backward_backward<float>(const float*, const float*, const int32_t*, const float*, int64_t,
                                                     int64_t, float*, float*, float*);
template void cross_entropy_backward_backward<double>(const double*, const double*, const int32_t*, const double*,
                                                      int64_t, int64_t, double*, double*, double*);

}  // namespace ttt::kernels
