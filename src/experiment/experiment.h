// `ttt experiment`: the project's main job. On the default corpus (Linux kernel source), it
// trains the paper's seven models of one shape on the same tokens (full attention, SWA, the
// SWA/full hybrid, Mamba 2, Gated DeltaNet, TTT-KVB, TTT-E2E), evaluates them and TTT-E2E with
// its inner steps off (held-out loss, loss vs context length, repeated-span recall, RULER-style
// needle tests after a short needle-task tuning, prefill and decode latency vs context), writes
// REPORT.md with 95% bootstrap intervals, tables and plots (PNG, SVG), and prints the headline table.
// Every stage resumes: an interrupted run picks up where it stopped.
#pragma once
#include <cstdint>
#include <string>

namespace ttt::experiment {

struct ExperimentOptions {
  bool quick = false;             // fewer steps, shorter contexts
  std::string data_dir = "data/linux-6.1";
  std::string out_dir;            // default: runs/experiment or runs/quick
  int64_t steps = 0;              // 0: 300 (quick: 100)
  int64_t batch = 4;
  int64_t seq_len = 1024;
  int64_t max_corpus_tokens = 0;  // training-split cap when the corpus must be built; 0: 20M
  // Needle tests: each trained model is tuned this many more steps on a needle-task mix, then
  // evaluated on pass-key / number / UUID retrieval. 0: the default (150, quick 60); -1: skip.
  int64_t needle_steps = 0;
  uint64_t seed = 1;
};

int run_experiment(ExperimentOptions opt);

}  // namespace ttt::experiment
