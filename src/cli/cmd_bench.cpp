// `ttt bench <mode>`: benchmarks. `ttt bench ops` times every differentiable op at the model's
// shapes and prints a Markdown table (src/bench/op_bench.h explains the method).
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>

#include <unistd.h>

#include "bench/context_bench.h"
#include "bench/op_bench.h"
#include "bench/profile_bench.h"
#include "bench/train_bench.h"
#include <cerrno>
#include <cstring>
#include <filesystem>
#include "cli/commands.h"
#include "io/atomic_file.h"

namespace ttt::cli {
namespace {
bench::ProfileOptions g_profile;
std::string g_profile_compute = "f32";

struct BenchOpsArgs {
  bench::OpBenchOptions opt;
  std::string json_path;
  std::string dtype = "f32";
  bool tiny = false;
};
BenchOpsArgs g_ops;

struct BenchContextArgs {
  bench::ContextBenchOptions opt;
  std::vector<std::string> models;
  std::string weights = "auto", compute = "f32", device = "cpu", kv = "f32";
  bool all_types = false;
} g_ctx;
std::string g_bench_device = "cpu";  // --device of bench train (any device), profile and ops (cpu)

// bench train, profile and ops build their inputs on the CPU; other devices are refused plainly.
void require_cpu_bench(const char* mode) {
  if (device_option(g_bench_device) != Device::cpu())
    throw std::invalid_argument(std::string("bench ") + mode + " runs on the cpu device only (bench context and bench train take --device)");
}

bench::TrainBenchOptions g_train_bench;
bool g_train_bench_no_remat = false;

int run_bench_train() {
  auto o = g_train_bench;
  o.device = device_option(g_bench_device);
  if (g_train_bench_no_remat) o.graph_budget_mb = INT64_MAX;
  double peak = 0;
  const auto rows = bench::run_train_bench(o, peak, isatty(fileno(stderr)) ? stderr : nullptr);
  bench::print_train_bench(rows, peak, o, stdout);
  return 0;
}

int run_bench_context(const BenchContextArgs& a) {
  std::vector<bench::NamedModel> models;
  const Device dev = device_option(a.device);
  const model::Weights weights = apply_compute(a.compute, model::parse_weights(a.weights));
  if (a.models.empty()) {
    models = bench::builtin_context_models(a.opt.seed, a.all_types);
    if (a.compute == "bf16")
      for (auto& nm : models) nm.model = nm.model.with_bf16_weights();
  } else {
    for (auto& dir : a.models) {
      std::string name = dir;
      while (name.size() > 1 && name.back() == '/') name.pop_back();
      name = name.substr(name.find_last_of('/') + 1);
      models.push_back({name, model::Model::load(dir, weights)});
    }
  }
  for (auto& nm : models) {
    nm.model.set_bf16_products(a.compute == "bf16");
    nm.model = nm.model.to(dev);
  }
  const auto rep = bench::run_context_bench(models, a.opt, isatty(fileno(stderr)) ? stderr : nullptr);
  bench::print_context_bench(rep, models, stdout);
  return 0;
}

int run_bench_ops(BenchOpsArgs a) {
  require_cpu_bench("ops");
  if (a.tiny) a.opt.shapes = bench::OpBenchShapes::tiny();
  a.opt.dtype = (a.dtype == "f64" || a.dtype == "F64") ? DType::F64 : DType::F32;
  // Progress goes to stderr (a terminal only), so stdout is exactly the Markdown report.
  const bench::OpBenchReport rep = bench::run_op_bench(a.opt, isatty(fileno(stderr)) ? stderr : nullptr);
  bench::print_op_bench(rep, stdout);
  if (rep.rows.empty()) std::printf("(no op matches --filter '%s')\n", a.opt.filter.c_str());
  if (!a.json_path.empty()) {
    const std::string text = bench::op_bench_json(rep);
    io::write_file_atomic(a.json_path, text.data(), text.size());
    std::fprintf(stderr, "wrote %s\n", a.json_path.c_str());
  }
  return 0;
}

}  // namespace

void register_bench(CLI::App& app, Registry& reg) {
  auto* bench_app = app.add_subcommand("bench", "Benchmarks (see `ttt bench <mode> --help`)");
  bench_app->require_subcommand(1);

  auto* ops = bench_app->add_subcommand(
      "ops", "Per-op benchmark table (forward and backward) against the measured sgemm peak");
  auto& o = g_ops;
  ops->add_option("--filter", o.opt.filter, "only ops whose name matches this regex (e.g. 'attention|matmul')");
  ops->add_option("--repeats", o.opt.repeats, "minimum timed calls per op (after one warm-up)")
      ->capture_default_str()
      ->check(CLI::Range(1, bench::kMaxSamples));
  ops->add_option("--min-time", o.opt.min_time, "minimum timed seconds per op")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 600.0));
  ops->add_option("--json", o.json_path, "also write the results as JSON to FILE");
  ops->add_option("--dtype", o.dtype, "element type of the op inputs (the GEMM peak is always f32)")
      ->capture_default_str()
      ->check(CLI::IsMember({"f32", "f64"}, CLI::ignore_case));
  ops->add_option("--peak-repeats", o.opt.peak_repeats, "minimum sgemm calls per peak measurement (best is kept)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  ops->add_option("--peak-min-time", o.opt.peak_min_time, "minimum seconds of sgemm calls per peak measurement")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 600.0));
  ops->add_flag("--tiny", o.tiny, "tiny shapes (a smoke test, not a measurement)");
  add_device_option(ops, g_bench_device);
  reg.push_back({ops, [] { return run_bench_ops(g_ops); }});

  auto* ctx = bench_app->add_subcommand(
      "context", "Prefill and decode seconds per 1K tokens vs context length, models side by side");
  ctx->add_option("--model", g_ctx.models,
                  "model directory (repeatable; the last is compared with the first). Default: the bench "
                  "model as TTT-E2E, SWA and full attention, randomly initialized");
  ctx->add_option("--prefill-lengths", g_ctx.opt.prefill_lengths, "context lengths for prefill")
      ->delimiter(',')
      ->capture_default_str();
  ctx->add_option("--decode-lengths", g_ctx.opt.decode_lengths, "context lengths before timed decoding")
      ->delimiter(',')
      ->capture_default_str();
  ctx->add_option("--decode-tokens", g_ctx.opt.decode_tokens, "decoded tokens timed per length")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  ctx->add_option("--full-attention-max", g_ctx.opt.full_attention_max,
                  "skip full-attention models beyond this context")
      ->capture_default_str();
  ctx->add_option("--repeats", g_ctx.opt.repeats,
                  "timed runs per cell, best kept: prefills interleaved over the models, decoding as rounds of "
                  "--decode-tokens in one session")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  ctx->add_flag("--warm-up", g_ctx.opt.warm_up,
                "one untimed prefill of each length before the timed one (as the peers' warm-up calls in bench compare)");
  ctx->add_option("--seed", g_ctx.opt.seed, "seed of the built-in models and the tokens")->capture_default_str();
  ctx->add_flag("--all-types", g_ctx.all_types,
                "with the built-in models: also the SWA/full hybrid, Mamba 2, Gated DeltaNet and TTT-KVB (each hybrid "
                "with SWA every 4th block)");
  ctx->add_option("--weights", g_ctx.weights, "with --model: large weight matrices f32, bf16 or auto (as in the file)")
      ->capture_default_str()
      ->check(CLI::IsMember({"f32", "bf16", "auto"}));
  add_compute_option(ctx, g_ctx.compute);
  add_device_option(ctx, g_ctx.device);
  add_kv_dtype_option(ctx, g_ctx.kv);
  reg.push_back({ctx, [] {
                   g_ctx.opt.kv_dtype = model::parse_kv_dtype(g_ctx.kv);
                   return run_bench_context(g_ctx);
                 }});

  auto* tr = bench_app->add_subcommand("train", "Training tokens/s and MFU: SWA pretrain step vs TTT-E2E meta step");
  tr->add_option("--seq-len", g_train_bench.seq_len, "tokens per sequence")->capture_default_str();
  tr->add_option("--steps", g_train_bench.steps, "timed steps (after one warm-up)")->capture_default_str();
  tr->add_option("--graph-budget-mb", g_train_bench.graph_budget_mb,
                 "memory for the meta-gradient's chunk graphs, as in `ttt train` (-1: a quarter of physical "
                 "memory; 0: rematerialize every chunk)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{-1}, INT64_MAX));
  tr->add_flag("--no-remat", g_train_bench_no_remat, "keep every chunk's graph, whatever the memory");
  add_device_option(tr, g_bench_device);
  reg.push_back({tr, run_bench_train});

  // The side-by-side with the official JAX code and PyTorch: scripts/bench_compare.sh does the
  // work (a venv from PyPI, the peers' runs, the interleaving); this finds it and runs it.
  auto* cmp = bench_app->add_subcommand(
      "compare",
      "This engine vs the official JAX code vs PyTorch eager on the bench model (runs scripts/bench_compare.sh; "
      "its options: --official PATH --quick --repeats N --workloads LIST ..., see --help there)");
  cmp->allow_extras();
  cmp->prefix_command();
  reg.push_back({cmp, [cmp]() -> int {
                   namespace fs = std::filesystem;
                   std::vector<fs::path> roots;
                   std::error_code ec;
                   const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
                   if (!ec) roots.push_back(exe.parent_path().parent_path());
                   roots.push_back(TTT_SOURCE_DIR);
                   for (const auto& r : roots) {
                     const fs::path script = r / "scripts" / "bench_compare.sh";
                     if (!fs::is_regular_file(script)) continue;
                     std::vector<std::string> args = {"bash", script.string()};
                     for (const auto& x : cmp->remaining()) args.push_back(x);
                     std::vector<char*> argv;
                     for (auto& x : args) argv.push_back(x.data());
                     argv.push_back(nullptr);
                     std::fflush(stdout);
                     ::execvp("bash", argv.data());
                     throw std::runtime_error("bench compare: cannot run bash: " + std::string(std::strerror(errno)));
                   }
                   throw std::runtime_error("bench compare: scripts/bench_compare.sh not found beside the binary or in " +
                                            std::string(TTT_SOURCE_DIR));
                 }});

  auto* pr = bench_app->add_subcommand(
      "profile", "Where the time goes, by backend op: TTT-E2E prefill, decode, meta-gradient step, SWA pretrain step");
  pr->add_option("--workload", g_profile.workloads, "prefill (TTT-E2E), prefill-swa, prefill-full, decode, meta, pretrain (comma list)")
      ->delimiter(',')
      ->capture_default_str();
  pr->add_option("--prefill-len", g_profile.prefill_len, "prefill tokens")->capture_default_str()->check(CLI::Range(1, 1 << 22));
  pr->add_option("--train-len", g_profile.train_len, "tokens of the meta and pretrain sequences")
      ->capture_default_str()
      ->check(CLI::Range(2, 1 << 20));
  pr->add_option("--decode-context", g_profile.decode_context, "tokens read before the profiled decoding")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 22));
  pr->add_option("--decode-tokens", g_profile.decode_tokens, "decoded tokens profiled")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  pr->add_option("--seed", g_profile.seed, "seed of the models and tokens")->capture_default_str();
  pr->add_flag("--by-shape", g_profile.by_shape, "one row per matrix-product shape");
  pr->add_option("--model", g_profile.model_dir,
                 "a model directory instead of the bench models (prefill, decode; meta or pretrain trains it)");
  pr->add_option("--weights", g_profile.weights, "with --model: large weight matrices f32, bf16 or auto (as in the file)")
      ->capture_default_str();
  add_compute_option(pr, g_profile_compute);
  add_kv_dtype_option(pr, g_profile.kv_dtype);
  pr->add_option("--top", g_profile.top, "print only the N slowest rows (0: all)")->capture_default_str();
  add_device_option(pr, g_bench_device);
  reg.push_back({pr, [] {
                   require_cpu_bench("profile");
                   apply_compute(g_profile_compute, model::Weights::Auto);  // refuses a CPU without AVX512_BF16
                   g_profile.bf16_products = g_profile_compute == "bf16";
                   bench::run_profile_bench(g_profile, stdout, stderr);
                   return 0;
                 }});
}

}  // namespace ttt::cli
