// Attention as a sequence mixer (SPEC section 2): q, k, v projections, per-head RMS norm of q
// and k, RoPE, causal attention over [state; chunk] within the window (0: full attention), and
// the output projection. Its state is the keys and values (after norm and RoPE) of the last W
// tokens, or of every token for full attention: {k [n, H, D], v [n, H, D]}, in the model's dtype
// or, with a bf16 cache (KvDtype::BF16, float32 models), in bfloat16: the chunk's own keys and
// values then stay float32 inside the call (gradients flow to them) and are rounded when kept.
#pragma once
#include "model/config.h"
#include "model/sequence_memory.h"

namespace ttt::model {

struct AttentionParams {
  Tensor wq, wk, wv, wo, q_norm, k_norm;
};

class AttentionMixer final : public SequenceMixer {
 public:
  AttentionMixer(const ModelConfig& cfg, AttentionParams p, int64_t window);

  Tensor forward(const Tensor& x, int64_t pos0, const MixerState& in, MixerState* out) const override;
  std::vector<std::string> state_names() const override { return {"k", "v"}; }
  std::vector<Shape> state_shapes(int64_t pos) const override;
  std::string describe() const override;
  MixerState start_state(KvDtype kv) const override;

 private:
  Tensor forward_bf16(const Tensor& q, const Tensor& k, const Tensor& v, int64_t pos0, const MixerState& in,
                      MixerState* out) const;
  MixerState window_state(const Tensor& keys, const Tensor& vals) const;

  AttentionParams p_;
  int64_t heads_, head_dim_, window_;
  double eps_, rope_theta_;
};

}  // namespace ttt::model
