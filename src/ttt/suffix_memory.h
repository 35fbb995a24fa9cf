// The memory of a TTT-E2E model's suffix (its last S blocks) and the one chunk step that reads
// with it (SPEC section 3).
//
// What the suffix carries from chunk to chunk is, per block, its mixer's state
// (model/sequence_memory.h: the window cache for SWA) and the fast weights phi of its prime MLP.
// SuffixMemory holds both, so that prefill, the meta-learning objective, the rematerialized
// meta-gradient (which makes leaves of it and pulls adjoints back through it) and decoding
// sessions (fork, save/load) treat the TTT fast weights as what they are: sequence memory.
//
// suffix_chunk is the chunk step all of them call: the suffix blocks over one chunk, its
// per-token loss, and, when asked, the inner step (inner_step.h) that gives the next phi.
#pragma once
#include <cstdint>
#include <vector>

#include "model/model.h"
#include "ttt/inner_step.h"

namespace ttt::e2e {

struct SuffixMemory {
  std::vector<model::MixerState> mixers;  // per suffix block (empty state: nothing read yet)
  model::Phi phi;                         // {w1, w3, w2} of each prime MLP, in block order

  // The memory before any token: empty mixer states and phi_0. differentiable: phi_0 is the
  // model's own parameter tensors (the meta-learning objective differentiates through them);
  // otherwise detached views of them.
  // kv: how the suffix blocks' attention caches are kept (sessions and prefill).
  static SuffixMemory start(const model::Model& m, bool differentiable = false,
                            model::KvDtype kv = model::KvDtype::F32);

  size_t bytes() const;
  SuffixMemory deep_copy() const;  // independent storage, no graph (fork)
  SuffixMemory detached() const;   // no graph; mixer states contiguous and owning their rows
  SuffixMemory leaves() const;     // every tensor a fresh leaf that requires grad
  // phi, then every block's mixer tensors in order: how gradients address the memory.
  std::vector<Tensor> tensors() const;
};

struct ChunkStep {
  Tensor nll;         // [n] per-token NLL (masked positions included)
  Tensor loss;        // mean NLL over targets that are not BOS
  SuffixMemory next;  // mixer states after the chunk; phi after the inner step (unchanged without one)
};

// x [n, d]: the first suffix block's input at positions pos0 .. pos0+n-1; targets: the n next
// tokens. step: one inner step on the chunk's loss gives next.phi (in.phi must then be part of
// a graph: leaves that require grad, or tensors with one); create_graph keeps the step's own
// graph (second order, for the meta-learning objective). keep_mixers false: next.mixers stays
// empty (a decoding session has already advanced its states).
ChunkStep suffix_chunk(const model::Model& m, const Tensor& x, int64_t pos0, const std::vector<int32_t>& targets,
                       const SuffixMemory& in, bool step, const TTTOptions& opt, bool create_graph,
                       bool keep_mixers = true);

}  // namespace ttt::e2e
