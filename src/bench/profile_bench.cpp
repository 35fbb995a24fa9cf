#include "bench/profile_bench.h"

#include <chrono>
#include <functional>
#include <stdexcept>

#include "backend/cpu/bf16_gemm.h"
#include "backend/cpu/blas.h"
#include "backend/profiler.h"
#include "backend/thread_pool.h"
#include "bench/context_bench.h"
#include "bench/op_bench.h"
#include "inference/session.h"
#include "tensor/random.h"
#include "train/trainer.h"
#include "ttt/inner_loop.h"

namespace ttt::bench {

namespace {

std::vector<int32_t> tokens(int64_t n, int64_t vocab, Rng& r) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = static_cast<int32_t>(1 + r.next_u64() % static_cast<uint64_t>(vocab - 1));
  return t;
}

model::Model& pick(std::vector<NamedModel>& ms, const char* name) {
  for (auto& m : ms)
    if (m.name == name) return m.model;
  throw std::logic_error(std::string("no built-in model ") + name);
}

}  // namespace

void run_profile_bench(const ProfileOptions& o, std::FILE* out, std::FILE* progress) {
  int samples = 0;
  const double peak = 2e-9 * 1024.0 * 1024 * 1024 / measure_sgemm_peak(1024, 10, 0.5, samples);
  const auto& b = blas::info();
  std::fprintf(out, "## ttt bench profile\n\n- BLAS: %s, kernel %s; %d threads; sgemm 1024^3 peak %.1f GFLOP/s\n",
               b.library.c_str(), b.core.c_str(), num_threads(), peak);
  std::vector<NamedModel> models;
  if (o.model_dir.empty()) {
    models = builtin_context_models(o.seed);
  } else {
    std::fprintf(out, "- model: %s\n", o.model_dir.c_str());
    models.push_back({"dir", model::Model::load(o.model_dir, o.bf16_products ? model::Weights::BF16
                                                                             : model::parse_weights(o.weights))});
  }
  for (const auto& w : o.workloads)
    if ((w == "meta" || w == "pretrain") && (o.bf16_products || o.kv_dtype != "f32"))
      throw std::invalid_argument("--workload " + w + ": --compute bf16 and --kv-dtype bf16 apply to prefill and decode only");
  e2e::TTTOptions read_opt;  // prefill and decode
  read_opt.kv_dtype = model::parse_kv_dtype(o.kv_dtype);
  if (o.bf16_products || read_opt.kv_dtype != model::KvDtype::F32)
    std::fprintf(out, "- prefill and decode: %s products, %s window cache\n",
                 o.bf16_products ? ("bf16 x bf16 (" + std::string(kernels::bf16_dot_kernel()) + ")").c_str() : "float32",
                 model::kv_dtype_name(read_opt.kv_dtype));
  const bool own = !o.model_dir.empty();
  const std::string label = own ? o.model_dir : "bench model";
  // The model a workload reads: the named built-in one, or the one loaded from --model.
  auto use = [&](const char* name) -> model::Model& { return own ? models[0].model : pick(models, name); };
  // Prefill and decode read with bf16 x bf16 products under --compute bf16 (the built-in models
  // as copies with bf16 weights).
  std::vector<NamedModel> readers;
  readers.reserve(3);  // references to them outlive later insertions
  auto reader = [&](const char* name) -> model::Model& {
    if (!o.bf16_products) return use(name);
    for (auto& nm : readers)
      if (nm.name == name) return nm.model;
    model::Model m = own ? use(name) : use(name).with_bf16_weights();
    m.set_bf16_products(true);
    readers.push_back({name, std::move(m)});
    return readers.back().model;
  };
  Rng r(o.seed);
  for (const auto& w : o.workloads) {
    std::function<void()> work;  // the profiled run (after one unprofiled warm-up)
    std::string what;
    std::unique_ptr<inference::Session> session;
    std::unique_ptr<train::AdamW> adam;
    if (own && (w == "prefill-swa" || w == "prefill-full"))
      throw std::invalid_argument("--workload " + w + " reads a built-in bench model: with --model use prefill");
    if (own && (w == "meta" || w == "pretrain") && (w == "meta") != models[0].model.config().prime)
      throw std::invalid_argument("--workload " + w + ": the model in " + o.model_dir +
                                  (w == "meta" ? " has no prime blocks (use pretrain)" : " has prime blocks (use meta)"));
    if (w == "prefill" || w == "prefill-swa" || w == "prefill-full") {
      const char* name = w == "prefill" ? "ttt-e2e" : w == "prefill-swa" ? "swa" : "full";
      auto& m = reader(name);
      const auto t = tokens(o.prefill_len + 1, m.config().vocab_size, r);
      const std::vector<int32_t> in(t.begin(), t.end() - 1), tg(t.begin() + 1, t.end());
      what = std::string(w == "prefill" ? (m.config().prime ? "TTT-E2E" : "plain") : w == "prefill-swa" ? "SWA" : "full-attention") + " prefill of " +
             std::to_string(o.prefill_len) + " tokens (" + label + ")";
      work = [&m, in, tg, read_opt] { e2e::prefill(m, in, tg, read_opt); };
    } else if (w == "decode") {
      auto& m = reader("ttt-e2e");
      session = std::make_unique<inference::Session>(m, read_opt);
      session->feed(tokens(o.decode_context, m.config().vocab_size, r));
      const auto next = tokens(o.decode_tokens, m.config().vocab_size, r);
      what = std::string(m.config().prime ? "TTT-E2E" : "plain") + " decoding of " + std::to_string(o.decode_tokens) + " tokens after " +
             std::to_string(o.decode_context) + " (" + label + ")";
      inference::Session* s = session.get();
      work = [s, next] {
        inference::Session f = s->fork();
        for (int32_t x : next) f.step(x);
      };
    } else if (w == "meta" || w == "pretrain") {
      auto& m = use(w == "meta" ? "ttt-e2e" : "swa");
      m.set_requires_grad(true);
      adam = std::make_unique<train::AdamW>(m.named_parameters(), train::AdamWOptions{});
      const auto seq = tokens(o.train_len + 1, m.config().vocab_size, r);
      what = std::string(w == "meta" ? "TTT-E2E meta-gradient step" : "SWA pretraining step") + " on " +
             std::to_string(o.train_len) +
             (w == "meta" ? " tokens (" + label + ", chunk graphs kept within the default budget, AdamW included)"
                          : " tokens (" + label + ", AdamW included)");
      train::AdamW* opt = adam.get();
      const int64_t len = o.train_len;
      work = [&m, opt, seq, len] {
        train::TrainOptions to;
        to.steps = 1000;
        to.seq_len = len;
        train::train_step(m, *opt, {seq}, to, 200);
      };
    } else {
      throw std::invalid_argument("--workload: unknown workload '" + w +
                                  "' (prefill, prefill-swa, prefill-full, decode, meta, pretrain)");
    }
    if (progress) std::fprintf(progress, "  %s: warm-up...\n", w.c_str());
    work();
    if (progress) std::fprintf(progress, "  %s: profiled run...\n", w.c_str());
    profile::reset();
    profile::by_shape(o.by_shape);
    profile::enable(true);
    const auto t0 = std::chrono::steady_clock::now();
    try {
      work();
    } catch (...) {
      profile::enable(false);
      throw;
    }
    const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    profile::enable(false);
    std::fprintf(out, "\n### %s: %.3f s\n\n", what.c_str(), wall);
    auto ops = profile::snapshot();
    if (o.top > 0 && static_cast<int>(ops.size()) > o.top) {
      double rest = 0;
      for (size_t i = static_cast<size_t>(o.top); i < ops.size(); ++i) rest += ops[i].seconds;
      ops.resize(static_cast<size_t>(o.top));
      std::fprintf(out, "(the %d slowest ops; the others took %.4f s)\n\n", o.top, rest);
      ops.push_back({"(the other ops)", 0, rest, 0, 0});
    }
    profile::print(ops, wall, peak, out);
  }
}

}  // namespace ttt::bench
