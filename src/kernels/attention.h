// Fused causal (optionally sliding-window) attention kernels for the CPU backend.
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

namespace ttt::kernels {

struct AttentionShape {
  int64_t tq = 0, tk = 0, heads = 0, head_dim = 0;
  int64_t q_pos0 = 0, k_pos0 = 0;
  int64_t window = 0;  // 0: plain causal
  double scale = 0;    // usually 1/sqrt(head_dim)
};

template <class T>
void attention_forward(const AttentionShape& s, const T* q, const T* k, const T* v, T* o, T* lse);

// Given dout = dL/do, writes dq, dk, dv (overwritten, not accumulated). Recomputes the
// probabilities from q, k and lse; `o` is needed for the softmax-backward row term.
template <class T>
void attention_backward(const AttentionShape& s, const T* q, const T* k, const T* v, const T* o,
                        const T* lse, const T* dout, T* dq, T* dk, T* dv);

// Straightforward O(Tq*Tk)-memory reference used by tests (same contract as above).
template <class T>
void attention_forward_reference(const AttentionShape& s, const T* q, const T* k, const T* v,
                                 T* o, T* lse);
template <class T>
void attention_backward_reference(const AttentionShape& s, const T* q, const T* k, const T* v,
                                  const T* o, const T* lse, const T* dout, T* dq, T* dk, T* dv);

}  // namespace ttt::kernels
