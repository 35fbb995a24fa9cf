// TTT-KVB as a sequence mixer: LaCT's large-chunk test-time training layer ("Test-Time Training
// Done Right"; lact_llm layer_lact_swiglu.py and ttt_operation.py), the paper's layer-wise TTT
// baseline with a key-value binding loss, kept beside sliding-window attention in the same
// layer:
//   q, k, v = x W_qkv; q, k RMSNorm-ed over the hidden size.
//   Window attention (RoPE, window sliding_window_size) on q, k, v.
//   Fast path per head: q', k' = silu(q * s_q + o_q), silu(k * s_k + o_k), v' = silu(v), q' and
//   k' L2-normalized per head and rotated like the attention heads; per-token rates
//   lr = softplus(x W_lr + b_lr + softplus^-1(0.001)), three per head. The SwiGLU fast weights
//   f(x) = W1 (silu(W0 x) * (W2 x)) score every token with the weights left by the previous
//   chunks (apply, then update: block causal); when lact_chunk_size tokens are complete, one
//   step of gradient ascent on sum_t lr_t <v'_t, f(k'_t)> updates W0, W1, W2, each row then
//   rescaled to the norm of the initial weight's row.
//   out = o_proj(attention + RMSNorm_per_head(fast output)).
// State: {k, v: the window's keys and values [n, H, D]; W0, W1, W2: the current fast weights;
// pk, pv, plr: the keys, values and rates of the incomplete chunk [p, ...]}: bounded by the
// window and the chunk, whatever the context length.
#pragma once
#include "model/config.h"
#include "model/sequence_memory.h"

namespace ttt::model {

struct TttKvbParams {
  Tensor qkv, q_norm, k_norm, o_proj, w0, w1, w2, lr_proj, lr_bias, qk_scale, qk_offset, ttt_norm;
};

// The fast-weight core (LaCT's block_causal_lact_swiglu with a carried state), exposed for the
// reference test. q, k [T, nh, din], v [T, nh, dout], lr [T, 3 nh] (per head: lr0, lr1, lr2);
// w0, w2 [nh, dh, din], w1 [nh, dout, dh] the current weights and w*_init the initial ones (row
// norms); pk, pv, plr the pending rows of the incomplete chunk (may have 0 rows). Returns the
// output [T, nh, dout] and updates the weights and pending rows in place.
struct FastWeights {
  Tensor w0, w1, w2, pk, pv, plr;
};
Tensor lact_swiglu_block_causal(FastWeights& fw, const Tensor& w0_init, const Tensor& w1_init, const Tensor& w2_init,
                                const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& lr, int64_t chunk);

class TttKvbMixer final : public SequenceMixer {
 public:
  TttKvbMixer(const ModelConfig& cfg, TttKvbParams p);

  Tensor forward(const Tensor& x, int64_t pos0, const MixerState& in, MixerState* out) const override;
  std::vector<std::string> state_names() const override { return {"k", "v", "w0", "w1", "w2", "pk", "pv", "plr"}; }
  std::vector<Shape> state_shapes(int64_t pos) const override;
  std::string describe() const override { return "TTT-KVB with window " + std::to_string(window_); }
  std::vector<Tensor> initial_state_tensors(DType dt) const override;

 private:
  TttKvbParams p_;
  int64_t heads_, head_dim_, window_, nh_, din_, dh_, chunk_;
  double eps_, rope_theta_;
};

}  // namespace ttt::model
