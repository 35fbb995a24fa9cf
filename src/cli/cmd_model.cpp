// Model subcommands of SPEC section 6: init, eval, grad.
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "cli/commands.h"

#include "backend/backend.h"
#include "backend/cpu/bf16_gemm.h"
#include "inference/evaluate.h"
#include "inference/session.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "io/tokens.h"
#include "model/model.h"
#include "ttt/meta_gradient.h"
#include "ttt/inner_loop.h"

namespace ttt::cli {
namespace {

struct InitArgs {
  std::string config, out, dtype = "f32";
  uint64_t seed = 0;
} g_init;

struct EvalArgs {
  std::string model, tokens, nll_out, weights = "auto", compute = "f32", device = "cpu", kv = "f32";
  bool no_ttt = false, stream = false;
} g_eval;

struct GradArgs {
  std::string model, tokens, out, device = "cpu";
  bool no_ttt = false, no_remat = false;
  int64_t graph_budget_mb = -1;
  double inner_lr = 1.0;
} g_grad;

int run_init() {
  const auto cfg = model::load_config(g_init.config);
  std::filesystem::create_directories(g_init.out);
  model::Model::init(cfg, g_init.seed).save(g_init.out, g_init.dtype == "bf16" ? model::Storage::BF16 : model::Storage::F32);
  std::printf("wrote %s/config.json and %s/model.safetensors\n", g_init.out.c_str(), g_init.out.c_str());
  return 0;
}

int run_eval() {
  const auto m = load_model(g_eval.model, model::parse_weights(g_eval.weights), g_eval.compute, g_eval.device);
  const auto tok = io::split_tokens(io::read_tokens(g_eval.tokens), m.config().vocab_size, g_eval.tokens);
  e2e::TTTOptions opt;
  opt.ttt = !g_eval.no_ttt;
  opt.kv_dtype = model::parse_kv_dtype(g_eval.kv);
  const auto res = inference::evaluate_tokens(m, tok.inputs, tok.targets, opt, g_eval.stream);
  if (!g_eval.nll_out.empty()) {
    // float32 in host order, which is little-endian on every platform the engine builds for.
    io::write_file_atomic(g_eval.nll_out, res.nll.data(), res.nll.size() * sizeof(float));
  }
  std::printf("loss %.9g\n", res.loss);
  return 0;
}

int run_grad() {
  auto m = load_model(g_grad.model, model::Weights::F32, "f32", g_grad.device);  // gradients: float32
  const auto tok = io::split_tokens(io::read_tokens(g_grad.tokens), m.config().vocab_size, g_grad.tokens);
  m.set_requires_grad(true);
  e2e::TTTOptions opt;
  opt.ttt = !g_grad.no_ttt;
  opt.inner_lr = g_grad.inner_lr;
  const auto res = inference::checked_gradient(m, tok.inputs, tok.targets, opt,
                                               g_grad.no_remat ? e2e::GraphBudget::keep_all()
                                                               : e2e::GraphBudget::megabytes(g_grad.graph_budget_mb));
  std::vector<std::pair<std::string, Tensor>> out;
  for (size_t i = 0; i < res.grads.size(); ++i) out.emplace_back(m.named_parameters()[i].first, res.grads[i]);
  io::write_safetensors(g_grad.out, out, io::StoreAs::F32);
  std::printf("loss %.9g\n", res.loss);
  return 0;
}

}  // namespace

void register_model_commands(CLI::App& app, Registry& reg) {
  auto* init = app.add_subcommand("init", "Randomly initialize a model from a config (SPEC section 6)");
  init->add_option("--config", g_init.config, "config.json with the fields of SPEC section 2")->required();
  init->add_option("--seed", g_init.seed, "random seed")->required();
  init->add_option("--out", g_init.out, "output model directory")->required();
  init->add_option("--dtype", g_init.dtype, "storage of model.safetensors: f32, or bf16 for the matrices")
      ->capture_default_str()
      ->check(CLI::IsMember({"f32", "bf16"}));
  reg.push_back({init, run_init});

  auto* eval = app.add_subcommand("eval", "Mean masked loss of a token file, with test-time training");
  eval->add_option("--model", g_eval.model, "model directory")->required();
  eval->add_option("--tokens", g_eval.tokens, "int32 little-endian token file (T+1 tokens)")->required();
  eval->add_flag("--no-ttt", g_eval.no_ttt, "keep phi_0 (no inner updates)");
  eval->add_flag("--stream", g_eval.stream, "feed tokens one at a time through the decode path");
  eval->add_option("--nll-out", g_eval.nll_out, "write one float32 NLL per input position");
  eval->add_option("--weights", g_eval.weights,
                   "large weight matrices in memory: f32, bf16 (inference only: half the memory) or auto (bf16 when "
                   "the file stores them as bf16)")
      ->capture_default_str()
      ->check(CLI::IsMember({"f32", "bf16", "auto"}));
  add_compute_option(eval, g_eval.compute);
  add_kv_dtype_option(eval, g_eval.kv);
  add_device_option(eval, g_eval.device);
  reg.push_back({eval, run_eval});

  auto* gr = app.add_subcommand("grad", "Training objective of one sequence and its gradient");
  gr->add_option("--model", g_grad.model, "model directory")->required();
  gr->add_option("--tokens", g_grad.tokens, "int32 little-endian token file (T+1 tokens)")->required();
  gr->add_option("--out", g_grad.out, "output gradient .safetensors (F32, parameter names)")->required();
  gr->add_flag("--no-ttt", g_grad.no_ttt, "chunked objective without inner updates");
  gr->add_option("--inner-lr", g_grad.inner_lr, "inner learning rate eta")->capture_default_str();
  gr->add_option("--graph-budget-mb", g_grad.graph_budget_mb,
                 "memory for chunk graphs: the first chunks keep theirs within it, the rest are rematerialized "
                 "(-1: a quarter of physical memory; 0: rematerialize every chunk)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{-1}, INT64_MAX));
  gr->add_flag("--no-remat", g_grad.no_remat, "keep every chunk's graph, whatever the memory");
  add_device_option(gr, g_grad.device);
  reg.push_back({gr, run_grad});
}

model::Weights apply_compute(const std::string& compute, model::Weights weights) {
  if (compute == "f32") return weights;
  if (compute != "bf16") throw std::runtime_error("--compute must be f32 or bf16, got " + compute);
  if (!kernels::cpu_has_avx512_bf16())
    throw std::runtime_error("--compute bf16 needs a CPU with AVX512_BF16 (this one has none); use --weights bf16 instead");
  return model::Weights::BF16;
}

void add_device_option(CLI::App* cmd, std::string& device) {
  cmd->add_option("--device", device, "where to compute: cpu, or cpu-checked (the CPU kernels over guarded memory, "
                                      "for checks); `ttt info` lists the backends built in")
      ->capture_default_str();
}

Device device_option(const std::string& device) { return require_device(device); }

model::Model load_model(const std::string& dir, model::Weights weights, const std::string& compute,
                        const std::string& device) {
  const Device d = device_option(device);  // before any loading
  model::Model m = model::Model::load(dir, apply_compute(compute, weights));
  m.set_bf16_products(compute == "bf16");
  return m.to(d);
}

void add_kv_dtype_option(CLI::App* cmd, std::string& kv) {
  cmd->add_option("--kv-dtype", kv,
                  "attention's window cache: f32, or bf16 (half the memory and of what decoding reads per token; "
                  "read with float32 accumulation; README gives its accuracy cost)")
      ->capture_default_str()
      ->check(CLI::IsMember({"f32", "bf16"}));
}

void add_compute_option(CLI::App* cmd, std::string& compute) {
  cmd->add_option("--compute", compute,
                  "f32, or bf16: the large weight matrices held bf16, their products bf16 x bf16 with float32 "
                  "accumulation (AMX tiles where the CPU has them, else AVX512_BF16), and with AMX attention's forward "
                  "where nothing differentiates it (one-row decode products stay GEMVs; README: accuracy cost)")
      ->capture_default_str()
      ->check(CLI::IsMember({"f32", "bf16"}));
}

}  // namespace ttt::cli
