#include "ttt/inner_step.h"

#include <cmath>
#include <stdexcept>
#include <string>

namespace ttt::e2e {

void validate(const TTTOptions& opt) {
  if (!std::isfinite(opt.inner_lr) || opt.inner_lr < 0)
    throw std::invalid_argument("inner learning rate must be a finite number >= 0, got " + std::to_string(opt.inner_lr));
  if (!std::isfinite(opt.clip_norm) || !(opt.clip_norm > 0))
    throw std::invalid_argument("inner gradient clip norm must be a finite number > 0, got " + std::to_string(opt.clip_norm));
}

model::Phi inner_step(const Tensor& loss, const model::Phi& phi, const TTTOptions& opt, bool create_graph) {
  std::vector<Tensor> g = grad({loss}, phi, {}, create_graph);
  model::Phi next(phi.size());
  if (create_graph) {
    g = clip_by_global_norm(g, opt.clip_norm);
    for (size_t i = 0; i < phi.size(); ++i) next[i] = sub(phi[i], mul_scalar(g[i], opt.inner_lr));
  } else {
    NoGrad ng;
    g = clip_by_global_norm(g, opt.clip_norm);
    for (size_t i = 0; i < phi.size(); ++i) next[i] = sub(phi[i].detach(), mul_scalar(g[i], opt.inner_lr));
  }
  return next;
}

}  // namespace ttt::e2e
