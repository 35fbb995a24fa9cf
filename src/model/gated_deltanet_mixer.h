// Gated DeltaNet as a sequence mixer (SPEC section 9; fla layers/gated_deltanet.py and
// ops/gated_delta_rule): q, k, v projections through causal short convolutions (conv_size, no
// bias) and SiLU; q and k L2-normalized per head (q also scaled by 1/sqrt(d_k)); a decay
// g = -exp(A_log) softplus(x W_a + dt_bias) and a write strength beta = sigmoid(x W_b) per token
// and head; per head the gated delta rule
//   S_t = exp(g_t) S_{t-1};  S_t += k_t (beta_t (v_t - S_t^T k_t))^T;  o_t = S_t^T q_t,
// then an RMSNorm over each head's output gated by silu(x W_g), and o_proj.
// The scan is the chunked WY form: within a chunk the UT transform T = (I + L)^-1 of the
// strictly lower beta k k^T decay matrix (computed as the finite Neumann product, exact since L
// is nilpotent), u = T (beta v), w = T (beta k exp(G)); across chunks the state. A chunk of one
// token is exactly the recurrence (the decode step). State: {conv [conv_size-1, 2 H d_k + H d_v],
// S [H, d_k, d_v]}, the same size at every position.
#pragma once
#include "model/config.h"
#include "model/sequence_memory.h"

namespace ttt::model {

struct GatedDeltaNetParams {
  Tensor q_proj, k_proj, v_proj, a_proj, b_proj, g_proj, conv_weight, A_log, dt_bias, o_norm, o_proj;
};

class GatedDeltaNetMixer final : public SequenceMixer {
 public:
  GatedDeltaNetMixer(const ModelConfig& cfg, GatedDeltaNetParams p);

  Tensor forward(const Tensor& x, int64_t pos0, const MixerState& in, MixerState* out) const override;
  std::vector<std::string> state_names() const override { return {"conv", "S"}; }
  std::vector<Shape> state_shapes(int64_t pos) const override;
  std::string describe() const override { return "Gated DeltaNet"; }

 private:
  Tensor delta_chunks(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& beta, const Tensor& g,
                      int64_t nc, int64_t n, Tensor* S) const;

  GatedDeltaNetParams p_;
  int64_t heads_, dk_, dv_, conv_size_, chunk_;
  double eps_;
};

}  // namespace ttt::model
