#include "bench/context_bench.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <map>

#include "backend/cpu/blas.h"
#include "backend/thread_pool.h"
#include "bench/op_bench.h"
#include "inference/session.h"
#include "model/families/family.h"
#include "ttt/inner_loop.h"

namespace ttt::bench {
namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::vector<int32_t> random_tokens(int64_t n, int64_t vocab, uint64_t seed) {
  Rng r(seed);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = static_cast<int32_t>(1 + r.next_u64() % (vocab - 1));  // no BOS
  return t;
}

bool is_full_attention(const model::ModelConfig& c) {
  for (int64_t l = 0; l < c.num_hidden_layers; ++l)
    if (!c.is_recurrent(l) && c.window_of(l) == 0) return true;
  return false;
}

}  // namespace

std::vector<NamedModel> builtin_context_models(uint64_t seed, bool all_types) {
  model::ModelConfig base;
  base.vocab_size = 4096;
  base.hidden_size = 256;
  base.num_hidden_layers = 8;
  base.num_attention_heads = 4;
  base.intermediate_size = 704;
  base.sliding_window_size = 1024;
  base.mini_batch_size = 256;
  base.bos_token_id = 0;
  std::vector<NamedModel> out;
  auto ttt = base;
  ttt.seq_modeling_block = "SWA";
  ttt.prime = true;
  ttt.suffix_len = 2;
  out.push_back({"ttt-e2e", model::Model::init(ttt, seed)});
  auto swa = base;
  swa.seq_modeling_block = "SWA";
  out.push_back({"swa", model::Model::init(swa, seed)});
  auto full = base;
  full.seq_modeling_block = "self_attention";
  out.push_back({"full", model::Model::init(full, seed)});
  if (all_types) {
    // The paper's other baselines on the same shape, each hybrid with SWA (every 4th block of 8).
    auto hybrid = base;
    hybrid.seq_modeling_block = "SWA";
    hybrid.full_attention_every = 4;
    out.push_back({"hybrid", model::Model::init(hybrid, seed)});
    auto mamba = base;
    mamba.seq_modeling_block = "mamba2";
    mamba.swa_every = 4;
    mamba.mamba2.d_state = 64;
    mamba.mamba2.headdim = 64;
    mamba.chunk_size = 256;
    out.push_back({"mamba2", model::Model::init(mamba, seed)});
    auto gdn = base;
    gdn.seq_modeling_block = "gated_deltanet";
    gdn.swa_every = 4;
    gdn.chunk_size = 64;
    out.push_back({"gated-deltanet", model::Model::init(gdn, seed)});
    auto kvb = base;
    kvb.seq_modeling_block = "ttt_kvb";
    kvb.ttt_kvb.num_lact_heads = 4;
    kvb.ttt_kvb.lact_chunk_size = 2048;
    out.push_back({"ttt-kvb", model::Model::init(kvb, seed)});
  }
  return out;
}

double mixer_forward_flops(const model::ModelConfig& c, int64_t l, int64_t t) {
  return model::block_mixer_forward_flops(c, l, t);  // each family's count (model/families)
}

double prefill_forward_flops(const model::ModelConfig& c, int64_t t) {
  const double d = static_cast<double>(c.hidden_size), f = static_cast<double>(c.intermediate_size);
  double flops = 2.0 * t * d * c.vocab_size;  // head
  for (int64_t l = 0; l < c.num_hidden_layers; ++l)
    flops += 2.0 * t * 3 * d * f * (c.has_prime(l) ? 2 : 1) + mixer_forward_flops(c, l, t);
  return flops;
}

double prefill_inner_flops(const model::ModelConfig& c, int64_t t) {
  if (!c.prime) return 0;
  const int64_t b = c.mini_batch_size;
  const int64_t updates = t / b - (t % b == 0 ? 1 : 0);
  if (updates <= 0) return 0;
  const double d = static_cast<double>(c.hidden_size), f = static_cast<double>(c.intermediate_size);
  // What the gradient of phi needs, no more: a block is mixer -> prime MLP -> MLP, so below the
  // first prime MLP nothing is differentiated (neither its input gradient nor that block's mixer;
  // the graph is pruned there, and the profile shows one attention backward per inner step on a
  // model with two prime blocks).
  double per_chunk = 2.0 * b * d * c.vocab_size;  // head: input gradient
  for (int64_t l = c.first_prime_layer(); l < c.num_hidden_layers; ++l) {
    per_chunk += 2.0 * b * 3 * d * f;  // input gradients of the MLP matmuls
    per_chunk += 2.0 * b * 3 * d * f;  // weight gradients of phi
    if (l == c.first_prime_layer()) continue;
    per_chunk += 2.0 * b * 3 * d * f;  // input gradients of the prime MLP matmuls
    if (c.is_recurrent(l)) {           // input gradients through the mixer: about twice its forward
      per_chunk += 2.0 * mixer_forward_flops(c, l, b);
      continue;
    }
    per_chunk += 2.0 * b * 4 * d * d;
    const int64_t w = c.window_of(l), cache = w > 0 ? std::min<int64_t>(w, t) : t / 2;
    // Steady-state chunk: scores recomputed, dP and dQ for every visible pair (5 products with
    // dK and dV, 3 without); dK and dV only for the chunk's own keys, the cache being constant.
    const double pairs = attention_visible_pairs(b, cache + b, c.num_attention_heads, cache, 0, w),
                 own = attention_visible_pairs(b, b, c.num_attention_heads, 0, 0, w);
    per_chunk += c.head_dim() * (6.0 * pairs + 4.0 * own);
  }
  return per_chunk * static_cast<double>(updates);
}

// Read bandwidth of main memory: the best of `reps` parallel sums over a buffer far larger than
// the caches (what a decode step's weight and cache reads are bound by).
static double measure_read_bandwidth(int reps) {
  const size_t n = size_t{1} << 28;  // 1 GiB of floats
  std::vector<float> buf(n, 1.0f);
  const int threads = num_threads();
  std::vector<double> partial(static_cast<size_t>(threads) * 8, 0.0);
  double best = 0;
  volatile double sink = 0;
  for (int rep = 0; rep < reps; ++rep) {
    const auto t0 = Clock::now();
    std::fill(partial.begin(), partial.end(), 0.0);
    parallel_for(0, static_cast<int64_t>(n), 1 << 20, [&](int64_t lo, int64_t hi) {
      // Eight independent accumulators of 16 floats: the adds keep up with the loads.
      float acc[8][16] = {};
      int64_t i = lo;
      for (; i + 128 <= hi; i += 128)
        for (int a = 0; a < 8; ++a)
          for (int j = 0; j < 16; ++j) acc[a][j] += buf[static_cast<size_t>(i + a * 16 + j)];
      double s = 0;
      for (; i < hi; ++i) s += buf[static_cast<size_t>(i)];
      for (auto& a : acc)
        for (float x : a) s += x;
      partial[static_cast<size_t>(thread_index()) * 8] += s;
    });
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    double total = 0;
    for (double x : partial) total += x;
    sink = total;
    best = std::max(best, static_cast<double>(n * sizeof(float)) / secs * 1e-9);
  }
  (void)sink;
  return best;
}

namespace {

// Bytes a decode step reads at least: every parameter (the embedding table only as the head when
// it is tied: an untied one gives a single row) plus the session state.
double decode_step_bytes(const model::Model& m, double state_bytes) {
  double bytes = 0;
  for (auto& [name, t] : m.named_parameters())
    if (name != "embed.weight" || m.config().tie_word_embeddings)
      bytes += static_cast<double>(t.numel() * dtype_size(t.dtype()));
  return bytes + state_bytes;
}

}  // namespace

ContextReport run_context_bench(const std::vector<NamedModel>& models, const ContextBenchOptions& opt,
                                std::FILE* progress) {
  ContextReport rep;
  int samples = 0;
  rep.peak_gflops = 2e-9 * 1024.0 * 1024 * 1024 / measure_sgemm_peak(1024, 10, 0.5, samples);
  const int repeats = std::max(1, opt.repeats);
  // One row per (length, model); full-attention models beyond full_attention_max are skipped.
  // measure(model, T, row, round) runs `rounds` times per length, interleaved over the models.
  auto rows = [&](const char* mode, const std::vector<int64_t>& lengths, int rounds,
                  const std::function<void(const NamedModel&, int64_t, ContextRow&, int)>& measure) {
    for (int64_t t : lengths) {
      std::vector<ContextRow> at(models.size());
      for (int round = 0; round < rounds; ++round)
        for (size_t i = 0; i < models.size(); ++i) {
          const auto& nm = models[i];
          ContextRow& row = at[i];
          row.model = nm.name;
          row.mode = mode;
          row.context = t;
          if (is_full_attention(nm.model.config()) && t > opt.full_attention_max) {
            row.skipped = true;
            continue;
          }
          if (progress)
            std::fprintf(progress, "  %s %s at %lld tokens%s...\n", mode, nm.name.c_str(), static_cast<long long>(t),
                         rounds > 1 ? (" (run " + std::to_string(round + 1) + " of " + std::to_string(rounds) + ")").c_str() : "");
          measure(nm, t, row, round);
        }
      for (auto& row : at) rep.rows.push_back(row);
    }
  };
  rows("prefill", opt.prefill_lengths, repeats, [&](const NamedModel& nm, int64_t t, ContextRow& row, int round) {
    const auto& cfg = nm.model.config();
    const auto tok = random_tokens(t + 1, cfg.vocab_size, opt.seed + t);
    std::vector<int32_t> in(tok.begin(), tok.end() - 1), tg(tok.begin() + 1, tok.end());
    e2e::TTTOptions popt;
    popt.kv_dtype = opt.kv_dtype;
    if (opt.warm_up && round == 0) e2e::prefill(nm.model, in, tg, popt);
    const auto t0 = Clock::now();
    const auto res = e2e::prefill(nm.model, in, tg, popt);
    const double secs = since(t0);
    if (round > 0 && secs >= row.seconds) return;  // a slower run: the best so far stands
    row.seconds = secs;
    {
      const int64_t b = std::min(cfg.mini_batch_size, t), chunks = (t + b - 1) / b;
      Rng rng(opt.seed);
      const Tensor x = to_device(randn({b, cfg.hidden_size}, rng, 1.0), nm.model.device());
      const std::vector<int32_t> tb(tg.begin(), tg.begin() + b);
      auto t1 = Clock::now();
      {
        NoGrad ng;
        nm.model.token_nll(x, tb);
      }
      const double fwd = since(t1);
      t1 = Clock::now();
      {
        GradMode on(true);
        const Tensor xr = x.detach().set_requires_grad(true);
        grad({sum(nm.model.token_nll(xr, tb))}, {xr});
      }
      const double fwd_bwd = since(t1);
      row.head_seconds = static_cast<double>(chunks - res.updates) * fwd + static_cast<double>(res.updates) * fwd_bwd;
    }
    row.s_per_1k = row.seconds / (static_cast<double>(t) / 1024.0);
    row.flops = prefill_forward_flops(cfg, t);
    row.inner_flops = prefill_inner_flops(cfg, t);
  });
  // The bound's bandwidth, like the sgemm peak, is the best measured before and after the timed
  // rows: a reference taken in a noisy moment would flatter every fraction of it.
  if (!opt.decode_lengths.empty()) rep.read_gbps = measure_read_bandwidth(5 * repeats);
  rows("decode", opt.decode_lengths, 1, [&](const NamedModel& nm, int64_t t, ContextRow& row, int) {
    const auto& cfg = nm.model.config();
    const auto ctx = random_tokens(t, cfg.vocab_size, opt.seed + 7 * t);
    DeviceMemory& memory = device_memory(nm.model.device());
    memory.trim();
    memory.reset_peak();
    const double before = static_cast<double>(memory.memory_stats().bytes_in_use);
    {
      e2e::TTTOptions sopt;
      sopt.kv_dtype = opt.kv_dtype;
      inference::Session s(nm.model, sopt);
      s.feed(ctx);
      const auto next = random_tokens(opt.decode_tokens, cfg.vocab_size, opt.seed + 11 * t);
      row.seconds = 0;
      row.chunk = s.ttt_enabled() ? cfg.mini_batch_size : 0;
      // Each step timed on its own (a GPU's queued work finished): the steps that took a TTT step
      // are kept apart, so that the bandwidth bound is compared with the steps it describes.
      std::vector<double> stepping;    // seconds of the steps that took a TTT step
      std::vector<double> plain_steps;  // and of the others (their median is the step's baseline)
      for (int round = 0; round < repeats; ++round) {
        double all = 0, plain = 0;
        int64_t n_plain = 0;
        for (int32_t x : next) {
          const int64_t steps = s.ttt_steps();
          const auto t0 = Clock::now();
          s.step(x);
          device_memory(nm.model.device()).synchronize();
          const double dt = since(t0);
          all += dt;
          if (s.ttt_steps() > steps) {
            stepping.push_back(dt);
          } else {
            plain += dt;
            ++n_plain;
            plain_steps.push_back(dt);
          }
        }
        const double per_token = all / std::max(1, opt.decode_tokens);
        if (round == 0 || per_token < row.seconds) row.seconds = per_token;
        if (n_plain > 0 && (row.plain_seconds == 0 || plain / n_plain < row.plain_seconds))
          row.plain_seconds = plain / n_plain;
      }
      if (row.plain_seconds == 0) row.plain_seconds = row.seconds;
      // The TTT step's own cost: the fastest stepping step less the median plain one (a
      // neighbour's spike in a plain step moves a mean, not the median).
      double base = row.plain_seconds;
      if (!plain_steps.empty()) {
        std::nth_element(plain_steps.begin(), plain_steps.begin() + plain_steps.size() / 2, plain_steps.end());
        base = plain_steps[plain_steps.size() / 2];
      }
      for (double dt : stepping)
        if (row.ttt_step_seconds == 0 || dt - base < row.ttt_step_seconds) row.ttt_step_seconds = std::max(0.0, dt - base);
      row.state_bytes = static_cast<double>(s.state_bytes());
    }
    row.peak_bytes = static_cast<double>(memory.memory_stats().peak_bytes_in_use) - before;
    row.step_bytes = decode_step_bytes(nm.model, row.state_bytes);
    // Steady decoding: the plain steps and, per chunk, one TTT step (when one was timed).
    row.s_per_1k = row.chunk > 0 && row.ttt_step_seconds > 0
                       ? 1024.0 * (row.plain_seconds + row.ttt_step_seconds / static_cast<double>(row.chunk))
                       : row.seconds * 1024.0;
  });
  if (!opt.decode_lengths.empty()) rep.read_gbps = std::max(rep.read_gbps, measure_read_bandwidth(5 * repeats));
  rep.peak_gflops = std::max(rep.peak_gflops, 2e-9 * 1024.0 * 1024 * 1024 / measure_sgemm_peak(1024, 10, 0.5, samples));
  return rep;
}

void print_context_bench(const ContextReport& r, const std::vector<NamedModel>& models, std::FILE* out) {
  const auto& b = blas::info();
  std::fprintf(out, "## ttt bench context\n\n- BLAS: %s, kernel %s; %d threads; sgemm 1024^3 peak %.1f GFLOP/s (best before "
               "and after the timed rows)\n",
               b.library.c_str(), b.core.c_str(), num_threads(), r.peak_gflops);
  std::fprintf(out, "- models:");
  for (auto& m : models) {
    const auto& c = m.model.config();
    std::fprintf(out, " %s (L=%lld d=%lld f=%lld %s%s)", m.name.c_str(), static_cast<long long>(c.num_hidden_layers),
                 static_cast<long long>(c.hidden_size), static_cast<long long>(c.intermediate_size),
                 c.seq_modeling_block.c_str(), c.prime ? " prime" : "");
  }
  std::fprintf(out, "\n\n");
  std::map<std::pair<std::string, std::pair<std::string, int64_t>>, const ContextRow*> at;
  for (auto& row : r.rows) at[{row.mode, {row.model, row.context}}] = &row;
  for (const char* mode : {"prefill", "decode"}) {
    std::vector<int64_t> ctx;
    for (auto& row : r.rows)
      if (row.mode == mode && (ctx.empty() || ctx.back() != row.context)) ctx.push_back(row.context);
    if (ctx.empty()) continue;
    std::fprintf(out, "### %s seconds per 1K tokens\n\n| context |", mode);
    for (auto& m : models) std::fprintf(out, " %s |", m.name.c_str());
    const bool ratio = models.size() >= 2;
    if (ratio) std::fprintf(out, " %s / %s |", models.back().name.c_str(), models.front().name.c_str());
    std::fprintf(out, "\n|---:|");
    for (size_t i = 0; i < models.size() + (ratio ? 1 : 0); ++i) std::fprintf(out, "---:|");
    std::fprintf(out, "\n");
    for (int64_t t : ctx) {
      std::fprintf(out, "| %lld |", static_cast<long long>(t));
      for (auto& m : models) {
        auto* row = at.count({mode, {m.name, t}}) ? at[{mode, {m.name, t}}] : nullptr;
        if (!row || row->skipped)
          std::fprintf(out, " skipped |");
        else
          std::fprintf(out, " %.4f |", row->s_per_1k);
      }
      if (ratio) {
        auto* a = at[{mode, {models.back().name, t}}];
        auto* z = at[{mode, {models.front().name, t}}];
        if (a && z && !a->skipped && !z->skipped && z->s_per_1k > 0)
          std::fprintf(out, " %.2fx |", a->s_per_1k / z->s_per_1k);
        else
          std::fprintf(out, " - |");
      }
      std::fprintf(out, "\n");
    }
    std::fprintf(out, "\n");
    if (std::string(mode) == "prefill") {
      std::fprintf(out,
                   "### prefill throughput (model FLOPs: forward, plus the inner steps for TTT-E2E)\n\n"
                   "| model | context | seconds | tokens/s | forward GFLOP | inner-step GFLOP | GFLOP/s | %% of sgemm peak "
                   "| head share |\n"
                   "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
      for (auto& row : r.rows)
        if (row.mode == mode && !row.skipped) {
          const double total = row.flops + row.inner_flops;
          std::fprintf(out, "| %s | %lld | %.3f | %.1f | %.1f | %.1f | %.1f | %.1f%% | %.1f%% |\n", row.model.c_str(),
                       static_cast<long long>(row.context), row.seconds, static_cast<double>(row.context) / row.seconds,
                       row.flops * 1e-9, row.inner_flops * 1e-9, total / row.seconds * 1e-9,
                       100.0 * total / row.seconds * 1e-9 / r.peak_gflops, 100.0 * row.head_seconds / row.seconds);
        }
      std::fprintf(out, "\n");
    } else {
      std::fprintf(out,
                   "### decode speed against the bandwidth bound, and session memory\n\n"
                   "Memory read bandwidth %.1f GB/s (the best parallel sum over 1 GiB, before and after the decode rows). Bound: that bandwidth over the bytes one "
                   "step reads at least (the weights it touches and the state). tokens/s: the steps that took no TTT "
                   "step (those the bound describes); TTT step: the extra seconds of the step that took one, over the median plain step (a "
                   "TTT-E2E session steps on a chunk when the token after it arrives); per chunk: tokens/s over a "
                   "whole chunk, one TTT step included, as in steady decoding. Session peak: the most tensor memory "
                   "the session held, reading its context and decoding, above what was in use before it; the check "
                   "is peak <= 1.5 x state bytes + the model's bytes.\n\n"
                   "| model | context | tokens/s | bound tokens/s | of bound | TTT step s | tokens/s per chunk | state bytes "
                   "| session peak bytes | peak / state | check |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
                   r.read_gbps);
      for (auto& row : r.rows)
        if (row.mode == mode && !row.skipped) {
          const double bound = row.step_bytes > 0 ? r.read_gbps * 1e9 / row.step_bytes : 0;
          const double model_bytes = row.step_bytes - row.state_bytes;
          const bool ok = row.peak_bytes <= 1.5 * row.state_bytes + model_bytes;
          std::string step = "-", per_chunk = "-";
          if (row.chunk > 0 && row.ttt_step_seconds > 0) {
            char buf[64];
            std::snprintf(buf, sizeof buf, "%.4g", row.ttt_step_seconds);
            step = buf;
            std::snprintf(buf, sizeof buf, "%.2f", 1024.0 / row.s_per_1k);  // the steady rate
            per_chunk = buf;
          }
          std::fprintf(out, "| %s | %lld | %.2f | %.1f | %.1f%% | %s | %s | %.0f | %.0f | %.2f | %s |\n",
                       row.model.c_str(), static_cast<long long>(row.context), 1.0 / row.plain_seconds, bound,
                       bound > 0 ? 100.0 / row.plain_seconds / bound : 0.0, step.c_str(), per_chunk.c_str(),
                       row.state_bytes, row.peak_bytes, row.state_bytes > 0 ? row.peak_bytes / row.state_bytes : 0.0,
                       ok ? "ok" : "OVER");
        }
      std::fprintf(out, "\n");
    }
  }
}

}  // namespace ttt::bench
