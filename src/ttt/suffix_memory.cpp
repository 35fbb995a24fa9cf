#include "ttt/suffix_memory.h"

#include <stdexcept>

namespace ttt::e2e {

SuffixMemory SuffixMemory::start(const model::Model& m, bool differentiable, model::KvDtype kv) {
  const auto& cfg = m.config();
  SuffixMemory s;
  for (int64_t l = cfg.first_prime_layer(); l < cfg.num_hidden_layers; ++l) s.mixers.push_back(m.mixer(l).start_state(kv));
  for (auto& p : m.phi0()) s.phi.push_back(differentiable ? p : p.detach());
  return s;
}

size_t SuffixMemory::bytes() const {
  size_t n = 0;
  for (auto& st : mixers) n += st.bytes();
  for (auto& p : phi)
    if (p.defined()) n += static_cast<size_t>(p.numel()) * dtype_size(p.dtype());
  return n;
}

SuffixMemory SuffixMemory::deep_copy() const {
  NoGrad ng;
  SuffixMemory out;
  for (auto& st : mixers) out.mixers.push_back(st.deep_copy());
  for (auto& p : phi) out.phi.push_back(p.defined() ? clone(p.detach()) : p);
  return out;
}

SuffixMemory SuffixMemory::detached() const {
  SuffixMemory out;
  for (auto& st : mixers) out.mixers.push_back(st.detached());
  for (auto& p : phi) out.phi.push_back(p.detach());
  return out;
}

SuffixMemory SuffixMemory::leaves() const {
  SuffixMemory out;
  for (auto& st : mixers) {
    model::MixerState l;
    for (auto& t : st.tensors) l.tensors.push_back(t.detach().set_requires_grad(true));
    out.mixers.push_back(std::move(l));
  }
  for (auto& p : phi) out.phi.push_back(p.detach().set_requires_grad(true));
  return out;
}

std::vector<Tensor> SuffixMemory::tensors() const {
  std::vector<Tensor> out(phi.begin(), phi.end());
  for (auto& st : mixers) out.insert(out.end(), st.tensors.begin(), st.tensors.end());
  return out;
}

ChunkStep suffix_chunk(const model::Model& m, const Tensor& x_in, int64_t pos0, const std::vector<int32_t>& targets,
                       const SuffixMemory& in, bool step, const TTTOptions& opt, bool create_graph, bool keep_mixers) {
  const auto& cfg = m.config();
  const int64_t first = cfg.first_prime_layer(), L = cfg.num_hidden_layers;
  if (static_cast<int64_t>(in.mixers.size()) != L - first || static_cast<int64_t>(in.phi.size()) != 3 * (L - first))
    throw std::invalid_argument("suffix_chunk: the memory does not match the model's " + std::to_string(L - first) +
                                " suffix blocks");
  ChunkStep out;
  if (keep_mixers) out.next.mixers.resize(in.mixers.size());
  Tensor x = x_in;
  for (int64_t l = first; l < L; ++l) {
    const size_t i = static_cast<size_t>(l - first);
    x = m.block_forward(l, x, pos0, &in.mixers[i], keep_mixers ? &out.next.mixers[i] : nullptr, &in.phi[3 * i]);
  }
  out.nll = m.token_nll(x, targets);
  out.loss = model::masked_mean(out.nll, targets, static_cast<int32_t>(cfg.bos_token_id));
  out.next.phi = step ? inner_step(out.loss, in.phi, opt, create_graph) : in.phi;
  return out;
}

}  // namespace ttt::e2e
