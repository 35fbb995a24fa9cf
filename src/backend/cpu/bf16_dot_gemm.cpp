// bf16 x bf16 -> f32 matrix products with AVX512_BF16 (vdpbf16ps), for `--compute bf16`
// (backend/bf16_gemm.h). Activations are rounded to bf16 (nearest even), weights are bf16
// already; every pair product is accumulated in float32.
//
// Blocking: the weights are packed per block of 64 output columns and KC rows of k as
// [KC/2][64][2] (the two k values a vdpbf16ps lane multiplies side by side), by the thread that
// owns the block; each 6-row tile of activations then runs a 6 x 64 register tile (24 float32
// accumulators) over the block: per pair of k, four 64-byte weight loads, six broadcasts and 24
// vdpbf16ps (64 flops each).
//
// Where AMX is in use (amx.h) the same products run on the tile unit instead, about 17x the
// float32 FMA rate per core here (3.2 TFLOP/s of back-to-back tdpbf16ps on a Sapphire Rapids VM).
// A 32 x 32 block of C is four accumulator tiles fed by two left tiles (16 rows x 32 k) and two
// right ones (16 pairs x 16 columns): the eight tiles there are (tiles_2x2). Two forms:
//  - weights packed per 32 columns and 2048-deep slab ([pairs][32][2]) by all threads, a
//    bounded amount at a time, then work items of a panel of activation rows (kept in L2) times
//    a group of blocks; slabs accumulate into C;
//  - for weights held [n, k] (a tied head) with fewer rows than depth, no packing at all: the
//    weight rows are the left tiles as they lie, the few activation rows are packed as the right
//    ones, and each output tile is transposed into place.
// Activations are rounded with vcvtneps2bf16 into rows padded with zeros to whole tiles, so every
// tile load is whole. TTT_NO_AMX=1 keeps the vdpbf16ps kernel.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "backend/cpu/amx.h"
#include "backend/cpu/bf16_gemm.h"
#include "backend/cpu/pool.h"
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

// ---- AMX

// GCC 12's headers hand some AVX-512 builtins (shifts, unpacks) an undefined vector, which it
// then warns about under a target attribute.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

// One packed block of weights: columns [j0, j0 + 32) (zero beyond n) and k rows [k0, k0 + kc)
// (zero beyond k, up to `pairs` pairs) as p[(q * 32 + c) * 2 + e] = B[k0 + 2q + e][j0 + c]; a
// weight tile is 16 pairs of it at a stride of 128 bytes.
constexpr int64_t kBlockCols = 32;

TTT_AVX512BF16 void pack_block(const uint16_t* b, bool tb, int64_t n, int64_t k, int64_t j0, int64_t k0, int64_t kc,
                               int64_t pairs, uint16_t* p) {
  const int64_t cols = std::min(kBlockCols, n - j0), kv = std::min(kc, k - k0);  // inside b
  if (tb) {  // b is [n, k]: column j is row j, its k values side by side
    uint32_t* p32 = reinterpret_cast<uint32_t*>(p);
    if (cols < kBlockCols || 2 * pairs > kv) std::memset(p, 0, static_cast<size_t>(pairs * kBlockCols * 2) * sizeof(uint16_t));
    for (int64_t c = 0; c < cols; ++c) {
      const uint16_t* src = b + (j0 + c) * k + k0;
      int64_t q = 0;
      for (; 2 * q + 1 < kv; ++q) {
        uint32_t v;
        std::memcpy(&v, src + 2 * q, sizeof v);
        p32[q * kBlockCols + c] = v;
      }
      if (2 * q < kv) p32[q * kBlockCols + c] = src[2 * q];  // an odd k's last value, paired with 0
    }
    return;
  }
  // b is [k, n]: rows 2q and 2q + 1 interleaved, 32 columns (two vectors) per pair.
  const __m512i lo_idx = _mm512_set_epi16(47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9, 40, 8, 39, 7, 38, 6,
                                          37, 5, 36, 4, 35, 3, 34, 2, 33, 1, 32, 0);
  const __m512i hi_idx = _mm512_add_epi16(lo_idx, _mm512_set1_epi16(16));
  const __mmask32 in = cols >= 32 ? ~__mmask32{0} : static_cast<__mmask32>((uint64_t{1} << cols) - 1);
  for (int64_t q = 0; q < pairs; ++q) {
    const int64_t r0 = 2 * q, r1 = r0 + 1;
    const __m512i x0 = r0 < kv ? _mm512_maskz_loadu_epi16(in, b + (k0 + r0) * n + j0) : _mm512_setzero_si512();
    const __m512i x1 = r1 < kv ? _mm512_maskz_loadu_epi16(in, b + (k0 + r1) * n + j0) : _mm512_setzero_si512();
    _mm512_storeu_si512(p + q * 64, _mm512_permutex2var_epi16(x0, lo_idx, x1));
    _mm512_storeu_si512(p + q * 64 + 32, _mm512_permutex2var_epi16(x0, hi_idx, x1));
  }
}

// Accumulator tile T against C, of which rows x cols lie inside C: whole tiles straight, edge
// tiles through a zero-padded 16 x 16 buffer. (Macros: GCC's tile intrinsics spell the tile
// number into the instruction, so it must be a literal.)
void edge_in(float* buf, const float* c, int64_t ldc, int rows, int cols) {
  std::memset(buf, 0, 256 * sizeof(float));
  for (int r = 0; r < rows; ++r) std::memcpy(buf + r * 16, c + r * ldc, static_cast<size_t>(cols) * sizeof(float));
}
void edge_out(const float* buf, float* c, int64_t ldc, int rows, int cols) {
  for (int r = 0; r < rows; ++r) std::memcpy(c + r * ldc, buf + r * 16, static_cast<size_t>(cols) * sizeof(float));
}
#define TTT_C_LOAD(T, c, ldc, rows, cols, accumulate, buf) \
  do {                                                     \
    if (!(accumulate) || (rows) <= 0 || (cols) <= 0) {     \
      _tile_zero(T);                                       \
    } else if ((rows) == 16 && (cols) == 16) {             \
      _tile_loadd(T, c, (ldc) * 4);                        \
    } else {                                               \
      edge_in(buf, c, ldc, rows, cols);                    \
      _tile_loadd(T, buf, 64);                             \
    }                                                      \
  } while (0)
#define TTT_C_STORE(T, c, ldc, rows, cols, buf)  \
  do {                                           \
    if ((rows) == 16 && (cols) == 16) {          \
      _tile_stored(T, c, (ldc) * 4);             \
    } else if ((rows) > 0 && (cols) > 0) {       \
      _tile_stored(T, buf, 64);                  \
      edge_out(buf, c, ldc, rows, cols);         \
    }                                            \
  } while (0)

// The 2 x 2 tile step both products run: accumulator tiles 0-3 += the left tiles (16 rows of 32
// bf16 at l0 and at l1, rows ldl bytes apart) x a packed 32-column block p ([pairs][32][2]), over
// `pairs` pairs (a multiple of 16): per 16 pairs two left and two right tiles, four tdpbf16ps.
TTT_AMX inline void tiles_2x2(const uint16_t* l0, const uint16_t* l1, int64_t ldl, const uint16_t* p, int64_t pairs) {
  for (int64_t q = 0; q < pairs; q += 16) {
    _tile_loadd(4, l0 + 2 * q, ldl);
    _tile_loadd(5, l1 + 2 * q, ldl);
    _tile_loadd(6, p + q * 64, 128);
    _tile_loadd(7, p + q * 64 + 32, 128);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
}

// C[i0:i1, 0:ncols] (+)= A[i0:i1, slab] @ one packed block (pairs a multiple of 16; a holds the
// slab's rows of ka values, padded to whole 32-row strips with zeros): per 32 x 32 block of C,
// four accumulator tiles over the slab's depth.
TTT_AMX void amx_strips(const uint16_t* a, int64_t ka, int64_t m, int64_t i0, int64_t i1, const uint16_t* p,
                        int64_t pairs, float* c, int64_t ldc, int64_t ncols, bool accumulate) {
  alignas(64) float buf[4][256];
  const int64_t lda = ka * 2;  // bytes
  const int c0 = static_cast<int>(std::clamp<int64_t>(ncols, 0, 16));
  const int c1 = static_cast<int>(std::clamp<int64_t>(ncols - 16, 0, 16));
  for (int64_t i = i0; i < i1; i += 32) {
    const int r0 = static_cast<int>(std::clamp<int64_t>(m - i, 0, 16));
    const int r1 = static_cast<int>(std::clamp<int64_t>(m - i - 16, 0, 16));
    const uint16_t* a0 = a + i * ka;
    const uint16_t* a1 = a0 + 16 * ka;
    float* cc = c + i * ldc;
    TTT_C_LOAD(0, cc, ldc, r0, c0, accumulate, buf[0]);
    TTT_C_LOAD(1, cc + 16, ldc, r0, c1, accumulate, buf[1]);
    TTT_C_LOAD(2, cc + 16 * ldc, ldc, r1, c0, accumulate, buf[2]);
    TTT_C_LOAD(3, cc + 16 * ldc + 16, ldc, r1, c1, accumulate, buf[3]);
    tiles_2x2(a0, a1, lda, p, pairs);
    TTT_C_STORE(0, cc, ldc, r0, c0, buf[0]);
    TTT_C_STORE(1, cc + 16, ldc, r0, c1, buf[1]);
    TTT_C_STORE(2, cc + 16 * ldc, ldc, r1, c0, buf[2]);
    TTT_C_STORE(3, cc + 16 * ldc + 16, ldc, r1, c1, buf[3]);
  }
}

// C^T's tile, stored as buf[jj * 16 + ii] (16 weight rows x 16 activation rows), into C's
// rows x cols corner at c: whole tiles by a 16 x 16 transpose in registers, edge tiles element
// by element.
TTT_AVX512BF16 void store_transposed(const float* buf, float* c, int64_t ldc, int rows, int cols) {
  if (rows < 16 || cols < 16) {
    for (int ii = 0; ii < rows; ++ii)
      for (int jj = 0; jj < cols; ++jj) c[ii * ldc + jj] = buf[jj * 16 + ii];
    return;
  }
  transpose16x16(buf, 16, c, ldc);
}
#define TTT_CT_STORE(T, c, ldc, rows, cols, buf)  \
  do {                                            \
    if ((rows) > 0 && (cols) > 0) {               \
      _tile_stored(T, buf, 64);                   \
      store_transposed(buf, c, ldc, rows, cols);  \
    }                                             \
  } while (0)

// The transposed form for weights held [n, k] (tb, k a multiple of 32: a tied head): the weight
// rows are the tiles' left operand as they lie in memory, so nothing of the weights is packed
// or copied (a head is 128K rows: packing it cost more than its products), and the activations,
// few rows, are packed as the right operand (pa: per 32 rows [k/2][32][2]). C^T's tiles are
// transposed into C. Weight rows [j0, j1) (32 at a time; w padded where fewer remain).
TTT_AMX void amx_weight_rows(const uint16_t* w, int64_t n, int64_t k, int64_t j0, int64_t j1, const uint16_t* pa,
                             int64_t m, float* c, int64_t ldc, uint16_t* pad) {
  alignas(64) float buf[256];
  const int64_t pairs = k / 2, act_block = pairs * 64, ldw = k * 2;  // elements; bytes
  for (int64_t j = j0; j < j1; j += 32) {
    const uint16_t* w0 = w + j * k;
    if (j + 32 > n) {  // the last rows: copied into a zero-padded block, never read past the end
      std::memset(pad, 0, static_cast<size_t>(32 * k) * sizeof(uint16_t));
      std::memcpy(pad, w0, static_cast<size_t>((n - j) * k) * sizeof(uint16_t));
      w0 = pad;
    }
    const uint16_t* w1 = w0 + 16 * k;
    const int cj0 = static_cast<int>(std::clamp<int64_t>(n - j, 0, 16));
    const int cj1 = static_cast<int>(std::clamp<int64_t>(n - j - 16, 0, 16));
    for (int64_t i = 0; i < m; i += 32) {
      const uint16_t* p = pa + (i / 32) * act_block;
      _tile_zero(0);
      _tile_zero(1);
      _tile_zero(2);
      _tile_zero(3);
      tiles_2x2(w0, w1, ldw, p, pairs);
      const int ri0 = static_cast<int>(std::clamp<int64_t>(m - i, 0, 16));
      const int ri1 = static_cast<int>(std::clamp<int64_t>(m - i - 16, 0, 16));
      float* cc = c + i * ldc + j;
      TTT_CT_STORE(0, cc, ldc, ri0, cj0, buf);
      TTT_CT_STORE(1, cc + 16 * ldc, ldc, ri1, cj0, buf);
      TTT_CT_STORE(2, cc + 16, ldc, ri0, cj1, buf);
      TTT_CT_STORE(3, cc + 16 * ldc + 16, ldc, ri1, cj1, buf);
    }
  }
}
#undef TTT_CT_STORE

#undef TTT_C_LOAD
#undef TTT_C_STORE

// k per slab: deep products (a head's gradient, k = 128K) run slab by slab, accumulating into C,
// so a panel of activation rows over one slab stays in L2 while the weight blocks stream past.
constexpr int64_t kAmxSlab = 2048;
// The weights of up to this many bytes are packed at a time: scratch per call (and per
// concurrent request of a server) stays small; a 1B shape's MLP slab takes a few rounds.
constexpr int64_t kAmxPackBytes = int64_t{8} << 20;
constexpr int64_t kAmxPanelBytes = int64_t{1} << 20;  // activation rows x slab per work item

void gemm_amx(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const uint16_t* b, bool tb, float* c,
              int64_t ldc) {
  const int64_t threads = std::max(1, num_threads());
  // The transposed form saves packing the weights (work in n k) at the price of transposing each
  // output tile (work in m n): it pays where the rows are fewer than the depth (a head's row
  // blocks of ~260 against k 768 or 2048), not for many rows over a shallow k.
  if (tb && k % 32 == 0 && m <= k) {
    // Activations packed as the right operand: per 32 rows, [k/2][32][2] (zero beyond m).
    const int64_t pairs = k / 2, act_blocks = (m + 31) / 32, act_block = pairs * 64;
    pool::Buffer<uint16_t> pa(static_cast<size_t>(act_blocks * act_block));
    parallel_for(0, act_blocks, 1, [&](int64_t lo, int64_t hi) {
      std::vector<uint16_t> row(static_cast<size_t>(k));
      for (int64_t blk = lo; blk < hi; ++blk) {
        uint32_t* p32 = reinterpret_cast<uint32_t*>(pa.data() + blk * act_block);
        if (blk * 32 + 32 > m) std::memset(p32, 0, static_cast<size_t>(act_block) * sizeof(uint16_t));
        for (int64_t r = 0; r < 32 && blk * 32 + r < m; ++r) {
          round_to_bf16(a + (blk * 32 + r) * lda, row.data(), k);
          for (int64_t q = 0; q < pairs; ++q) std::memcpy(p32 + q * 32 + r, row.data() + 2 * q, sizeof(uint32_t));
        }
      }
    });
    // Work items: runs of 32-row weight blocks, at least 8 per thread where n allows.
    const int64_t wblocks = (n + 31) / 32;
    const int64_t per = std::clamp<int64_t>(wblocks / (8 * threads), 1, 64);
    parallel_for(0, (wblocks + per - 1) / per, 1, [&](int64_t lo, int64_t hi) {
      thread_local std::vector<uint16_t> pad;
      if (n % 32) pad.resize(static_cast<size_t>(32 * k));
      amx_begin();
      for (int64_t item = lo; item < hi; ++item)
        amx_weight_rows(b, n, k, item * per * 32, std::min(n, (item + 1) * per * 32), pa.data(), m, c, ldc, pad.data());
      amx_end();
    });
    return;
  }
  // Per slab of k, the activations rounded to bf16 into whole tiles: 32-row strips, rows of the
  // slab's kc values (a multiple of 32, zeros beyond k and below m).
  const int64_t ka = (k + 31) / 32 * 32, ma = (m + 31) / 32 * 32;
  const int64_t blocks = (n + kBlockCols - 1) / kBlockCols;
  const int64_t max_kc = std::min(kAmxSlab, ka), max_block_elems = max_kc * kBlockCols;
  const int64_t packed_elems = std::clamp<int64_t>(kAmxPackBytes / (max_block_elems * 2), 1, blocks) * max_block_elems;
  pool::Buffer<uint16_t> packed(static_cast<size_t>(packed_elems));
  pool::Buffer<uint16_t> abf(static_cast<size_t>(ma * max_kc));
  for (int64_t k0 = 0; k0 < ka; k0 += kAmxSlab) {
    const int64_t kc = std::min(kAmxSlab, ka - k0), pairs = kc / 2;
    const int64_t kv = std::clamp<int64_t>(k - k0, 0, kc);  // values of the slab inside a
    parallel_for(0, ma, std::max<int64_t>(1, 16384 / kc), [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) {
        uint16_t* row = abf.data() + i * kc;
        const int64_t filled = i < m ? kv : 0;
        if (filled) round_to_bf16(a + i * lda + k0, row, filled);
        std::fill(row + filled, row + kc, uint16_t{0});
      }
    });
    const int64_t block_elems = pairs * kBlockCols * 2;
    const int64_t per_pack = std::clamp<int64_t>(packed_elems / block_elems, 1, blocks);
    const int64_t panel = std::clamp<int64_t>(kAmxPanelBytes / (kc * 2) / 32 * 32, 32, 512);
    const int64_t panels = (m + panel - 1) / panel;
    for (int64_t b0 = 0; b0 < blocks; b0 += per_pack) {
      const int64_t nblk = std::min(per_pack, blocks - b0);
      parallel_for(0, nblk, 1, [&](int64_t lo, int64_t hi) {
        for (int64_t j = lo; j < hi; ++j)
          pack_block(b, tb, n, k, (b0 + j) * kBlockCols, k0, kc, pairs, packed.data() + j * block_elems);
      });
      // Work items: a panel of rows times a group of blocks, at least 4 per thread where possible.
      const int64_t group = std::clamp<int64_t>(nblk * panels / (4 * threads), 1, 8);
      const int64_t groups = (nblk + group - 1) / group;
      parallel_for(0, panels * groups, 1, [&](int64_t lo, int64_t hi) {
        amx_begin();
        for (int64_t item = lo; item < hi; ++item) {
          const int64_t pi = item / groups, g = item % groups;
          const int64_t i0 = pi * panel, i1 = std::min(m, i0 + panel);
          for (int64_t j = g * group; j < std::min(nblk, (g + 1) * group); ++j) {
            const int64_t col = (b0 + j) * kBlockCols;
            amx_strips(abf.data(), kc, m, i0, i1, packed.data() + j * block_elems, pairs, c + col, ldc,
                       std::min(kBlockCols, n - col), k0 > 0);
          }
        }
        amx_end();
      });
    }
  }
}
#pragma GCC diagnostic pop

}  // namespace

// vcvtneps2bf16, 16 at a time: nearest even as float_to_bf16, NaNs kept quiet; a denormal input
// becomes a signed zero, which is what the products (vdpbf16ps, tdpbf16ps) make of a bf16
// denormal anyway. The integer form of float_to_bf16 took a quarter of the AMX attention's time.
TTT_AVX512BF16 void round_to_bf16(const float* src, uint16_t* dst, int64_t n) {
  int64_t j = 0;
  for (; j + 16 <= n; j += 16)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + j), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(src + j)));
  if (j < n) {
    const __mmask16 tail = static_cast<__mmask16>((1u << (n - j)) - 1);
    _mm256_mask_storeu_epi16(dst + j, tail, (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(tail, src + j)));
  }
}

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
  if (amx_in_use()) {
    gemm_amx(m, n, k, a, lda, b, tb, c, ldc);
    return;
  }
  // Activations rounded to bf16, each row padded to an even length: row i's pairs are uint32s.
  const int64_t kp = (k + 1) / 2 * 2;
  std::vector<uint16_t> abf(static_cast<size_t>(m * kp), 0);
  parallel_for(0, m, std::max<int64_t>(1, 4096 / std::max<int64_t>(k, 1)), [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) round_to_bf16(a + i * lda, abf.data() + i * kp, k);
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

const char* bf16_dot_kernel() {
  if (!cpu_has_avx512_bf16()) return "none (no AVX512_BF16)";
  return amx_in_use() ? "amx" : "avx512_bf16";
}

}  // namespace ttt::kernels
