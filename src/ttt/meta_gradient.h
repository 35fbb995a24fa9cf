// The gradient of the training objective (inner_loop.h) with respect to every
// parameter, with per-chunk rematerialization.
//
// Without rematerialization the graph of every chunk (including the second-order graph of every
// inner step) is alive at once. With it, a forward sweep without a graph keeps only the
// chunk-boundary states (the input of the first prime block for the sequence, and phi and the
// window caches at each chunk boundary) besides the graph of the first L-S blocks, which any
// gradient needs; a backward sweep over the chunks in reverse rebuilds one
// chunk's graph at a time and pulls the adjoints of phi and of the caches back through it. The
// result is the same gradient (tests check it against the full graph).
#pragma once
#include <vector>

#include "model/model.h"
#include "ttt/inner_loop.h"

namespace ttt::e2e {

struct MetaGradient {
  double loss = 0;
  std::vector<Tensor> grads;  // aligned with Model::named_parameters()
};

// The model's parameters must require grad.
MetaGradient meta_gradient(const model::Model& m, const std::vector<int32_t>& inputs,
                           const std::vector<int32_t>& targets, const TTTOptions& opt = {},
                           bool rematerialize = true);

}  // namespace ttt::e2e
