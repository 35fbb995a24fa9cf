// Mamba 2 (SSD), named as in state-spaces/mamba (modules/mamba2.py), ngroups 1.
#include <algorithm>
#include <cmath>

#include "model/families/recurrent.h"
#include "model/mamba2_mixer.h"

namespace ttt::model {
namespace {

class Mamba2 final : public RecurrentFamily {
 public:
  const char* name() const override { return "mamba2"; }

  void read_json(const nlohmann::json& j, ModelConfig& c) const override {
    config_json_int(j, "d_state", c.mamba2.d_state);
    config_json_int(j, "d_conv", c.mamba2.d_conv);
    config_json_int(j, "expand", c.mamba2.expand);
    config_json_int(j, "headdim", c.mamba2.headdim);
    config_json_int(j, "ngroups", c.mamba2.ngroups);
  }
  void write_json(const ModelConfig& c, nlohmann::ordered_json& j) const override {
    j["d_state"] = c.mamba2.d_state;
    j["d_conv"] = c.mamba2.d_conv;
    j["expand"] = c.mamba2.expand;
    j["headdim"] = c.mamba2.headdim;
    j["ngroups"] = c.mamba2.ngroups;
  }
  void validate_own(const ModelConfig& c) const override {
    const std::pair<const char*, int64_t> m[] = {{"d_state", c.mamba2.d_state}, {"d_conv", c.mamba2.d_conv}, {"expand", c.mamba2.expand},
                                                 {"headdim", c.mamba2.headdim}, {"ngroups", c.mamba2.ngroups}};
    for (const auto& [name, v] : m)
      if (v < 1 || v > (int64_t{1} << 20)) config_error(std::string(name) + " must be in [1, 2^20] (got " + std::to_string(v) + ")");
    if (c.mamba2.ngroups != 1) config_error("ngroups must be 1 (the only Mamba 2 variant this engine implements)");
    if (c.hidden_size > (int64_t{1} << 24) || c.mamba_d_inner() % c.mamba2.headdim != 0)
      config_error("expand * hidden_size = " + std::to_string(c.mamba_d_inner()) + " must be divisible by headdim (" +
                   std::to_string(c.mamba2.headdim) + ")");
    if (c.swa_every > 0 && c.sliding_window_size < 1)
      config_error("sliding_window_size must be >= 1 when swa_every adds SWA blocks (got " +
                   std::to_string(c.sliding_window_size) + ")");
  }
  int64_t mixer_param_bound(const ModelConfig& c, bool& overflow) const override {
    CheckedMath m{overflow};
    const int64_t d = c.hidden_size;
    const int64_t di = m.mul(c.mamba2.expand, d), cd = m.add(di, m.mul(2, c.mamba2.d_state));
    return m.add(m.add(m.mul(d, m.add(m.add(di, cd), c.mamba_heads())), m.mul(cd, m.add(c.mamba2.d_conv, 1))),
                 m.add(m.mul(di, m.add(d, 1)), m.mul(3, c.mamba_heads())));
  }
  void parameter_shapes(const ModelConfig& c, const std::string& p, ParamShapes& out) const override {
    const int64_t d = c.hidden_size, di = c.mamba_d_inner(), cd = c.mamba_conv_dim(), nh = c.mamba_heads();
    out.push_back({p + "mamba.in_proj", {d, di + cd + nh}});  // -> z, x B C, dt
    out.push_back({p + "mamba.conv1d.weight", {cd, c.mamba2.d_conv}});
    out.push_back({p + "mamba.conv1d.bias", {cd}});
    out.push_back({p + "mamba.dt_bias", {nh}});
    out.push_back({p + "mamba.A_log", {nh}});
    out.push_back({p + "mamba.D", {nh}});
    out.push_back({p + "mamba.norm.weight", {di}});
    out.push_back({p + "mamba.out_proj", {di, d}});
  }
  std::shared_ptr<SequenceMixer> make_mixer(const ModelConfig& c, const std::string& p,
                                            const std::map<std::string, Tensor>& by) const override {
    return std::make_shared<Mamba2Mixer>(
        c, Mamba2Params{by.at(p + "mamba.in_proj"), by.at(p + "mamba.conv1d.weight"), by.at(p + "mamba.conv1d.bias"),
                        by.at(p + "mamba.dt_bias"), by.at(p + "mamba.A_log"), by.at(p + "mamba.D"),
                        by.at(p + "mamba.norm.weight"), by.at(p + "mamba.out_proj")});
  }
  double mixer_forward_flops(const ModelConfig& c, int64_t t) const override {
    const double d = static_cast<double>(c.hidden_size), T = static_cast<double>(t);
    const double Q = static_cast<double>(std::min<int64_t>(c.chunk_size, t)), chunks = std::ceil(T / Q);
    const double di = static_cast<double>(c.mamba_d_inner()), N = static_cast<double>(c.mamba2.d_state),
                 H = static_cast<double>(c.mamba_heads()), P = static_cast<double>(c.mamba2.headdim);
    const double proj = 2.0 * T * d * (2 * di + 2 * N + H) + 2.0 * T * di * d + 2.0 * T * (di + 2 * N) * c.mamba2.d_conv;
    // per chunk: C B^T, the decayed products with x, the state's contribution and the new state
    const double ssd = chunks * (2 * Q * Q * N + 2 * H * Q * Q * P + 2 * Q * N * H * P + 2 * H * P * Q * N);
    return proj + ssd;
  }
  std::string describe(const ModelConfig& c) const override {
    return "Mamba 2 (SSD, state " + std::to_string(c.mamba2.d_state) + ", chunk " + std::to_string(c.chunk_size) + "), " +
           swa_every_text(c);
  }
};

}  // namespace

const MixerFamily& mamba2_family() {
  static const Mamba2 f;
  return f;
}

}  // namespace ttt::model
