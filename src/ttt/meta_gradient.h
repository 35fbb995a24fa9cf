// The gradient of the training objective (inner_loop.h) with respect to every
// parameter, with per-chunk rematerialization where memory requires it.
//
// Keeping the graph of every chunk (including the second-order graph of every inner step) is the
// fastest and holds the most memory. Rematerializing a chunk instead: a forward sweep without a
// graph keeps only the chunk-boundary states (phi and the window caches), and a backward sweep
// in reverse rebuilds one chunk's graph at a time and pulls the adjoints of phi and of the caches
// back through it; that costs the chunk's forward and inner step once more (measured: +28% per
// meta step at 8K on the bench model). Both meet in one pass: the first chunks keep their graph
// while it fits the budget, the rest are rematerialized, and the adjoint of the memory at the
// boundary joins them. The graph of the first L-S blocks, which any gradient needs, is built once
// either way. The result is the same gradient (tests check every split against the full graph).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "model/model.h"
#include "ttt/inner_loop.h"

namespace ttt::e2e {

struct MetaGradient {
  double loss = 0;
  std::vector<Tensor> grads;  // aligned with Model::named_parameters()
  int64_t chunks = 0, kept_chunks = 0;  // chunks, and of those the ones not rematerialized
};

// How much chunk graph the meta-gradient may hold: the first chunks keep theirs while the tensor
// memory allocated since the suffix started (measured, and projected one chunk ahead) stays
// within `bytes`. The choice depends only on the shapes and the budget, never on timing, so
// reruns and resumed runs make the same split.
struct GraphBudget {
  size_t bytes = 0;
  static GraphBudget rematerialize_all() { return GraphBudget{0}; }
  static GraphBudget keep_all() { return GraphBudget{SIZE_MAX}; }
  // A quarter of the machine's physical memory.
  static GraphBudget machine_default();
  static GraphBudget megabytes(int64_t mb);  // mb < 0: machine_default()
};

// The model's parameters must require grad.
MetaGradient meta_gradient(const model::Model& m, const std::vector<int32_t>& inputs,
                           const std::vector<int32_t>& targets, const TTTOptions& opt = {},
                           GraphBudget budget = GraphBudget::machine_default());

}  // namespace ttt::e2e
