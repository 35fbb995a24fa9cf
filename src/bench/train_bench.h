// `ttt bench train`: training throughput of pretrain and meta-learning steps on the bench model
// (tokens/s and MFU against the measured sgemm peak), side by side in one run.
//
// Model FLOPs per step = 3 x the forward FLOPs (bench/context_bench.h) of the sequences, the
// usual convention; a meta step does more work than that (inner backward passes and their
// second-order terms), so its MFU reads lower for the same hardware efficiency.
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "tensor/device.h"

namespace ttt::bench {

struct TrainBenchOptions {
  int64_t seq_len = 4096;
  int steps = 3;  // timed steps after one warm-up step
  uint64_t seed = 1;
  int64_t graph_budget_mb = -1;  // as TrainOptions::graph_budget_mb
  Device device = Device::cpu();  // where the models train (MFU is reported for the CPU only)
};

struct TrainBenchRow {
  std::string model, mode;
  double step_seconds = 0, tokens_per_s = 0, model_flops = 0, mfu = 0;
  int64_t chunks = 0, kept_chunks = 0;  // meta-learning: chunks of the step, and those not rematerialized
};

std::vector<TrainBenchRow> run_train_bench(const TrainBenchOptions& opt, double& peak_gflops, std::FILE* progress);
void print_train_bench(const std::vector<TrainBenchRow>& rows, double peak_gflops, const TrainBenchOptions& opt,
                       std::FILE* out);

}  // namespace ttt::bench
