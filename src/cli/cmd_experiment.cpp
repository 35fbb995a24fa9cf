// `ttt experiment`: the main job (see src/experiment/experiment.h).
#include "cli/commands.h"
#include "experiment/experiment.h"

namespace ttt::cli {
namespace {
experiment::ExperimentOptions g_exp;
}

void register_experiment(CLI::App& app, Registry& reg) {
  auto* ex = app.add_subcommand("experiment",
                                "Main job: train the paper's seven models (TTT-E2E and six baselines) on the Linux source, evaluate with 95% intervals, write REPORT.md");
  ex->add_flag("--quick", g_exp.quick, "a smaller run: 100 steps per model, contexts to 8K");
  ex->add_option("--data", g_exp.data_dir, "corpus directory (built from linux-source-6.1 if missing)")->capture_default_str();
  ex->add_option("--out", g_exp.out_dir, "output directory (default runs/experiment, or runs/quick)");
  ex->add_option("--steps", g_exp.steps, "training steps per model (default 300, quick 100)");
  ex->add_option("--batch", g_exp.batch, "sequences per step")->capture_default_str();
  ex->add_option("--seq-len", g_exp.seq_len, "training sequence length")->capture_default_str();
  ex->add_option("--max-corpus-tokens", g_exp.max_corpus_tokens, "training-split cap when building the corpus (default 20M)");
  ex->add_option("--needle-steps", g_exp.needle_steps,
                 "needle-task tuning steps per model before the needle tests (default 150, quick 60; -1: skip the needle tests)");
  ex->add_option("--seed", g_exp.seed, "seed")->capture_default_str();
  static std::string device = "cpu";
  add_device_option(ex, device);
  reg.push_back({ex, [] {
                   // The main job trains and evaluates on the CPU; other devices are refused plainly.
                   if (device_option(device) != Device::cpu())
                     throw std::invalid_argument("experiment runs on the cpu device only");
                   return experiment::run_experiment(g_exp);
                 }});
}

}  // namespace ttt::cli
