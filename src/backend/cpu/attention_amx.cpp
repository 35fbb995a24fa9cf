// Attention forward on AMX tiles for `--compute bf16` (AttentionShape::bf16_products: a forward
// nothing differentiates). q, k and v are rounded to bf16, the scores and the output accumulate in
// float32, the softmax runs in float32 (AVX-512) and the probabilities are rounded to bf16 for the
// product with v, as FlashAttention does on GPUs.
//
// Once per call, per head and 16 keys (a bf16 window cache's rows taken as they are): k as the
// scores' right tiles (the 16 keys' pairs of dimensions, [D/2][16][2], a 16 x 16 transpose of
// pair-words), v as the output's right operand in pairs of keys ([Tk/2][D][2]). Per work item, a
// head's tile of 16 queries and its band of keys in blocks of 256 with an online softmax:
// S = q k^T (four independent 16-key accumulators at a time, stored), per row the scale, the
// band's mask, max, exp and sum, the probabilities rounded to bf16, then o += P v with the output
// (D/16 tiles) loaded from memory, where the softmax rescaled it. Tiles: 0-3 the scores, then the
// output; 5 and 7 q (then values); 4 keys (then the probabilities); 6 keys and values.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "backend/cpu/amx.h"
#include "backend/cpu/attention_cpu.h"
#include "backend/cpu/bf16_gemm.h"
#include "backend/cpu/pool.h"
#include "backend/cpu/vec_math.h"
#include "backend/thread_pool.h"
#include "tensor/bf16.h"

namespace ttt::kernels {
namespace {

constexpr int64_t kRows = 16;     // queries per work item: one tile of rows
constexpr int64_t kBlock = 256;   // keys per online-softmax block (a multiple of 32)

// (GCC 12's headers hand the reduction builtins an undefined vector, which it then warns about.)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
// One row of a block's scores, visible on [lo, hi) of nk: scaled in place, the row's new max
// (against m_old) into *m_new, p = exp(s - m) rounded to bf16 into pb[0, nk) (zeros outside the
// visible columns); returns the float32 sum of p. Two passes over the row instead of five (scale,
// max, exp, round, and the zeros).
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) float softmax_row(float* s, int64_t lo, int64_t hi,
                                                                                 int64_t nk, float scale, float m_old,
                                                                                 float* m_new, uint16_t* pb) {
  const __m512 vscale = _mm512_set1_ps(scale);
  __m512 vmax = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t j = lo; j < hi; j += 16) {
    const __mmask16 in = hi - j >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << (hi - j)) - 1);
    const __m512 x = _mm512_mul_ps(_mm512_maskz_loadu_ps(in, s + j), vscale);
    _mm512_mask_storeu_ps(s + j, in, x);
    vmax = _mm512_mask_max_ps(vmax, in, vmax, x);
  }
  const float m = std::max(m_old, _mm512_reduce_max_ps(vmax));
  *m_new = m;
  std::memset(pb, 0, static_cast<size_t>(lo) * sizeof(uint16_t));
  std::memset(pb + hi, 0, static_cast<size_t>(nk - hi) * sizeof(uint16_t));
  vec::detail::vf16 acc = {};
  for (int64_t j = lo; j < hi; j += 16) {
    const __mmask16 in = hi - j >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << (hi - j)) - 1);
    vec::detail::vf16 e = (vec::detail::vf16)_mm512_sub_ps(_mm512_maskz_loadu_ps(in, s + j), _mm512_set1_ps(m));
    vec::detail::exp_inplace<float>(e);
    const __m512 p = _mm512_maskz_mov_ps(in, (__m512)e);
    acc += (vec::detail::vf16)p;
    _mm256_mask_storeu_epi16(pb + j, in, (__m256i)_mm512_cvtneps_pbh(p));
  }
  return _mm512_reduce_add_ps((__m512)acc);
}
#pragma GCC diagnostic pop

struct Packed {  // one head's keys and values
  const uint16_t* kt;  // [tkp/16][D/2][16][2]: per 16 keys, a right tile per 32 dimensions
  const uint16_t* vp;  // [tkp/2][D][2]
  int64_t tkp;         // keys rounded up to 32, zeros beyond tk
};

// Scores of 16 keys into accumulator tile C, with dimensions 0-31 of the keys through tile B
// (q's tile 5) and, for D 64, 32-63 (q's tile 7), which lie 16 pairs x 16 keys (512 values) on.
#define TTT_S_LO(C, B, j)                                   \
  do {                                                      \
    _tile_loadd(B, kt + (kb0 + (j)) / 16 * D * 16, 64);     \
    _tile_dpbf16ps(C, 5, B);                                \
  } while (0)
#define TTT_S_HI(C, B, j)                                     \
  do {                                                        \
    _tile_loadd(B, kt + (kb0 + (j)) / 16 * D * 16 + 512, 64); \
    _tile_dpbf16ps(C, 7, B);                                  \
  } while (0)
// Output tile C (dimensions 16c..16c+15) += the probabilities (tile 4) x the values, via tile B.
#define TTT_PV(C, B, c)                                            \
  do {                                                             \
    _tile_loadd(B, v + ((kb0 + j) / 2 * D + 16 * (c)) * 2, D * 4); \
    _tile_dpbf16ps(C, 4, B);                                       \
  } while (0)

TTT_AMX void query_tile(const AttentionShape& s, const Packed& pk, const float* q, int64_t h, int64_t i0, float* o,
                        float* lse) {
  const int64_t H = s.heads, D = s.head_dim, ld = H * D;
  const int64_t rows = std::min(kRows, s.tq - i0);
  const float ninf = -std::numeric_limits<float>::infinity();
  const int64_t band0 = attention_key_lo(s, i0), band1 = attention_key_hi(s, i0 + rows - 1);
  if (band1 <= band0) {  // no query of the tile sees a key
    for (int64_t r = 0; r < rows; ++r) {
      std::fill_n(o + (i0 + r) * ld + h * D, D, 0.0f);
      lse[h * s.tq + i0 + r] = ninf;
    }
    return;
  }
  alignas(64) uint16_t qb[kRows * 64];
  alignas(64) float sb[kRows * kBlock];
  alignas(64) uint16_t pb[kRows * kBlock];
  alignas(64) float ob[kRows * 64];  // the output between key blocks (tiles 0-3 hold scores meanwhile)
  float m[kRows], l[kRows];
  std::memset(qb, 0, sizeof qb);
  std::memset(ob, 0, sizeof ob);
  for (int64_t r = 0; r < rows; ++r) round_to_bf16(q + (i0 + r) * ld + h * D, qb + r * D, D);
  std::fill_n(m, kRows, ninf);
  std::fill_n(l, kRows, 0.0f);
  const uint16_t* kt = pk.kt;
  const uint16_t* v = pk.vp;
  const float scale = static_cast<float>(s.scale);
  const bool d64 = D == 64;
  for (int64_t kb0 = band0 / 32 * 32; kb0 < band1; kb0 += kBlock) {
    const int64_t nk = std::min(kBlock, (band1 - kb0 + 31) / 32 * 32);
    // S = q k^T, four independent 16-key accumulators at a time (a single one waited on itself).
    _tile_loadd(5, qb, D * 2);
    if (d64) _tile_loadd(7, qb + 32, D * 2);
    for (int64_t j = 0; j < nk; j += 64) {
      const bool four = j + 64 <= nk;  // else 32 keys: nk is a multiple of 32
      _tile_zero(0);
      _tile_zero(1);
      TTT_S_LO(0, 4, j);
      TTT_S_LO(1, 6, j + 16);
      if (four) {
        _tile_zero(2);
        _tile_zero(3);
        TTT_S_LO(2, 4, j + 32);
        TTT_S_LO(3, 6, j + 48);
      }
      if (d64) {
        TTT_S_HI(0, 4, j);
        TTT_S_HI(1, 6, j + 16);
        if (four) {
          TTT_S_HI(2, 4, j + 32);
          TTT_S_HI(3, 6, j + 48);
        }
      }
      _tile_stored(0, sb + j, kBlock * 4);
      _tile_stored(1, sb + j + 16, kBlock * 4);
      if (four) {
        _tile_stored(2, sb + j + 32, kBlock * 4);
        _tile_stored(3, sb + j + 48, kBlock * 4);
      }
    }
    // Per row: scale, the band's mask, the online softmax; the probabilities rounded to bf16.
    for (int64_t r = 0; r < kRows; ++r) {
      float* srow = sb + r * kBlock;
      const int64_t lo = r < rows ? std::clamp<int64_t>(attention_key_lo(s, i0 + r) - kb0, 0, nk) : 0;
      const int64_t hi = r < rows ? std::clamp<int64_t>(attention_key_hi(s, i0 + r) - kb0, 0, nk) : 0;
      if (hi <= lo) {
        std::memset(pb + r * kBlock, 0, static_cast<size_t>(nk) * sizeof(uint16_t));
        continue;
      }
      float mnew;
      const float sum = softmax_row(srow, lo, hi, nk, scale, m[r], &mnew, pb + r * kBlock);
      if (mnew != m[r]) {
        if (l[r] > 0.0f) {
          const float alpha = std::exp(m[r] - mnew);
          l[r] *= alpha;
          vec::vscale(ob + r * D, alpha, D);
        }
        m[r] = mnew;
      }
      l[r] += sum;
    }
    // o += P v, 32 keys at a time, the output's tiles from memory and back.
    _tile_loadd(0, ob, D * 4);
    _tile_loadd(1, ob + 16, D * 4);
    if (d64) {
      _tile_loadd(2, ob + 32, D * 4);
      _tile_loadd(3, ob + 48, D * 4);
    }
    for (int64_t j = 0; j < nk; j += 32) {
      _tile_loadd(4, pb + j, kBlock * 2);
      TTT_PV(0, 5, 0);
      TTT_PV(1, 6, 1);
      if (d64) {
        TTT_PV(2, 7, 2);
        TTT_PV(3, 5, 3);
      }
    }
    _tile_stored(0, ob, D * 4);
    _tile_stored(1, ob + 16, D * 4);
    if (d64) {
      _tile_stored(2, ob + 32, D * 4);
      _tile_stored(3, ob + 48, D * 4);
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    float* orow = o + (i0 + r) * ld + h * D;
    if (l[r] > 0.0f) {
      const float inv = 1.0f / l[r];
      for (int64_t d = 0; d < D; ++d) orow[d] = ob[r * D + d] * inv;
      lse[h * s.tq + i0 + r] = m[r] + std::log(l[r]);
    } else {
      std::fill_n(orow, D, 0.0f);
      lse[h * s.tq + i0 + r] = ninf;
    }
  }
}
#undef TTT_S_LO
#undef TTT_S_HI
#undef TTT_PV

}  // namespace

bool attention_forward_amx(const AttentionShape& s, const float* q, const float* k, const float* v, float* o,
                           float* lse) {
  return attention_forward_amx(s, q, Bf16CacheKV{nullptr, nullptr, 0, k, v}, o, lse);
}

bool attention_forward_amx(const AttentionShape& s, const float* q, const Bf16CacheKV& kv, float* o, float* lse) {
  const int64_t H = s.heads, D = s.head_dim, ld = H * D;
  if (!amx_in_use() || (D != 32 && D != 64) || s.tq < kRows || s.tk <= 0 || H <= 0) return false;
  const int64_t tkp = (s.tk + 31) / 32 * 32;
  // One head at a time (a 1B shape's whole call would pack 75 MB): its rows rounded to bf16 per
  // 16 keys, k as 16 x (D/2) pair-words transposed into tile rows, v as pairs of rows interleaved;
  // then its query tiles, the last ones (most keys) first.
  pool::Buffer<uint16_t> kt(static_cast<size_t>(D * tkp)), vp(static_cast<size_t>(D * tkp));
  const int64_t kblocks = tkp / 16, tiles = (s.tq + kRows - 1) / kRows;
  const Packed pk{kt.data(), vp.data(), tkp};
  for (int64_t h = 0; h < H; ++h) {
    parallel_for(0, kblocks, 8, [&](int64_t lo, int64_t hi) {
      alignas(64) uint16_t kr[16 * 64], vr[16 * 64];
      for (int64_t blk = lo; blk < hi; ++blk) {
        const int64_t j0 = blk * 16;
        for (int64_t r = 0; r < 16; ++r) {
          const int64_t j = j0 + r;
          if (j < kv.cached) {  // a bf16 cache row, as it is
            std::memcpy(kr + r * D, kv.kc + j * ld + h * D, static_cast<size_t>(D) * sizeof(uint16_t));
            std::memcpy(vr + r * D, kv.vc + j * ld + h * D, static_cast<size_t>(D) * sizeof(uint16_t));
          } else if (j < s.tk) {
            round_to_bf16(kv.k + (j - kv.cached) * ld + h * D, kr + r * D, D);
            round_to_bf16(kv.v + (j - kv.cached) * ld + h * D, vr + r * D, D);
          } else {
            std::fill_n(kr + r * D, D, uint16_t{0});
            std::fill_n(vr + r * D, D, uint16_t{0});
          }
        }
        // out[p][r] = kr32[r][p]: one 16 x 16 block of pair-words per 32 dimensions.
        uint16_t* kb = kt.data() + j0 * D;
        for (int64_t p0 = 0; p0 < D / 2; p0 += 16)
          transpose16x16(reinterpret_cast<const float*>(kr) + p0, D / 2, reinterpret_cast<float*>(kb) + p0 * 16, 16);
        uint16_t* vb = vp.data() + j0 * D;  // 8 pairs of keys x D x 2
        for (int64_t r = 0; r < 16; r += 2)
          for (int64_t d = 0; d < D; ++d) {
            vb[(r / 2) * D * 2 + d * 2] = vr[r * D + d];
            vb[(r / 2) * D * 2 + d * 2 + 1] = vr[(r + 1) * D + d];
          }
      }
    });
    parallel_for(0, tiles, 1, [&](int64_t lo, int64_t hi) {
      amx_begin();
      for (int64_t t = tiles - 1 - lo; t > tiles - 1 - hi; --t) query_tile(s, pk, q, h, t * kRows, o, lse);
      amx_end();
    });
  }
  return true;
}

}  // namespace ttt::kernels
