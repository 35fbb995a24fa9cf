// The op-check harness: values against a simple reference, first derivatives against central
// finite differences, second derivatives (Hessian-vector products) against finite differences
// of the analytic gradient, all in float64; plus float32 against float64.
#pragma once
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "autodiff/ops.h"

namespace ttt::test {

struct OpCase {
  std::string name;
  // Makes the inputs for one seed (float64, leaves). Values should avoid kinks of the op.
  std::function<std::vector<Tensor>(Rng&)> make_inputs;
  std::function<Tensor(const std::vector<Tensor>&)> fn;
  // Optional reference: output values (row-major) from the inputs' values.
  std::function<std::vector<double>(const std::vector<Tensor>&)> reference;
  bool second_order = true;  // check Hessian-vector products too
  double fd_eps = 1e-6;
  double tol = 1e-6;         // relative to the largest magnitude compared
};

struct CheckReport {
  double value_err = 0, grad_err = 0, hvp_err = 0, f32_err = 0;
};

CheckReport check_op(const OpCase& c, uint64_t seed);

// Max |a-b| / max(1, max|b|).
double rel_err(const std::vector<double>& a, const std::vector<double>& b);

}  // namespace ttt::test
