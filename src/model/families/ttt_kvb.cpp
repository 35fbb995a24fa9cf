// TTT-KVB, named as in LaCT (lact_llm, layer_lact_swiglu.py): window attention
// (sliding_window_size) beside per-head SwiGLU fast weights (num_lact_heads heads, hidden
// inter_multi x head size) updated once per lact_chunk_size tokens from a key-to-value
// dot-product loss with learned per-token rates.
#include <cmath>
#include <sstream>

#include "model/families/recurrent.h"
#include "model/ttt_kvb_mixer.h"

namespace ttt::model {
namespace {

std::string num(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

class TttKvb final : public RecurrentFamily {
 public:
  const char* name() const override { return "ttt_kvb"; }

  void read_json(const nlohmann::json& j, ModelConfig& c) const override {
    config_json_int(j, "num_lact_heads", c.ttt_kvb.num_lact_heads);
    config_json_int(j, "lact_chunk_size", c.ttt_kvb.lact_chunk_size);
    config_json_double(j, "inter_multi", c.ttt_kvb.inter_multi);
  }
  void write_json(const ModelConfig& c, nlohmann::ordered_json& j) const override {
    j["num_lact_heads"] = c.ttt_kvb.num_lact_heads;
    j["inter_multi"] = c.ttt_kvb.inter_multi;
    j["lact_chunk_size"] = c.ttt_kvb.lact_chunk_size;
  }
  void validate_own(const ModelConfig& c) const override {
    if (c.sliding_window_size < 1)
      config_error("sliding_window_size must be >= 1 with seq_modeling_block \"ttt_kvb\" (its window attention)");
    if (c.ttt_kvb.num_lact_heads < 1 || c.hidden_size % c.ttt_kvb.num_lact_heads != 0)
      config_error("hidden_size (" + std::to_string(c.hidden_size) + ") must be divisible by num_lact_heads (" +
                   std::to_string(c.ttt_kvb.num_lact_heads) + ")");
    if (!(c.ttt_kvb.inter_multi > 0) || !(c.ttt_kvb.inter_multi <= 64) || c.lact_hidden() < 1)
      config_error("inter_multi must be in (0, 64] and give a fast-weight hidden size >= 1 (got " + num(c.ttt_kvb.inter_multi) + ")");
    if (c.ttt_kvb.lact_chunk_size < 1 || c.ttt_kvb.lact_chunk_size > (int64_t{1} << 24))
      config_error("lact_chunk_size must be in [1, 2^24] (got " + std::to_string(c.ttt_kvb.lact_chunk_size) + ")");
  }
  int64_t mixer_param_bound(const ModelConfig& c, bool& overflow) const override {
    CheckedMath m{overflow};
    const int64_t d = c.hidden_size, nh = c.ttt_kvb.num_lact_heads, din = c.lact_head_dim(), dh = c.lact_hidden();
    return m.add(m.add(m.mul(d, m.mul(4, d)), m.mul(3, m.mul(nh, m.mul(dh, din)))), m.add(m.mul(d, m.mul(3, nh)), m.mul(6, d)));
  }
  void parameter_shapes(const ModelConfig& c, const std::string& p, ParamShapes& out) const override {
    const int64_t d = c.hidden_size, nh = c.ttt_kvb.num_lact_heads, din = c.lact_head_dim(), dh = c.lact_hidden();
    out.push_back({p + "lact.qkv", {d, 3 * d}});
    out.push_back({p + "lact.q_norm.weight", {d}});
    out.push_back({p + "lact.k_norm.weight", {d}});
    out.push_back({p + "lact.o_proj", {d, d}});
    out.push_back({p + "lact.w0", {nh, dh, din}});  // initial fast weights
    out.push_back({p + "lact.w1", {nh, din, dh}});
    out.push_back({p + "lact.w2", {nh, dh, din}});
    out.push_back({p + "lact.lr_proj", {d, 3 * nh}});
    out.push_back({p + "lact.lr_proj_bias", {3 * nh}});
    out.push_back({p + "lact.qk_scale", {d, 2}});
    out.push_back({p + "lact.qk_offset", {d, 2}});
    out.push_back({p + "lact.ttt_norm.weight", {din}});
  }
  std::shared_ptr<SequenceMixer> make_mixer(const ModelConfig& c, const std::string& p,
                                            const std::map<std::string, Tensor>& by) const override {
    const std::string t = p + "lact.";
    return std::make_shared<TttKvbMixer>(
        c, TttKvbParams{by.at(t + "qkv"), by.at(t + "q_norm.weight"), by.at(t + "k_norm.weight"), by.at(t + "o_proj"),
                        by.at(t + "w0"), by.at(t + "w1"), by.at(t + "w2"), by.at(t + "lr_proj"), by.at(t + "lr_proj_bias"),
                        by.at(t + "qk_scale"), by.at(t + "qk_offset"), by.at(t + "ttt_norm.weight")});
  }
  // Window attention, plus the fast weights: 6 D H per token to apply (LaCT's count), 12 D H per
  // token of a completed chunk to update.
  double mixer_forward_flops(const ModelConfig& c, int64_t t) const override {
    const double d = static_cast<double>(c.hidden_size), T = static_cast<double>(t);
    const double nh = static_cast<double>(c.ttt_kvb.num_lact_heads), din = static_cast<double>(c.lact_head_dim()),
                 dh = static_cast<double>(c.lact_hidden());
    const double updated = std::floor(T / static_cast<double>(c.ttt_kvb.lact_chunk_size)) * static_cast<double>(c.ttt_kvb.lact_chunk_size);
    return attention_forward_flops(c, t, c.sliding_window_size) + 2.0 * T * d * 3 * nh + 6.0 * din * dh * nh * T +
           12.0 * din * dh * nh * updated;
  }
  std::string describe(const ModelConfig& c) const override {
    return "TTT-KVB: SwiGLU fast weights (" + std::to_string(c.ttt_kvb.num_lact_heads) + " heads) updated every " +
           std::to_string(c.ttt_kvb.lact_chunk_size) + " tokens, beside SWA (window " + std::to_string(c.sliding_window_size) + ")";
  }
};

}  // namespace

const MixerFamily& ttt_kvb_family() {
  static const TttKvb f;
  return f;
}

}  // namespace ttt::model
