// `ttt bench ops` smoke test: tiny shapes, one timed call per op. Checks that the benchmark runs
// every op and produces sane rows; never asserts on timings beyond "positive".
#include <gtest/gtest.h>

#include <set>
#include <string>

#include "backend/cpu/amx.h"
#include "bench/context_bench.h"
#include "bench/op_bench.h"
#include "test_configs.h"

namespace ttt::bench {
namespace {

TEST(OpBench, TinyRunProducesRows) {
  OpBenchOptions opt;
  opt.shapes = OpBenchShapes::tiny();
  opt.repeats = 1;
  opt.min_time = 0;
  opt.peak_repeats = 1;
  opt.peak_min_time = 0;
  const OpBenchReport rep = run_op_bench(opt);
  EXPECT_GT(rep.peak_gflops, 0);
  ASSERT_FALSE(rep.rows.empty());
  std::set<std::string> ops;
  for (const auto& r : rep.rows) {
    ops.insert(r.op);
    EXPECT_GE(r.samples, 1) << r.op;
    EXPECT_GT(r.best_s, 0) << r.op << " " << r.shape;
    EXPECT_GE(r.median_s, r.best_s) << r.op;
    EXPECT_TRUE(r.flops > 0 || r.bytes > 0) << r.op;
  }
  for (const char* op : {"matmul", "matmul backward", "rmsnorm", "rope", "softmax", "cross_entropy", "silu", "add",
                         "mul", "embedding", "sum_to", "attention", "attention backward"})
    EXPECT_TRUE(ops.count(op)) << op;
  EXPECT_GE(rep.peak_samples, 2);  // before and after the rows
  const std::string json = op_bench_json(rep);
  EXPECT_NE(json.find("\"rows\""), std::string::npos);

  opt.filter = "^attention";
  const OpBenchReport only = run_op_bench(opt);
  // Chunk and causal, forward and backward; and where the CPU has AMX, the bf16 forward of each.
  ASSERT_EQ(only.rows.size(), kernels::amx_in_use() ? 6u : 4u);
  for (const auto& r : only.rows) EXPECT_EQ(r.op.rfind("attention", 0), 0u);
}

TEST(OpBench, VisiblePairsFollowTheMaskRule) {
  // Chunk after a full cache: every query sees exactly `window` keys.
  EXPECT_EQ(attention_visible_pairs(1024, 2048, 4, 1024, 0, 1024), 1024 * 1024 * 4);
  // Plain causal: T (T + 1) / 2 per head.
  EXPECT_EQ(attention_visible_pairs(8, 8, 2, 0, 0, 0), 36 * 2);
}

}  // namespace
}  // namespace ttt::bench

namespace ttt::bench {
namespace {

// `ttt bench context --repeats`: rows come out once per (length, model) in that order, with
// the best of the runs (positive times and the FLOP counts of their length).
TEST(ContextBench, RepeatsKeepOneRowPerCell) {
  std::vector<NamedModel> models;
  models.push_back({"ttt", model::Model::init(test::session_config(true), 3)});
  models.push_back({"swa", model::Model::init(test::session_config(false), 3)});
  ContextBenchOptions opt;
  opt.prefill_lengths = {8, 12};
  opt.decode_lengths = {};
  opt.repeats = 3;
  const ContextReport rep = run_context_bench(models, opt, nullptr);
  ASSERT_EQ(rep.rows.size(), 4u);
  const char* names[] = {"ttt", "swa", "ttt", "swa"};
  const int64_t lengths[] = {8, 8, 12, 12};
  for (size_t i = 0; i < 4; ++i) {
    const auto& r = rep.rows[i];
    EXPECT_EQ(r.model, names[i]);
    EXPECT_EQ(r.mode, "prefill");
    EXPECT_EQ(r.context, lengths[i]);
    EXPECT_FALSE(r.skipped);
    EXPECT_GT(r.seconds, 0);
    EXPECT_DOUBLE_EQ(r.s_per_1k, r.seconds / (static_cast<double>(r.context) / 1024.0));
    EXPECT_DOUBLE_EQ(r.flops, prefill_forward_flops(models[i % 2].model.config(), r.context));
  }
  EXPECT_GT(rep.rows[0].inner_flops, 0);  // the TTT model's inner steps
  EXPECT_EQ(rep.rows[1].inner_flops, 0);
}

}  // namespace
}  // namespace ttt::bench
