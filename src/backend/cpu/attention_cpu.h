// Fused causal (optionally sliding-window) attention kernels of the CPU backend.
//
// Layout: q is [Tq, H, D], k and v are [Tk, H, D], o is [Tq, H, D], all row-major and
// contiguous; lse is [H, Tq] (log-sum-exp of the scaled scores of each query row, natural log).
// Query i sits at absolute position q_pos0 + i, key j at k_pos0 + j. Query p sees key s iff
// s <= p and (window == 0 or s > p - window). This covers plain causal self-attention
// (k_pos0 == q_pos0, Tk == Tq) and TTT chunks whose keys are [cache of earlier tokens; chunk].
// A query row that sees no key at all gets o = 0 and lse = -inf (its gradient is zero).
//
// No Tq x Tk matrix is ever materialized: queries are processed in tiles, keys in blocks with
// an online softmax, and each tile's products run through BLAS on a per-thread scratch buffer.
#pragma once
#include <cstdint>

#include "backend/attention_shape.h"

namespace ttt::kernels {

using ttt::AttentionShape;

template <class T>
void attention_forward(const AttentionShape& s, const T* q, const T* k, const T* v, T* o, T* lse);


// Given dout = dL/do, writes dq, dk, dv (overwritten, not accumulated). Recomputes the
// probabilities from q, k and lse; `o` is needed for the softmax-backward row term.
template <class T>
void attention_backward(const AttentionShape& s, const T* q, const T* k, const T* v, const T* o,
                        const T* lse, const T* dout, T* dq, T* dk, T* dv);

// The backward of attention_backward, for second derivatives (the meta-gradient differentiates
// the inner step's attention backward). With aq, ak, av the adjoints of dq, dk, dv (shapes of q,
// k, v), writes the gradients of <aq, dq> + <ak, dk> + <av, dv> with respect to q, k, v and dout
// into gq, gk, gv, gdout (overwritten). Same tiles as the backward: per query tile, one pass
// gathers two row sums, a second one forms the products; the probabilities are recomputed from
// lse per key block (kept when the tile's band fits one block), never for the whole sequence.
// Per head, with P the probabilities, dP = dO V^T, D = rowsum(dO * O) and scale s:
//   B = s (Aq K^T + Q Ak^T), X = dO Av^T, E = rowsum(P * B), F = rowsum(P * (X + B * dP)) - 2 D E
//   dS = P (dP - D), C = P (B - E), Z = P (X + B (dP - D) - E dP - F)
//   gq = s (dS Ak + Z K), gk = s (dS^T Aq + Z^T Q), gv = C^T dO, gdout = C V + P Av.
template <class T>
void attention_backward_backward(const AttentionShape& s, const T* q, const T* k, const T* v, const T* o,
                                 const T* lse, const T* dout, const T* aq, const T* ak, const T* av, T* gq,
                                 T* gk, T* gv, T* gdout);

// A window cache kept in bfloat16 (--kv-dtype bf16): the keys of one call are [cache; chunk],
// rows [0, cached) bf16 bits in kc, vc (a constant: no gradient flows to it) and rows
// [cached, tk) the chunk's own in float32, in k, v (each [rows, H, D], contiguous). The kernels
// read the cache as it is (half the bytes of float32: decoding streams it once per token) and
// accumulate in float32; the math and visibility rule are those of attention_forward.
struct Bf16CacheKV {
  const uint16_t* kc = nullptr;
  const uint16_t* vc = nullptr;
  int64_t cached = 0;
  const float* k = nullptr;
  const float* v = nullptr;
};
void attention_forward_bf16_cache(const AttentionShape& s, const float* q, const Bf16CacheKV& kv, float* o,
                                  float* lse);

// The forward with bf16 products on AMX tiles (attention_amx.cpp; s.bf16_products): q, k, v
// and the probabilities rounded to bf16, float32 accumulation and softmax. Returns false, having
// done nothing, where it does not apply (no AMX, head_dim other than 32 or 64, fewer than 16
// queries: decoding stays on the bandwidth-bound float32 path). With a bf16 window cache
// (kv.cached rows) the cache's rows are taken as they are.
bool attention_forward_amx(const AttentionShape& s, const float* q, const float* k, const float* v, float* o,
                           float* lse);
bool attention_forward_amx(const AttentionShape& s, const float* q, const Bf16CacheKV& kv, float* o, float* lse);
// First order only: dq [Tq, H, D], and dk, dv for the chunk's rows only ([tk - cached, H, D]);
// s.k_grad_from must be at least kv.cached (the cache gets no gradient).
void attention_backward_bf16_cache(const AttentionShape& s, const float* q, const Bf16CacheKV& kv, const float* o,
                                   const float* lse, const float* dout, float* dq, float* dk, float* dv);

// Tests: false keeps every tile packing its own band of keys (the path before PackedKV in
// attention_cpu.cpp), to compare the two on the same data (they must agree bit for bit).
void set_attention_key_packing(bool on);

// Straightforward O(Tq*Tk)-memory reference used by tests (same contract as above).
template <class T>
void attention_forward_reference(const AttentionShape& s, const T* q, const T* k, const T* v,
                                 T* o, T* lse);
template <class T>
void attention_backward_reference(const AttentionShape& s, const T* q, const T* k, const T* v,
                                  const T* o, const T* lse, const T* dout, T* dq, T* dk, T* dv);

}  // namespace ttt::kernels
