// Model families: everything that depends on which sequence mixer a model uses
// (`seq_modeling_block` in config.json) lives in one file per family under src/model/families/,
// registered by one line in registry.cpp. A family owns
//   - its config fields: defaults (in ModelConfig), JSON names as in its reference code
//     (read_json / write_json) and validation;
//   - the layout of its blocks: which blocks use its mixer and which window attention blocks see;
//   - the names and shapes of its mixer's parameters and the construction of the mixer;
//   - its forward FLOP count (for the context benchmark's roofline) and a one-line description.
// The prime MLPs of TTT-E2E are not a mixer: they sit in the last suffix_len blocks of any family
// and are described by prime.cpp.
//
// Nothing outside src/model/families/ compares the family name: callers ask config.family().
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "tensor/tensor.h"

namespace ttt::model {

struct ModelConfig;
class SequenceMixer;

using ParamShapes = std::vector<std::pair<std::string, std::vector<int64_t>>>;

class MixerFamily {
 public:
  virtual ~MixerFamily() = default;
  // The value of seq_modeling_block that selects this family.
  virtual const char* name() const = 0;
  // True for the recurrent baselines (SPEC section 9): their mixer replaces attention in every
  // block but those that swa_every turns into SWA blocks.
  virtual bool recurrent() const { return false; }
  // True for the attention families (self_attention, SWA): the layout of official checkpoints,
  // and of models `ttt convert` can turn into TTT-E2E without new weights.
  virtual bool attention_only() const { return false; }
  // True for the family whose every block is sliding-window attention (besides the hybrid rule).
  virtual bool windowed_attention() const { return false; }

  // Config: this family's fields from / to JSON (the common fields are read by config.cpp), and
  // its rules (throwing std::runtime_error "config: <field> ..." through config_error).
  virtual void read_json(const nlohmann::json& j, ModelConfig& c) const {}
  virtual void write_json(const ModelConfig& c, nlohmann::ordered_json& j) const {}
  virtual void validate(const ModelConfig& c) const {}
  // Parameters of one block's mixer, for the int64 overflow bound (overflow set on overflow).
  virtual int64_t mixer_param_bound(const ModelConfig& c, bool& overflow) const { return 0; }

  // Layout: whether block l uses this family's mixer (else attention), and the attention window
  // of block l (0: full causal) when it does not.
  virtual bool own_mixer(const ModelConfig& c, int64_t l) const { return false; }
  virtual int64_t window_of(const ModelConfig& c, int64_t l) const = 0;

  // The mixer parameters of a block that uses this family's mixer, prefixed by "blocks.l.", and
  // the mixer built from them.
  virtual void parameter_shapes(const ModelConfig& c, const std::string& prefix, ParamShapes& out) const {}
  virtual std::shared_ptr<SequenceMixer> make_mixer(const ModelConfig& c, const std::string& prefix,
                                                    const std::map<std::string, Tensor>& by) const {
    return nullptr;
  }
  // Forward FLOPs of this family's mixer in a block over t tokens.
  virtual double mixer_forward_flops(const ModelConfig& c, int64_t t) const { return 0; }

  // One line for reports: "Mamba 2 (SSD, state 64, chunk 128), SWA every 4th block".
  virtual std::string describe(const ModelConfig& c) const = 0;
};

// The registered families, in registry order; lookup by seq_modeling_block (throws
// std::runtime_error listing the known names).
const std::vector<const MixerFamily*>& families();
const MixerFamily* find_family(const std::string& name);  // null if unknown
std::string family_names();                               // "\"self_attention\", \"SWA\", ..."

// Block l's mixer, built from the model's parameters (by name); its forward FLOPs over t tokens;
// the model's one-line description (TTT-E2E's prime blocks included).
std::shared_ptr<SequenceMixer> make_block_mixer(const ModelConfig& c, int64_t l, const std::map<std::string, Tensor>& by);
double block_mixer_forward_flops(const ModelConfig& c, int64_t l, int64_t t);
std::string describe_model(const ModelConfig& c);

// Attention blocks (the layout every family falls back to): parameters, mixer, FLOPs.
void attention_parameter_shapes(const ModelConfig& c, const std::string& prefix, ParamShapes& out);
std::shared_ptr<SequenceMixer> make_attention_mixer(const ModelConfig& c, const std::string& prefix,
                                                    const std::map<std::string, Tensor>& by, int64_t window);
double attention_forward_flops(const ModelConfig& c, int64_t t, int64_t window);

// The prime MLPs of TTT-E2E (prime.cpp): parameters of a prime block, their FLOPs per token
// (forward), and the description added to the family's ("+ prime MLP in the last block ...").
void prime_parameter_shapes(const ModelConfig& c, const std::string& prefix, ParamShapes& out);
std::string describe_prime(const ModelConfig& c);

// Throws std::runtime_error("config: " + what).
[[noreturn]] void config_error(const std::string& what);

// Optional fields of config.json with config.cpp's strict typing (a wrong type throws naming the
// field); absent fields leave `out` as it is.
void config_json_int(const nlohmann::json& j, const char* key, int64_t& out);
void config_json_double(const nlohmann::json& j, const char* key, double& out);

// Sums and products that record int64 overflow instead of wrapping (for the parameter bound).
struct CheckedMath {
  bool& overflow;
  int64_t mul(int64_t a, int64_t b) const {
    int64_t r = 0;
    overflow |= __builtin_mul_overflow(a, b, &r);
    return r;
  }
  int64_t add(int64_t a, int64_t b) const {
    int64_t r = 0;
    overflow |= __builtin_add_overflow(a, b, &r);
    return r;
  }
};

}  // namespace ttt::model
