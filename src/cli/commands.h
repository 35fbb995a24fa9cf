// Subcommand registry: each register_* adds a CLI11 subcommand and the body to run when it is
// chosen; main() parses, then runs the chosen body with errors turned into one-line messages.
#pragma once
#include <CLI/CLI.hpp>

#include "model/model.h"

#include <functional>
#include <string>
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

// --compute f32|bf16 (issue 15): "bf16" means bf16 x bf16 products with float32 accumulation
// (AVX512_BF16) for the model's large weight matrices, which are then held bf16 (the returned
// weights setting; the products are turned on per model, model::Model::set_bf16_products);
// "f32" returns `weights` unchanged. Throws std::runtime_error where the CPU lacks AVX512_BF16.
model::Weights apply_compute(const std::string& compute, model::Weights weights);
// Adds the --compute option to a subcommand.
void add_compute_option(CLI::App* cmd, std::string& compute);
// Adds --kv-dtype f32|bf16 (how sessions and prefill keep attention's window caches).
void add_kv_dtype_option(CLI::App* cmd, std::string& kv);
// Adds --device (default cpu) to a subcommand that computes.
void add_device_option(CLI::App* cmd, std::string& device);
// The device a --device value names, checked to be built in and present (one-line error).
Device device_option(const std::string& device);
// A model directory as a command runs it: weights per --weights and --compute, its bf16
// products per --compute, its parameters on --device.
model::Model load_model(const std::string& dir, model::Weights weights, const std::string& compute,
                        const std::string& device);

}  // namespace ttt::cli
