// `ttt bench <mode>`: benchmarks. `ttt bench ops` times every differentiable op at the model's
// shapes and prints a Markdown table (src/bench/op_bench.h explains the method).
#include <cstdio>
#include <fstream>
#include <map>
#include <stdexcept>
#include <string>

#include "bench/op_bench.h"
#include "cli/commands.h"

namespace ttt::cli {
namespace {

struct BenchOpsArgs {
  bench::OpBenchOptions opt;
  std::string json_path;
  bool tiny = false;
};
BenchOpsArgs g_ops;

int run_bench_ops(BenchOpsArgs a) {
  if (a.tiny) a.opt.shapes = bench::OpBenchShapes::tiny();
  const bench::OpBenchReport rep = bench::run_op_bench(a.opt, stdout);
  if (rep.rows.empty()) std::printf("(no op matches --filter '%s')\n", a.opt.filter.c_str());
  if (!a.json_path.empty()) {
    std::ofstream f(a.json_path);
    if (!f) throw std::runtime_error("bench ops: cannot write " + a.json_path);
    f << bench::op_bench_json(rep);
    if (!f) throw std::runtime_error("bench ops: error writing " + a.json_path);
    std::printf("\nwrote %s\n", a.json_path.c_str());
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
  const std::map<std::string, DType> dtypes{{"f32", DType::F32}, {"f64", DType::F64}};
  ops->add_option("--dtype", o.opt.dtype, "element type of the op inputs (the GEMM peak is always f32)")
      ->transform(CLI::CheckedTransformer(dtypes, CLI::ignore_case))
      ->default_str("f32");
  ops->add_option("--peak-repeats", o.opt.peak_repeats, "sgemm calls for the GEMM peak (best is kept)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  ops->add_flag("--tiny", o.tiny, "tiny shapes (a smoke test, not a measurement)");
  reg.push_back({ops, [] { return run_bench_ops(g_ops); }});
}

}  // namespace ttt::cli
