#include "train/optimizer.h"

#include <cmath>
#include <map>
#include <stdexcept>

#include "autodiff/ops.h"
#include "backend/backend.h"
#include "io/messages.h"

namespace ttt::train {

AdamW::AdamW(std::vector<std::pair<std::string, Tensor>> params, const AdamWOptions& opt)
    : params_(std::move(params)), opt_(opt) {
  for (auto& [n, p] : params_) {
    if (p.dtype() != DType::F32 || !p.is_contiguous()) throw std::invalid_argument("AdamW: parameters must be contiguous F32");
    m_.push_back(zeros(p.shape(), DType::F32, p.device()));
    v_.push_back(zeros(p.shape(), DType::F32, p.device()));
  }
}

void AdamW::step(const std::vector<Tensor>& grads, double lr) {
  if (grads.size() != params_.size()) throw std::invalid_argument("AdamW: wrong number of gradients");
  ++t_;
  const double bc1 = 1.0 - std::pow(opt_.beta1, static_cast<double>(t_));
  const double bc2 = 1.0 - std::pow(opt_.beta2, static_cast<double>(t_));
  for (size_t i = 0; i < params_.size(); ++i) {
    if (!m_[i].defined()) continue;  // sharded away (ZeRO-1)
    Tensor g = grads[i].is_contiguous() && grads[i].dtype() == DType::F32 ? grads[i] : to_dtype(contiguous(grads[i]), DType::F32);
    const Tensor& p = params_[i].second;
    if (g.shape() != p.shape() || g.device() != p.device())
      throw std::invalid_argument("AdamW: the gradient of " + params_[i].first + " has the wrong shape or device");
    AdamWStep h;
    h.beta1 = static_cast<float>(opt_.beta1);
    h.beta2 = static_cast<float>(opt_.beta2);
    h.step = static_cast<float>(lr / bc1);
    h.inv_bc2 = static_cast<float>(1.0 / bc2);
    h.eps = static_cast<float>(opt_.eps);
    const bool decays = !opt_.decay_matrices_only || p.dim() >= 2;
    h.decay = decays ? static_cast<float>(1.0 - lr * opt_.weight_decay) : 1.0f;
    backend_for(p.device()).adamw_step(p, g, m_[i], v_[i], h);  // fused, in place
  }
}

std::vector<std::pair<std::string, Tensor>> AdamW::state_tensors() const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (size_t i = 0; i < params_.size(); ++i) {
    if (!m_[i].defined()) continue;
    out.emplace_back("m." + params_[i].first, m_[i]);
    out.emplace_back("v." + params_[i].first, v_[i]);
  }
  return out;
}

void AdamW::load_state(const std::vector<std::pair<std::string, Tensor>>& tensors, int64_t steps) {
  // Everything is checked before anything is replaced: a bad file leaves the optimizer as it was.
  if (steps < 0) throw std::runtime_error("optimizer state: negative step count");
  std::map<std::string, Tensor> by(tensors.begin(), tensors.end());
  std::vector<Tensor> m(params_.size()), v(params_.size());
  size_t used = 0;
  for (size_t i = 0; i < params_.size(); ++i) {
    for (auto [prefix, dst] : {std::pair<const char*, Tensor*>{"m.", &m[i]}, {"v.", &v[i]}}) {
      auto it = by.find(prefix + params_[i].first);
      if (it == by.end()) throw std::runtime_error(std::string("optimizer state is missing ") + prefix + params_[i].first);
      if (it->second.shape() != params_[i].second.shape())
        throw std::runtime_error(std::string("optimizer state ") + prefix + params_[i].first + " has the wrong shape");
      *dst = clone(to_device(to_dtype(it->second, DType::F32), params_[i].second.device()));
      const bool second = prefix[0] == 'v';
      if (count_nonfinite(*dst, second) > 0)
          throw std::runtime_error(std::string("optimizer state ") + prefix + params_[i].first +
                                   (second ? " is not finite and >= 0" : " is not finite"));
      ++used;
    }
  }
  if (used != by.size()) {
    for (const auto& [name, t] : by) {
      bool known = false;
      for (const auto& p : params_) known |= name == "m." + p.first || name == "v." + p.first;
      if (!known) throw std::runtime_error("optimizer state holds an unknown tensor " + io::one_line(name));
    }
  }
  for (size_t i = 0; i < params_.size(); ++i)
    if (!m_[i].defined()) m[i] = v[i] = Tensor();  // stays sharded
  m_ = std::move(m);
  v_ = std::move(v);
  t_ = steps;
}

void AdamW::shard(const std::vector<bool>& keep) {
  if (keep.size() != params_.size()) throw std::invalid_argument("AdamW::shard: one flag per parameter");
  for (size_t i = 0; i < params_.size(); ++i)
    if (!keep[i]) m_[i] = v_[i] = Tensor();
}

double cosine_lr(int64_t step, int64_t total, int64_t warmup, double peak, double floor) {
  if (step < warmup) return peak * static_cast<double>(step) / static_cast<double>(warmup);
  if (total <= warmup) return peak;
  const double p = std::min(1.0, static_cast<double>(step - warmup) / static_cast<double>(total - warmup));
  return floor + 0.5 * (peak - floor) * (1.0 + std::cos(M_PI * p));
}

double inner_lr_warmup(int64_t step, int64_t warmup, double init) {
  if (warmup <= 0 || step + 1 >= warmup) return 1.0;
  return init + (1.0 - init) * static_cast<double>(step + 1) / static_cast<double>(warmup);
}

double clip_global_norm(std::vector<Tensor>& grads, double max_norm) {
  NoGrad ng;
  const double norm = global_norm(grads).item();
  if (norm > max_norm && norm > 0) {
    for (auto& g : grads) g = mul_scalar(g, max_norm / norm);
  }
  return norm;
}

}  // namespace ttt::train
