// Fused causal / sliding-window attention on the CPU (see attention.h for the contract).
//
// Forward: work items are (head, tile of kQueryTile queries), spread over the thread pool; each
// item's products run on its own thread (tile_gemm.h: AVX-512 register tiles for float32, BLAS
// forced single-threaded for the float64 oracles). For a tile, only the band of keys visible to
// some query of the tile is touched ([first key visible to the first query, last key visible to
// the last one]), in blocks of at most kKeyBlock keys with an online softmax:
//   S = scale * Q_tile K_blk^T          (gemm into per-thread scratch, strided over heads)
//   per row: mask the edges, m' = max(m, max S), P = exp(S - m'), l = l e^(m-m') + sum P
//   Acc = Acc e^(m-m') + P V_blk        (gemm)
// and finally o = Acc / l, lse = m + log l. Only the rows of the triangular ends of a band need
// masking; the exponentials run through the vectorized vec::vexp_sum.
//
// Backward: the same tiles, with P recomputed from lse:
//   dP = dO V_blk^T, dV_blk += P^T dO, dS = P * (dP - rowsum(dO * O)),
//   dQ_tile (+)= scale dS K_blk, dK_blk += scale dS^T Q_tile.
// dK/dV of a head are shared by all its query tiles, so work items own whole heads' query
// ranges: with H a multiple of the thread count each item is a head and accumulates straight
// into dk/dv; otherwise each head's queries are cut into chunks of equal work, every chunk
// accumulates into its own buffer over its key band, and the buffers are summed at the end.
//
// Backward of the backward (attention.h): the same work items and the same split of the
// key-indexed outputs (gk, gv play the roles of dk, dv); per query tile, a first sweep over the
// key blocks gathers the row sums E and F, a second one forms the products.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <vector>

#include <sys/mman.h>

#include "backend/cpu/blas.h"
#include "backend/cpu/tile_gemm.h"
#include "backend/thread_pool.h"
#include "backend/cpu/attention_cpu.h"
#include "backend/cpu/vec_math.h"
#include "tensor/bf16.h"

namespace ttt::kernels {
namespace {

using blas::Trans;

// Tile sizes, tuned on the bench shape (Tq 1024, window 1024, D 64; 2 threads): 96-192 query
// tiles are within noise of each other; smaller tiles make the GEMMs inefficient, larger ones
// waste more work on the masked triangles at both ends of a window band (BQ - 1 keys per row).
constexpr int64_t kQueryTile = 128;  // queries per work item
constexpr int64_t kKeyBlock = 2048;  // keys per online-softmax block (S scratch: BQ x BK)

// Per-thread scratch, one buffer per slot and element type. Large buffers are whole 2 MiB huge
// pages (transparent huge pages): the transposed products walk down the columns of a [128, 2048]
// probability block, one 8 KiB row apart per step, and with 4 KiB pages every step was a
// first-level TLB miss (the dK and dV products ran 30% slower than the others).
struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};
template <class T>
T* scratch(int slot, size_t n) {
  constexpr size_t kHuge = size_t(2) << 20;
  thread_local std::unique_ptr<T, FreeDeleter> bufs[12];
  thread_local size_t sizes[12] = {};
  if (sizes[slot] < n) {
    const bool huge = n * sizeof(T) >= kHuge / 8;  // small ones (row statistics) stay small
    const size_t align = huge ? kHuge : 64;
    const size_t bytes = (n * sizeof(T) + align - 1) / align * align;
    bufs[slot].reset(static_cast<T*>(std::aligned_alloc(align, bytes)));
    if (!bufs[slot]) throw std::bad_alloc();
    if (huge) madvise(bufs[slot].get(), bytes, MADV_HUGEPAGE);  // a hint: failure is harmless
    sizes[slot] = bytes / sizeof(T);
  }
  return bufs[slot].get();
}

// Visibility of keys for the query at row i: key indices [klo(i), khi(i)).
struct Vis {
  int64_t tq, tk, q_pos0, k_pos0, window;
  int64_t khi(int64_t i) const { return attention_key_hi(tk, q_pos0, k_pos0, i); }
  int64_t klo(int64_t i) const { return attention_key_lo(tk, q_pos0, k_pos0, window, i); }
  int64_t count(int64_t i) const { return std::max<int64_t>(0, khi(i) - klo(i)); }
};

Vis make_vis(const AttentionShape& s) { return {s.tq, s.tk, s.q_pos0, s.k_pos0, s.window}; }

// Where a block of probabilities (or of dS) may be nonzero, for the products that sum over it
// (tile_gemm skips the rest; the sums are unchanged). Rows are queries from i0, columns keys
// from kb0: query i sees keys [i + d - window + 1, i + d + 1), Vis's rule before clamping.
TileBand query_key_band(const AttentionShape& s, int64_t i0, int64_t kb0) {
  const int64_t d = s.q_pos0 - s.k_pos0 + i0 - kb0;
  return {s.window > 0 ? d - s.window + 1 : std::numeric_limits<int64_t>::min() / 4, d + 1};
}
// The transposed block: rows are keys from kb0, columns the queries from i0 that see them.
TileBand key_query_band(const AttentionShape& s, int64_t i0, int64_t kb0) {
  const int64_t e = kb0 - s.q_pos0 + s.k_pos0 - i0;
  return {e, s.window > 0 ? e + s.window : std::numeric_limits<int64_t>::max() / 4};
}

// Runs fn(item) for item in [0, n) with dynamic scheduling on the pool.
template <class F>
void for_each_item(int64_t n, const F& fn) {
  if (n <= 0) return;
  const int nt = std::min<int64_t>(num_threads(), n);
  if (nt <= 1) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  std::atomic<int64_t> next{0};
  parallel_for(0, nt, 1, [&](int64_t, int64_t) {
    for (int64_t i; (i = next.fetch_add(1)) < n;) fn(i);
  });
}

template <class T>
void zero_rows(T* p, int64_t rows, int64_t cols, int64_t ld) {
  for (int64_t r = 0; r < rows; ++r) std::fill_n(p + r * ld, cols, T(0));
}

// The keys and values of a call: rows [cached, tk) in T at k, v; rows [0, cached) a bf16 window
// cache at kc, vc (float only; cached is 0 for plain calls, whose paths are then unchanged).
template <class T>
struct KV {
  const T* k = nullptr;
  const T* v = nullptr;
  const uint16_t* kc = nullptr;
  const uint16_t* vc = nullptr;
  int64_t cached = 0;
};

// The end of the key block that starts at kb0: at most bk keys, and never across the cache's end.
int64_t block_end(int64_t kb0, int64_t bk, int64_t band1, int64_t cached) {
  const int64_t e = std::min(band1, kb0 + bk);
  return kb0 < cached && e > cached ? cached : e;
}

// Head h's keys and values [kb0, kb0 + nk) for a product: pointers into the T rows (leading
// dimension H * D), or cache rows widened into per-thread scratch (leading dimension D; a tile
// reuses them for BQ queries, so widening costs 1/BQ of the product).
template <class T>
struct Block {
  const T* k;
  const T* v;
  int64_t ld;
};
template <class T>
Block<T> key_block(const KV<T>& kv, int64_t H, int64_t D, int64_t h, int64_t kb0, int64_t nk) {
  const int64_t ld = H * D;
  if (kb0 >= kv.cached) return {kv.k + (kb0 - kv.cached) * ld + h * D, kv.v + (kb0 - kv.cached) * ld + h * D, ld};
  T* kb = scratch<T>(6, static_cast<size_t>(nk * D));
  T* vb = scratch<T>(7, static_cast<size_t>(nk * D));
  for (int64_t r = 0; r < nk; ++r) {
    const uint16_t* ks = kv.kc + (kb0 + r) * ld + h * D;
    const uint16_t* vs = kv.vc + (kb0 + r) * ld + h * D;
    for (int64_t d = 0; d < D; ++d) {
      kb[r * D + d] = static_cast<T>(bf16_to_float(ks[d]));
      vb[r * D + d] = static_cast<T>(bf16_to_float(vs[d]));
    }
  }
  return {kb, vb, D};
}

// Head h's keys and values [k0, k1) packed once for the query tiles that read them (float32 on
// the tiles, keys in T rows): K^T and V^T as 64-key panels (S = Q K^T, dP = dO V^T), K and V as
// row panels (P V, dS K). Each tile used to pack its band of about W keys for each of these
// products, reading the strided key rows from memory every time: packing once made the forward
// 6% and the backward 9% faster at W 1024 (8K tokens, 4 heads of 64), the 125M shape's forward
// (W 8192) about 12%. A product over keys from kb starts at the panel holding kb, so S and
// dP get up to 63 leading columns that nothing reads; the products that sum over keys start at
// kb itself, in the same passes as before: the results are bit for bit those of the unpacked path.
struct PackedKV {
  // Which of the four a kernel reads: the forward K^T and V rows, the backward K^T, V^T and K rows.
  enum : unsigned { kKT = 1, kVT = 2, kKRows = 4, kVRows = 8, kForward = kKT | kVRows, kBackward = kKT | kVT | kKRows };
  const float *kt = nullptr, *vt = nullptr, *kr = nullptr, *vr = nullptr;
  int64_t k0 = 0, k1 = 0, tstride = 0, rstride = 0;
  bool holds(int64_t a, int64_t b) const { return k1 > k0 && a >= k0 && b <= k1; }
  int64_t lead(int64_t kb) const { return (kb - k0) % kTilePanelColumns; }  // columns before kb in its panel
  const float* kt_at(int64_t kb) const { return kt + (kb - k0) / kTilePanelColumns * tstride; }
  const float* vt_at(int64_t kb) const { return vt + (kb - k0) / kTilePanelColumns * tstride; }
  const float* kr_at(int64_t kb) const { return kr + (kb - k0) * kTilePanelColumns; }
  const float* vr_at(int64_t kb) const { return vr + (kb - k0) * kTilePanelColumns; }
};

std::atomic<bool> g_key_packing{true};

// At most 4 MB per packed matrix and thread (16384 keys of head_dim 64: the official shapes'
// window of 8192 and a 1024-query chunk fit); a longer band (full attention over more keys)
// packs per tile.
int64_t max_packed_keys(int64_t D) {
  return (int64_t{1} << 20) / ((D + kTilePanelColumns - 1) / kTilePanelColumns * kTilePanelColumns);
}

// Packs the matrices `what` of head h's keys [band0, min(end, band0 + max)) into pk (per-thread
// scratch) unless pk already holds [band0, band1); false (nothing packed) where packing does not
// apply.
template <class T>
bool pack_band(const KV<T>& kv, int64_t H, int64_t D, int64_t h, int64_t band0, int64_t band1, int64_t end,
               unsigned what, PackedKV& pk) {
  if constexpr (!std::is_same_v<T, float>) {
    return false;
  } else {
    if (pk.holds(band0, band1)) return true;
    pk = PackedKV{};
    const int64_t cap = max_packed_keys(D);
    if (kv.cached > 0 || D <= 0 || band1 <= band0 || band1 - band0 > cap || !tile_gemm_usable() ||
        !g_key_packing.load(std::memory_order_relaxed))
      return false;
    const int64_t k1 = std::min(std::max(end, band1), band0 + cap), n = k1 - band0, ld = H * D;
    const int64_t tstride = D * kTilePanelColumns, rstride = n * kTilePanelColumns;
    const int in = static_cast<int>(n), iD = static_cast<int>(D), ild = static_cast<int>(ld);
    const float* k = kv.k + band0 * ld + h * D;
    const float* v = kv.v + band0 * ld + h * D;
    auto pack = [&](unsigned which, int slot, Trans t, const float* src) -> float* {
      if (!(what & which)) return nullptr;
      float* dst = scratch<float>(slot, static_cast<size_t>(t == Trans::Yes ? tile_panels_floats(n, tstride)
                                                                              : tile_panels_floats(D, rstride)));
      if (t == Trans::Yes) pack_tile_panels(t, iD, in, src, ild, dst, tstride);
      else pack_tile_panels(t, in, iD, src, ild, dst, rstride);
      return dst;
    };
    pk = PackedKV{pack(PackedKV::kKT, 8, Trans::Yes, k), pack(PackedKV::kVT, 9, Trans::Yes, v),
                  pack(PackedKV::kKRows, 10, Trans::No, k), pack(PackedKV::kVRows, 11, Trans::No, v),
                  band0, k1, tstride, rstride};
    return true;
  }
}

// C = alpha A K_blk^T (values: A V_blk^T), [nq, lead + nk] for keys from the panel holding kb0
// when packed (lead = pk->lead(kb0) columns before kb0), else [nq, nk] (lead 0). Returns lead.
template <class T>
int64_t times_keys_t(const PackedKV* pk, bool values, const Block<T>& blk, int64_t kb0, int64_t nq, int64_t nk,
                     int64_t D, T alpha, const T* a, int64_t lda, T* c) {
  if constexpr (std::is_same_v<T, float>) {
    if (pk && (values ? pk->vt : pk->kt) && pk->holds(kb0, kb0 + nk)) {
      const int64_t lead = pk->lead(kb0);
      tile_gemm_packed(Trans::No, static_cast<int>(nq), static_cast<int>(lead + nk), static_cast<int>(D), alpha, a,
                       static_cast<int>(lda), values ? pk->vt_at(kb0) : pk->kt_at(kb0), pk->tstride, 0.0f, c,
                       static_cast<int>(lead + nk));
      return lead;
    }
  }
  tile_gemm(Trans::No, Trans::Yes, static_cast<int>(nq), static_cast<int>(nk), static_cast<int>(D), alpha, a,
            static_cast<int>(lda), values ? blk.v : blk.k, static_cast<int>(blk.ld), T(0), c, static_cast<int>(nk));
  return 0;
}

// C (+)= alpha A K_blk (values: A V_blk), A [nq, nk] over keys [kb0, kb0 + nk).
template <class T>
void times_keys(const PackedKV* pk, bool values, const Block<T>& blk, int64_t kb0, int64_t nq, int64_t nk, int64_t D,
                T alpha, const T* a, int64_t lda, T beta, T* c, int64_t ldc, const TileBand& band) {
  if constexpr (std::is_same_v<T, float>) {
    if (pk && (values ? pk->vr : pk->kr) && pk->holds(kb0, kb0 + nk)) {
      tile_gemm_packed(Trans::No, static_cast<int>(nq), static_cast<int>(D), static_cast<int>(nk), alpha, a,
                       static_cast<int>(lda), values ? pk->vr_at(kb0) : pk->kr_at(kb0), pk->rstride, beta, c,
                       static_cast<int>(ldc), &band);
      return;
    }
  }
  tile_gemm(Trans::No, Trans::No, static_cast<int>(nq), static_cast<int>(D), static_cast<int>(nk), alpha, a,
            static_cast<int>(lda), values ? blk.v : blk.k, static_cast<int>(blk.ld), beta, c, static_cast<int>(ldc),
            band);
}

// ---------------------------------------------------------------------------------------------
// Decoding's streams: one query row over key rows that hold every head, float32 or bf16 rows,
// vectorized for the CPU at hand (vec_math.h's dispatch). The float32 dot is vec::vdot's own
// code, so float32 results are those of the plain loops they replace.

namespace dv = vec::detail;
#define TTT_ATT_INLINE inline __attribute__((always_inline))

template <class V>
TTT_ATT_INLINE void load_row(V& out, const float* p) {
  dv::loadv(out, p);
}
// The bf16 bits and their widened uint32 lanes of a float vector type.
template <class V>
struct HalfOf;
template <>
struct HalfOf<dv::vf4> {
  typedef uint16_t bits __attribute__((vector_size(8)));
  typedef uint32_t wide __attribute__((vector_size(16)));
};
template <>
struct HalfOf<dv::vf8> {
  typedef uint16_t bits __attribute__((vector_size(16)));
  typedef uint32_t wide __attribute__((vector_size(32)));
};
template <>
struct HalfOf<dv::vf16> {
  typedef uint16_t bits __attribute__((vector_size(32)));
  typedef uint32_t wide __attribute__((vector_size(64)));
};
template <class V>
TTT_ATT_INLINE void load_row(V& out, const uint16_t* p) {  // bf16 bits -> float32, exact
  using VH = typename HalfOf<V>::bits;
  using VU = typename HalfOf<V>::wide;
  VH hbits;
  std::memcpy(&hbits, p, sizeof hbits);
  const VU u = __builtin_convertvector(hbits, VU) << 16;
  std::memcpy(&out, &u, sizeof out);
}
TTT_ATT_INLINE float widen(float x) { return x; }
TTT_ATT_INLINE float widen(uint16_t x) { return bf16_to_float(x); }

template <class V, class K>
TTT_ATT_INLINE float row_dot(const float* x, const K* y, int64_t n) {
  if constexpr (std::is_same_v<K, float>) {
    return dv::dot_impl<V>(x, y, n);
  } else {
    constexpr int L = sizeof(V) / sizeof(float);
    V acc = {};
    int64_t i = 0;
    for (; i + L <= n; i += L) {
      V a, b;
      dv::loadv(a, x + i);
      load_row(b, y + i);
      acc += a * b;
    }
    float s = 0;
    for (int l = 0; l < L; ++l) s += acc[l];
    for (; i < n; ++i) s += x[i] * widen(y[i]);
    return s;
  }
}

// The rows a decode stream reads are fetched this many rows ahead (every line of the row): with
// the hardware prefetchers alone these loops, which do more work per line than a plain sum,
// streamed the cache at about 18 GB/s where the head's GEMV reached 30; prefetched, about 22
// (125M shape after 8K tokens, `ttt bench profile --model`; 1, 2 or 4 rows ahead were alike, 8
// and more slower, and results are unchanged: only loads move).
constexpr int64_t kDecodePrefetchRows = 2;
template <class K>
TTT_ATT_INLINE void prefetch_row(const K* row, int64_t elems) {
  const char* p = reinterpret_cast<const char*>(row);
  const int64_t bytes = elems * static_cast<int64_t>(sizeof(K));
  for (int64_t off = 0; off < bytes; off += 64) __builtin_prefetch(p + off, 0, 3);
}

// S[h * ldS + j] = scale * <q_h, k_j,h> for rows j in [0, n) of k (leading dimension H * D).
struct OpDecodeScores {
  template <class VF, class VD, class K>
  static TTT_ATT_INLINE void run(const float* q, const K* k, int64_t H, int64_t D, int64_t n, float scale, float* S,
                                 int64_t ldS) {
    for (int64_t j = 0; j < n; ++j) {
      const K* kr = k + j * H * D;
      if (j + kDecodePrefetchRows < n) prefetch_row(kr + kDecodePrefetchRows * H * D, H * D);
      for (int64_t h = 0; h < H; ++h) S[h * ldS + j] = scale * row_dot<VF>(q + h * D, kr + h * D, D);
    }
  }
};
// acc[h * D + d] += S[h * ldS + j] * v_j,h[d] for rows j in [0, n), in row order.
struct OpDecodeAccumulate {
  template <class VF, class VD, class K>
  static TTT_ATT_INLINE void run(const float* S, int64_t ldS, const K* v, int64_t H, int64_t D, int64_t n, float* acc) {
    constexpr int L = sizeof(VF) / sizeof(float);
    for (int64_t j = 0; j < n; ++j) {
      const K* vr = v + j * H * D;
      if (j + kDecodePrefetchRows < n) prefetch_row(vr + kDecodePrefetchRows * H * D, H * D);
      for (int64_t h = 0; h < H; ++h) {
        const float p = S[h * ldS + j];
        float* a = acc + h * D;
        const K* vh = vr + h * D;
        int64_t d = 0;
        for (; d + L <= D; d += L) {
          VF x, y;
          dv::loadv(x, a + d);
          load_row(y, vh + d);
          x += p * y;
          std::memcpy(a + d, &x, sizeof x);
        }
        for (; d < D; ++d) a[d] += p * widen(vh[d]);
      }
    }
  }
};

// ---------------------------------------------------------------------------------------------
// Forward

// One query row of a tile (decoding): dot products and a weighted sum of value rows, without
// BLAS calls (a 1-row sgemm packs its operands as for a large product).
template <class T>
void single_query_tile(const AttentionShape& s, int64_t h, int64_t i0, int64_t band0, int64_t band1, const T* q,
                       const KV<T>& kv, T* orow0, T* lse) {
  const int64_t D = s.head_dim, ld = s.heads * D;
  const int64_t nk = band1 - band0;
  T* S = scratch<T>(0, static_cast<size_t>(nk));
  T* acc = scratch<T>(1, static_cast<size_t>(D));
  const T* qt = q + i0 * ld + h * D;
  const int64_t nc = std::clamp<int64_t>(kv.cached - band0, 0, nk);  // rows in the bf16 cache
  for (int64_t j = 0; j < nk; ++j) {
    if (j < nc) {
      T dot = 0;
      const uint16_t* kr = kv.kc + (band0 + j) * ld + h * D;
      for (int64_t d = 0; d < D; ++d) dot += qt[d] * static_cast<T>(bf16_to_float(kr[d]));
      S[j] = static_cast<T>(s.scale) * dot;
    } else {
      S[j] = static_cast<T>(s.scale) * vec::vdot(qt, kv.k + (band0 + j - kv.cached) * ld + h * D, D);
    }
  }
  const T mx = vec::vmax(S, nk);
  const T sum = vec::vexp_sum(S, mx, S, nk);
  std::fill_n(acc, D, T(0));
  for (int64_t j = 0; j < nk; ++j) {
    const T p = S[j];
    if (j < nc) {
      const uint16_t* vr = kv.vc + (band0 + j) * ld + h * D;
      for (int64_t d = 0; d < D; ++d) acc[d] += p * static_cast<T>(bf16_to_float(vr[d]));
    } else {
      const T* vr = kv.v + (band0 + j - kv.cached) * ld + h * D;
      for (int64_t d = 0; d < D; ++d) acc[d] += p * vr[d];
    }
  }
  const T inv = T(1) / sum;
  for (int64_t d = 0; d < D; ++d) orow0[d] = acc[d] * inv;
  lse[h * s.tq + i0] = mx + std::log(sum);
}

template <class T>
void forward_tile(const AttentionShape& s, const Vis& vis, int64_t h, int64_t i0, int64_t i1,
                  const T* q, const KV<T>& kv, T* o, T* lse, const PackedKV* pk = nullptr) {
  const int64_t H = s.heads, D = s.head_dim, ld = H * D, nq = i1 - i0;
  const int64_t band0 = vis.klo(i0), band1 = vis.khi(i1 - 1);
  T* orow0 = o + i0 * ld + h * D;
  if (band1 <= band0) {  // nothing visible to any query of the tile
    zero_rows(orow0, nq, D, ld);
    for (int64_t r = 0; r < nq; ++r) lse[h * s.tq + i0 + r] = -std::numeric_limits<T>::infinity();
    return;
  }
  if (nq == 1) {
    single_query_tile(s, h, i0, band0, band1, q, kv, orow0, lse);
    return;
  }
  const int64_t bk = std::min(kKeyBlock, band1 - band0);
  T* S0 = scratch<T>(0, static_cast<size_t>(nq * (bk + kTilePanelColumns)));
  T* acc = scratch<T>(1, static_cast<size_t>(nq * D));
  T* m = scratch<T>(2, static_cast<size_t>(nq));
  T* l = scratch<T>(3, static_cast<size_t>(nq));
  const T ninf = -std::numeric_limits<T>::infinity();
  std::fill_n(m, nq, ninf);
  std::fill_n(l, nq, T(0));
  const T scale = static_cast<T>(s.scale);
  const T* qt = q + i0 * ld + h * D;
  bool first = true;
  for (int64_t kb0 = band0, kb1; kb0 < band1; kb0 = kb1) {
    kb1 = block_end(kb0, bk, band1, kv.cached);
    const int64_t nk = kb1 - kb0;
    const Block<T> blk = key_block(kv, H, D, h, kb0, nk);
    const int64_t lead = times_keys_t(pk, false, blk, kb0, nq, nk, D, scale, qt, ld, S0);
    T* S = S0 + lead;  // [nq, nk] with rows lds apart
    const int64_t lds = lead + nk;
    for (int64_t r = 0; r < nq; ++r) {
      T* srow = S + r * lds;
      const int64_t c0 = std::clamp<int64_t>(vis.klo(i0 + r) - kb0, 0, nk);
      const int64_t c1 = std::clamp<int64_t>(vis.khi(i0 + r) - kb0, 0, nk);
      if (c1 <= c0) {
        std::fill_n(srow, nk, T(0));
        continue;
      }
      std::fill_n(srow, c0, T(0));
      std::fill_n(srow + c1, nk - c1, T(0));
      const T mx = vec::vmax(srow + c0, c1 - c0);
      const T mold = m[r];
      const T mnew = std::max(mold, mx);
      const T sum = vec::vexp_sum(srow + c0, mnew, srow + c0, c1 - c0);
      if (mold == mnew) {
        l[r] += sum;
      } else {
        const T alpha = mold == ninf ? T(0) : std::exp(mold - mnew);
        l[r] = l[r] * alpha + sum;
        if (!first) vec::vscale(acc + r * D, alpha, D);
        m[r] = mnew;
      }
    }
    times_keys(pk, true, blk, kb0, nq, nk, D, T(1), S, lds, first ? T(0) : T(1), acc, D, query_key_band(s, i0, kb0));
    first = false;
  }
  for (int64_t r = 0; r < nq; ++r) {
    T* orow = orow0 + r * ld;
    if (l[r] > T(0)) {
      const T inv = T(1) / l[r];
      const T* a = acc + r * D;
      for (int64_t d = 0; d < D; ++d) orow[d] = a[d] * inv;
      lse[h * s.tq + i0 + r] = m[r] + std::log(l[r]);
    } else {
      std::fill_n(orow, D, T(0));
      lse[h * s.tq + i0 + r] = ninf;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Backward

// P = exp(S - lse) on the visible columns [c0, c1), 0 elsewhere.
template <class T>
void probs_row(T* srow, int64_t nk, int64_t c0, int64_t c1, T lse_r) {
  std::fill_n(srow, c0, T(0));
  std::fill_n(srow + c1, nk - c1, T(0));
  if (c1 > c0) vec::vexp_sum(srow + c0, lse_r, srow + c0, c1 - c0);
}

// The recomputation both backward kernels start each key block with, for query rows
// [i0, i0 + nq) of head h and keys [kb0, kb0 + nk): P = exp(scale Q K^T - lse) (0 where a query
// may not look) and dP = dO V^T, both [nq, nk] from column `lead` of rows lead + nk apart (lead:
// times_keys_t's, 0 unless pk holds the keys). P and dP hold nq (nk + 64) values. Returns lead.
template <class T>
int64_t block_probs(const AttentionShape& s, const Vis& vis, int64_t h, int64_t i0, int64_t nq, int64_t kb0,
                    int64_t nk, const T* qt, const T* dot, const Block<T>& blk, const PackedKV* pk, const T* lse, T* P,
                    T* dP) {
  const int64_t ld = s.heads * s.head_dim, D = s.head_dim;
  const int64_t lead = times_keys_t(pk, false, blk, kb0, nq, nk, D, static_cast<T>(s.scale), qt, ld, P);
  const int64_t lds = lead + nk;
  for (int64_t r = 0; r < nq; ++r) {
    const T lr = lse[h * s.tq + i0 + r];
    int64_t c0 = std::clamp<int64_t>(vis.klo(i0 + r) - kb0, 0, nk);
    int64_t c1 = std::clamp<int64_t>(vis.khi(i0 + r) - kb0, 0, nk);
    if (!(lr > -std::numeric_limits<T>::infinity())) c0 = c1 = 0;
    probs_row(P + lead + r * lds, nk, c0, std::max(c0, c1), lr);
  }
  times_keys_t(pk, true, blk, kb0, nq, nk, D, T(1), dot, ld, dP);
  return lead;
}

// dS = P * (dP - drow), in place in dP.
template <class T>
TTT_WIDE_LOOP void dsoftmax_row(const T* p, T* dp, T drow, int64_t n) {
  for (int64_t j = 0; j < n; ++j) dp[j] = p[j] * (dp[j] - drow);
}

// Sweep 2 of backward2_range on one row: Z (into x), C (into b), dS (into dp).
template <class T>
TTT_WIDE_LOOP void backward2_row(const T* p, T* b, T* dp, T* x, T d, T e, T f, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const T pj = p[j], bj = b[j], dpj = dp[j];
    x[j] = pj * (x[j] + bj * (dpj - d) - e * dpj - f);
    b[j] = pj * (bj - e);
    dp[j] = pj * (dpj - d);
  }
}

// Query rows [r0, r1) of head h. dK/dV for keys [kbase, ...) accumulate into dkb/dvb
// (leading dimension ldb), which must be zero-initialized by the caller.
template <class T>
void backward_range(const AttentionShape& s, const Vis& vis, int64_t h, int64_t r0, int64_t r1,
                    const T* q, const KV<T>& kv, const T* o, const T* lse, const T* dout,
                    T* dq, T* dkb, T* dvb, int64_t kbase, int64_t ldb) {
  const int64_t H = s.heads, D = s.head_dim, ld = H * D;
  const T scale = static_cast<T>(s.scale);
  const int ild = static_cast<int>(ld), iD = static_cast<int>(D), ildb = static_cast<int>(ldb);
  T* drow = scratch<T>(2, static_cast<size_t>(kQueryTile));
  PackedKV packed;
  const int64_t keys_end = r1 > r0 ? vis.khi(r1 - 1) : 0;
  for (int64_t i0 = r0; i0 < r1; i0 += kQueryTile) {
    const int64_t i1 = std::min(r1, i0 + kQueryTile), nq = i1 - i0;
    const int inq = static_cast<int>(nq);
    const int64_t band0 = vis.klo(i0), band1 = vis.khi(i1 - 1);
    T* dqt = dq + i0 * ld + h * D;
    if (band1 <= band0) {
      zero_rows(dqt, nq, D, ld);
      continue;
    }
    const T* qt = q + i0 * ld + h * D;
    const T* dot = dout + i0 * ld + h * D;
    for (int64_t r = 0; r < nq; ++r) {
      const T* a = dot + r * ld;
      const T* b = o + (i0 + r) * ld + h * D;
      T acc = 0;
      for (int64_t d = 0; d < D; ++d) acc += a[d] * b[d];
      drow[r] = acc;
    }
    const int64_t bk = std::min(kKeyBlock, band1 - band0);
    T* P0 = scratch<T>(0, static_cast<size_t>(nq * (bk + kTilePanelColumns)));
    T* dP0 = scratch<T>(1, static_cast<size_t>(nq * (bk + kTilePanelColumns)));
    const PackedKV* pk = pack_band(kv, H, D, h, band0, band1, keys_end, PackedKV::kBackward, packed) ? &packed : nullptr;
    bool first = true;
    for (int64_t kb0 = band0, kb1; kb0 < band1; kb0 = kb1) {
      kb1 = block_end(kb0, bk, band1, kv.cached);
      const int64_t nk = kb1 - kb0;
      const Block<T> blk = key_block(kv, H, D, h, kb0, nk);
      const int64_t lead = block_probs(s, vis, h, i0, nq, kb0, nk, qt, dot, blk, pk, lse, P0, dP0);
      T* P = P0 + lead;  // [nq, nk], rows lds apart
      T* dP = dP0 + lead;
      const int64_t lds = lead + nk;
      const int ilds = static_cast<int>(lds);
      // dK and dV only for keys from k_grad_from on: columns [c0, nk) of P and dS.
      const int64_t c0 = std::clamp<int64_t>(s.k_grad_from - kb0, 0, nk);
      const int inkg = static_cast<int>(nk - c0);
      // (Offsets only where written: keys before kbase have no rows there.)
      T* dvblk = inkg > 0 ? dvb + (kb0 + c0 - kbase) * ldb : nullptr;
      T* dkblk = inkg > 0 ? dkb + (kb0 + c0 - kbase) * ldb : nullptr;
      const TileBand kq = key_query_band(s, i0, kb0 + c0);
      if (inkg > 0) tile_gemm(Trans::Yes, Trans::No, inkg, iD, inq, T(1), P + c0, ilds, dot, ild, T(1), dvblk, ildb, kq);
      for (int64_t r = 0; r < nq; ++r) dsoftmax_row(P + r * lds, dP + r * lds, drow[r], nk);
      times_keys(pk, false, blk, kb0, nq, nk, D, scale, dP, lds, first ? T(0) : T(1), dqt, ld, query_key_band(s, i0, kb0));
      if (inkg > 0)
        tile_gemm(Trans::Yes, Trans::No, inkg, iD, inq, scale, dP + c0, ilds, qt, ild, T(1), dkblk, ildb, kq);
      first = false;
    }
  }
}

// Splits the queries [0, tq) into `parts` contiguous ranges of about equal visible-pair count.
std::vector<int64_t> split_by_work(const Vis& vis, int64_t parts) {
  std::vector<int64_t> cut(static_cast<size_t>(parts + 1), vis.tq);
  cut[0] = 0;
  int64_t total = 0;
  for (int64_t i = 0; i < vis.tq; ++i) total += vis.count(i) + 1;
  int64_t accum = 0, p = 1;
  for (int64_t i = 0; i < vis.tq && p < parts; ++i) {
    accum += vis.count(i) + 1;
    while (p < parts && accum * parts >= total * p) cut[static_cast<size_t>(p++)] = i + 1;
  }
  // Round interior cuts to whole query tiles where that keeps the ranges non-empty.
  for (int64_t j = 1; j < parts; ++j) {
    auto& c = cut[static_cast<size_t>(j)];
    const int64_t rounded = (c + kQueryTile / 2) / kQueryTile * kQueryTile;
    c = std::clamp(rounded, cut[static_cast<size_t>(j - 1)], vis.tq);
  }
  return cut;
}

// ---------------------------------------------------------------------------------------------
// Reference

template <class T>
void reference_probs(const AttentionShape& s, const Vis& vis, const T* q, const T* k, int64_t h,
                     std::vector<double>& P, std::vector<double>& lse_out) {
  const int64_t H = s.heads, D = s.head_dim, Tq = s.tq, Tk = s.tk;
  P.assign(static_cast<size_t>(Tq * Tk), 0.0);
  lse_out.assign(static_cast<size_t>(Tq), -std::numeric_limits<double>::infinity());
  std::vector<double> sc(static_cast<size_t>(Tk));
  for (int64_t i = 0; i < Tq; ++i) {
    const int64_t lo = vis.klo(i), hi = vis.khi(i);
    if (hi <= lo) continue;
    double mx = -std::numeric_limits<double>::infinity();
    for (int64_t j = lo; j < hi; ++j) {
      double dot = 0;
      for (int64_t d = 0; d < D; ++d)
        dot += static_cast<double>(q[(i * H + h) * D + d]) * static_cast<double>(k[(j * H + h) * D + d]);
      sc[static_cast<size_t>(j)] = dot * s.scale;
      mx = std::max(mx, sc[static_cast<size_t>(j)]);
    }
    double sum = 0;
    for (int64_t j = lo; j < hi; ++j) sum += std::exp(sc[static_cast<size_t>(j)] - mx);
    for (int64_t j = lo; j < hi; ++j)
      P[static_cast<size_t>(i * Tk + j)] = std::exp(sc[static_cast<size_t>(j)] - mx) / sum;
    lse_out[static_cast<size_t>(i)] = mx + std::log(sum);
  }
}

// One query (decoding) over a long band: the visible keys are cut into stretches of contiguous
// rows, and each stretch is read front to back for all heads at once (a key row holds every
// head), keeping per head a partial max, exp-sum and weighted value sum that are merged at the
// end, as flash-decoding does. Per-head work items instead read each head's 256 bytes out of
// every key row: strided streams that ran at a fifth of the memory bandwidth.
template <class T>
void decode_forward(const AttentionShape& s, const Vis& vis, const T* q, const KV<T>& kv, T* o, T* lse) {
  const int64_t H = s.heads, D = s.head_dim, ld = H * D;
  const int64_t lo = vis.klo(0), nk = vis.khi(0) - lo;
  const T scale = static_cast<T>(s.scale), ninf = -std::numeric_limits<T>::infinity();
  // ~64K values of keys per stretch (at most 8), a fixed cut: results do not depend on threads.
  const int64_t pieces = std::clamp<int64_t>((nk * ld + (int64_t{1} << 16) - 1) >> 16, 1, std::min<int64_t>(8, nk));
  const int64_t per = 2 * H + ld;  // per stretch: max[H], sum[H], acc[H * D]
  thread_local std::vector<T> partial;
  partial.assign(static_cast<size_t>(pieces * per), T(0));
  T* part = partial.data();
  parallel_for(0, pieces, 1, [&](int64_t plo, int64_t phi) {
    for (int64_t p = plo; p < phi; ++p) {
      const int64_t j0 = lo + nk * p / pieces, n = lo + nk * (p + 1) / pieces - j0;
      T* m = part + p * per;
      T* l = m + H;
      T* acc = l + H;
      T* S = scratch<T>(0, static_cast<size_t>(n * H));  // [H, n]
      // Rows [j0, jc) come from the bf16 cache, [jc, j0 + n) from the T rows.
      const int64_t jc = std::clamp(kv.cached, j0, j0 + n);
      if constexpr (std::is_same_v<T, float>) {
        if (jc > j0) dv::dispatch<OpDecodeScores>(q, kv.kc + j0 * ld, H, D, jc - j0, scale, S, n);
        if (jc < j0 + n)
          dv::dispatch<OpDecodeScores>(q, kv.k + (jc - kv.cached) * ld, H, D, j0 + n - jc, scale, S + (jc - j0), n);
      } else {
        for (int64_t j = 0; j < n; ++j) {
          const T* kr = kv.k + (j0 + j - kv.cached) * ld;
          for (int64_t h = 0; h < H; ++h) S[h * n + j] = scale * vec::vdot(q + h * D, kr + h * D, D);
        }
      }
      for (int64_t h = 0; h < H; ++h) {
        m[h] = vec::vmax(S + h * n, n);
        l[h] = vec::vexp_sum(S + h * n, m[h], S + h * n, n);
      }
      if constexpr (std::is_same_v<T, float>) {
        if (jc > j0) dv::dispatch<OpDecodeAccumulate>(static_cast<const float*>(S), n, kv.vc + j0 * ld, H, D, jc - j0, acc);
        if (jc < j0 + n)
          dv::dispatch<OpDecodeAccumulate>(static_cast<const float*>(S + (jc - j0)), n, kv.v + (jc - kv.cached) * ld, H,
                                           D, j0 + n - jc, acc);
      } else {
        for (int64_t j = 0; j < n; ++j) {
          const T* vr = kv.v + (j0 + j - kv.cached) * ld;
          for (int64_t h = 0; h < H; ++h) {
            const T pj = S[h * n + j];
            T* a = acc + h * D;
            const T* vh = vr + h * D;
            for (int64_t d = 0; d < D; ++d) a[d] += pj * vh[d];
          }
        }
      }
    }
  });
  for (int64_t h = 0; h < H; ++h) {
    T mx = ninf;
    for (int64_t p = 0; p < pieces; ++p) mx = std::max(mx, part[p * per + h]);
    T sum = 0;
    T* out = o + h * D;
    std::fill_n(out, D, T(0));
    for (int64_t p = 0; p < pieces; ++p) {
      const T w = std::exp(part[p * per + h] - mx);
      sum += part[p * per + H + h] * w;
      const T* a = part + p * per + 2 * H + h * D;
      for (int64_t d = 0; d < D; ++d) out[d] += w * a[d];
    }
    const T inv = T(1) / sum;
    for (int64_t d = 0; d < D; ++d) out[d] *= inv;
    lse[h] = mx + std::log(sum);
  }
}

}  // namespace

namespace {

template <class T>
void forward_any(const AttentionShape& s, const T* q, const KV<T>& kv, T* o, T* lse) {
  if (s.tq <= 0 || s.heads <= 0) return;
  const Vis vis = make_vis(s);
  if (s.tq == 1 && s.head_dim > 0 && vis.count(0) > 0) {
    decode_forward(s, vis, q, kv, o, lse);
    return;
  }
  if (s.head_dim <= 0) {
    for (int64_t h = 0; h < s.heads; ++h)
      for (int64_t i = 0; i < s.tq; ++i)
        lse[h * s.tq + i] = vis.count(i) > 0 ? std::log(static_cast<T>(vis.count(i)))
                                             : -std::numeric_limits<T>::infinity();
    return;
  }
  const int64_t tiles = (s.tq + kQueryTile - 1) / kQueryTile;
  blas::SingleThreadedBlas single;
  if (std::is_same_v<T, float> && kv.cached == 0 && tile_gemm_usable()) {
    // Each head's queries in ranges of equal work, one per thread, so that a range packs its
    // keys once (PackedKV) for all its tiles; the tiles are those of the loop below.
    const int64_t chunks = std::min<int64_t>(num_threads(), tiles);
    const std::vector<int64_t> cut = split_by_work(vis, chunks);
    for_each_item(s.heads * chunks, [&](int64_t item) {
      const int64_t h = item / chunks, c = item % chunks;
      const int64_t r0 = cut[static_cast<size_t>(c)], r1 = cut[static_cast<size_t>(c + 1)];
      if (r1 <= r0) return;
      PackedKV packed;
      for (int64_t i0 = r0; i0 < r1; i0 += kQueryTile) {
        const int64_t i1 = std::min(r1, i0 + kQueryTile);
        const int64_t band0 = vis.klo(i0), band1 = vis.khi(i1 - 1);
        const bool pk = i1 - i0 > 1 && pack_band(kv, s.heads, s.head_dim, h, band0, band1, vis.khi(r1 - 1),
                                                 PackedKV::kForward, packed);
        forward_tile(s, vis, h, i0, i1, q, kv, o, lse, pk ? &packed : nullptr);
      }
    });
    return;
  }
  // Largest tiles (most visible keys: the last ones for causal attention) first.
  for_each_item(s.heads * tiles, [&](int64_t item) {
    const int64_t t = tiles - 1 - item / s.heads, h = item % s.heads;
    const int64_t i0 = t * kQueryTile, i1 = std::min(s.tq, i0 + kQueryTile);
    forward_tile(s, vis, h, i0, i1, q, kv, o, lse);
  });
}

}  // namespace

void set_attention_key_packing(bool on) { g_key_packing.store(on, std::memory_order_relaxed); }

template <class T>
void attention_forward(const AttentionShape& s, const T* q, const T* k, const T* v, T* o, T* lse) {
  forward_any(s, q, KV<T>{k, v}, o, lse);
}

void attention_forward_bf16_cache(const AttentionShape& s, const float* q, const Bf16CacheKV& kv, float* o,
                                  float* lse) {
  forward_any(s, q, KV<float>{kv.k, kv.v, kv.kc, kv.vc, kv.cached}, o, lse);
}

namespace {

// Runs range(h, r0, r1, kacc, vacc, kbase, ldb) over every head and its query rows [r0, r1).
// Two key-indexed outputs (ko, vo: [Tk - kfrom, H, D] for keys [kfrom, Tk), zeroed here) receive
// what the ranges accumulate for keys [kbase, ...) into kacc/vacc (leading dimension ldb; the
// ranges write no key before kfrom): straight into ko/vo when work items are whole heads, else
// into private zeroed buffers that are summed at the end.
template <class T, class Range>
void for_each_query_range(const AttentionShape& s, const Vis& vis, T* ko, T* vo, const Range& range,
                          int64_t kfrom = 0) {
  const int64_t H = s.heads, D = s.head_dim, ld = H * D;
  if (s.tk > kfrom) {
    std::fill_n(ko, (s.tk - kfrom) * ld, T(0));
    std::fill_n(vo, (s.tk - kfrom) * ld, T(0));
  }
  if (s.tq <= 0 || H <= 0 || D <= 0) return;
  const int nt = num_threads();
  blas::SingleThreadedBlas single;
  if (H % nt == 0 || s.tq <= kQueryTile) {
    for_each_item(H, [&](int64_t h) { range(h, int64_t{0}, s.tq, ko + h * D, vo + h * D, kfrom, ld); });
    return;
  }
  const int64_t chunks = std::min<int64_t>(nt, (s.tq + kQueryTile - 1) / kQueryTile);
  const std::vector<int64_t> cut = split_by_work(vis, chunks);
  struct Chunk {
    int64_t r0, r1, kb0, kb1;
    size_t offset;
  };
  std::vector<Chunk> cs;
  size_t total = 0;
  for (int64_t c = 0; c < chunks; ++c) {
    Chunk ch{cut[static_cast<size_t>(c)], cut[static_cast<size_t>(c + 1)], 0, 0, total};
    if (ch.r1 > ch.r0) {
      ch.kb0 = std::max(kfrom, vis.klo(ch.r0));
      ch.kb1 = std::max(ch.kb0, vis.khi(ch.r1 - 1));
    }
    total += static_cast<size_t>((ch.kb1 - ch.kb0) * D * 2);
    cs.push_back(ch);
  }
  std::vector<T> buf(total * static_cast<size_t>(H));
  for_each_item(H * chunks, [&](int64_t item) {
    const int64_t h = item / chunks;
    const Chunk& ch = cs[static_cast<size_t>(item % chunks)];
    if (ch.r1 <= ch.r0) return;
    T* kb = buf.data() + static_cast<size_t>(h) * total + ch.offset;
    T* vb = kb + (ch.kb1 - ch.kb0) * D;
    range(h, ch.r0, ch.r1, kb, vb, ch.kb0, D);
  });
  // Sum the chunks' contributions, in parallel over heads x key rows.
  const int64_t nkeys = s.tk - kfrom;
  parallel_for(0, H * nkeys, 256, [&](int64_t lo, int64_t hi) {
    for (int64_t x = lo; x < hi; ++x) {
      const int64_t h = x / nkeys, j = kfrom + x % nkeys;
      T* kr = ko + (j - kfrom) * ld + h * D;
      T* vr = vo + (j - kfrom) * ld + h * D;
      for (const Chunk& ch : cs) {
        if (j < ch.kb0 || j >= ch.kb1) continue;
        const T* kb = buf.data() + static_cast<size_t>(h) * total + ch.offset;
        const T* a = kb + (j - ch.kb0) * D;
        const T* b = kb + (ch.kb1 - ch.kb0) * D + (j - ch.kb0) * D;
        for (int64_t d = 0; d < D; ++d) {
          kr[d] += a[d];
          vr[d] += b[d];
        }
      }
    }
  });
}

// Query rows [r0, r1) of head h for attention_backward_backward; gk/gv for keys [kbase, ...)
// accumulate into gkb/gvb (leading dimension ldb, zeroed by the caller).
template <class T>
void backward2_range(const AttentionShape& s, const Vis& vis, int64_t h, int64_t r0, int64_t r1, const T* q,
                     const T* k, const T* v, const T* o, const T* lse, const T* dout, const T* aq, const T* ak,
                     const T* av, T* gq, T* gdout, T* gkb, T* gvb, int64_t kbase, int64_t ldb) {
  const int64_t H = s.heads, D = s.head_dim, ld = H * D;
  const T scale = static_cast<T>(s.scale);
  const int ild = static_cast<int>(ld), iD = static_cast<int>(D), ildb = static_cast<int>(ldb);
  T* drow = scratch<T>(4, static_cast<size_t>(kQueryTile));
  T* E = scratch<T>(5, static_cast<size_t>(kQueryTile));
  T* F = scratch<T>(6, static_cast<size_t>(kQueryTile));
  for (int64_t i0 = r0; i0 < r1; i0 += kQueryTile) {
    const int64_t i1 = std::min(r1, i0 + kQueryTile), nq = i1 - i0;
    const int inq = static_cast<int>(nq);
    const int64_t band0 = vis.klo(i0), band1 = vis.khi(i1 - 1);
    const int64_t off = i0 * ld + h * D;
    zero_rows(gq + off, nq, D, ld);
    zero_rows(gdout + off, nq, D, ld);
    if (band1 <= band0) continue;
    const T *qt = q + off, *dot = dout + off, *aqt = aq + off;
    for (int64_t r = 0; r < nq; ++r) {
      drow[r] = vec::vdot(dot + r * ld, o + off + r * ld, D);
      E[r] = F[r] = T(0);
    }
    const int64_t bk = std::min(kKeyBlock, band1 - band0);
    const bool one_block = bk == band1 - band0;
    T* P = scratch<T>(0, static_cast<size_t>(nq * bk));
    T* dP = scratch<T>(1, static_cast<size_t>(nq * bk));
    T* B = scratch<T>(2, static_cast<size_t>(nq * bk));
    T* X = scratch<T>(3, static_cast<size_t>(nq * bk));
    // P, dP = dO V^T, B = s (Aq K^T + Q Ak^T) and X = dO Av^T for keys [kb0, kb0 + nk).
    auto block = [&](int64_t kb0, int64_t nk) {
      const int ink = static_cast<int>(nk);
      const int64_t koff = kb0 * ld + h * D;
      block_probs(s, vis, h, i0, nq, kb0, nk, qt, dot, Block<T>{k + koff, v + koff, ld}, nullptr, lse, P, dP);
      tile_gemm(Trans::No, Trans::Yes, inq, ink, iD, scale, aqt, ild, k + koff, ild, T(0), B, ink);
      tile_gemm(Trans::No, Trans::Yes, inq, ink, iD, scale, qt, ild, ak + koff, ild, T(1), B, ink);
      tile_gemm(Trans::No, Trans::Yes, inq, ink, iD, T(1), dot, ild, av + koff, ild, T(0), X, ink);
    };
    // Sweep 1: E = rowsum(P B), F = rowsum(P (X + B dP)) - 2 D E.
    for (int64_t kb0 = band0; kb0 < band1; kb0 += bk) {
      const int64_t nk = std::min(band1, kb0 + bk) - kb0;
      block(kb0, nk);
      for (int64_t r = 0; r < nq; ++r) {
        const T *p = P + r * nk, *b = B + r * nk, *dp = dP + r * nk, *x = X + r * nk;
        T e = 0, f = 0;
        for (int64_t j = 0; j < nk; ++j) {
          e += p[j] * b[j];
          f += p[j] * (x[j] + b[j] * dp[j]);
        }
        E[r] += e;
        F[r] += f;
      }
    }
    for (int64_t r = 0; r < nq; ++r) F[r] -= 2 * drow[r] * E[r];
    // Sweep 2: Z (into X), C (into B), dS (into dP), then the products.
    for (int64_t kb0 = band0; kb0 < band1; kb0 += bk) {
      const int64_t nk = std::min(band1, kb0 + bk) - kb0;
      const int ink = static_cast<int>(nk);
      if (!one_block) block(kb0, nk);
      for (int64_t r = 0; r < nq; ++r)
        backward2_row(P + r * nk, B + r * nk, dP + r * nk, X + r * nk, drow[r], E[r], F[r], nk);
      const int64_t koff = kb0 * ld + h * D;
      T* gkblk = gkb + (kb0 - kbase) * ldb;
      T* gvblk = gvb + (kb0 - kbase) * ldb;
      // gq += s (dS Ak + Z K); gk += s (dS^T Aq + Z^T Q); gdout += C V + P Av; gv += C^T dO.
      // (Every left operand here carries the factor P: zero outside the band.)
      const TileBand qk = query_key_band(s, i0, kb0), kq = key_query_band(s, i0, kb0);
      tile_gemm(Trans::No, Trans::No, inq, iD, ink, scale, dP, ink, ak + koff, ild, T(1), gq + off, ild, qk);
      tile_gemm(Trans::No, Trans::No, inq, iD, ink, scale, X, ink, k + koff, ild, T(1), gq + off, ild, qk);
      tile_gemm(Trans::Yes, Trans::No, ink, iD, inq, scale, dP, ink, aqt, ild, T(1), gkblk, ildb, kq);
      tile_gemm(Trans::Yes, Trans::No, ink, iD, inq, scale, X, ink, qt, ild, T(1), gkblk, ildb, kq);
      tile_gemm(Trans::No, Trans::No, inq, iD, ink, T(1), B, ink, v + koff, ild, T(1), gdout + off, ild, qk);
      tile_gemm(Trans::No, Trans::No, inq, iD, ink, T(1), P, ink, av + koff, ild, T(1), gdout + off, ild, qk);
      tile_gemm(Trans::Yes, Trans::No, ink, iD, inq, T(1), B, ink, dot, ild, T(1), gvblk, ildb, kq);
    }
  }
}

}  // namespace

template <class T>
void attention_backward(const AttentionShape& s, const T* q, const T* k, const T* v, const T* o,
                        const T* lse, const T* dout, T* dq, T* dk, T* dv) {
  const Vis vis = make_vis(s);
  for_each_query_range(s, vis, dk, dv, [&](int64_t h, int64_t r0, int64_t r1, T* kb, T* vb, int64_t kbase, int64_t ldb) {
    backward_range(s, vis, h, r0, r1, q, KV<T>{k, v}, o, lse, dout, dq, kb, vb, kbase, ldb);
  });
}

void attention_backward_bf16_cache(const AttentionShape& s, const float* q, const Bf16CacheKV& kv, const float* o,
                                   const float* lse, const float* dout, float* dq, float* dk, float* dv) {
  AttentionShape s1 = s;
  s1.k_grad_from = std::max(s.k_grad_from, kv.cached);
  const Vis vis = make_vis(s1);
  const KV<float> keys{kv.k, kv.v, kv.kc, kv.vc, kv.cached};
  for_each_query_range(
      s1, vis, dk, dv,
      [&](int64_t h, int64_t r0, int64_t r1, float* kb, float* vb, int64_t kbase, int64_t ldb) {
        backward_range(s1, vis, h, r0, r1, q, keys, o, lse, dout, dq, kb, vb, kbase, ldb);
      },
      std::min(kv.cached, s.tk));
}

template <class T>
void attention_backward_backward(const AttentionShape& s, const T* q, const T* k, const T* v, const T* o,
                                 const T* lse, const T* dout, const T* aq, const T* ak, const T* av, T* gq,
                                 T* gk, T* gv, T* gdout) {
  const Vis vis = make_vis(s);
  if (s.head_dim <= 0 || s.heads <= 0) return;
  for_each_query_range(s, vis, gk, gv, [&](int64_t h, int64_t r0, int64_t r1, T* kb, T* vb, int64_t kbase, int64_t ldb) {
    backward2_range(s, vis, h, r0, r1, q, k, v, o, lse, dout, aq, ak, av, gq, gdout, kb, vb, kbase, ldb);
  });
}

template <class T>
void attention_forward_reference(const AttentionShape& s, const T* q, const T* k, const T* v,
                                 T* o, T* lse) {
  const int64_t H = s.heads, D = s.head_dim, Tq = s.tq, Tk = s.tk;
  const Vis vis = make_vis(s);
  std::vector<double> P, L;
  for (int64_t h = 0; h < H; ++h) {
    reference_probs(s, vis, q, k, h, P, L);
    for (int64_t i = 0; i < Tq; ++i) {
      lse[h * Tq + i] = static_cast<T>(L[static_cast<size_t>(i)]);
      for (int64_t d = 0; d < D; ++d) {
        double acc = 0;
        for (int64_t j = 0; j < Tk; ++j)
          acc += P[static_cast<size_t>(i * Tk + j)] * static_cast<double>(v[(j * H + h) * D + d]);
        o[(i * H + h) * D + d] = static_cast<T>(acc);
      }
    }
  }
}

template <class T>
void attention_backward_reference(const AttentionShape& s, const T* q, const T* k, const T* v,
                                  const T* o, const T* lse, const T* dout, T* dq, T* dk, T* dv) {
  // Recomputes P itself (o and lse are not needed for the textbook formulas) and uses the
  // softmax backward dS = P * (dP - rowsum(P * dP)).
  const int64_t H = s.heads, D = s.head_dim, Tq = s.tq, Tk = s.tk;
  const Vis vis = make_vis(s);
  std::vector<double> P, L, dP(static_cast<size_t>(Tq * Tk));
  for (int64_t h = 0; h < H; ++h) {
    reference_probs(s, vis, q, k, h, P, L);
    for (int64_t i = 0; i < Tq; ++i) {
      double rowsum = 0;
      for (int64_t j = 0; j < Tk; ++j) {
        double acc = 0;
        for (int64_t d = 0; d < D; ++d)
          acc += static_cast<double>(dout[(i * H + h) * D + d]) *
                 static_cast<double>(v[(j * H + h) * D + d]);
        dP[static_cast<size_t>(i * Tk + j)] = acc;
        rowsum += acc * P[static_cast<size_t>(i * Tk + j)];
      }
      for (int64_t j = 0; j < Tk; ++j) {
        auto& x = dP[static_cast<size_t>(i * Tk + j)];
        x = P[static_cast<size_t>(i * Tk + j)] * (x - rowsum);  // now dS
      }
    }
    for (int64_t i = 0; i < Tq; ++i)
      for (int64_t d = 0; d < D; ++d) {
        double acc = 0;
        for (int64_t j = 0; j < Tk; ++j)
          acc += dP[static_cast<size_t>(i * Tk + j)] * static_cast<double>(k[(j * H + h) * D + d]);
        dq[(i * H + h) * D + d] = static_cast<T>(acc * s.scale);
      }
    for (int64_t j = 0; j < Tk; ++j)
      for (int64_t d = 0; d < D; ++d) {
        double ak = 0, av = 0;
        for (int64_t i = 0; i < Tq; ++i) {
          ak += dP[static_cast<size_t>(i * Tk + j)] * static_cast<double>(q[(i * H + h) * D + d]);
          av += P[static_cast<size_t>(i * Tk + j)] * static_cast<double>(dout[(i * H + h) * D + d]);
        }
        const bool wanted = j >= s.k_grad_from;
        dk[(j * H + h) * D + d] = wanted ? static_cast<T>(ak * s.scale) : T(0);
        dv[(j * H + h) * D + d] = wanted ? static_cast<T>(av) : T(0);
      }
  }
}

#define TTT_INSTANTIATE_ATTENTION(T)                                                            \
  template void attention_forward<T>(const AttentionShape&, const T*, const T*, const T*, T*,   \
                                     T*);                                                       \
  template void attention_backward<T>(const AttentionShape&, const T*, const T*, const T*,      \
                                      const T*, const T*, const T*, T*, T*, T*);                \
  template void attention_backward_backward<T>(const AttentionShape&, const T*, const T*,       \
                                               const T*, const T*, const T*, const T*,         \
                                               const T*, const T*, const T*, T*, T*, T*, T*);  \
  template void attention_forward_reference<T>(const AttentionShape&, const T*, const T*,       \
                                               const T*, T*, T*);                               \
  template void attention_backward_reference<T>(const AttentionShape&, const T*, const T*,      \
                                                const T*, const T*, const T*, const T*, T*, T*, \
                                                T*);

TTT_INSTANTIATE_ATTENTION(float)
TTT_INSTANTIATE_ATTENTION(double)

}  // namespace ttt::kernels
