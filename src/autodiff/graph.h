// Reverse-mode autodiff with exact higher derivatives.
//
// Every differentiable op records a Node holding its inputs and a backward rule. Backward rules
// are written with the same differentiable ops (autodiff/ops.h), so running them with grad mode
// on (create_graph) records a graph of the gradient itself: gradients of gradients are exact,
// as with PyTorch's create_graph=True. With create_graph off, backward runs in no-grad mode and
// builds nothing.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace ttt {

// Grad mode is per thread. NoGrad: ops record nothing (inference, optimizer updates).
bool grad_enabled();
class GradMode {
 public:
  explicit GradMode(bool enabled);
  ~GradMode();
  GradMode(const GradMode&) = delete;
  GradMode& operator=(const GradMode&) = delete;

 private:
  bool saved_;
};
struct NoGrad : GradMode {
  NoGrad() : GradMode(false) {}
};

struct Node {
  // grads[i] for inputs[i]; an undefined Tensor means "no gradient" (or not needed).
  using Backward = std::function<std::vector<Tensor>(const Tensor& grad_out, const Tensor& out,
                                                     const std::vector<bool>& needs)>;
  const char* name = "";  // a string literal: no allocation per op
  std::vector<Tensor> inputs;
  Backward backward;
  std::weak_ptr<TensorImpl> output;  // weak: the output owns this node
};

// True if any input requires grad and grad mode is on: the op must record a node.
bool needs_graph(std::initializer_list<const Tensor*> inputs);
bool needs_graph(const std::vector<Tensor>& inputs);

// Attaches a node to `out` (which must be freshly created by the op).
void record(Tensor& out, const char* name, std::vector<Tensor> inputs, Node::Backward backward);

// Gradients of sum_i <grad_outputs[i], outputs[i]> with respect to `inputs`.
// grad_outputs may be empty when every output is a scalar (ones are used).
// create_graph: the returned gradients are themselves differentiable.
// allow_unused: inputs that do not influence the outputs get zeros (else an error is thrown).
std::vector<Tensor> grad(const std::vector<Tensor>& outputs, const std::vector<Tensor>& inputs,
                         const std::vector<Tensor>& grad_outputs = {}, bool create_graph = false,
                         bool allow_unused = true);

}  // namespace ttt
