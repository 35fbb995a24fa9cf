// Gated DeltaNet, named as in fla (layers/gated_deltanet.py): num_attention_heads heads of key
// size head_dim() and value size expand_v * head_dim(); short convolutions of conv_size.
#include <algorithm>
#include <cmath>

#include "model/families/recurrent.h"
#include "model/gated_deltanet_mixer.h"

namespace ttt::model {
namespace {

class GatedDeltaNet final : public RecurrentFamily {
 public:
  const char* name() const override { return "gated_deltanet"; }

  void read_json(const nlohmann::json& j, ModelConfig& c) const override {
    config_json_int(j, "expand_v", c.gated_deltanet.expand_v);
    config_json_int(j, "conv_size", c.gated_deltanet.conv_size);
  }
  void write_json(const ModelConfig& c, nlohmann::ordered_json& j) const override {
    j["expand_v"] = c.gated_deltanet.expand_v;
    j["conv_size"] = c.gated_deltanet.conv_size;
  }
  void validate_own(const ModelConfig& c) const override {
    for (const auto& [name, v] : {std::pair<const char*, int64_t>{"expand_v", c.gated_deltanet.expand_v}, {"conv_size", c.gated_deltanet.conv_size}})
      if (v < 1 || v > 64) config_error(std::string(name) + " must be in [1, 64] (got " + std::to_string(v) + ")");
  }
  int64_t mixer_param_bound(const ModelConfig& c, bool& overflow) const override {
    CheckedMath m{overflow};
    const int64_t d = c.hidden_size, kd = d, vd = m.mul(c.gated_deltanet.expand_v, d), h = c.num_attention_heads;
    return m.add(m.add(m.mul(d, m.add(m.add(m.mul(2, kd), m.mul(2, vd)), m.mul(2, h))), m.mul(vd, d)),
                 m.add(m.mul(c.gated_deltanet.conv_size, m.add(m.mul(2, kd), vd)), m.add(m.mul(2, h), m.mul(c.gated_deltanet.expand_v, c.head_dim()))));
  }
  void parameter_shapes(const ModelConfig& c, const std::string& p, ParamShapes& out) const override {
    const int64_t d = c.hidden_size, kd = d, vd = c.gated_deltanet.expand_v * d, h = c.num_attention_heads;
    out.push_back({p + "gdn.q_proj", {d, kd}});
    out.push_back({p + "gdn.k_proj", {d, kd}});
    out.push_back({p + "gdn.v_proj", {d, vd}});
    out.push_back({p + "gdn.a_proj", {d, h}});
    out.push_back({p + "gdn.b_proj", {d, h}});
    out.push_back({p + "gdn.g_proj", {d, vd}});
    out.push_back({p + "gdn.conv1d.weight", {2 * kd + vd, c.gated_deltanet.conv_size}});  // q, k, v short convolutions
    out.push_back({p + "gdn.A_log", {h}});
    out.push_back({p + "gdn.dt_bias", {h}});
    out.push_back({p + "gdn.o_norm.weight", {c.gated_deltanet.expand_v * c.head_dim()}});
    out.push_back({p + "gdn.o_proj", {vd, d}});
  }
  std::shared_ptr<SequenceMixer> make_mixer(const ModelConfig& c, const std::string& p,
                                            const std::map<std::string, Tensor>& by) const override {
    const std::string g = p + "gdn.";
    return std::make_shared<GatedDeltaNetMixer>(
        c, GatedDeltaNetParams{by.at(g + "q_proj"), by.at(g + "k_proj"), by.at(g + "v_proj"), by.at(g + "a_proj"),
                               by.at(g + "b_proj"), by.at(g + "g_proj"), by.at(g + "conv1d.weight"), by.at(g + "A_log"),
                               by.at(g + "dt_bias"), by.at(g + "o_norm.weight"), by.at(g + "o_proj")});
  }
  double mixer_forward_flops(const ModelConfig& c, int64_t t) const override {
    const double d = static_cast<double>(c.hidden_size), T = static_cast<double>(t);
    const double Q = static_cast<double>(std::min<int64_t>(c.chunk_size, t)), chunks = std::ceil(T / Q);
    const double H = static_cast<double>(c.num_attention_heads), dk = static_cast<double>(c.head_dim()),
                 dv = dk * static_cast<double>(c.gated_deltanet.expand_v);
    const double proj = 2.0 * T * d * (2 * H * dk + 2 * H * dv + 2 * H) + 2.0 * T * H * dv * d;
    // per chunk: K K^T, the UT transform by forward substitution (Q^3 / 3), u and w, the state's
    // contribution and update, the intra-chunk attention
    const double chunk = 2 * H * Q * Q * dk + H * Q * Q * Q / 3 + 2 * H * Q * Q * (dv + dk) + 2 * H * Q * dk * dv * 3 +
                         2 * H * Q * Q * (dk + dv);
    return proj + chunks * chunk;
  }
  std::string describe(const ModelConfig& c) const override {
    return "Gated DeltaNet (chunk " + std::to_string(c.chunk_size) + "), " + swa_every_text(c);
  }
};

}  // namespace

const MixerFamily& gated_deltanet_family() {
  static const GatedDeltaNet f;
  return f;
}

}  // namespace ttt::model
