// Fused causal / sliding-window attention on the GPU: forward, backward and the backward of the
// backward, with the CPU kernels' contract and math (backend/cpu/attention_cpu.h, .cpp).
//
// No score matrix is ever materialized. A warp owns one (query row, head) (or, for the
// key-indexed gradients, one (key row, head)); its 32 lanes hold the row's head_dim entries in
// registers (lane l: entries l, l + 32, ...), so dot products are a register product and a warp
// reduction. Keys are visited only inside the row's visible band (attention_shape.h rule):
//
//   forward      blocks of 32 keys with an online softmax (FlashAttention-2): the block's scores,
//                m' = max(m, max S), P = exp(S - m'), l = l e^(m - m') + sum P,
//                acc = acc e^(m - m') + P V; o = acc / l, lse = m + log l.
//   backward     probabilities recomputed from lse per key, P = exp(s q.k - lse); with
//                D = rowsum(dO * O): dS = P (dO.v - D); dq = s sum dS k (one warp per query),
//                dk = s sum dS q, dv = sum P dO (one warp per key, over the queries that see it,
//                keys before k_grad_from left zero). No atomics: results are deterministic.
//   backward of  the same two sides; per query row a first sweep gathers E = rowsum(P B) and
//   backward     F = rowsum(P (X + B dP)) - 2 D E, stored for the key side; then
//                dS = P (dP - D), C = P (B - E), Z = P (X + B (dP - D) - E dP - F) and
//                gq = s (dS Ak + Z K), gdout = C V + P Av (query side),
//                gk = s (dS^T Aq + Z^T Q), gv = C^T dO (key side).
// A row that sees no key gets o = 0, lse = -inf and zero gradients.
#include <stdexcept>
#include <string>

#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/cuda_kernels.h"

namespace ttt::cuda {
namespace {

constexpr int kWarpsPerBlock = 4;
constexpr int kChunks = static_cast<int>(kMaxHeadDim / 32);  // register entries per lane

struct Vis {
  int64_t tq, tk, q_pos0, k_pos0, window;
  __device__ int64_t clampi(int64_t x, int64_t hi) const { return x < 0 ? 0 : (x > hi ? hi : x); }
  // Keys [klo(i), khi(i)) are visible to query i.
  __device__ int64_t khi(int64_t i) const { return clampi(q_pos0 + i - k_pos0 + 1, tk); }
  __device__ int64_t klo(int64_t i) const { return window <= 0 ? 0 : clampi(q_pos0 + i - window + 1 - k_pos0, tk); }
  // Queries [qlo(j), qhi(j)) see key j.
  __device__ int64_t qlo(int64_t j) const { return clampi(j + k_pos0 - q_pos0, tq); }
  __device__ int64_t qhi(int64_t j) const { return window <= 0 ? tq : clampi(j + k_pos0 + window - q_pos0, tq); }
};
Vis make_vis(const AttentionShape& s) { return {s.tq, s.tk, s.q_pos0, s.k_pos0, s.window}; }

template <class T>
struct Row {
  T x[kChunks];
};

template <class T>
__device__ __forceinline__ void load(Row<T>& r, const T* p, int64_t D, int lane) {
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
    const int64_t d = lane + 32 * c;
    r.x[c] = d < D ? p[d] : T(0);
  }
}
template <class T>
__device__ __forceinline__ void zero(Row<T>& r) {
#pragma unroll
  for (int c = 0; c < kChunks; ++c) r.x[c] = T(0);
}
template <class T>
__device__ __forceinline__ void store(const Row<T>& r, T* p, int64_t D, int lane, T scale) {
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
    const int64_t d = lane + 32 * c;
    if (d < D) p[d] = r.x[c] * scale;
  }
}
// The lane's part of <r, p>; warp_sum gives the dot product.
template <class T>
__device__ __forceinline__ T part_dot(const Row<T>& r, const T* p, int64_t D, int lane) {
  T acc = 0;
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
    const int64_t d = lane + 32 * c;
    if (d < D) acc += r.x[c] * p[d];
  }
  return acc;
}
// r += a * p
template <class T>
__device__ __forceinline__ void axpy(Row<T>& r, T a, const T* p, int64_t D, int lane) {
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
    const int64_t d = lane + 32 * c;
    if (d < D) r.x[c] += a * p[d];
  }
}
template <class T>
__device__ __forceinline__ void axpy_row(Row<T>& r, T a, const Row<T>& p) {
#pragma unroll
  for (int c = 0; c < kChunks; ++c) r.x[c] += a * p.x[c];
}

__device__ __forceinline__ int64_t warp_row() { return blockIdx.x * int64_t(kWarpsPerBlock) + (threadIdx.x >> 5); }

template <class T>
__global__ void forward_k(AttentionShape s, Vis vis, const T* q, const T* k, const T* v, T* o, T* lse) {
  const int64_t i = warp_row(), h = blockIdx.y;
  if (i >= s.tq) return;
  const int lane = threadIdx.x & 31;
  const int64_t D = s.head_dim, ld = s.heads * D;
  const T scale = static_cast<T>(s.scale);
  Row<T> qr, acc;
  load(qr, q + i * ld + h * D, D, lane);
  zero(acc);
  const int64_t lo = vis.klo(i), hi = vis.khi(i);
  T m = ninf<T>(), l = T(0);
  for (int64_t kb0 = lo; kb0 < hi; kb0 += 32) {
    const int nk = static_cast<int>(hi - kb0 < 32 ? hi - kb0 : 32);
    T mine = ninf<T>();
    for (int j = 0; j < nk; ++j) {
      const T sj = scale * warp_sum(part_dot(qr, k + (kb0 + j) * ld + h * D, D, lane));
      if (lane == j) mine = sj;
    }
    const T bmax = warp_max(mine);
    const T mnew = m > bmax ? m : bmax;
    const T p = lane < nk ? exp(mine - mnew) : T(0);
    const T psum = warp_sum(p);
    const T alpha = m == ninf<T>() ? T(0) : exp(m - mnew);
    l = l * alpha + psum;
#pragma unroll
    for (int c = 0; c < kChunks; ++c) acc.x[c] *= alpha;
    m = mnew;
    for (int j = 0; j < nk; ++j) axpy(acc, __shfl_sync(0xffffffffu, p, j), v + (kb0 + j) * ld + h * D, D, lane);
  }
  T* orow = o + i * ld + h * D;
  if (l > T(0)) {
    store(acc, orow, D, lane, T(1) / l);
    if (lane == 0) lse[h * s.tq + i] = m + log(l);
  } else {
    zero(acc);
    store(acc, orow, D, lane, T(1));
    if (lane == 0) lse[h * s.tq + i] = ninf<T>();
  }
}

// drow[h, i] = <dout_i, o_i> for every head.
template <class T>
__global__ void row_dot_k(AttentionShape s, const T* dout, const T* o, T* drow) {
  const int64_t i = warp_row(), h = blockIdx.y;
  if (i >= s.tq) return;
  const int lane = threadIdx.x & 31;
  const int64_t D = s.head_dim, off = i * s.heads * D + h * D;
  T acc = 0;
  for (int64_t d = lane; d < D; d += 32) acc += dout[off + d] * o[off + d];
  acc = warp_sum(acc);
  if (lane == 0) drow[h * s.tq + i] = acc;
}

template <class T>
__global__ void backward_q_k(AttentionShape s, Vis vis, const T* q, const T* k, const T* v, const T* lse,
                             const T* dout, const T* drow, T* dq) {
  const int64_t i = warp_row(), h = blockIdx.y;
  if (i >= s.tq) return;
  const int lane = threadIdx.x & 31;
  const int64_t D = s.head_dim, ld = s.heads * D, off = i * ld + h * D;
  const T scale = static_cast<T>(s.scale);
  Row<T> qr, dor, acc;
  load(qr, q + off, D, lane);
  load(dor, dout + off, D, lane);
  zero(acc);
  const T L = lse[h * s.tq + i], Di = drow[h * s.tq + i];
  if (L > ninf<T>()) {
    for (int64_t j = vis.klo(i), hi = vis.khi(i); j < hi; ++j) {
      const T* kj = k + j * ld + h * D;
      const T sc = scale * warp_sum(part_dot(qr, kj, D, lane));
      const T dp = warp_sum(part_dot(dor, v + j * ld + h * D, D, lane));
      const T p = exp(sc - L);
      axpy(acc, p * (dp - Di), kj, D, lane);
    }
  }
  store(acc, dq + off, D, lane, scale);
}

template <class T>
__global__ void backward_kv_k(AttentionShape s, Vis vis, const T* q, const T* k, const T* v, const T* lse,
                              const T* dout, const T* drow, T* dk, T* dv) {
  const int64_t j = warp_row(), h = blockIdx.y;
  if (j >= s.tk) return;
  const int lane = threadIdx.x & 31;
  const int64_t D = s.head_dim, ld = s.heads * D, off = j * ld + h * D;
  const T scale = static_cast<T>(s.scale);
  Row<T> kr, vr, gk, gv;
  zero(gk);
  zero(gv);
  if (j >= s.k_grad_from) {
    load(kr, k + off, D, lane);
    load(vr, v + off, D, lane);
    for (int64_t i = vis.qlo(j), hi = vis.qhi(j); i < hi; ++i) {
      const T L = lse[h * s.tq + i];
      if (!(L > ninf<T>())) continue;
      const T* qi = q + i * ld + h * D;
      const T* doi = dout + i * ld + h * D;
      const T sc = scale * warp_sum(part_dot(kr, qi, D, lane));
      const T dp = warp_sum(part_dot(vr, doi, D, lane));
      const T p = exp(sc - L);
      axpy(gv, p, doi, D, lane);
      axpy(gk, p * (dp - drow[h * s.tq + i]), qi, D, lane);
    }
  }
  store(gk, dk + off, D, lane, scale);
  store(gv, dv + off, D, lane, T(1));
}

// The five per-pair quantities of the backward of the backward for query i and key j.
template <class T>
struct Pair {
  T p, dp, b, x;
};

template <class T>
__global__ void backward2_q_k(AttentionShape s, Vis vis, const T* q, const T* k, const T* v, const T* lse,
                              const T* dout, const T* aq, const T* ak, const T* av, const T* drow, T* E, T* F, T* gq,
                              T* gdout) {
  const int64_t i = warp_row(), h = blockIdx.y;
  if (i >= s.tq) return;
  const int lane = threadIdx.x & 31;
  const int64_t D = s.head_dim, ld = s.heads * D, off = i * ld + h * D;
  const T scale = static_cast<T>(s.scale);
  Row<T> qr, dor, aqr, accq, accd;
  load(qr, q + off, D, lane);
  load(dor, dout + off, D, lane);
  load(aqr, aq + off, D, lane);
  zero(accq);
  zero(accd);
  const T L = lse[h * s.tq + i], Di = drow[h * s.tq + i];
  const int64_t lo = vis.klo(i), hi = L > ninf<T>() ? vis.khi(i) : lo;
  auto pair = [&](int64_t j) {
    const int64_t ko = j * ld + h * D;
    Pair<T> r;
    const T sc = scale * warp_sum(part_dot(qr, k + ko, D, lane));
    r.p = exp(sc - L);
    r.dp = warp_sum(part_dot(dor, v + ko, D, lane));
    r.b = scale * warp_sum(part_dot(aqr, k + ko, D, lane) + part_dot(qr, ak + ko, D, lane));
    r.x = warp_sum(part_dot(dor, av + ko, D, lane));
    return r;
  };
  T e = 0, f = 0;
  for (int64_t j = lo; j < hi; ++j) {
    const Pair<T> r = pair(j);
    e += r.p * r.b;
    f += r.p * (r.x + r.b * r.dp);
  }
  f -= 2 * Di * e;
  if (lane == 0) {
    E[h * s.tq + i] = e;
    F[h * s.tq + i] = f;
  }
  for (int64_t j = lo; j < hi; ++j) {
    const Pair<T> r = pair(j);
    const int64_t ko = j * ld + h * D;
    const T ds = r.p * (r.dp - Di);
    const T c = r.p * (r.b - e);
    const T z = r.p * (r.x + r.b * (r.dp - Di) - e * r.dp - f);
    axpy(accq, ds, ak + ko, D, lane);
    axpy(accq, z, k + ko, D, lane);
    axpy(accd, c, v + ko, D, lane);
    axpy(accd, r.p, av + ko, D, lane);
  }
  store(accq, gq + off, D, lane, scale);
  store(accd, gdout + off, D, lane, T(1));
}

template <class T>
__global__ void backward2_kv_k(AttentionShape s, Vis vis, const T* q, const T* k, const T* v, const T* lse,
                               const T* dout, const T* aq, const T* ak, const T* av, const T* drow, const T* E,
                               const T* F, T* gk, T* gv) {
  const int64_t j = warp_row(), h = blockIdx.y;
  if (j >= s.tk) return;
  const int lane = threadIdx.x & 31;
  const int64_t D = s.head_dim, ld = s.heads * D, off = j * ld + h * D;
  const T scale = static_cast<T>(s.scale);
  Row<T> kr, vr, akr, avr, acck, accv;
  load(kr, k + off, D, lane);
  load(vr, v + off, D, lane);
  load(akr, ak + off, D, lane);
  load(avr, av + off, D, lane);
  zero(acck);
  zero(accv);
  for (int64_t i = vis.qlo(j), hi = vis.qhi(j); i < hi; ++i) {
    const T L = lse[h * s.tq + i];
    if (!(L > ninf<T>())) continue;
    const int64_t qo = i * ld + h * D;
    const T sc = scale * warp_sum(part_dot(kr, q + qo, D, lane));
    const T p = exp(sc - L);
    const T dp = warp_sum(part_dot(vr, dout + qo, D, lane));
    const T b = scale * warp_sum(part_dot(kr, aq + qo, D, lane) + part_dot(akr, q + qo, D, lane));
    const T x = warp_sum(part_dot(avr, dout + qo, D, lane));
    const T Di = drow[h * s.tq + i], e = E[h * s.tq + i], f = F[h * s.tq + i];
    const T ds = p * (dp - Di);
    const T c = p * (b - e);
    const T z = p * (x + b * (dp - Di) - e * dp - f);
    axpy(acck, ds, aq + qo, D, lane);
    axpy(acck, z, q + qo, D, lane);
    axpy(accv, c, dout + qo, D, lane);
  }
  store(acck, gk + off, D, lane, scale);
  store(accv, gv + off, D, lane, T(1));
}

void check_shape(const AttentionShape& s) {
  if (s.head_dim > kMaxHeadDim)
    throw std::invalid_argument("cuda backend: attention head_dim " + std::to_string(s.head_dim) +
                                " is above the kernels' limit of " + std::to_string(kMaxHeadDim));
  if (s.heads > 65535) throw std::invalid_argument("cuda backend: more than 65535 attention heads");
}

dim3 grid_rows(int64_t rows, int64_t heads) {
  return dim3(static_cast<unsigned>((rows + kWarpsPerBlock - 1) / kWarpsPerBlock), static_cast<unsigned>(heads));
}

}  // namespace

template <class T>
void attention_forward(const AttentionShape& s, const T* q, const T* k, const T* v, T* o, T* lse, cudaStream_t st) {
  check_shape(s);
  if (s.tq <= 0 || s.heads <= 0) return;
  forward_k<<<grid_rows(s.tq, s.heads), 32 * kWarpsPerBlock, 0, st>>>(s, make_vis(s), q, k, v, o, lse);
  check_launch("attention_forward");
}

template <class T>
void attention_backward(const AttentionShape& s, const T* q, const T* k, const T* v, const T* o, const T* lse,
                        const T* dout, T* dq, T* dk, T* dv, T* scratch, cudaStream_t st) {
  check_shape(s);
  if (s.heads <= 0) return;
  const Vis vis = make_vis(s);
  const int threads = 32 * kWarpsPerBlock;
  if (s.tq > 0) {
    row_dot_k<<<grid_rows(s.tq, s.heads), threads, 0, st>>>(s, dout, o, scratch);
    backward_q_k<<<grid_rows(s.tq, s.heads), threads, 0, st>>>(s, vis, q, k, v, lse, dout, scratch, dq);
  }
  if (s.tk > 0) backward_kv_k<<<grid_rows(s.tk, s.heads), threads, 0, st>>>(s, vis, q, k, v, lse, dout, scratch, dk, dv);
  check_launch("attention_backward");
}

template <class T>
void attention_backward_backward(const AttentionShape& s, const T* q, const T* k, const T* v, const T* o, const T* lse,
                                 const T* dout, const T* aq, const T* ak, const T* av, T* gq, T* gk, T* gv, T* gdout,
                                 T* scratch, cudaStream_t st) {
  check_shape(s);
  if (s.heads <= 0) return;
  const Vis vis = make_vis(s);
  const int threads = 32 * kWarpsPerBlock;
  const int64_t n = s.heads * s.tq;
  T* drow = scratch;
  T* E = scratch + n;
  T* F = scratch + 2 * n;
  if (s.tq > 0) {
    row_dot_k<<<grid_rows(s.tq, s.heads), threads, 0, st>>>(s, dout, o, drow);
    backward2_q_k<<<grid_rows(s.tq, s.heads), threads, 0, st>>>(s, vis, q, k, v, lse, dout, aq, ak, av, drow, E, F,
                                                                 gq, gdout);
  }
  if (s.tk > 0)
    backward2_kv_k<<<grid_rows(s.tk, s.heads), threads, 0, st>>>(s, vis, q, k, v, lse, dout, aq, ak, av, drow, E, F,
                                                                  gk, gv);
  check_launch("attention_backward_backward");
}

#define TTT_CUDA_INSTANTIATE_ATTENTION(T)                                                                           \
  template void attention_forward<T>(const AttentionShape&, const T*, const T*, const T*, T*, T*, cudaStream_t);    \
  template void attention_backward<T>(const AttentionShape&, const T*, const T*, const T*, const T*, const T*,      \
                                      const T*, T*, T*, T*, T*, cudaStream_t);                                      \
  template void attention_backward_backward<T>(const AttentionShape&, const T*, const T*, const T*, const T*,       \
                                               const T*, const T*, const T*, const T*, const T*, T*, T*, T*, T*,    \
                                               T*, cudaStream_t);

TTT_CUDA_INSTANTIATE_ATTENTION(float)
TTT_CUDA_INSTANTIATE_ATTENTION(double)

}  // namespace ttt::cuda
