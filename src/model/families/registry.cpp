// The model families, one line each. Adding a family: its file under src/model/families/ (a
// MixerFamily: config fields, validation, parameters, mixer, FLOPs, description) and a line here.
#include <stdexcept>

#include "model/config.h"
#include "model/families/family.h"
#include "model/sequence_memory.h"

namespace ttt::model {

const MixerFamily& self_attention_family();
const MixerFamily& swa_family();
const MixerFamily& mamba2_family();
const MixerFamily& gated_deltanet_family();
const MixerFamily& ttt_kvb_family();

const std::vector<const MixerFamily*>& families() {
  static const std::vector<const MixerFamily*> all = {
      &self_attention_family(),
      &swa_family(),
      &mamba2_family(),
      &gated_deltanet_family(),
      &ttt_kvb_family(),
  };
  return all;
}

const MixerFamily* find_family(const std::string& name) {
  for (const MixerFamily* f : families())
    if (name == f->name()) return f;
  return nullptr;
}

std::string family_names() {
  std::string s;
  const auto& all = families();
  for (size_t i = 0; i < all.size(); ++i)
    s += std::string(i == 0 ? "" : i + 1 == all.size() ? " or " : ", ") + "\"" + all[i]->name() + "\"";
  return s;
}

const MixerFamily& ModelConfig::family() const {
  const MixerFamily* f = find_family(seq_modeling_block);
  if (!f) config_error("seq_modeling_block must be " + family_names() + " (got \"" + seq_modeling_block + "\")");
  return *f;
}

std::shared_ptr<SequenceMixer> make_block_mixer(const ModelConfig& c, int64_t l, const std::map<std::string, Tensor>& by) {
  const std::string p = "blocks." + std::to_string(l) + ".";
  if (c.is_recurrent(l)) return c.family().make_mixer(c, p, by);
  return make_attention_mixer(c, p, by, c.window_of(l));
}

double block_mixer_forward_flops(const ModelConfig& c, int64_t l, int64_t t) {
  if (c.is_recurrent(l)) return c.family().mixer_forward_flops(c, t);
  return attention_forward_flops(c, t, c.window_of(l));
}

std::string describe_model(const ModelConfig& c) {
  if (c.prime) return describe_prime(c);
  return c.family().describe(c);
}

}  // namespace ttt::model
