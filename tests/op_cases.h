// Every differentiable op of autodiff/ops.h (and every sequence mixer as one op), as cases that
// both op checks run: tests/test_ops.cpp against finite differences in float64, and
// tests/test_backend_ops.cpp across backends.
#pragma once
#include <vector>

#include "gradcheck.h"

namespace ttt::test {

std::vector<OpCase> all_op_cases();

// Shared input makers: float64 normals, and n ids below limit.
Tensor rn(Rng& r, const Shape& s, double sd = 1.0);
std::vector<int32_t> rand_ids(Rng& r, int64_t n, int64_t limit);

}  // namespace ttt::test
