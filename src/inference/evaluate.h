// What `ttt eval` and `ttt grad` compute, for every front end (the CLI, the Python module): the
// per-position NLLs of a token sequence (prefill, or teacher-forced decoding through a Session)
// and the gradient of its training objective, with the checks that turn a non-finite result into
// an error naming where it appeared instead of a printed "loss nan".
#pragma once
#include <cstdint>
#include <vector>

#include "model/model.h"
#include "ttt/inner_loop.h"
#include "ttt/meta_gradient.h"

namespace ttt::inference {

// `ttt eval`: prefill (stream = false) or token-by-token decoding with teacher forcing (stream =
// true); the result is checked for finiteness (std::runtime_error naming the first non-finite
// position and, if any, the first parameter holding non-finite values).
e2e::PrefillResult evaluate_tokens(const model::Model& m, const std::vector<int32_t>& inputs,
                                   const std::vector<int32_t>& targets, const e2e::TTTOptions& opt, bool stream);

// `ttt grad`: e2e::meta_gradient (the model's parameters must require grad), then the loss and
// every gradient element are checked for finiteness (std::runtime_error naming the parameter).
e2e::MetaGradient checked_gradient(const model::Model& m, const std::vector<int32_t>& inputs,
                                   const std::vector<int32_t>& targets, const e2e::TTTOptions& opt,
                                   e2e::GraphBudget budget);

}  // namespace ttt::inference
