// Attention families: full causal attention ("self_attention") and sliding-window attention
// ("SWA", optionally a hybrid with full attention every k-th block). Their attention blocks are
// also the blocks every other family falls back to (SWA blocks of the recurrent hybrids).
#include "backend/attention_shape.h"
#include "model/attention_mixer.h"
#include "model/config.h"
#include "model/families/family.h"

namespace ttt::model {

void attention_parameter_shapes(const ModelConfig& c, const std::string& p, ParamShapes& out) {
  const int64_t d = c.hidden_size, hd = c.head_dim();
  out.push_back({p + "attn.wq", {d, d}});
  out.push_back({p + "attn.wk", {d, d}});
  out.push_back({p + "attn.wv", {d, d}});
  out.push_back({p + "attn.wo", {d, d}});
  out.push_back({p + "attn.q_norm.weight", {hd}});
  out.push_back({p + "attn.k_norm.weight", {hd}});
}

std::shared_ptr<SequenceMixer> make_attention_mixer(const ModelConfig& c, const std::string& p,
                                                    const std::map<std::string, Tensor>& by, int64_t window) {
  return std::make_shared<AttentionMixer>(c,
                                          AttentionParams{by.at(p + "attn.wq"), by.at(p + "attn.wk"), by.at(p + "attn.wv"),
                                                          by.at(p + "attn.wo"), by.at(p + "attn.q_norm.weight"),
                                                          by.at(p + "attn.k_norm.weight")},
                                          window);
}

// Projections, then QK^T and PV over the visible pairs.
double attention_forward_flops(const ModelConfig& c, int64_t t, int64_t window) {
  const double d = static_cast<double>(c.hidden_size), T = static_cast<double>(t);
  return 2.0 * T * 4 * d * d + 4.0 * c.head_dim() * attention_visible_pairs(t, t, c.num_attention_heads, 0, 0, window);
}

namespace {

class SelfAttention final : public MixerFamily {
 public:
  const char* name() const override { return "self_attention"; }
  bool attention_only() const override { return true; }
  int64_t window_of(const ModelConfig&, int64_t) const override { return 0; }
  std::string describe(const ModelConfig&) const override { return "full causal attention"; }
};

class SlidingWindow final : public MixerFamily {
 public:
  const char* name() const override { return "SWA"; }
  bool attention_only() const override { return true; }
  bool windowed_attention() const override { return true; }
  void validate(const ModelConfig& c) const override {
    if (c.sliding_window_size < 1)
      config_error("sliding_window_size must be >= 1 with seq_modeling_block \"SWA\" (got " +
                   std::to_string(c.sliding_window_size) + ")");
  }
  int64_t window_of(const ModelConfig& c, int64_t l) const override {
    if (c.full_attention_every > 0 && (l + 1) % c.full_attention_every == 0) return 0;
    return c.sliding_window_size;
  }
  std::string describe(const ModelConfig& c) const override {
    const std::string w = std::to_string(c.sliding_window_size);
    return c.full_attention_every > 0
               ? "SWA (window " + w + "), full attention every " + std::to_string(c.full_attention_every) + "th block"
               : "SWA (window " + w + ")";
  }
};

}  // namespace

const MixerFamily& self_attention_family() {
  static const SelfAttention f;
  return f;
}
const MixerFamily& swa_family() {
  static const SlidingWindow f;
  return f;
}

}  // namespace ttt::model
