// Per-op micro-benchmark (llama-bench / ggml-perf style): times each differentiable op of the
// engine at the model's shapes and reports it against the machine's measured sgemm rate.
//
// Method, per row:
//   * inputs are made once; one warm-up call; then the call is timed individually, repeated
//     until at least `repeats` samples AND at least `min_time` seconds have been collected
//     (capped at kMaxSamples); best and median are reported.
//   * forward rows run the op under NoGrad (no graph is recorded).
//   * "<op> backward" rows time only the backward pass: the forward graph of y = op(inputs) is
//     recorded once, outside the timing, and each sample is one
//     grad({y}, inputs, {r}, create_graph=false) with a fixed random cotangent r. The forward
//     is therefore never included in a backward time.
//   * compute-bound rows (matmul, attention) report GFLOP/s of useful FLOPs and % of the
//     measured sgemm peak; memory-bound rows report GB/s of minimal traffic (every input the
//     op must read, read once; every output written once; small index vectors not counted).
//   * attention counts only visible (query, key) pairs under the kernels/attention.h mask rule:
//     forward 4*D flops per pair (S = QK^T, O = PV), backward 10*D (S again, dP, dV, dQ, dK).
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "backend/attention_shape.h"
#include "tensor/tensor.h"

namespace ttt::bench {

// Sizes the benchmark runs at. Defaults are the TTT-E2E model shapes.
struct OpBenchShapes {
  int64_t tokens = 4096;      // rows of activations (T)
  int64_t d_model = 256;
  int64_t d_ff = 704;
  int64_t vocab = 4096;
  int64_t heads = 4;
  int64_t head_dim = 64;
  int64_t chunk = 1024;       // TTT chunk: Tq = chunk, keys = [cache of `window`; chunk]
  int64_t window = 1024;
  int64_t causal_len = 4096;  // full causal attention, no window
  int64_t gemm_n = 1024;      // square GEMM row (and the sgemm peak measurement)

  static OpBenchShapes tiny();  // seconds-free sizes for tests
};

struct OpBenchOptions {
  std::string filter;     // ECMAScript regex searched in the op name; empty: every op
  int repeats = 10;       // minimum timed samples per row (after one warm-up call)
  double min_time = 0.2;  // minimum timed seconds per row
  DType dtype = DType::F32;
  OpBenchShapes shapes;
  // The sgemm peak is measured before and after the op rows, each time over at least
  // peak_repeats calls and peak_min_time seconds; the best call is kept.
  int peak_repeats = 10;
  double peak_min_time = 0.5;
};

inline constexpr int kMaxSamples = 10000;

struct OpBenchRow {
  std::string op;     // e.g. "matmul", "matmul backward"
  std::string shape;  // e.g. "[4096,256]x[256,704]"
  DType dtype = DType::F32;
  int samples = 0;
  double best_s = 0, median_s = 0;
  double flops = 0;  // useful FLOPs per call; 0 for memory-bound rows
  double bytes = 0;  // minimal bytes moved per call; 0 for compute-bound rows
  double gflops() const { return flops > 0 && best_s > 0 ? flops / best_s * 1e-9 : 0; }
  double gbps() const { return bytes > 0 && best_s > 0 ? bytes / best_s * 1e-9 : 0; }
};

struct OpBenchReport {
  std::string blas_library, blas_core, blas_how;
  int blas_threads = 1;
  int pool_threads = 1;
  int64_t peak_n = 0;        // sgemm peak measured at peak_n^3, float32
  int peak_samples = 0;      // timed calls over both measurements
  double peak_best_s = 0;
  double peak_gflops = 0;
  DType dtype = DType::F32;
  std::vector<OpBenchRow> rows;
  double pct_of_peak(const OpBenchRow& r) const {
    return peak_gflops > 0 && r.flops > 0 ? 100.0 * r.gflops() / peak_gflops : 0;
  }
};

// Runs the benchmark; when `progress` is non-null, writes one line per step to it. Throws
// std::invalid_argument on a bad filter regex or options; a filter matching nothing yields no
// rows (the sgemm peak is still measured).
OpBenchReport run_op_bench(const OpBenchOptions& opt, std::FILE* progress = nullptr);

// The setup lines (BLAS library, kernel and how it was chosen, threads, sgemm peak, method)
// followed by the Markdown table, columns aligned.
void print_op_bench(const OpBenchReport& report, std::FILE* out);

// JSON document of the report (setup, sgemm peak, one object per row; null where n/a).
std::string op_bench_json(const OpBenchReport& report);

// Best time of one float32 sgemm n^3 call over at least `repeats` calls and `min_time` seconds,
// on OpenBLAS and on the engine's tiles (the faster of the two); `samples` is incremented by the
// number of timed calls.
double measure_sgemm_peak(int64_t n, int repeats, double min_time, int& samples);

using ttt::attention_visible_pairs;  // backend/attention_shape.h

}  // namespace ttt::bench
