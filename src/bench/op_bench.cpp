#include "bench/op_bench.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <functional>
#include <regex>
#include <stdexcept>
#include <utility>

#include "autodiff/graph.h"
#include "autodiff/ops.h"
#include "backend/cpu/amx.h"
#include "backend/cpu/bf16_gemm.h"
#include "backend/cpu/blas.h"
#include "backend/cpu/tile_gemm.h"
#include "backend/thread_pool.h"
#include "bench/context_bench.h"
#include "model/model.h"
#include "tensor/random.h"

namespace ttt::bench {

OpBenchShapes OpBenchShapes::tiny() {
  OpBenchShapes s;
  s.tokens = 64;
  s.d_model = 32;
  s.d_ff = 48;
  s.vocab = 64;
  s.heads = 2;
  s.head_dim = 8;
  s.chunk = 16;
  s.window = 16;
  s.causal_len = 32;
  s.gemm_n = 64;
  return s;
}

namespace {

using Clock = std::chrono::steady_clock;
using Inputs = std::vector<Tensor>;
using OpFn = std::function<Tensor(const Inputs&)>;

const char* dtype_label(DType t) { return t == DType::F32 ? "f32" : "f64"; }

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// One row to measure. prepare() allocates its inputs and returns the call to time, so only the
// current row's tensors are alive.
struct Case {
  std::string op, shape;
  double flops = 0, bytes = 0;
  std::function<std::function<void()>()> prepare;
};

// "[4096,256]": shape_str without the spaces, to keep the table narrow.
std::string compact(const Shape& s) {
  std::string r;
  for (char ch : shape_str(s))
    if (ch != ' ') r += ch;
  return r;
}
std::string dims(std::initializer_list<int64_t> d) { return compact(Shape(d)); }

class CaseList {
 public:
  explicit CaseList(DType dt) : dt_(dt) {}

  // Random inputs of these shapes (fixed seeds, so every run times the same data).
  std::function<Inputs()> randoms(std::vector<Shape> shapes) const {
    const DType dt = dt_;
    return [dt, shapes] {
      Rng rng(1234);
      Inputs in;
      for (const auto& s : shapes) in.push_back(randn(s, rng, 1.0, dt));
      return in;
    };
  }

  void forward(std::string op, std::string shape, double flops, double bytes, std::function<Inputs()> make,
               OpFn fn) {
    Case c{std::move(op), std::move(shape), flops, bytes, {}};
    c.prepare = [make = std::move(make), fn = std::move(fn)]() -> std::function<void()> {
      Inputs in = make();
      return [in, fn] {
        NoGrad ng;
        Tensor y = fn(in);
      };
    };
    cases.push_back(std::move(c));
  }

  // Times grad({y}, inputs, {r}) on a graph of y = fn(inputs) recorded once, outside the timing.
  void backward(std::string op, std::string shape, double flops, double bytes, std::function<Inputs()> make,
                OpFn fn) {
    const DType dt = dt_;
    Case c{std::move(op) + " backward", std::move(shape), flops, bytes, {}};
    c.prepare = [make = std::move(make), fn = std::move(fn), dt]() -> std::function<void()> {
      Inputs in = make();
      for (auto& t : in) t.set_requires_grad(true);
      Tensor y;
      {
        GradMode on(true);
        y = fn(in);
      }
      Rng rng(99);
      Tensor r = randn(y.shape(), rng, 1.0, dt);
      return [in, y, r] {
        std::vector<Tensor> g = grad({y}, in, {r}, /*create_graph=*/false);
      };
    };
    cases.push_back(std::move(c));
  }

  std::vector<Case> cases;

 private:
  DType dt_;
};

std::vector<int32_t> random_ids(int64_t n, int64_t limit, uint64_t seed) {
  Rng rng(seed);
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (auto& i : ids) i = static_cast<int32_t>(rng.next_u64() % static_cast<uint64_t>(limit));
  return ids;
}

std::vector<Case> build_cases(const OpBenchShapes& S, DType dt) {
  CaseList L(dt);
  const double es = static_cast<double>(dtype_size(dt));
  const int64_t T = S.tokens, d = S.d_model, f = S.d_ff, V = S.vocab, n = S.gemm_n;

  // ---- matmul (compute-bound): forward 2mnk, backward dA and dB = 4mnk.
  auto mm = [&](std::string shape, Shape a, Shape b, bool tb, int64_t m, int64_t nn, int64_t k) {
    const double fl = 2.0 * double(m) * double(nn) * double(k);
    auto fn = [tb](const Inputs& in) { return matmul(in[0], in[1], false, tb); };
    L.forward("matmul", shape, fl, 0, L.randoms({a, b}), fn);
    L.backward("matmul", shape, 2 * fl, 0, L.randoms({a, b}), fn);
  };
  mm(dims({n, n}) + "x" + dims({n, n}), {n, n}, {n, n}, false, n, n, n);
  mm(dims({T, d}) + "x" + dims({d, f}), {T, d}, {d, f}, false, T, f, d);
  mm(dims({T, f}) + "x" + dims({f, d}), {T, f}, {f, d}, false, T, d, f);
  mm(dims({T, d}) + "x" + dims({V, d}) + "^T", {T, d}, {V, d}, true, T, V, d);  // tied logits
  // Frozen bf16 weights (inference): float32 x bf16 (weights widened, sgemm) and, where the CPU
  // has AVX512_BF16, bf16 x bf16 with float32 accumulation (--compute bf16).
  if (dt == DType::F32)
    for (bool dot : {false, true}) {
      if (dot && !kernels::cpu_has_avx512_bf16()) continue;
      auto wm = [&, dot](std::string shape, Shape a, Shape b, bool tb, int64_t m, int64_t nn, int64_t k) {
        const double fl = 2.0 * double(m) * double(nn) * double(k);
        auto make = [a, b, dot] {
          Rng rng(1234);
          Inputs in{randn(a, rng, 1.0)};
          Tensor w = randn(b, rng, 1.0);
          in.push_back(to_dtype(w, DType::BF16));
          in.back().impl()->storage->bf16_products = dot;  // bf16 x bf16 products (--compute bf16)
          return in;
        };
        auto fn = [tb](const Inputs& in) { return matmul(in[0], in[1], false, tb); };
        L.forward(dot ? "matmul bf16 x bf16" : "matmul f32 x bf16", shape, fl, 0, make, fn);
      };
      wm(dims({T, d}) + "x" + dims({d, f}), {T, d}, {d, f}, false, T, f, d);
      wm(dims({T, f}) + "x" + dims({f, d}), {T, f}, {f, d}, false, T, d, f);
      wm(dims({T, d}) + "x" + dims({V, d}) + "^T", {T, d}, {V, d}, true, T, V, d);
      wm(dims({n, n}) + "x" + dims({n, n}), {n, n}, {n, n}, false, n, n, n);
    }

  // ---- memory-bound ops: bytes = inputs read once + outputs written once.
  {
    const double N = double(T * d);
    auto fn = [](const Inputs& in) { return rmsnorm(in[0], in[1], 1e-6); };
    L.forward("rmsnorm", dims({T, d}), 0, (2 * N + d) * es, L.randoms({{T, d}, {d}}), fn);
    // reads x, w, dy; writes dx, dw
    L.backward("rmsnorm", dims({T, d}), 0, (3 * N + 2 * d) * es, L.randoms({{T, d}, {d}}), fn);
  }
  {
    const Shape s{T, S.heads, S.head_dim};
    const double N = double(shape_numel(s));
    auto fn = [](const Inputs& in) { return rope(in[0], 0, 10000.0); };
    L.forward("rope", compact(s), 0, 2 * N * es, L.randoms({s}), fn);
    L.backward("rope", compact(s), 0, 2 * N * es, L.randoms({s}), fn);
  }
  {
    const double N = double(T * V);
    auto fn = [](const Inputs& in) { return softmax(in[0]); };
    L.forward("softmax", dims({T, V}), 0, 2 * N * es, L.randoms({{T, V}}), fn);
    L.backward("softmax", dims({T, V}), 0, 3 * N * es, L.randoms({{T, V}}), fn);  // reads y, dy; writes dx
  }
  {
    const double N = double(T * V);
    auto targets = random_ids(T, V, 7);
    auto fn = [targets](const Inputs& in) { return cross_entropy(in[0], targets); };
    L.forward("cross_entropy", dims({T, V}), 0, (N + T) * es, L.randoms({{T, V}}), fn);
    // reads logits and dnll; writes dlogits
    L.backward("cross_entropy", dims({T, V}), 0, (2 * N + T) * es, L.randoms({{T, V}}), fn);
  }
  {
    const double N = double(T * f);
    auto fn = [](const Inputs& in) { return silu(in[0]); };
    L.forward("silu", dims({T, f}), 0, 2 * N * es, L.randoms({{T, f}}), fn);
    L.backward("silu", dims({T, f}), 0, 3 * N * es, L.randoms({{T, f}}), fn);  // reads x, dy; writes dx
  }
  {
    const double N = double(T * f);
    auto add_fn = [](const Inputs& in) { return add(in[0], in[1]); };
    auto mul_fn = [](const Inputs& in) { return mul(in[0], in[1]); };
    // add's backward passes dy through unchanged (sum_to to the same shape is the identity):
    // no backward row. The broadcast (bias) add's backward is the sum_to row below.
    L.forward("add", dims({T, f}) + "+" + dims({T, f}), 0, 3 * N * es, L.randoms({{T, f}, {T, f}}), add_fn);
    L.forward("add", dims({T, f}) + "+" + dims({f}), 0, (2 * N + f) * es, L.randoms({{T, f}, {f}}), add_fn);
    L.forward("mul", dims({T, f}) + "*" + dims({T, f}), 0, 3 * N * es, L.randoms({{T, f}, {T, f}}), mul_fn);
    // reads dy, a, b; writes da, db
    L.backward("mul", dims({T, f}) + "*" + dims({T, f}), 0, 5 * N * es, L.randoms({{T, f}, {T, f}}), mul_fn);
  }
  {
    auto ids = random_ids(T, V, 11);
    auto fn = [ids](const Inputs& in) { return embedding(in[0], ids); };
    const std::string shape = dims({V, d}) + "[" + std::to_string(T) + " ids]";
    L.forward("embedding", shape, 0, 2.0 * double(T * d) * es, L.randoms({{V, d}}), fn);
    // scatter-add of dy [T, d] into a fresh [V, d] table: reads dy, writes the table
    L.backward("embedding", shape, 0, double(T * d + V * d) * es, L.randoms({{V, d}}), fn);
  }
  {
    const double N = double(T * f);
    L.forward("sum_to", dims({T, f}) + "->" + dims({f}), 0, (N + f) * es, L.randoms({{T, f}}),
              [f](const Inputs& in) { return sum_to(in[0], {f}); });
    L.forward("sum_to", dims({T, f}) + "->" + dims({T, 1}), 0, (N + T) * es, L.randoms({{T, f}}),
              [T](const Inputs& in) { return sum_to(in[0], {T, 1}); });
  }

  // ---- attention (compute-bound; useful FLOPs on visible pairs only).
  auto attn = [&](std::string shape, int64_t tq, int64_t tk, int64_t q_pos0, int64_t k_pos0, int64_t window) {
    const int64_t H = S.heads, D = S.head_dim;
    const double pairs = double(attention_visible_pairs(tq, tk, H, q_pos0, k_pos0, window));
    AttentionOptions opt;
    opt.q_pos0 = q_pos0;
    opt.k_pos0 = k_pos0;
    opt.window = window;
    auto fn = [opt](const Inputs& in) { return attention(in[0], in[1], in[2], opt); };
    L.forward("attention", shape, pairs * 4.0 * double(D), 0, L.randoms({{tq, H, D}, {tk, H, D}, {tk, H, D}}), fn);
    L.backward("attention", shape, pairs * 10.0 * double(D), 0, L.randoms({{tq, H, D}, {tk, H, D}, {tk, H, D}}),
               fn);
    if (dt == DType::F32 && kernels::amx_in_use()) {  // the forward of --compute bf16 (AMX tiles)
      AttentionOptions ob = opt;
      ob.bf16_products = true;
      L.forward("attention bf16 (amx)", shape, pairs * 4.0 * double(D), 0,
                L.randoms({{tq, H, D}, {tk, H, D}, {tk, H, D}}),
                [ob](const Inputs& in) { return attention(in[0], in[1], in[2], ob); });
    }
  };
  {
    const int64_t c = S.chunk, w = S.window;
    // A TTT chunk: keys = [cache of the `w` previous tokens; the chunk], k_pos0 = q_pos0 - w.
    attn("Tq=" + std::to_string(c) + " Tk=" + std::to_string(c + w) + " H=" + std::to_string(S.heads) +
             " D=" + std::to_string(S.head_dim) + " win=" + std::to_string(w),
         c, c + w, w, 0, w);
    const int64_t t = S.causal_len;
    attn("Tq=Tk=" + std::to_string(t) + " H=" + std::to_string(S.heads) + " D=" + std::to_string(S.head_dim) +
             " causal",
         t, t, 0, 0, 0);
  }

  // ---- recurrent mixers, chunked form (compute-bound; the model FLOPs of mixer_forward_flops:
  // projections and the chunked scan's matmuls). One block of the mixer at the model width,
  // read from an empty state, as prefill and training run it.
  {
    model::ModelConfig c;
    c.vocab_size = S.vocab;
    c.hidden_size = d;
    c.num_hidden_layers = 1;
    c.num_attention_heads = S.heads;
    c.intermediate_size = f;
    c.sliding_window_size = S.window;
    c.rope_theta = 10000;
    c.bos_token_id = 0;
    const int64_t scan_chunk = std::min<int64_t>(S.chunk, 256);
    auto mixer = [&](const std::string& block, model::ModelConfig cfg, std::string what) {
      cfg.seq_modeling_block = block;
      auto m = std::make_shared<model::Model>(model::Model::init(cfg, 3, dt));
      const double fl = mixer_forward_flops(cfg, 0, T);
      L.forward(block + " mixer", dims({T, d}) + " " + what, fl, 0, L.randoms({{T, d}}),
                [m](const Inputs& in) { return m->mixer(0).forward(in[0], 0, model::MixerState{}, nullptr); });
    };
    {
      auto cfg = c;
      cfg.mamba2.d_state = std::min<int64_t>(64, d / 2);
      cfg.mamba2.headdim = S.head_dim;
      cfg.chunk_size = scan_chunk;
      mixer("mamba2", cfg, "state " + std::to_string(cfg.mamba2.d_state) + " chunk " + std::to_string(cfg.chunk_size));
    }
    {
      auto cfg = c;
      cfg.chunk_size = std::min<int64_t>(64, S.chunk);
      mixer("gated_deltanet", cfg, "H=" + std::to_string(S.heads) + " chunk " + std::to_string(cfg.chunk_size));
    }
    {
      auto cfg = c;
      cfg.ttt_kvb.num_lact_heads = S.heads;
      cfg.ttt_kvb.lact_chunk_size = 2 * S.chunk;
      mixer("ttt_kvb", cfg, "heads " + std::to_string(S.heads) + " chunk " + std::to_string(cfg.ttt_kvb.lact_chunk_size) +
                                " win " + std::to_string(S.window));
    }
  }
  return std::move(L.cases);
}

// ---- printing

struct Widths {
  size_t op = 2, shape = 5;
};

void print_setup(const OpBenchReport& r, std::FILE* out) {
  std::fprintf(out, "## ttt bench ops\n\n");
  std::fprintf(out, "- BLAS library: %s\n", r.blas_library.c_str());
  std::fprintf(out, "- BLAS kernel: %s (chosen by %s)\n", r.blas_core.c_str(), r.blas_how.c_str());
  std::fprintf(out, "- threads: %d BLAS, %d kernel pool\n", r.blas_threads, r.pool_threads);
  std::fprintf(out, "- GEMM peak: sgemm %lldx%lldx%lld float32 = %.1f GFLOP/s (best of %d calls on OpenBLAS and on the tiles, before and after the ops: %.3f ms)\n",
               static_cast<long long>(r.peak_n), static_cast<long long>(r.peak_n), static_cast<long long>(r.peak_n),
               r.peak_gflops, r.peak_samples, r.peak_best_s * 1e3);
  std::fprintf(out,
               "- method: warm-up, then best/median of timed calls; forward under NoGrad; \"backward\" = "
               "grad() on a pre-recorded graph (forward excluded); GFLOP/s = useful FLOPs (attention: "
               "visible pairs only, 4D fwd / 10D bwd); GB/s = minimal traffic; %% of the float32 sgemm peak\n\n");
  std::fflush(out);
}

void print_table_header(const Widths& w, std::FILE* out) {
  const int wo = static_cast<int>(w.op), ws = static_cast<int>(w.shape);
  std::fprintf(out, "| %-*s | %-*s | %-5s | %10s | %10s | %8s | %7s | %11s | %5s |\n", wo, "op", ws, "shape", "dtype",
               "best ms", "median ms", "GFLOP/s", "GB/s", "% GEMM peak", "runs");
  std::fprintf(out, "| %s | %s | ----- | ---------: | ---------: | -------: | ------: | ----------: | ----: |\n",
               std::string(w.op, '-').c_str(), std::string(w.shape, '-').c_str());
  std::fflush(out);
}

void print_row(const OpBenchReport& r, const OpBenchRow& row, const Widths& w, std::FILE* out) {
  char gf[32] = "-", gb[32] = "-", pct[32] = "-";
  if (row.flops > 0) {
    std::snprintf(gf, sizeof gf, "%.1f", row.gflops());
    std::snprintf(pct, sizeof pct, "%.1f%%", r.pct_of_peak(row));
  }
  if (row.bytes > 0) std::snprintf(gb, sizeof gb, "%.1f", row.gbps());
  std::fprintf(out, "| %-*s | %-*s | %-5s | %10.4f | %10.4f | %8s | %7s | %11s | %5d |\n", static_cast<int>(w.op),
               row.op.c_str(), static_cast<int>(w.shape), row.shape.c_str(), dtype_label(row.dtype),
               row.best_s * 1e3, row.median_s * 1e3, gf, gb, pct, row.samples);
  std::fflush(out);
}

}  // namespace

// Best time of one sgemm n^3 call over at least `repeats` calls and `min_time` seconds.
// `samples` is incremented by the number of timed calls.
double measure_sgemm_peak(int64_t n64, int repeats, double min_time, int& samples) {
  const int n = static_cast<int>(n64);
  Rng rng(5);
  std::vector<float> a(size_t(n) * n), b(size_t(n) * n), c(size_t(n) * n);
  for (auto& e : a) e = static_cast<float>(rng.normal());
  for (auto& e : b) e = static_cast<float>(rng.normal());
  auto call = [&] {
    blas::gemm(blas::Trans::No, blas::Trans::No, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
  };
  // The best of OpenBLAS and the engine's tiles (which serve blas::gemm where the CPU has AVX-512):
  // the peak is the fastest float32 product this machine offers, whichever kernel gives it.
  double best = 1e300;
  const bool tiles_on = kernels::tile_gemm_usable();
  for (bool tiles : {false, true}) {
    if (tiles && !tiles_on) continue;
    kernels::set_tile_gemm_avx512(tiles);
    call();  // warm-up: library load, BLAS threads, page faults
    const auto start = Clock::now();
    for (int i = 0; i < kMaxSamples; ++i) {
      const auto t0 = Clock::now();
      call();
      best = std::min(best, seconds_since(t0));
      ++samples;
      if (i + 1 >= repeats && seconds_since(start) >= min_time) break;
    }
  }
  kernels::set_tile_gemm_avx512(tiles_on);
  return best;
}

OpBenchReport run_op_bench(const OpBenchOptions& opt, std::FILE* progress) {
  if (opt.repeats < 1) throw std::invalid_argument("bench ops: repeats must be >= 1");
  if (opt.min_time < 0 || opt.peak_min_time < 0) throw std::invalid_argument("bench ops: min-time must be >= 0");
  std::regex re;
  try {
    re = std::regex(opt.filter.empty() ? std::string(".*") : opt.filter, std::regex::ECMAScript);
  } catch (const std::regex_error& e) {
    throw std::invalid_argument("bench ops: bad --filter regex '" + opt.filter + "': " + e.what());
  }

  OpBenchReport rep;
  const auto& bi = blas::info();
  rep.blas_library = bi.library;
  rep.blas_core = bi.core;
  rep.blas_how = bi.how;
  rep.blas_threads = blas::threads();
  rep.pool_threads = num_threads();
  rep.dtype = opt.dtype;
  rep.peak_n = opt.shapes.gemm_n;
  auto note = [progress](const char* step, const std::string& what) {
    if (!progress) return;
    std::fprintf(progress, "bench ops: %s %s\n", step, what.c_str());
    std::fflush(progress);
  };

  note("sgemm peak", "");
  rep.peak_best_s = measure_sgemm_peak(rep.peak_n, opt.peak_repeats, opt.peak_min_time, rep.peak_samples);

  std::vector<Case> cases;
  for (auto& c : build_cases(opt.shapes, opt.dtype))
    if (std::regex_search(c.op, re)) cases.push_back(std::move(c));

  for (size_t i = 0; i < cases.size(); ++i) {
    Case& c = cases[i];
    char step[48];
    std::snprintf(step, sizeof step, "[%zu/%zu]", i + 1, cases.size());
    note(step, c.op + " " + c.shape);
    OpBenchRow row;
    row.op = c.op;
    row.shape = c.shape;
    row.dtype = opt.dtype;
    row.flops = c.flops;
    row.bytes = c.bytes;
    std::vector<double> t;
    {
      std::function<void()> call = c.prepare();
      call();  // warm-up: scratch buffers, pool buckets, page faults
      const auto start = Clock::now();
      while (true) {
        const auto t0 = Clock::now();
        call();
        t.push_back(seconds_since(t0));
        if (static_cast<int>(t.size()) >= kMaxSamples) break;
        if (static_cast<int>(t.size()) >= opt.repeats && seconds_since(start) >= opt.min_time) break;
      }
    }
    std::sort(t.begin(), t.end());
    const size_t m = t.size();
    row.samples = static_cast<int>(m);
    row.best_s = t.front();
    row.median_s = m % 2 ? t[m / 2] : 0.5 * (t[m / 2 - 1] + t[m / 2]);
    rep.rows.push_back(row);
  }

  // Measure the peak again after the rows (the machine may have been busy or cold at the start);
  // the best of both is the reference for every row.
  if (!cases.empty()) {
    note("sgemm peak", "again");
    rep.peak_best_s = std::min(
        rep.peak_best_s, measure_sgemm_peak(rep.peak_n, opt.peak_repeats, opt.peak_min_time, rep.peak_samples));
  }
  rep.peak_gflops = 2.0 * double(rep.peak_n) * double(rep.peak_n) * double(rep.peak_n) / rep.peak_best_s * 1e-9;
  return rep;
}

void print_op_bench(const OpBenchReport& report, std::FILE* out) {
  Widths w;
  for (const auto& r : report.rows) {
    w.op = std::max(w.op, r.op.size());
    w.shape = std::max(w.shape, r.shape.size());
  }
  print_setup(report, out);
  print_table_header(w, out);
  for (const auto& r : report.rows) print_row(report, r, w, out);
}

std::string op_bench_json(const OpBenchReport& r) {
  using nlohmann::json;
  json j;
  j["blas"] = {{"library", r.blas_library}, {"core", r.blas_core}, {"how", r.blas_how}, {"threads", r.blas_threads}};
  j["pool_threads"] = r.pool_threads;
  j["dtype"] = dtype_label(r.dtype);
  j["gemm_peak"] = {{"op", "sgemm"},
                    {"m", r.peak_n},
                    {"n", r.peak_n},
                    {"k", r.peak_n},
                    {"dtype", "f32"},
                    {"samples", r.peak_samples},
                    {"best_ms", r.peak_best_s * 1e3},
                    {"gflops", r.peak_gflops}};
  json rows = json::array();
  for (const auto& row : r.rows) {
    json o = {{"op", row.op},
              {"shape", row.shape},
              {"dtype", dtype_label(row.dtype)},
              {"samples", row.samples},
              {"best_ms", row.best_s * 1e3},
              {"median_ms", row.median_s * 1e3}};
    o["flops"] = row.flops > 0 ? json(row.flops) : json(nullptr);
    o["bytes"] = row.bytes > 0 ? json(row.bytes) : json(nullptr);
    o["gflops"] = row.flops > 0 ? json(row.gflops()) : json(nullptr);
    o["gbps"] = row.bytes > 0 ? json(row.gbps()) : json(nullptr);
    o["pct_gemm_peak"] = row.flops > 0 ? json(r.pct_of_peak(row)) : json(nullptr);
    rows.push_back(std::move(o));
  }
  j["rows"] = std::move(rows);
  return j.dump(2) + "\n";
}

}  // namespace ttt::bench
