// Per-op profile of a run (issue 15): while enabled, backend_for() hands out a decorator of the
// real backend that times every call and counts its FLOPs (matrix products, attention) and bytes
// (everything else), by op name. What the backend does not see (graph bookkeeping, allocation,
// dispatch, Python-free glue) is the wall time minus the sum: reported as "outside the backend".
// Used by `ttt bench profile`; costs nothing when disabled (one branch in backend_for).
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace ttt {
class Backend;
}

namespace ttt::profile {

struct OpStat {
  std::string op;  // backend method, matmul split into gemv (one row) and gemm
  int64_t calls = 0;
  double seconds = 0;
  double flops = 0;  // matmul and attention only
  double bytes = 0;  // inputs plus outputs (the other ops)
};

void enable(bool on);
// Matrix products one row per shape ("matmul gemm 1x[256,704]x[704,256]^T"), to find the slow ones.
void by_shape(bool on);
bool enabled();
void reset();
// Sorted by time, largest first.
std::vector<OpStat> snapshot();
// The decorator around `inner` (backend_for uses it while enabled).
Backend& wrap(Backend& inner);

// A table: op, calls, seconds, share of wall, GFLOP/s and % of peak (or GB/s), and the time
// outside the backend.
void print(const std::vector<OpStat>& ops, double wall_seconds, double peak_gflops, std::FILE* out);

}  // namespace ttt::profile
