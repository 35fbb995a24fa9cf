// bf16 x bf16 -> f32 matrix products with AVX512_BF16 (vdpbf16ps), for `--compute bf16`
// (backend/bf16_gemm.h). Activations are rounded to bf16 (nearest even), weights are bf16
// already; every pair product is accumulated in float32.
//
// Blocking: the weights are packed per block of 64 output columns and KC rows of k as
// [KC/2][64][2] (the two k values a vdpbf16ps lane multiplies side by side), by the thread that
// owns the block; each 6-row tile of activations then runs a 6 x 64 register tile (24 float32
// accumulators) over the block: per pair of k, four 64-byte weight loads, six broadcasts and 24
// vdpbf16ps (64 flops each).
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "backend/cpu/bf16_gemm.h"
#include "backend/thread_pool.h"
#include "tensor/bf16.h"

namespace ttt::kernels {
namespace {

constexpr int64_t kNR = 64;   // output columns per block (four vectors of 16)
constexpr int64_t kMR = 6;    // activation rows per register tile
constexpr int64_t kKC = 512;  // k per packed block (even)

#define TTT_AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

// Packs b's columns [j0, j0 + 64) (zero beyond n) and k rows [k0, k0 + kc) (zero beyond k) as
// pairs: p[(q * 64 + c) * 2 + e] = B[k0 + 2q + e][j0 + c].
void pack_b(const uint16_t* b, bool tb, int64_t n, int64_t k, int64_t j0, int64_t k0, int64_t kc, uint16_t* p) {
  const int64_t pairs = (kc + 1) / 2;
  for (int64_t q = 0; q < pairs; ++q)
    for (int64_t c = 0; c < kNR; ++c)
      for (int e = 0; e < 2; ++e) {
        const int64_t kk = k0 + 2 * q + e, j = j0 + c;
        uint16_t v = 0;
        if (kk < k0 + kc && kk < k && j < n) v = tb ? b[j * k + kk] : b[kk * n + j];
        p[(q * kNR + c) * 2 + e] = v;
      }
}

template <int MR>
TTT_AVX512BF16 void tile(const uint32_t* a, int64_t lda32, const uint16_t* p, int64_t pairs, float* c, int64_t ldc,
                         int64_t ncols, bool accumulate) {
  __m512 acc[MR][4];
  __mmask16 mask[4];
  for (int v = 0; v < 4; ++v) {
    const int64_t rem = ncols - 16 * v;
    mask[v] = rem >= 16 ? static_cast<__mmask16>(0xFFFF) : rem <= 0 ? static_cast<__mmask16>(0) : static_cast<__mmask16>((1u << rem) - 1);
  }
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < 4; ++v)
      acc[r][v] = accumulate ? _mm512_maskz_loadu_ps(mask[v], c + r * ldc + 16 * v) : _mm512_setzero_ps();
  for (int64_t q = 0; q < pairs; ++q) {
    const uint16_t* pq = p + q * kNR * 2;
    __m512bh bv[4];
    for (int v = 0; v < 4; ++v) bv[v] = (__m512bh)_mm512_loadu_si512(pq + 32 * v);
    for (int r = 0; r < MR; ++r) {
      const __m512bh av = (__m512bh)_mm512_set1_epi32(static_cast<int>(a[r * lda32 + q]));
      for (int v = 0; v < 4; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], av, bv[v]);
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < 4; ++v)
      if (mask[v]) _mm512_mask_storeu_ps(c + r * ldc + 16 * v, mask[v], acc[r][v]);
}

void run_tile(int rows, const uint32_t* a, int64_t lda32, const uint16_t* p, int64_t pairs, float* c, int64_t ldc,
              int64_t ncols, bool accumulate) {
  switch (rows) {
    case 6: tile<6>(a, lda32, p, pairs, c, ldc, ncols, accumulate); break;
    case 5: tile<5>(a, lda32, p, pairs, c, ldc, ncols, accumulate); break;
    case 4: tile<4>(a, lda32, p, pairs, c, ldc, ncols, accumulate); break;
    case 3: tile<3>(a, lda32, p, pairs, c, ldc, ncols, accumulate); break;
    case 2: tile<2>(a, lda32, p, pairs, c, ldc, ncols, accumulate); break;
    default: tile<1>(a, lda32, p, pairs, c, ldc, ncols, accumulate); break;
  }
}

}  // namespace

bool cpu_has_avx512_bf16() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
  }();
  return has;
}


void gemm_bf16_bf16(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const uint16_t* b, bool tb, float* c,
                    int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (!cpu_has_avx512_bf16()) throw std::logic_error("gemm_bf16_bf16: this CPU has no AVX512_BF16");
  if (k == 0) {
    for (int64_t i = 0; i < m; ++i) std::fill(c + i * ldc, c + i * ldc + n, 0.0f);
    return;
  }
  // Activations rounded to bf16, each row padded to an even length: row i's pairs are uint32s.
  const int64_t kp = (k + 1) / 2 * 2;
  std::vector<uint16_t> abf(static_cast<size_t>(m * kp), 0);
  parallel_for(0, m, std::max<int64_t>(1, 4096 / std::max<int64_t>(k, 1)), [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i)
      for (int64_t j = 0; j < k; ++j) abf[static_cast<size_t>(i * kp + j)] = float_to_bf16(a[i * lda + j]);
  });
  const uint32_t* a32 = reinterpret_cast<const uint32_t*>(abf.data());
  const int64_t lda32 = kp / 2;
  const int64_t blocks = (n + kNR - 1) / kNR;
  parallel_for(0, blocks, 1, [&](int64_t lo, int64_t hi) {
    thread_local std::vector<uint16_t> packed;
    packed.resize(static_cast<size_t>(kKC * kNR));
    for (int64_t blk = lo; blk < hi; ++blk) {
      const int64_t j0 = blk * kNR, ncols = std::min(kNR, n - j0);
      for (int64_t k0 = 0; k0 < k; k0 += kKC) {
        const int64_t kc = std::min(kKC, k - k0), pairs = (kc + 1) / 2;
        pack_b(b, tb, n, k, j0, k0, kc, packed.data());
        for (int64_t i0 = 0; i0 < m; i0 += kMR) {
          const int rows = static_cast<int>(std::min(kMR, m - i0));
          run_tile(rows, a32 + i0 * lda32 + k0 / 2, lda32, packed.data(), pairs, c + i0 * ldc + j0, ldc, ncols, k0 > 0);
        }
      }
    }
  });
}

}  // namespace ttt::kernels
