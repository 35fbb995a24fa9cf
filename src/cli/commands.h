// Subcommand registry: each register_* adds a CLI11 subcommand and the body to run when it is
// chosen; main() parses, then runs the chosen body with errors turned into one-line messages.
#pragma once
#include <CLI/CLI.hpp>

#include <functional>
#include <vector>

namespace ttt::cli {

struct Command {
  CLI::App* app;
  std::function<int()> run;
};
using Registry = std::vector<Command>;

void register_info(CLI::App& app, Registry& reg);
void register_demo(CLI::App& app, Registry& reg);
void register_bench(CLI::App& app, Registry& reg);
void register_model_commands(CLI::App& app, Registry& reg);  // init, eval, grad
void register_train_commands(CLI::App& app, Registry& reg);  // train, convert
void register_eval_commands(CLI::App& app, Registry& reg);   // eval-long, probe
void register_experiment(CLI::App& app, Registry& reg);      // the main job
void register_generate(CLI::App& app, Registry& reg);
void register_data_commands(CLI::App& app, Registry& reg);  // tokenizer train, tokenize, detokenize, data
void register_import(CLI::App& app, Registry& reg);         // official checkpoints (orbax)
void register_serve(CLI::App& app, Registry& reg);          // the HTTP server (src/server)
int run_demo_default();  // what `ttt` with no arguments does

}  // namespace ttt::cli
