#include "backend/cpu/bf16_gemm.h"

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstring>
#include <vector>

#include "backend/cpu/blas.h"
#include "backend/thread_pool.h"
#include "tensor/tensor.h"

namespace ttt::kernels {
namespace {

std::atomic<bool> g_force_scalar{false};

bool cpu_has_avx512() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl");
  }();
  return has;
}

bool use_avx512() { return cpu_has_avx512() && !g_force_scalar.load(std::memory_order_relaxed); }

inline float widen(uint16_t v) { return std::bit_cast<float>(static_cast<uint32_t>(v) << 16); }
inline float widen(float v) { return v; }

// ---- portable kernels

// y[j] = x . b[j, :] for j in [j0, j1) (b is [n, k]).
template <class W>
void gemv_t_scalar(const float* x, const W* b, int64_t k, int64_t j0, int64_t j1, float* y) {
  for (int64_t j = j0; j < j1; ++j) {
    const W* r = b + j * k;
    float s[8] = {};
    int64_t i = 0;
    for (; i + 8 <= k; i += 8)
      for (int u = 0; u < 8; ++u) s[u] += x[i + u] * widen(r[i + u]);
    for (; i < k; ++i) s[0] += x[i] * widen(r[i]);
    y[j] = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
  }
}

// acc[0:n] += x[i0:i1] @ b[i0:i1, :] (b is [k, n]): whole rows, front to back.
template <class W>
void gemv_n_rows_scalar(const float* x, const W* b, int64_t n, int64_t i0, int64_t i1, float* acc) {
  for (int64_t i = i0; i < i1; ++i) {
    const float xi = x[i];
    const W* r = b + i * n;
    for (int64_t j = 0; j < n; ++j) acc[j] += xi * widen(r[j]);
  }
}

// ---- AVX-512 kernels (chosen at run time: the build does not assume the CPU)

#define TTT_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl")))

// The maskz forms with a full mask are the same instructions; the plain ones start from
// _mm512_undefined_epi32, which GCC 12 reports as maybe-uninitialized.
TTT_AVX512 inline __m512 widen16(__m256i h) {
  const __mmask16 all = 0xFFFF;
  return _mm512_castsi512_ps(_mm512_maskz_slli_epi32(all, _mm512_maskz_cvtepu16_epi32(all, h), 16));
}

// Horizontal sum through memory (_mm512_reduce_add_ps trips the same GCC 12 warning).
TTT_AVX512 inline float hsum(__m512 v) {
  alignas(64) float t[16];
  _mm512_store_ps(t, v);
  float s[4];
  for (int i = 0; i < 4; ++i) s[i] = (t[i] + t[i + 4]) + (t[i + 8] + t[i + 12]);
  return (s[0] + s[1]) + (s[2] + s[3]);
}

// Sixteen weights as floats: bf16 widened, float32 as they are.
TTT_AVX512 inline __m512 load16(const uint16_t* p) { return widen16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
TTT_AVX512 inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
TTT_AVX512 inline __m512 load16(__mmask16 m, const uint16_t* p) { return widen16(_mm256_maskz_loadu_epi16(m, p)); }
TTT_AVX512 inline __m512 load16(__mmask16 m, const float* p) { return _mm512_maskz_loadu_ps(m, p); }

TTT_AVX512 inline __mmask16 tail_mask(int64_t rem) {
  return rem >= 16 ? static_cast<__mmask16>(0xFFFF) : rem <= 0 ? static_cast<__mmask16>(0) : static_cast<__mmask16>((1u << rem) - 1);
}

// One row at a time, four accumulators over its length: the rows are read as one sequential
// stream. Interleaving several rows (sharing each load of x) looks cheaper but is not when a row
// is short: measured here, four interleaved 1 KB rows ran at 5 GB/s from memory and one row at a
// time at 15 GB/s, since the prefetchers stop following several short streams at once.
template <class W>
TTT_AVX512 void gemv_t_avx512(const float* x, const W* b, int64_t k, int64_t j0, int64_t j1, float* y) {
  const int64_t k64 = k & ~int64_t{63}, kv = k & ~int64_t{15};
  const __mmask16 mt = tail_mask(k - kv);
  for (int64_t j = j0; j < j1; ++j) {
    const W* r = b + j * k;
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int64_t i = 0;
    for (; i < k64; i += 64) {
      s0 = _mm512_fmadd_ps(load16(r + i), _mm512_loadu_ps(x + i), s0);
      s1 = _mm512_fmadd_ps(load16(r + i + 16), _mm512_loadu_ps(x + i + 16), s1);
      s2 = _mm512_fmadd_ps(load16(r + i + 32), _mm512_loadu_ps(x + i + 32), s2);
      s3 = _mm512_fmadd_ps(load16(r + i + 48), _mm512_loadu_ps(x + i + 48), s3);
    }
    for (; i < kv; i += 16) s0 = _mm512_fmadd_ps(load16(r + i), _mm512_loadu_ps(x + i), s0);
    if (mt) s1 = _mm512_fmadd_ps(load16(mt, r + kv), _mm512_maskz_loadu_ps(mt, x + kv), s1);
    y[j] = hsum(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
  }
}

// acc[0:n] += x[i0:i1] @ b[i0:i1, :], whole rows per pass over acc: every row of b is read once,
// front to back, so each thread streams a contiguous stretch of b (what the hardware prefetchers
// follow at full speed; reading column blocks instead strided through every row).
template <class W>
TTT_AVX512 void gemv_n_rows_avx512(const float* x, const W* b, int64_t n, int64_t i0, int64_t i1, float* acc) {
  const int64_t nv = n & ~int64_t{15};
  const __mmask16 mt = tail_mask(n - nv);
  int64_t i = i0;
  // Rows shorter than ~4 KB go one per pass (see gemv_t_avx512: short interleaved streams are slow);
  // long rows four per pass, which then saves three quarters of the accumulator traffic.
  const bool four = n * static_cast<int64_t>(sizeof(W)) >= 4096;
  for (; four && i + 4 <= i1; i += 4) {
    const __m512 x0 = _mm512_set1_ps(x[i]), x1 = _mm512_set1_ps(x[i + 1]), x2 = _mm512_set1_ps(x[i + 2]),
                 x3 = _mm512_set1_ps(x[i + 3]);
    const W* r0 = b + i * n;
    const W* r1 = r0 + n;
    const W* r2 = r1 + n;
    const W* r3 = r2 + n;
    for (int64_t j = 0; j < nv; j += 16) {
      __m512 a = _mm512_loadu_ps(acc + j);
      a = _mm512_fmadd_ps(load16(r0 + j), x0, a);
      a = _mm512_fmadd_ps(load16(r1 + j), x1, a);
      a = _mm512_fmadd_ps(load16(r2 + j), x2, a);
      a = _mm512_fmadd_ps(load16(r3 + j), x3, a);
      _mm512_storeu_ps(acc + j, a);
    }
    if (mt) {
      __m512 a = _mm512_maskz_loadu_ps(mt, acc + nv);
      a = _mm512_fmadd_ps(load16(mt, r0 + nv), x0, a);
      a = _mm512_fmadd_ps(load16(mt, r1 + nv), x1, a);
      a = _mm512_fmadd_ps(load16(mt, r2 + nv), x2, a);
      a = _mm512_fmadd_ps(load16(mt, r3 + nv), x3, a);
      _mm512_mask_storeu_ps(acc + nv, mt, a);
    }
  }
  for (; i < i1; ++i) {
    const __m512 xi = _mm512_set1_ps(x[i]);
    const W* r = b + i * n;
    for (int64_t j = 0; j < nv; j += 16)
      _mm512_storeu_ps(acc + j, _mm512_fmadd_ps(load16(r + j), xi, _mm512_loadu_ps(acc + j)));
    if (mt)
      _mm512_mask_storeu_ps(acc + nv, mt, _mm512_fmadd_ps(load16(mt, r + nv), xi, _mm512_maskz_loadu_ps(mt, acc + nv)));
  }
}

// Weights per parallel piece of a GEMV: small enough that a 256 x 256 projection is split over
// two threads (a piece is a few microseconds of streaming; the pool's threads spin between
// regions, so handing one out costs well under that).
const int64_t kGemvPiece = int64_t{1} << 14;

template <class W>
void gemv(int64_t n, int64_t k, const float* x, const W* b, bool tb, float* y) {
  const bool simd = use_avx512();
  if (tb) {
    // Rows of b are independent dot products: split them over the pool, kGemvPiece weights a piece.
    const int64_t grain = std::max<int64_t>(4, kGemvPiece / std::max<int64_t>(k, 1));
    parallel_for(0, n, grain, [&](int64_t lo, int64_t hi) {
      if (simd)
        gemv_t_avx512(x, b, k, lo, hi, y);
      else
        gemv_t_scalar(x, b, k, lo, hi, y);
    });
  } else {
    // Contiguous stretches of rows, kGemvPiece weights each (at most 8), one partial y per stretch,
    // summed in a fixed order: the result does not depend on the thread count.
    const int64_t pieces = std::clamp<int64_t>((k * n + kGemvPiece - 1) / kGemvPiece, 1, std::min<int64_t>(8, k));
    auto rows = [&](int64_t i0, int64_t i1, float* acc) {
      if (simd)
        gemv_n_rows_avx512(x, b, n, i0, i1, acc);
      else
        gemv_n_rows_scalar(x, b, n, i0, i1, acc);
    };
    if (pieces == 1) {
      std::fill(y, y + n, 0.0f);
      rows(0, k, y);
      return;
    }
    thread_local std::vector<float> partial;
    partial.assign(static_cast<size_t>(pieces * n), 0.0f);
    float* part = partial.data();
    parallel_for(0, pieces, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t p = lo; p < hi; ++p) rows(k * p / pieces, k * (p + 1) / pieces, part + p * n);
    });
    std::copy(part, part + n, y);
    for (int64_t p = 1; p < pieces; ++p)
      for (int64_t j = 0; j < n; ++j) y[j] += part[p * n + j];
  }
}

}  // namespace

void gemv_f32(int64_t n, int64_t k, const float* x, const float* b, bool tb, float* y) {
  if (n == 0) return;
  if (k == 0) {
    std::fill(y, y + n, 0.0f);
    return;
  }
  gemv(n, k, x, b, tb, y);
}

const char* bf16_gemv_kernel() { return use_avx512() ? "avx512" : "scalar"; }
void set_bf16_force_scalar(bool force) { g_force_scalar.store(force, std::memory_order_relaxed); }

void gemm_f32_bf16(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const uint16_t* b, bool tb,
                   float* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    for (int64_t i = 0; i < m; ++i) std::fill(c + i * ldc, c + i * ldc + n, 0.0f);
    return;
  }
  if (m == 1) {
    gemv(n, k, a, b, tb, c);
    return;
  }
  // Panels of about 1M weights (4 MB widened): large enough that sgemm runs near its peak on each,
  // small enough to stay in the last-level cache between the widening and the product. Both
  // layouts cut b into contiguous row blocks, widened as they are: with tb, rows are output
  // columns (c[:, n0:n0+w] = a @ panel^T); without, rows are a stretch of k, and the panels'
  // products accumulate into c (c is m x n, small next to b when k is a 128K vocabulary). The
  // buffer comes from the tensor pool, so repeated calls do not fault in pages.
  const int64_t row = tb ? k : n;           // elements per row of b
  const int64_t rows = tb ? n : k;          // rows of b
  const int64_t per = std::min(rows, std::max<int64_t>(16, (int64_t{1} << 20) / std::max<int64_t>(row, 1)));
  Tensor buf = Tensor::empty({per * row}, DType::F32);
  float* p = buf.data<float>();
  for (int64_t r0 = 0; r0 < rows; r0 += per) {
    const int64_t w = std::min(per, rows - r0);
    const uint16_t* src = b + r0 * row;
    parallel_for(0, w * row, int64_t{1} << 16, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) p[i] = widen(src[i]);
    });
    if (tb)
      blas::gemm(blas::Trans::No, blas::Trans::Yes, static_cast<int>(m), static_cast<int>(w), static_cast<int>(k), 1.0f,
                 a, static_cast<int>(lda), p, static_cast<int>(k), 0.0f, c + r0, static_cast<int>(ldc));
    else
      blas::gemm(blas::Trans::No, blas::Trans::No, static_cast<int>(m), static_cast<int>(n), static_cast<int>(w), 1.0f,
                 a + r0, static_cast<int>(lda), p, static_cast<int>(n), r0 == 0 ? 0.0f : 1.0f, c,
                 static_cast<int>(ldc));
  }
}

}  // namespace ttt::kernels
