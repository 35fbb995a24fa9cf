// The shape and visibility rule of one attention call, shared by every backend's kernels.
//
// q is [Tq, H, D], k and v are [Tk, H, D], o is [Tq, H, D], all row-major and contiguous; lse is
// [H, Tq] (log-sum-exp of the scaled scores of each query row, natural log). Query i sits at
// absolute position q_pos0 + i, key j at k_pos0 + j. Query p sees key s iff s <= p and
// (window == 0 or s > p - window). A query row that sees no key gets o = 0 and lse = -inf.
#pragma once
#include <algorithm>
#include <cstdint>

namespace ttt {

struct AttentionShape {
  int64_t tq = 0, tk = 0, heads = 0, head_dim = 0;
  int64_t q_pos0 = 0, k_pos0 = 0;
  int64_t window = 0;  // 0: plain causal
  double scale = 0;    // usually 1/sqrt(head_dim)
  // attention_backward only: dk and dv rows before this key are left zero, not computed (keys
  // whose gradient nobody needs: a TTT inner step's cache of earlier chunks, a constant there).
  int64_t k_grad_from = 0;
  // attention_forward only: the caller allows bf16 products (`--compute bf16`, and nothing will
  // differentiate the result): a backend may round q, k, v and the probabilities to bf16 and
  // accumulate in float32 (the CPU's AMX kernel does where the CPU has AMX); others ignore it.
  bool bf16_products = false;
};

// The rule above, once: the keys query row i sees are [attention_key_lo, attention_key_hi),
// empty if hi <= lo.
inline int64_t attention_key_hi(int64_t tk, int64_t q_pos0, int64_t k_pos0, int64_t i) {
  return std::clamp<int64_t>(q_pos0 + i - k_pos0 + 1, 0, tk);
}
inline int64_t attention_key_lo(int64_t tk, int64_t q_pos0, int64_t k_pos0, int64_t window, int64_t i) {
  return window > 0 ? std::clamp<int64_t>(q_pos0 + i - window + 1 - k_pos0, 0, tk) : 0;
}
inline int64_t attention_key_hi(const AttentionShape& s, int64_t i) {
  return attention_key_hi(s.tk, s.q_pos0, s.k_pos0, i);
}
inline int64_t attention_key_lo(const AttentionShape& s, int64_t i) {
  return attention_key_lo(s.tk, s.q_pos0, s.k_pos0, s.window, i);
}

// Visible (query, key) pairs over all heads under the rule above: the work of one attention call
// (FLOP counts of the model families and the benchmarks).
inline int64_t attention_visible_pairs(int64_t tq, int64_t tk, int64_t heads, int64_t q_pos0, int64_t k_pos0,
                                       int64_t window) {
  int64_t per_head = 0;
  for (int64_t i = 0; i < tq; ++i)
    per_head += std::max<int64_t>(0, attention_key_hi(tk, q_pos0, k_pos0, i) -
                                         attention_key_lo(tk, q_pos0, k_pos0, window, i));
  return per_head * heads;
}

}  // namespace ttt
