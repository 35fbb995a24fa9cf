#include "ttt/inner_loop.h"

#include <cmath>
#include <stdexcept>
#include <string>

#include "io/cancel.h"

namespace ttt::e2e {
namespace {

void check_tokens(const model::Model& m, const std::vector<int32_t>& inputs, const std::vector<int32_t>& targets) {
  if (inputs.empty()) throw std::invalid_argument("empty token sequence");
  if (inputs.size() != targets.size()) throw std::invalid_argument("inputs and targets differ in length");
  const int64_t v = m.config().vocab_size;
  for (const auto* seq : {&inputs, &targets})
    for (size_t i = 0; i < seq->size(); ++i)
      if ((*seq)[i] < 0 || (*seq)[i] >= v)
        throw std::invalid_argument("token id " + std::to_string((*seq)[i]) + " at position " + std::to_string(i) +
                                    " is out of range [0, " + std::to_string(v) + ")");
}

std::vector<int32_t> part(const std::vector<int32_t>& v, int64_t s, int64_t e) {
  return std::vector<int32_t>(v.begin() + s, v.begin() + e);
}

}  // namespace

PrefillResult prefill(const model::Model& m, const std::vector<int32_t>& inputs, const std::vector<int32_t>& targets,
                      const TTTOptions& opt) {
  validate(opt);
  check_tokens(m, inputs, targets);
  const auto& cfg = m.config();
  const int64_t t = static_cast<int64_t>(inputs.size()), L = cfg.num_hidden_layers;
  const int64_t first = cfg.first_prime_layer(), b = cfg.mini_batch_size;
  const bool use_ttt = opt.ttt && cfg.prime;
  PrefillResult res;
  res.nll.reserve(t);

  NoGrad no_grad;
  // Read in segments (the TTT chunks; 1024 tokens without TTT), every block carrying its mixer
  // state from one segment to the next as a decoding session does: memory is bounded by the
  // windows and one segment, not by the sequence (a 1B-shaped model's 9K-token prefill took 13 GB
  // when the first blocks read the whole sequence at once).
  // The first L-S blocks do not depend on phi: with TTT they read whole numbers of chunks at a
  // time (about 1024 tokens, larger and faster matrix products), and the suffix then takes the
  // segment's chunks one by one.
  const int64_t seg = use_ttt ? b * std::max<int64_t>(1, 1024 / b) : 1024;
  const int64_t whole = use_ttt ? first : L;
  std::vector<model::MixerState> caches;
  for (int64_t l = 0; l < whole; ++l) caches.push_back(m.mixer(l).start_state(opt.kv_dtype));
  SuffixMemory mem = SuffixMemory::start(m, false, opt.kv_dtype);
  for (int64_t s = 0; s < t; s += seg) {
    io::check_cancelled();
    const int64_t e = std::min(t, s + seg);
    Tensor h = m.embed_tokens(part(inputs, s, e));
    for (int64_t l = 0; l < whole; ++l) {
      model::MixerState next;
      h = m.block_forward(l, h, s, &caches[static_cast<size_t>(l)], &next);
      caches[static_cast<size_t>(l)] = next.detached();
    }
    if (!use_ttt) {
      auto v = m.token_nll(h, part(targets, s, e)).to_floats();
      res.nll.insert(res.nll.end(), v.begin(), v.end());
      continue;
    }
    for (int64_t cs = s; cs < e; cs += b) {
      const int64_t ce = std::min(e, cs + b);
      const bool update = (ce - cs == b) && ce < t;  // a step after the last chunk would change nothing here
      ChunkStep r;
      {
        GradMode mode(update);
        if (update)
          for (auto& p : mem.phi) p = p.detach().set_requires_grad(true);
        const Tensor hc = e - s == ce - cs ? h : slice(h, 0, cs - s, ce - s);
        r = suffix_chunk(m, hc, cs, part(targets, cs, ce), mem, update, opt, /*create_graph=*/false);
        res.updates += update;
      }
      mem = r.next.detached();
      auto v = r.nll.to_floats();
      res.nll.insert(res.nll.end(), v.begin(), v.end());
    }
  }
  double sum = 0, count = 0;
  for (int64_t i = 0; i < t; ++i)
    if (targets[i] != cfg.bos_token_id) {
      sum += res.nll[i];
      count += 1;
    }
  res.loss = count > 0 ? sum / count : 0.0;
  return res;
}

Tensor training_loss(const model::Model& m, const std::vector<int32_t>& inputs, const std::vector<int32_t>& targets,
                     const TTTOptions& opt) {
  validate(opt);
  check_tokens(m, inputs, targets);
  const auto& cfg = m.config();
  const int64_t t = static_cast<int64_t>(inputs.size()), L = cfg.num_hidden_layers;
  const int32_t bos = static_cast<int32_t>(cfg.bos_token_id);
  Tensor h = m.embed_tokens(inputs);
  if (!cfg.prime) {
    for (int64_t l = 0; l < L; ++l) h = m.block_forward(l, h, 0, nullptr, nullptr);
    const Tensor nll = m.token_nll(h, targets);
    // The official pretrain mode: the mean over chunks of b tokens of each chunk's masked mean
    // (the last chunk may be shorter). It differs from the masked mean over the sequence only
    // where BOS targets fall unevenly across chunks.
    const int64_t b = cfg.mini_batch_size;
    if (t <= b) return model::masked_mean(nll, targets, bos);
    Tensor total;
    int64_t chunks = 0;
    for (int64_t s = 0; s < t; s += b, ++chunks) {
      const int64_t e = std::min(t, s + b);
      Tensor c = model::masked_mean(slice(nll, 0, s, e), part(targets, s, e), bos);
      total = total.defined() ? add(total, c) : c;
    }
    return mul_scalar(total, 1.0 / static_cast<double>(chunks));
  }
  const int64_t first = cfg.first_prime_layer(), b = cfg.mini_batch_size;
  if (t % b != 0)
    throw std::invalid_argument("sequence length " + std::to_string(t) + " is not a multiple of mini_batch_size " +
                                std::to_string(b) + " (required by the meta-learning objective)");
  for (int64_t l = 0; l < first; ++l) h = m.block_forward(l, h, 0, nullptr, nullptr);
  SuffixMemory mem = SuffixMemory::start(m, /*differentiable=*/true);
  Tensor total;
  const int64_t chunks = t / b;
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t s = c * b, e = s + b;
    ChunkStep r = suffix_chunk(m, slice(h, 0, s, e), s, part(targets, s, e), mem, opt.ttt && c + 1 < chunks, opt,
                               /*create_graph=*/true);
    total = total.defined() ? add(total, r.loss) : r.loss;
    mem = std::move(r.next);
  }
  return mul_scalar(total, 1.0 / static_cast<double>(chunks));
}

}  // namespace ttt::e2e
