#include "model/model.h"

#include <cmath>
#include <stdexcept>

#include "io/messages.h"
#include "model/families/family.h"
#include "io/safetensors.h"
#include "tensor/bf16.h"

namespace ttt::model {
namespace {

bool is_norm(const std::string& name) { return name.find("norm") != std::string::npos; }

Tensor swiglu(const Tensor& x, const Tensor& w1, const Tensor& w3, const Tensor& w2) {
  return matmul(silu_mul(matmul(x, w1), matmul(x, w3)), w2);
}

}  // namespace

Model Model::init(const ModelConfig& cfg, uint64_t seed, DType dtype) {
  Rng rng(seed);
  std::map<std::string, Tensor> t;
  auto ends_with = [](const std::string& s, const std::string& e) {
    return s.size() >= e.size() && s.compare(s.size() - e.size(), e.size(), e) == 0;
  };
  for (auto& [name, shape] : parameter_shapes(cfg)) {
    if (is_norm(name)) {
      t[name] = ones(shape, dtype);
    } else if (ends_with(name, "mamba.A_log") || ends_with(name, "gdn.A_log")) {
      // A = -exp(A_log) with A in [1, 16] (mamba2.py; fla's Gated DeltaNet draws A in (0, 16))
      t[name] = log(uniform(shape, rng, 1.0, 16.0, dtype));
    } else if (ends_with(name, "mamba.dt_bias") || ends_with(name, "gdn.dt_bias")) {
      // softplus(dt_bias) = dt, log-uniform in [1e-3, 1e-1] (mamba2.py's dt_min, dt_max)
      std::vector<double> v(static_cast<size_t>(shape[0]));
      for (auto& x : v) {
        const double dt = std::max(1e-4, std::exp(std::log(1e-3) + rng.uniform() * (std::log(1e-1) - std::log(1e-3))));
        x = dt + std::log(-std::expm1(-dt));
      }
      t[name] = from_vector(v, shape, dtype);
    } else if (ends_with(name, "lact.w0") || ends_with(name, "lact.w2") || ends_with(name, "lact.w1")) {
      // LaCT: randn / sqrt(fan_in) for the initial fast weights
      t[name] = randn(shape, rng, 1.0 / std::sqrt(static_cast<double>(shape[2])), dtype);
    } else if (ends_with(name, "lact.qk_scale")) {
      t[name] = ones(shape, dtype);
    } else if (ends_with(name, "lact.qk_offset") || ends_with(name, "lact.lr_proj_bias")) {
      t[name] = zeros(shape, dtype);
    } else if (ends_with(name, "mamba.D")) {
      t[name] = ones(shape, dtype);
    } else if (ends_with(name, "conv1d.weight") || ends_with(name, "conv1d.bias")) {
      // torch Conv1d default: fan_in is the kernel width of a depthwise convolution
      const double bound = 1.0 / std::sqrt(static_cast<double>(shape.size() == 2 ? shape[1] : cfg.mamba2.d_conv));
      t[name] = uniform(shape, rng, -bound, bound, dtype);
    } else {
      t[name] = randn(shape, rng, cfg.initializer_range, dtype);
    }
  }
  return from_tensors(cfg, std::move(t), dtype);
}

Model Model::from_tensors(const ModelConfig& cfg, std::map<std::string, Tensor> tensors, DType dtype) {
  Model m;
  m.cfg_ = cfg;
  for (auto& [name, shape] : parameter_shapes(cfg)) {
    auto it = tensors.find(name);
    if (it == tensors.end()) throw std::runtime_error("checkpoint is missing tensor " + name);
    if (it->second.shape() != shape)
      throw std::runtime_error(name + " has shape " + shape_str(it->second.shape()) + ", config says " + shape_str(shape));
    // bf16 inference weights stay bf16 in a float32 model; anything else becomes `dtype`.
    const bool keep_bf16 = it->second.dtype() == DType::BF16 && dtype == DType::F32 && bf16_weight(name);
    Tensor v = it->second.dtype() == dtype || keep_bf16 ? contiguous(it->second) : to_dtype(it->second, dtype);
    m.params_.emplace_back(name, v.detach());
    tensors.erase(it);
  }
  if (!tensors.empty()) throw std::runtime_error("checkpoint has unexpected tensor " + io::one_line(tensors.begin()->first));
  m.bind();
  return m;
}

Weights parse_weights(const std::string& text) {
  if (text == "f32" || text == "F32") return Weights::F32;
  if (text == "bf16" || text == "BF16") return Weights::BF16;
  if (text == "auto") return Weights::Auto;
  throw std::invalid_argument("unknown weights '" + io::one_line(text) + "' (expected f32, bf16 or auto)");
}

bool Model::bf16_weight(const std::string& name) {
  if (name == "embed.weight" || name == "lm_head") return true;
  if (name.rfind("blocks.", 0) != 0) return false;
  const size_t dot = name.find('.', 7);
  if (dot == std::string::npos) return false;
  const std::string rest = name.substr(dot + 1);
  for (const char* w : {"attn.wq", "attn.wk", "attn.wv", "attn.wo", "mlp.w1", "mlp.w2", "mlp.w3"})
    if (rest == w) return true;
  return false;
}

Model Model::load(const std::string& dir, Weights weights) {
  const ModelConfig cfg = load_config(dir + "/config.json");
  io::ReadOptions opt;
  if (weights != Weights::F32) opt.keep_bf16 = [](const std::string& name) { return bf16_weight(name); };
  auto file = io::read_safetensors(dir + "/model.safetensors", opt);
  Model m = from_tensors(cfg, std::move(file.tensors));
  if (weights == Weights::BF16 && !m.has_bf16_weights()) return m.with_bf16_weights();
  return m;
}

void Model::save(const std::string& dir, Storage storage) const {
  save_config(cfg_, dir + "/config.json");
  std::vector<io::StoreAs> as;
  for (const auto& [name, t] : params_)
    as.push_back(storage == Storage::BF16 && t.dim() >= 2 ? io::StoreAs::BF16
                 : t.dtype() == DType::F64                ? io::StoreAs::F64
                                                          : io::StoreAs::F32);
  // A model holding bf16 weights saves them as they are unless asked for float32.
  if (storage == Storage::F32)
    for (size_t i = 0; i < as.size(); ++i)
      if (params_[i].second.dtype() == DType::BF16) as[i] = io::StoreAs::F32;
  io::write_safetensors(dir + "/model.safetensors", params_, as);
}

Model Model::with_bf16_weights() const {
  if (dtype() != DType::F32) throw std::invalid_argument("bf16 weights need a float32 model");
  std::map<std::string, Tensor> t;
  for (const auto& [name, p] : params_) {
    if (!bf16_weight(name) || p.dtype() == DType::BF16) {
      t[name] = p;
      continue;
    }
    t[name] = to_dtype(contiguous(p.detach()), DType::BF16);  // rounded to nearest even
  }
  return from_tensors(cfg_, std::move(t));
}

Model Model::to(Device device) const {
  if (device == this->device()) return *this;
  std::map<std::string, Tensor> t;
  for (const auto& [name, p] : params_) t[name] = to_device(p, device);
  return from_tensors(cfg_, std::move(t), dtype());
}

void Model::set_bf16_products(bool on) {
  for (const auto& [n, t] : params_)
    if (t.dtype() == DType::BF16) t.impl()->storage->bf16_products = on;
}

bool Model::has_bf16_weights() const {
  for (const auto& [n, t] : params_)
    if (t.dtype() == DType::BF16) return true;
  return false;
}

void Model::bind() {
  std::map<std::string, Tensor> by;
  for (auto& [n, t] : params_) by[n] = t;
  embed_ = by.at("embed.weight");
  final_norm_ = by.at("final_norm.weight");
  if (!cfg_.tie_word_embeddings) lm_head_ = by.at("lm_head");
  blocks_.assign(cfg_.num_hidden_layers, {});
  mixers_.clear();
  for (int64_t l = 0; l < cfg_.num_hidden_layers; ++l) {
    const std::string p = "blocks." + std::to_string(l) + ".";
    auto& b = blocks_[l];
    b.attn_norm = by.at(p + "attn_norm.weight");
    mixers_.push_back(make_block_mixer(cfg_, l, by));  // the family decides (model/families)
    b.attn_post_norm = by.at(p + "attn_post_norm.weight");
    b.mlp_norm = by.at(p + "mlp_norm.weight");
    b.w1 = by.at(p + "mlp.w1");
    b.w2 = by.at(p + "mlp.w2");
    b.w3 = by.at(p + "mlp.w3");
    b.mlp_post_norm = by.at(p + "mlp_post_norm.weight");
    if (cfg_.has_prime(l)) {
      b.prime_norm = by.at(p + "prime_norm.weight");
      b.prime_w1 = by.at(p + "prime.w1");
      b.prime_w2 = by.at(p + "prime.w2");
      b.prime_w3 = by.at(p + "prime.w3");
      b.prime_post_norm = by.at(p + "prime_post_norm.weight");
    }
  }
}

std::vector<Tensor> Model::parameters() const {
  std::vector<Tensor> out;
  for (auto& [n, t] : params_) out.push_back(t);
  return out;
}

void Model::set_requires_grad(bool r) {
  for (auto& [n, t] : params_) t.set_requires_grad(r);
}

Phi Model::phi0() const {
  Phi phi;
  for (int64_t l = cfg_.first_prime_layer(); l < cfg_.num_hidden_layers; ++l) {
    phi.push_back(blocks_[l].prime_w1);
    phi.push_back(blocks_[l].prime_w3);
    phi.push_back(blocks_[l].prime_w2);
  }
  return phi;
}

Tensor Model::embed_tokens(const std::vector<int32_t>& ids) const { return embedding(embed_, ids); }

Tensor Model::block_forward(int64_t l, const Tensor& h, int64_t pos0, const MixerState* state, MixerState* new_state,
                            const Tensor* phi) const {
  static const MixerState kEmpty;
  const auto& b = blocks_[l];
  const double eps = cfg_.rms_norm_eps;
  Tensor o = mixers_[l]->forward(rmsnorm(h, b.attn_norm, eps), pos0, state ? *state : kEmpty, new_state);
  Tensor x = add(h, rmsnorm(o, b.attn_post_norm, eps));
  if (cfg_.has_prime(l)) {
    const Tensor& w1 = phi ? phi[0] : b.prime_w1;
    const Tensor& w3 = phi ? phi[1] : b.prime_w3;
    const Tensor& w2 = phi ? phi[2] : b.prime_w2;
    x = add(x, rmsnorm(swiglu(rmsnorm(x, b.prime_norm, eps), w1, w3, w2), b.prime_post_norm, eps));
  }
  return add(x, rmsnorm(swiglu(rmsnorm(x, b.mlp_norm, eps), b.w1, b.w3, b.w2), b.mlp_post_norm, eps));
}

Tensor Model::logits(const Tensor& h) const {
  Tensor n = rmsnorm(h, final_norm_, cfg_.rms_norm_eps);
  return cfg_.tie_word_embeddings ? matmul(n, embed_, false, true) : matmul(n, lm_head_);
}

Tensor Model::token_nll(const Tensor& h, const std::vector<int32_t>& targets) const {
  if (static_cast<int64_t>(targets.size()) != h.size(0)) throw std::invalid_argument("token_nll: targets do not match rows");
  // The head and the loss in one op that never holds [T, V] logits (a 128K vocabulary).
  const Tensor n = rmsnorm(h, final_norm_, cfg_.rms_norm_eps);
  return cfg_.tie_word_embeddings ? linear_cross_entropy(n, embed_, targets)
                                  : linear_cross_entropy(n, lm_head_, targets, /*w_transposed=*/true);
}

std::vector<double> target_mask(const std::vector<int32_t>& targets, int32_t bos) {
  std::vector<double> m(targets.size());
  for (size_t i = 0; i < targets.size(); ++i) m[i] = targets[i] == bos ? 0.0 : 1.0;
  return m;
}

Tensor masked_mean(const Tensor& nll, const std::vector<int32_t>& targets, int32_t bos) {
  auto m = target_mask(targets, bos);
  double count = 0;
  for (double v : m) count += v;
  Tensor mask = from_vector(m, {static_cast<int64_t>(m.size())}, nll.dtype(), nll.device());
  return mul_scalar(sum(mul(nll, mask)), 1.0 / std::max(1.0, count));
}

std::string first_nonfinite_parameter(const Model& m) {
  for (const auto& [name, t] : m.named_parameters())
    if (count_nonfinite(t) > 0) return name;
  return "";
}

}  // namespace ttt::model
