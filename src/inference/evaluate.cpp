#include "inference/evaluate.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "autodiff/ops.h"
#include "inference/session.h"

namespace ttt::inference {
namespace {

// Teacher-forced decode: the NLL of each target from the logits after feeding its input.
e2e::PrefillResult stream_eval(const model::Model& m, const std::vector<int32_t>& inputs,
                               const std::vector<int32_t>& targets, const e2e::TTTOptions& opt) {
  Session s(m, opt);
  e2e::PrefillResult res;
  double sum = 0, count = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const auto logits = s.step(inputs[i]);
    double mx = logits[0];
    for (float v : logits) mx = std::max(mx, static_cast<double>(v));
    double z = 0;
    for (float v : logits) z += std::exp(v - mx);
    const double nll = std::log(z) + mx - logits[targets[i]];
    res.nll.push_back(static_cast<float>(nll));
    if (targets[i] != m.config().bos_token_id) {
      sum += res.nll.back();
      count += 1;
    }
  }
  res.loss = count > 0 ? sum / count : 0.0;
  res.updates = s.ttt_steps();
  return res;
}

[[noreturn]] void nonfinite_loss(const model::Model& m, const std::string& where) {
  const std::string bad = model::first_nonfinite_parameter(m);
  throw std::runtime_error("the loss is not finite" + where +
                           (bad.empty() ? "; every weight is finite (an overflow in the computation)"
                                        : "; parameter " + bad + " holds non-finite values"));
}

}  // namespace

e2e::PrefillResult evaluate_tokens(const model::Model& m, const std::vector<int32_t>& inputs,
                                   const std::vector<int32_t>& targets, const e2e::TTTOptions& opt, bool stream) {
  auto res = stream ? stream_eval(m, inputs, targets, opt) : e2e::prefill(m, inputs, targets, opt);
  if (std::isfinite(res.loss)) return res;
  for (size_t i = 0; i < res.nll.size(); ++i)
    if (!std::isfinite(res.nll[i]))
      nonfinite_loss(m, ", first at position " + std::to_string(i) + " (NLL " + std::to_string(res.nll[i]) + ")");
  nonfinite_loss(m, "");
}

e2e::MetaGradient checked_gradient(const model::Model& m, const std::vector<int32_t>& inputs,
                                   const std::vector<int32_t>& targets, const e2e::TTTOptions& opt,
                                   e2e::GraphBudget budget) {
  auto res = e2e::meta_gradient(m, inputs, targets, opt, budget);
  if (!std::isfinite(res.loss)) nonfinite_loss(m, "");
  for (size_t i = 0; i < res.grads.size(); ++i) {
    res.grads[i] = contiguous(res.grads[i]);  // the Python module hands these out as arrays
    if (count_nonfinite(res.grads[i]) > 0)
      throw std::runtime_error("the gradient of " + m.named_parameters()[i].first +
                               " is not finite; nothing was written");
  }
  return res;
}

}  // namespace ttt::inference
