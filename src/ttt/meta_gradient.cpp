#include "ttt/meta_gradient.h"

#include <stdexcept>
#include <string>
#include <unordered_map>

namespace ttt::e2e {
namespace {

Tensor leaf(const Tensor& t) { return t.detach().set_requires_grad(true); }

void accumulate(Tensor& acc, const Tensor& g) {
  NoGrad ng;
  acc = acc.defined() ? add(acc, g) : g;
}

// One chunk's graph, built from leaves so that its gradients stop at the chunk boundary.
struct ChunkGraph {
  Tensor loss;                     // chunk mean loss
  model::Phi phi_next;             // phi after the inner step (phi itself if no step)
  std::vector<model::MixerState> caches_next;
};

ChunkGraph chunk_graph(const model::Model& m, const Tensor& x_in, int64_t pos0, const std::vector<int32_t>& tg,
                       std::vector<model::MixerState>& caches, model::Phi& phi, bool step, const TTTOptions& opt) {
  const auto& cfg = m.config();
  const int64_t first = cfg.first_prime_layer(), L = cfg.num_hidden_layers;
  ChunkGraph g;
  g.caches_next.resize(L - first);
  Tensor x = x_in;
  for (int64_t l = first; l < L; ++l)
    x = m.block_forward(l, x, pos0, &caches[l - first], &g.caches_next[l - first], &phi[3 * (l - first)]);
  g.loss = model::masked_mean(m.token_nll(x, tg), tg, static_cast<int32_t>(cfg.bos_token_id));
  if (step) {
    g.phi_next = inner_step(g.loss, phi, opt, /*create_graph=*/grad_enabled());
  } else {
    g.phi_next = phi;  // carried unchanged to the next chunk
  }
  return g;
}

}  // namespace

MetaGradient meta_gradient(const model::Model& m, const std::vector<int32_t>& inputs,
                           const std::vector<int32_t>& targets, const TTTOptions& opt, bool rematerialize) {
  validate(opt);
  const auto& cfg = m.config();
  const auto params = m.parameters();
  MetaGradient out;
  if (!rematerialize || !cfg.prime) {
    Tensor loss = training_loss(m, inputs, targets, opt);
    out.loss = loss.item();
    out.grads = grad({loss}, params);
    return out;
  }
  // training_loss validates the tokens and the chunking; do the same checks up front.
  const int64_t t = static_cast<int64_t>(inputs.size()), L = cfg.num_hidden_layers;
  const int64_t first = cfg.first_prime_layer(), b = cfg.mini_batch_size;
  if (inputs.empty() || inputs.size() != targets.size()) throw std::invalid_argument("bad token sequence");
  for (const auto* seq : {&inputs, &targets})
    for (size_t i = 0; i < seq->size(); ++i)
      if ((*seq)[i] < 0 || (*seq)[i] >= cfg.vocab_size)
        throw std::invalid_argument("token id " + std::to_string((*seq)[i]) + " at position " + std::to_string(i) +
                                    " is out of range [0, " + std::to_string(cfg.vocab_size) + ")");
  if (t % b != 0)
    throw std::invalid_argument("sequence length " + std::to_string(t) + " is not a multiple of mini_batch_size " +
                                std::to_string(b) + " (required by the meta-learning objective)");
  const int64_t chunks = t / b;
  auto part = [&](int64_t c) { return std::vector<int32_t>(targets.begin() + c * b, targets.begin() + (c + 1) * b); };

  // The first L-S blocks run once, with their graph kept for the final backward (it is the
  // same memory a pretraining gradient needs); the chunks start from a detached copy.
  Tensor h_graph;
  {
    GradMode on(true);
    h_graph = m.embed_tokens(inputs);
    for (int64_t l = 0; l < first; ++l) h_graph = m.block_forward(l, h_graph, 0, nullptr, nullptr);
  }
  const Tensor h_first = h_graph.detach();
  // Forward sweep over the chunks without an outer graph: keep the chunk-boundary states.
  std::vector<model::Phi> phis(chunks);                   // phi_{c-1}: the weights that score chunk c
  std::vector<std::vector<model::MixerState>> caches(chunks);  // caches entering chunk c
  double total = 0;
  {
    NoGrad ng;
    model::Phi phi;
    for (auto& p : m.phi0()) phi.push_back(p.detach());
    std::vector<model::MixerState> cache(L - first);
    for (int64_t c = 0; c < chunks; ++c) {
      phis[c] = phi;
      caches[c] = cache;
      const bool step = opt.ttt && c + 1 < chunks;
      // The inner gradient needs a graph of this chunk (first order only).
      GradMode on(step);
      model::Phi phi_leaf;
      for (auto& p : phi) phi_leaf.push_back(leaf(p));
      Tensor x = slice(h_first, 0, c * b, (c + 1) * b);
      std::vector<model::MixerState> cache_in = cache;
      ChunkGraph g = chunk_graph(m, x, c * b, part(c), cache_in, phi_leaf, false, opt);
      total += g.loss.item();
      if (step) phi = inner_step(g.loss, phi_leaf, opt, /*create_graph=*/false);
      for (auto& st : g.caches_next) st = st.detached();
      cache = std::move(g.caches_next);
    }
  }
  out.loss = total / static_cast<double>(chunks);

  // Backward sweep: rebuild each chunk's graph from leaves and pull adjoints through it.
  std::unordered_map<TensorImpl*, size_t> index;
  for (size_t i = 0; i < params.size(); ++i) index[params[i].impl()] = i;
  std::vector<Tensor> acc(params.size());
  std::vector<Tensor> d_x(chunks);  // adjoint of each chunk's rows of h_first
  model::Phi d_phi;                          // adjoint of the phi leaving chunk c
  std::vector<model::MixerState> d_cache(L - first);  // adjoint of the caches leaving chunk c
  for (int64_t c = chunks - 1; c >= 0; --c) {
    GradMode on(true);
    model::Phi phi_leaf;
    for (auto& p : phis[c]) phi_leaf.push_back(leaf(p));
    std::vector<model::MixerState> cache_leaf(L - first);
    for (int64_t i = 0; i < L - first; ++i)
      for (const auto& t : caches[c][i].tensors) cache_leaf[i].tensors.push_back(leaf(t));
    Tensor x = leaf(slice(h_first, 0, c * b, (c + 1) * b));
    const bool step = opt.ttt && c + 1 < chunks;
    ChunkGraph g = chunk_graph(m, x, c * b, part(c), cache_leaf, phi_leaf, step, opt);

    std::vector<Tensor> outs = {g.loss}, couts = {full({}, 1.0 / static_cast<double>(chunks), g.loss.dtype())};
    if (c + 1 < chunks)
      for (size_t i = 0; i < g.phi_next.size(); ++i) {
        outs.push_back(g.phi_next[i]);
        couts.push_back(d_phi[i]);
      }
    if (c + 1 < chunks)
      for (int64_t i = 0; i < L - first; ++i)
        for (size_t j = 0; j < d_cache[i].tensors.size(); ++j) {
          outs.push_back(g.caches_next[i].tensors[j]);
          couts.push_back(d_cache[i].tensors[j]);
        }
    std::vector<Tensor> ins = {x};
    for (auto& p : phi_leaf) ins.push_back(p);
    for (auto& st : cache_leaf) ins.insert(ins.end(), st.tensors.begin(), st.tensors.end());
    const size_t n_local = ins.size();
    ins.insert(ins.end(), params.begin(), params.end());
    std::vector<Tensor> gs = grad(outs, ins, couts);  // create_graph off: plain adjoints
    NoGrad ng;
    d_x[c] = gs[0];
    d_phi.assign(gs.begin() + 1, gs.begin() + 1 + phi_leaf.size());
    size_t k = 1 + phi_leaf.size();
    std::vector<model::MixerState> d_prev(L - first);  // adjoint of each state entering chunk c
    for (int64_t i = 0; i < L - first; ++i)
      for (size_t j = 0; j < cache_leaf[i].tensors.size(); ++j) d_prev[i].tensors.push_back(gs[k++]);
    d_cache = std::move(d_prev);
    for (size_t i = n_local; i < gs.size(); ++i) accumulate(acc[i - n_local], gs[i]);
  }
  // phi_0 is the prime blocks' checkpoint weights.
  {
    const auto phi0 = m.phi0();
    for (size_t i = 0; i < phi0.size(); ++i) accumulate(acc[index.at(phi0[i].impl())], d_phi[i]);
  }
  // Finally the first L-S blocks and the embedding, once, with the accumulated adjoint.
  {
    auto gs = grad({h_graph}, params, {concat(d_x, 0)});
    for (size_t i = 0; i < gs.size(); ++i) accumulate(acc[i], gs[i]);
  }
  out.grads = std::move(acc);
  return out;
}

}  // namespace ttt::e2e
