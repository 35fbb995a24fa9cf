#include "inference/session.h"

#include <stdexcept>
#include <string>

namespace ttt::inference {

Session::Session(const model::Model& m, const e2e::TTTOptions& opt) : m_(m), opt_(opt) { reset(); }

void Session::reset() {
  const auto& cfg = m_.config();
  use_ttt_ = opt_.ttt && cfg.prime;
  pos_ = 0;
  steps_ = 0;
  caches_.assign(cfg.num_hidden_layers, {});
  chunk_start_.assign(cfg.num_hidden_layers - cfg.first_prime_layer(), {});
  phi_.clear();
  for (auto& p : m_.phi0()) phi_.push_back(p.detach());
  pending_h_.clear();
  pending_tokens_.clear();
  chunk_pos0_ = 0;
}

void Session::ttt_step(int32_t last_target) {
  const auto& cfg = m_.config();
  const int64_t first = cfg.first_prime_layer(), L = cfg.num_hidden_layers;
  std::vector<int32_t> targets(pending_tokens_.begin() + 1, pending_tokens_.end());
  targets.push_back(last_target);
  GradMode on(true);
  for (auto& p : phi_) p = p.detach().set_requires_grad(true);
  Tensor x = concat(pending_h_, 0);
  for (int64_t l = first; l < L; ++l)
    x = m_.block_forward(l, x, chunk_pos0_, &chunk_start_[l - first], nullptr, &phi_[3 * (l - first)]);
  Tensor loss = model::masked_mean(m_.token_nll(x, targets), targets, static_cast<int32_t>(cfg.bos_token_id));
  auto g = grad({loss}, phi_);
  NoGrad ng;
  g = clip_by_global_norm(g, opt_.clip_norm);
  for (size_t i = 0; i < phi_.size(); ++i) phi_[i] = sub(phi_[i].detach(), mul_scalar(g[i], opt_.inner_lr));
  ++steps_;
}

std::vector<float> Session::step(int32_t token) {
  const auto& cfg = m_.config();
  if (token < 0 || token >= cfg.vocab_size)
    throw std::invalid_argument("token id " + std::to_string(token) + " is out of range [0, " +
                                std::to_string(cfg.vocab_size) + ")");
  const int64_t first = cfg.first_prime_layer(), L = cfg.num_hidden_layers, b = cfg.mini_batch_size;
  if (use_ttt_ && static_cast<int64_t>(pending_tokens_.size()) == b) {
    ttt_step(token);
    pending_h_.clear();
    pending_tokens_.clear();
  }
  if (use_ttt_ && pending_tokens_.empty()) {
    chunk_pos0_ = pos_;
    for (int64_t l = first; l < L; ++l) chunk_start_[l - first] = caches_[l];
  }
  NoGrad ng;
  Tensor h = m_.embed_tokens({token});
  for (int64_t l = 0; l < L; ++l) {
    if (use_ttt_ && l == first) {
      pending_h_.push_back(h);
      pending_tokens_.push_back(token);
    }
    model::KVCache next;
    const Tensor* phi = l >= first && cfg.prime ? &phi_[3 * (l - first)] : nullptr;
    h = m_.block_forward(l, h, pos_, &caches_[l], &next, phi);
    // Own the cache rows: a slice would keep the whole concatenated buffer alive.
    caches_[l].k = contiguous(next.k);
    caches_[l].v = contiguous(next.v);
  }
  ++pos_;
  return m_.logits(h).to_floats();
}

size_t Session::state_bytes() const {
  size_t n = 0;
  auto add = [&](const Tensor& t) {
    if (t.defined()) n += t.numel() * dtype_size(t.dtype());
  };
  for (auto& c : caches_) {
    add(c.k);
    add(c.v);
  }
  for (auto& c : chunk_start_) {
    add(c.k);
    add(c.v);
  }
  for (auto& p : phi_) add(p);
  for (auto& h : pending_h_) add(h);
  return n + pending_tokens_.size() * sizeof(int32_t);
}

}  // namespace ttt::inference
