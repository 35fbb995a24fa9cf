#include "bench/train_bench.h"

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "backend/cpu/blas.h"
#include "backend/thread_pool.h"
#include "bench/context_bench.h"
#include "bench/op_bench.h"
#include "train/trainer.h"

namespace ttt::bench {

std::vector<TrainBenchRow> run_train_bench(const TrainBenchOptions& opt, double& peak_gflops, std::FILE* progress) {
  int samples = 0;
  peak_gflops = 2e-9 * 1024.0 * 1024 * 1024 / measure_sgemm_peak(1024, 10, 0.5, samples);
  std::vector<TrainBenchRow> rows;
  auto models = builtin_context_models(opt.seed);
  for (auto& nm : models) {
    if (nm.name == "full") continue;  // the comparison of the issue: SWA pretraining vs TTT-E2E meta-learning
    nm.model = nm.model.to(opt.device);
    auto& m = nm.model;
    m.set_requires_grad(true);
    train::AdamW adam(m.named_parameters(), {});
    train::TrainOptions o;
    o.steps = 1000;
    o.seq_len = opt.seq_len;
    o.graph_budget_mb = opt.graph_budget_mb;
    Rng r(opt.seed);
    auto seq = [&] {
      std::vector<int32_t> s(opt.seq_len + 1);
      for (auto& t : s) t = static_cast<int32_t>(1 + r.next_u64() % (m.config().vocab_size - 1));
      return std::vector<std::vector<int32_t>>{s};
    };
    if (progress) std::fprintf(progress, "  %s: warm-up step...\n", nm.name.c_str());
    train::train_step(m, adam, seq(), o, 200);
    double best = 1e300;
    int64_t chunks = 0, kept = 0;
    for (int i = 0; i < opt.steps; ++i) {
      if (progress) std::fprintf(progress, "  %s: step %d/%d...\n", nm.name.c_str(), i + 1, opt.steps);
      const auto batch = seq();
      const auto t0 = std::chrono::steady_clock::now();
      const auto res = train::train_step(m, adam, batch, o, 200);
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      kept = res.kept_chunks;
      chunks = res.chunks;
    }
    TrainBenchRow row;
    row.chunks = chunks;
    row.kept_chunks = kept;
    row.model = nm.name;
    row.mode = m.config().prime ? "meta-learning" : "pretrain";
    row.step_seconds = best;
    row.tokens_per_s = static_cast<double>(opt.seq_len) / best;
    row.model_flops = 3.0 * prefill_forward_flops(m.config(), opt.seq_len);
    row.mfu = opt.device == Device::cpu() ? row.model_flops / best * 1e-9 / peak_gflops : 0;  // the CPU's peak
    rows.push_back(row);
  }
  return rows;
}

void print_train_bench(const std::vector<TrainBenchRow>& rows, double peak_gflops, const TrainBenchOptions& opt,
                       std::FILE* out) {
  const auto& b = blas::info();
  std::fprintf(out, "## ttt bench train\n\n- BLAS: %s, kernel %s; %d threads; sgemm 1024^3 peak %.1f GFLOP/s\n",
               b.library.c_str(), b.core.c_str(), num_threads(), peak_gflops);
  std::fprintf(out, "- bench model (vocab 4096, d 256, 8 layers, 4 heads, f 704, W 1024, b 256), one sequence of %lld "
                    "tokens per step, best of %d steps after a warm-up; meta-gradient graph budget %s\n\n",
               static_cast<long long>(opt.seq_len), opt.steps,
               opt.graph_budget_mb < 0           ? "a quarter of physical memory"
               : opt.graph_budget_mb == 0        ? "0 (every chunk rematerialized)"
               : opt.graph_budget_mb == INT64_MAX ? "unlimited (no rematerialization)"
                                                  : (std::to_string(opt.graph_budget_mb) + " MB").c_str());
  std::fprintf(out, "| model | mode | s/step | tokens/s | model GFLOP/step | MFU | chunk graphs kept |\n"
                    "|---|---|---:|---:|---:|---:|---:|\n");
  for (auto& r : rows) {
    const std::string kept = r.chunks > 0 ? std::to_string(r.kept_chunks) + " of " + std::to_string(r.chunks) : "-";
    char mfu[32] = "-";  // against the CPU's sgemm peak: CPU runs only
    if (r.mfu > 0) std::snprintf(mfu, sizeof mfu, "%.1f%%", 100 * r.mfu);
    std::fprintf(out, "| %s | %s | %.3f | %.0f | %.1f | %s | %s |\n", r.model.c_str(), r.mode.c_str(),
                 r.step_seconds, r.tokens_per_s, r.model_flops * 1e-9, mfu, kept.c_str());
  }
  if (rows.size() == 2)
    std::fprintf(out, "\nmeta step / pretrain step: %.2fx\n", rows[0].step_seconds / rows[1].step_seconds);
}

}  // namespace ttt::bench
