// In-place gradient accumulation (autodiff/graph.cpp, ttt/meta_gradient.cpp).
#pragma once
#include "tensor/tensor.h"

namespace ttt {

// acc += g in place, never recorded, when nothing else can see acc's memory (acc is the only
// handle on its tensor and storage, contiguous, without a graph, and g has its shape and dtype):
// gradient accumulation without a fresh tensor per term. Returns false, doing nothing, otherwise.
// The sum is rounded exactly as add(acc, g).
bool add_into(Tensor& acc, const Tensor& g);

}  // namespace ttt
