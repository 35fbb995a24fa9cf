#include "autodiff/graph.h"

#include <stdexcept>
#include <unordered_map>
#include <unordered_set>

#include "autodiff/add_into.h"
#include "autodiff/ops.h"

namespace ttt {
namespace {
thread_local bool tl_grad_enabled = true;
}

bool grad_enabled() { return tl_grad_enabled; }
GradMode::GradMode(bool enabled) : saved_(tl_grad_enabled) { tl_grad_enabled = enabled; }
GradMode::~GradMode() { tl_grad_enabled = saved_; }

bool needs_graph(std::initializer_list<const Tensor*> inputs) {
  if (!tl_grad_enabled) return false;
  for (auto* t : inputs)
    if (t && t->defined() && t->requires_grad()) return true;
  return false;
}

bool needs_graph(const std::vector<Tensor>& inputs) {
  if (!tl_grad_enabled) return false;
  for (auto& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

void record(Tensor& out, const char* name, std::vector<Tensor> inputs, Node::Backward backward) {
  auto node = std::make_shared<Node>();
  node->name = name;
  node->inputs = std::move(inputs);
  node->backward = std::move(backward);
  node->output = out.impl_ptr();
  out.impl()->grad_fn = std::move(node);
  out.impl()->requires_grad = true;
}

std::vector<Tensor> grad(const std::vector<Tensor>& outputs, const std::vector<Tensor>& inputs,
                         const std::vector<Tensor>& grad_outputs, bool create_graph,
                         bool allow_unused) {
  if (!grad_outputs.empty() && grad_outputs.size() != outputs.size())
    throw std::invalid_argument("grad: grad_outputs must match outputs in number");

  // Targets: the tensors whose gradients we return.
  std::unordered_map<TensorImpl*, size_t> target_index;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!inputs[i].defined()) throw std::invalid_argument("grad: undefined input tensor");
    target_index.emplace(inputs[i].impl(), i);
  }

  // Topological order of every tensor reachable from the outputs through recorded nodes, and
  // for each whether some target lies upstream of it (only those need backward work).
  std::vector<TensorImpl*> order;  // post-order: inputs before the tensors computed from them
  std::unordered_map<TensorImpl*, bool> leads_to_target;
  std::unordered_set<TensorImpl*> visited;
  struct Frame {
    TensorImpl* t;
    size_t next;
  };
  std::vector<Frame> stack;
  for (auto& o : outputs) {
    if (!o.defined()) throw std::invalid_argument("grad: undefined output tensor");
    if (visited.count(o.impl())) continue;
    visited.insert(o.impl());
    stack.push_back({o.impl(), 0});
    while (!stack.empty()) {
      Frame& f = stack.back();
      Node* node = f.t->grad_fn.get();
      if (node && f.next < node->inputs.size()) {
        TensorImpl* in = node->inputs[f.next++].impl();
        if (in && in->requires_grad && !visited.count(in)) {
          visited.insert(in);
          stack.push_back({in, 0});
        }
        continue;
      }
      bool leads = target_index.count(f.t) > 0;
      if (node)
        for (auto& in : node->inputs)
          if (in.defined()) {
            auto it = leads_to_target.find(in.impl());
            if (it != leads_to_target.end() && it->second) leads = true;
          }
      leads_to_target[f.t] = leads;
      order.push_back(f.t);
      stack.pop_back();
    }
  }

  GradMode mode(create_graph);
  std::unordered_map<TensorImpl*, Tensor> grads;
  auto accumulate = [&](TensorImpl* t, Tensor g) {
    auto it = grads.find(t);
    if (it == grads.end())
      grads.emplace(t, std::move(g));
    else if (create_graph || !add_into(it->second, g))  // in place where only this map holds it
      it->second = add(it->second, g);
  };
  for (size_t i = 0; i < outputs.size(); ++i) {
    Tensor g;
    if (grad_outputs.empty() || !grad_outputs[i].defined()) {
      if (outputs[i].numel() != 1)
        throw std::invalid_argument("grad: a non-scalar output needs an explicit grad_output");
      g = ones_like(outputs[i]);
    } else {
      if (grad_outputs[i].shape() != outputs[i].shape())
        throw std::invalid_argument("grad: grad_output shape " + shape_str(grad_outputs[i].shape()) +
                                    " does not match output shape " + shape_str(outputs[i].shape()));
      g = grad_outputs[i];
    }
    if (!create_graph) g = g.detach();
    accumulate(outputs[i].impl(), g);
  }

  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    TensorImpl* t = *it;
    Node* node = t->grad_fn.get();
    if (!node || !leads_to_target[t]) continue;
    auto git = grads.find(t);
    if (git == grads.end()) continue;  // no gradient flows here
    // A target that is also an intermediate keeps its gradient; we still propagate through it.
    Tensor g = git->second;
    std::vector<bool> needs(node->inputs.size(), false);
    bool any = false;
    for (size_t i = 0; i < node->inputs.size(); ++i) {
      const Tensor& in = node->inputs[i];
      if (!in.defined() || !in.requires_grad()) continue;
      auto lt = leads_to_target.find(in.impl());
      needs[i] = lt != leads_to_target.end() && lt->second;
      any = any || needs[i];
    }
    if (!any) continue;
    Tensor out(node->output.lock());
    std::vector<Tensor> in_grads = node->backward(g, out, needs);
    if (in_grads.size() != node->inputs.size())
      throw std::logic_error(std::string("backward of ") + node->name + " returned the wrong number of grads");
    for (size_t i = 0; i < in_grads.size(); ++i) {
      if (!needs[i] || !in_grads[i].defined()) continue;
      if (in_grads[i].shape() != node->inputs[i].shape())
        throw std::logic_error(std::string("backward of ") + node->name + " returned shape " +
                               shape_str(in_grads[i].shape()) + " for input of shape " +
                               shape_str(node->inputs[i].shape()));
      accumulate(node->inputs[i].impl(), std::move(in_grads[i]));
    }
    if (!target_index.count(t)) grads.erase(t);  // free intermediate gradients early
  }

  std::vector<Tensor> result(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    auto it = grads.find(inputs[i].impl());
    if (it != grads.end()) {
      result[i] = it->second;
    } else {
      if (!allow_unused)
        throw std::invalid_argument("grad: input " + std::to_string(i) + " does not affect the outputs");
      result[i] = zeros_like(inputs[i]);
    }
  }
  return result;
}

}  // namespace ttt
