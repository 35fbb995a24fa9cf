#include "ttt/meta_gradient.h"

#include <unistd.h>

#include <stdexcept>
#include <string>
#include <unordered_map>

#include "autodiff/add_into.h"
#include "io/cancel.h"

namespace ttt::e2e {
namespace {

Tensor leaf(const Tensor& t) { return t.detach().set_requires_grad(true); }

void accumulate(Tensor& acc, const Tensor& g) {
  NoGrad ng;
  if (!acc.defined()) acc = g;
  else if (!add_into(acc, g)) acc = add(acc, g);
}

}  // namespace

GraphBudget GraphBudget::machine_default() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page <= 0) return GraphBudget{size_t{1} << 30};
  return GraphBudget{static_cast<size_t>(pages) / 4 * static_cast<size_t>(page)};
}

GraphBudget GraphBudget::megabytes(int64_t mb) {
  if (mb < 0) return machine_default();
  const uint64_t limit = SIZE_MAX >> 20;
  return GraphBudget{static_cast<uint64_t>(mb) >= limit ? SIZE_MAX : static_cast<size_t>(mb) << 20};
}

MetaGradient meta_gradient(const model::Model& m, const std::vector<int32_t>& inputs,
                           const std::vector<int32_t>& targets, const TTTOptions& opt, GraphBudget budget) {
  validate(opt);
  const auto& cfg = m.config();
  const auto params = m.parameters();
  MetaGradient out;
  if (!cfg.prime) {  // pretraining: one graph over the whole sequence
    Tensor loss = training_loss(m, inputs, targets, opt);
    out.loss = loss.item();
    out.grads = grad({loss}, params);
    return out;
  }
  // training_loss validates the tokens and the chunking; do the same checks up front.
  const int64_t t = static_cast<int64_t>(inputs.size());
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
  out.chunks = chunks;
  double total = 0;

  // Kept chunks [0, kept): their whole graph (second-order inner steps included) from one pass.
  DeviceMemory& memory = device_memory(m.device());
  const size_t base = memory.memory_stats().bytes_in_use;
  auto keep_next = [&](int64_t k) {
    if (budget.bytes == 0) return false;
    if (budget.bytes == SIZE_MAX || k == 0) return true;
    const size_t now = memory.memory_stats().bytes_in_use, used = now > base ? now - base : 0;
    return used + used / static_cast<size_t>(k) <= budget.bytes;  // one more chunk of the mean size
  };
  const SuffixMemory start = SuffixMemory::start(m).leaves();
  SuffixMemory cur = start;  // the memory entering chunk `kept`, with the kept chunks' graph
  std::vector<Tensor> kept_x, kept_loss;
  int64_t kept = 0;
  {
    GradMode on(true);
    while (kept < chunks && keep_next(kept)) {
      io::check_cancelled();
      Tensor x = leaf(slice(h_first, 0, kept * b, (kept + 1) * b));
      const bool step = opt.ttt && kept + 1 < chunks;
      ChunkStep g = suffix_chunk(m, x, kept * b, part(kept), cur, step, opt, /*create_graph=*/true);
      total += g.loss.item();
      kept_x.push_back(std::move(x));
      kept_loss.push_back(std::move(g.loss));
      cur = std::move(g.next);
      ++kept;
    }
  }
  out.kept_chunks = kept;

  // Rematerialized chunks [kept, chunks): a forward sweep without an outer graph keeps the
  // suffix memory at each chunk boundary.
  std::vector<SuffixMemory> mems(chunks);  // the memory entering chunk c (phi_{c-1} scores it)
  {
    NoGrad ng;
    SuffixMemory mem = kept < chunks ? cur.detached() : SuffixMemory{};
    for (int64_t c = kept; c < chunks; ++c) {
      io::check_cancelled();
      mems[c] = mem;
      const bool step = opt.ttt && c + 1 < chunks;
      // The inner gradient needs a graph of this chunk (first order only).
      GradMode on(step);
      SuffixMemory in = mem;
      for (auto& p : in.phi) p = leaf(p);
      ChunkStep g = suffix_chunk(m, slice(h_first, 0, c * b, (c + 1) * b), c * b, part(c), in, step, opt,
                                 /*create_graph=*/false);
      total += g.loss.item();
      mem = g.next.detached();
    }
  }
  out.loss = total / static_cast<double>(chunks);

  // Backward sweep: rebuild each rematerialized chunk's graph from leaves and pull adjoints
  // through it, then through the kept graph in one call.
  std::unordered_map<TensorImpl*, size_t> index;
  for (size_t i = 0; i < params.size(); ++i) index[params[i].impl()] = i;
  std::vector<Tensor> acc(params.size());
  std::vector<Tensor> d_x(chunks);  // adjoint of each chunk's rows of h_first
  std::vector<Tensor> d_next;       // adjoint of the memory leaving chunk c (SuffixMemory::tensors order)
  const Tensor mean_weight = full({}, 1.0 / static_cast<double>(chunks), h_first.dtype(), h_first.device());
  auto pull = [&](std::vector<Tensor> outs, std::vector<Tensor> couts, const std::vector<Tensor>& next,
                  const std::vector<Tensor>& xs, const SuffixMemory& in, int64_t c0) {
    if (!next.empty()) {
      if (next.size() != d_next.size()) throw std::logic_error("meta_gradient: the suffix memory changed shape");
      outs.insert(outs.end(), next.begin(), next.end());
      couts.insert(couts.end(), d_next.begin(), d_next.end());
    }
    const auto in_tensors = in.tensors();
    std::vector<Tensor> ins = xs;
    ins.insert(ins.end(), in_tensors.begin(), in_tensors.end());
    const size_t n_local = ins.size();
    ins.insert(ins.end(), params.begin(), params.end());
    std::vector<Tensor> gs = grad(outs, ins, couts);  // create_graph off: plain adjoints
    NoGrad ng;
    for (size_t i = 0; i < xs.size(); ++i) d_x[static_cast<size_t>(c0) + i] = gs[i];
    d_next.assign(gs.begin() + static_cast<std::ptrdiff_t>(xs.size()), gs.begin() + static_cast<std::ptrdiff_t>(n_local));
    for (size_t i = n_local; i < gs.size(); ++i) accumulate(acc[i - n_local], gs[i]);
  };
  for (int64_t c = chunks - 1; c >= kept; --c) {
    io::check_cancelled();
    GradMode on(true);
    const SuffixMemory in = mems[c].leaves();
    mems[c] = SuffixMemory{};
    Tensor x = leaf(slice(h_first, 0, c * b, (c + 1) * b));
    const bool step = opt.ttt && c + 1 < chunks;
    ChunkStep g = suffix_chunk(m, x, c * b, part(c), in, step, opt, /*create_graph=*/true);
    pull({g.loss}, {mean_weight}, c + 1 < chunks ? g.next.tensors() : std::vector<Tensor>{}, {x}, in, c);
  }
  if (kept > 0) {
    pull(kept_loss, std::vector<Tensor>(static_cast<size_t>(kept), mean_weight),
         kept < chunks ? cur.tensors() : std::vector<Tensor>{}, kept_x, start, 0);
    kept_loss.clear();
    cur = SuffixMemory{};
  }
  // phi_0 is the prime blocks' checkpoint weights.
  {
    const auto phi0 = m.phi0();
    for (size_t i = 0; i < phi0.size(); ++i) accumulate(acc[index.at(phi0[i].impl())], d_next[i]);  // phi comes first
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
