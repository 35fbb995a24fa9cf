#include "io/messages.h"
#include "model/config.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <stdexcept>

#include "io/atomic_file.h"
#include "io/file_read.h"
#include "io/json_read.h"
#include "model/families/family.h"

namespace ttt::model {
namespace {

using json = nlohmann::json;

constexpr int64_t kMaxDim = (int64_t(1) << 31) - 1;
constexpr int64_t kMaxLayers = 100000;
constexpr uint64_t kMaxConfigBytes = uint64_t{1} << 24;  // 16 MB: a config is a few hundred bytes

using io::one_line;

[[noreturn]] void bad(const std::string& problem) { throw std::runtime_error("config: " + problem); }

std::string num(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

const char* type_of(const json& v) {
  if (v.is_null()) return "null";
  if (v.is_boolean()) return "boolean";
  if (v.is_number_integer()) return "integer";
  if (v.is_number()) return "number";
  if (v.is_string()) return "string";
  if (v.is_array()) return "array";
  return "object";
}

void get_int(const json& j, const char* key, int64_t& out, bool required) {
  auto it = j.find(key);
  if (it == j.end()) {
    if (required) bad(std::string("missing required field ") + key);
    return;
  }
  if (!it->is_number_integer())
    bad(std::string("field ") + key + " must be an integer (got " + type_of(*it) + ")");
  if (it->is_number_unsigned() &&
      it->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
    bad(std::string("field ") + key + " is out of range");
  out = it->get<int64_t>();
}

void get_double(const json& j, const char* key, double& out) {
  auto it = j.find(key);
  if (it == j.end()) return;
  if (!it->is_number()) bad(std::string("field ") + key + " must be a number (got " + type_of(*it) + ")");
  out = it->get<double>();
}

void get_bool(const json& j, const char* key, bool& out) {
  auto it = j.find(key);
  if (it == j.end()) return;
  if (!it->is_boolean()) bad(std::string("field ") + key + " must be a boolean (got " + type_of(*it) + ")");
  out = it->get<bool>();
}

void get_string(const json& j, const char* key, std::string& out) {
  auto it = j.find(key);
  if (it == j.end()) return;
  if (!it->is_string()) bad(std::string("field ") + key + " must be a string (got " + type_of(*it) + ")");
  out = it->get<std::string>();
}

std::string shape_text(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

}  // namespace

int64_t ModelConfig::head_dim() const {
  return num_attention_heads > 0 ? hidden_size / num_attention_heads : 0;
}

bool ModelConfig::has_prime(int64_t layer) const {
  return prime && layer >= num_hidden_layers - suffix_len && layer < num_hidden_layers;
}

int64_t ModelConfig::first_prime_layer() const {
  return prime ? num_hidden_layers - suffix_len : num_hidden_layers;
}

bool ModelConfig::recurrent_model() const {
  const MixerFamily* f = find_family(seq_modeling_block);
  return f && f->recurrent();
}

bool ModelConfig::is_recurrent(int64_t layer) const {
  const MixerFamily* f = find_family(seq_modeling_block);
  return f && f->recurrent() && f->own_mixer(*this, layer);
}

int64_t ModelConfig::window_of(int64_t layer) const {
  const MixerFamily* f = find_family(seq_modeling_block);
  return f ? f->window_of(*this, layer) : 0;
}

void config_error(const std::string& what) { bad(what); }
void config_json_int(const json& j, const char* key, int64_t& out) { get_int(j, key, out, false); }
void config_json_double(const json& j, const char* key, double& out) { get_double(j, key, out); }

void validate_config(const ModelConfig& c) {
  const std::pair<const char*, int64_t> sizes[] = {
      {"vocab_size", c.vocab_size},
      {"hidden_size", c.hidden_size},
      {"num_hidden_layers", c.num_hidden_layers},
      {"num_attention_heads", c.num_attention_heads},
      {"intermediate_size", c.intermediate_size}};
  for (const auto& [name, v] : sizes) {
    if (v <= 0) bad(std::string(name) + " must be positive (got " + std::to_string(v) + ")");
    if (v > kMaxDim) bad(std::string(name) + " is too large (got " + std::to_string(v) + ", limit 2^31-1)");
  }
  if (c.num_hidden_layers > kMaxLayers)
    bad("num_hidden_layers is too large (got " + std::to_string(c.num_hidden_layers) + ", limit " +
        std::to_string(kMaxLayers) + ")");
  if (c.hidden_size % c.num_attention_heads != 0)
    bad("hidden_size (" + std::to_string(c.hidden_size) + ") must be divisible by num_attention_heads (" +
        std::to_string(c.num_attention_heads) + ")");
  if (c.head_dim() % 2 != 0)
    bad("head_dim = hidden_size / num_attention_heads = " + std::to_string(c.head_dim()) +
        " must be even (RoPE rotates pairs)");
  const MixerFamily* family = find_family(c.seq_modeling_block);
  if (!family)
    bad("seq_modeling_block must be " + family_names() + " (got \"" + one_line(c.seq_modeling_block) + "\")");
  if (c.swa_every < 0) bad("swa_every must not be negative (got " + std::to_string(c.swa_every) + ")");
  if (c.sliding_window_size < 0)
    bad("sliding_window_size must not be negative (got " + std::to_string(c.sliding_window_size) + ")");
  family->validate(c);
  if (c.full_attention_every < 0)
    bad("full_attention_every must not be negative (got " + std::to_string(c.full_attention_every) + ")");
  if (c.mini_batch_size < 1)
    bad("mini_batch_size must be >= 1 (got " + std::to_string(c.mini_batch_size) + ")");
  if (c.suffix_len < 0 || c.suffix_len > c.num_hidden_layers)
    bad("suffix_len must be in [0, num_hidden_layers = " + std::to_string(c.num_hidden_layers) + "] (got " +
        std::to_string(c.suffix_len) + ")");
  if (c.prime && c.suffix_len == 0) bad("suffix_len must be >= 1 when prime is true (got 0)");
  if (c.bos_token_id < 0 || c.bos_token_id >= c.vocab_size)
    bad("bos_token_id must be in [0, vocab_size = " + std::to_string(c.vocab_size) + ") (got " +
        std::to_string(c.bos_token_id) + ")");
  const std::pair<const char*, double> positives[] = {
      {"rope_theta", c.rope_theta}, {"rms_norm_eps", c.rms_norm_eps}, {"initializer_range", c.initializer_range}};
  for (const auto& [name, v] : positives)
    if (!(v > 0) || !std::isfinite(v)) bad(std::string(name) + " must be positive and finite (got " + num(v) + ")");
  const std::pair<const char*, bool> norms[] = {
      {"qk_norm", c.qk_norm}, {"pre_norm", c.pre_norm}, {"post_norm", c.post_norm}};
  for (const auto& [name, v] : norms)
    if (!v)
      bad(std::string(name) + " = false is not supported: this engine only supports " + name +
          " = true, as in the paper");
  // The parameter count must fit int64 (sizes < 2^31 keep every single product in range).
  const int64_t d = c.hidden_size, f = c.intermediate_size, V = c.vocab_size, L = c.num_hidden_layers;
  const int64_t S = c.prime ? c.suffix_len : 0;
  bool overflow = false;
  auto mul = [&](int64_t a, int64_t b) {
    int64_t r = 0;
    overflow |= __builtin_mul_overflow(a, b, &r);
    return r;
  };
  auto add = [&](int64_t a, int64_t b) {
    int64_t r = 0;
    overflow |= __builtin_add_overflow(a, b, &r);
    return r;
  };
  int64_t block = add(add(mul(4, mul(d, d)), mul(3, mul(d, f))), add(mul(2, c.head_dim()), mul(4, d)));
  block = add(block, family->mixer_param_bound(c, overflow));  // bound by the larger of the two block kinds
  const int64_t prime_block = add(mul(3, mul(d, f)), mul(2, d));
  int64_t total = add(mul(V, d), d);
  if (!c.tie_word_embeddings) total = add(total, mul(d, V));
  total = add(total, add(mul(L, block), mul(S, prime_block)));
  if (overflow) bad("the model is too large (parameter count overflows int64)");
}

ModelConfig config_from_json(const std::string& text) {
  // Linear-time parse with a depth limit; duplicates refused (nlohmann silently keeps the last).
  json j;
  try {
    j = io::parse_json(text, "config");
  } catch (const io::JsonError& e) {
    if (e.duplicate_depth == 1) bad("duplicate field " + one_line(e.duplicate_key));
    if (e.duplicate_depth > 1) bad("duplicate key " + one_line(e.duplicate_key));
    bad(e.problem);
  }
  if (!j.is_object()) bad("top level is not a JSON object");

  ModelConfig c;
  get_int(j, "vocab_size", c.vocab_size, true);
  get_int(j, "hidden_size", c.hidden_size, true);
  get_int(j, "num_hidden_layers", c.num_hidden_layers, true);
  get_int(j, "num_attention_heads", c.num_attention_heads, true);
  get_int(j, "intermediate_size", c.intermediate_size, true);
  get_string(j, "seq_modeling_block", c.seq_modeling_block);
  get_int(j, "full_attention_every", c.full_attention_every, false);
  get_int(j, "sliding_window_size", c.sliding_window_size, false);
  get_int(j, "mini_batch_size", c.mini_batch_size, false);
  get_bool(j, "prime", c.prime);
  get_int(j, "suffix_len", c.suffix_len, false);
  get_double(j, "rope_theta", c.rope_theta);
  get_double(j, "rms_norm_eps", c.rms_norm_eps);
  get_bool(j, "qk_norm", c.qk_norm);
  get_bool(j, "pre_norm", c.pre_norm);
  get_bool(j, "post_norm", c.post_norm);
  get_bool(j, "tie_word_embeddings", c.tie_word_embeddings);
  get_int(j, "bos_token_id", c.bos_token_id, false);
  get_double(j, "initializer_range", c.initializer_range);
  get_int(j, "swa_every", c.swa_every, false);
  get_int(j, "chunk_size", c.chunk_size, false);
  for (const MixerFamily* f : families()) f->read_json(j, c);  // every family's fields are type-checked
  validate_config(c);
  return c;
}

std::string config_to_json(const ModelConfig& c) {
  nlohmann::ordered_json j;
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["intermediate_size"] = c.intermediate_size;
  j["seq_modeling_block"] = c.seq_modeling_block;
  j["full_attention_every"] = c.full_attention_every;
  j["sliding_window_size"] = c.sliding_window_size;
  j["mini_batch_size"] = c.mini_batch_size;
  j["prime"] = c.prime;
  j["suffix_len"] = c.suffix_len;
  j["rope_theta"] = c.rope_theta;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["qk_norm"] = c.qk_norm;
  j["pre_norm"] = c.pre_norm;
  j["post_norm"] = c.post_norm;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["bos_token_id"] = c.bos_token_id;
  j["initializer_range"] = c.initializer_range;
  if (c.recurrent_model()) {  // attention-only configs keep their exact text
    j["swa_every"] = c.swa_every;
    j["chunk_size"] = c.chunk_size;
  }
  if (const MixerFamily* f = find_family(c.seq_modeling_block)) f->write_json(c, j);
  return j.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n";
}

ModelConfig load_config(const std::string& path) {
  const std::string text = io::read_regular_file(path, "config file", kMaxConfigBytes);
  try {
    return config_from_json(text);
  } catch (const std::runtime_error& e) {
    std::string msg = e.what();
    if (msg.rfind("config: ", 0) == 0) msg = msg.substr(8);
    throw std::runtime_error("config file " + one_line(path) + ": " + msg);
  }
}

void save_config(const ModelConfig& c, const std::string& path) {
  validate_config(c);
  const std::string text = config_to_json(c);
  io::write_file_atomic(path, text.data(), text.size());
}

std::vector<std::pair<std::string, std::vector<int64_t>>> parameter_shapes(const ModelConfig& c) {
  const int64_t V = c.vocab_size, d = c.hidden_size, f = c.intermediate_size;
  std::vector<std::pair<std::string, std::vector<int64_t>>> out;
  out.push_back({"embed.weight", {V, d}});
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "blocks." + std::to_string(l) + ".";
    out.push_back({p + "attn_norm.weight", {d}});
    if (c.is_recurrent(l))
      c.family().parameter_shapes(c, p, out);
    else
      attention_parameter_shapes(c, p, out);
    out.push_back({p + "attn_post_norm.weight", {d}});
    out.push_back({p + "mlp_norm.weight", {d}});
    out.push_back({p + "mlp.w1", {d, f}});
    out.push_back({p + "mlp.w3", {d, f}});
    out.push_back({p + "mlp.w2", {f, d}});
    out.push_back({p + "mlp_post_norm.weight", {d}});
    if (c.has_prime(l)) prime_parameter_shapes(c, p, out);
  }
  out.push_back({"final_norm.weight", {d}});
  if (!c.tie_word_embeddings) out.push_back({"lm_head", {d, V}});
  return out;
}

void check_checkpoint(const ModelConfig& c, const io::TensorFile& file, const std::string& path) {
  const auto params = parameter_shapes(c);
  std::set<std::string> expected;
  for (const auto& [name, shape] : params) {
    expected.insert(name);
    auto it = file.tensors.find(name);
    if (it == file.tensors.end())
      throw std::runtime_error("checkpoint " + path + ": missing tensor " + name + " (required by the config)");
    if (it->second.shape() != shape)
      throw std::runtime_error("checkpoint " + path + ": " + name + " has shape " +
                               shape_text(it->second.shape()) + ", config says " + shape_text(shape));
  }
  for (const auto& [name, t] : file.tensors)
    if (!expected.count(name))
      throw std::runtime_error("checkpoint " + path + ": unexpected tensor " + one_line(name) +
                               " (not a parameter of this config)");
}

}  // namespace ttt::model
