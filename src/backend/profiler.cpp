#include "backend/profiler.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <mutex>

#include "backend/backend.h"

namespace ttt::profile {
namespace {

std::atomic<bool> g_on{false};
std::atomic<bool> g_shapes{false};
std::mutex g_mu;
std::map<std::string, OpStat> g_stats;

double bytes_of(const Tensor& t) { return t.defined() ? static_cast<double>(t.numel() * dtype_size(t.dtype())) : 0.0; }

// Query-key pairs a causal (windowed) attention call computes (kernels/attention.h's rule).
double visible_pairs(const AttentionShape& s) {
  double n = 0;
  for (int64_t i = 0; i < s.tq; ++i) {
    const int64_t p = s.q_pos0 + i;
    int64_t lo = s.k_pos0, hi = std::min(p, s.k_pos0 + s.tk - 1);
    if (s.window > 0) lo = std::max(lo, p - s.window + 1);
    if (hi >= lo) n += static_cast<double>(hi - lo + 1);
  }
  return n * static_cast<double>(s.heads);
}

const char* unary_name(UnaryOp op) {
  switch (op) {
    case UnaryOp::Neg: return "unary neg";
    case UnaryOp::Exp: return "unary exp";
    case UnaryOp::Log: return "unary log";
    case UnaryOp::Sqrt: return "unary sqrt";
    case UnaryOp::Rsqrt: return "unary rsqrt";
    case UnaryOp::Reciprocal: return "unary reciprocal";
    case UnaryOp::Square: return "unary square";
    case UnaryOp::Sigmoid: return "unary sigmoid";
    case UnaryOp::Softplus: return "unary softplus";
    case UnaryOp::Silu: return "unary silu";
    case UnaryOp::SiluGrad: return "unary silu'";
    case UnaryOp::SiluGrad2: return "unary silu''";
    case UnaryOp::SiluGrad3: return "unary silu'''";
    case UnaryOp::AddScalar: return "unary +scalar";
    case UnaryOp::MulScalar: return "unary *scalar";
    case UnaryOp::MaxScalar: return "unary max";
    case UnaryOp::StepScalar: return "unary step";
  }
  return "unary";
}

const char* binary_name(BinaryOp op) {
  switch (op) {
    case BinaryOp::Add: return "binary add";
    case BinaryOp::Sub: return "binary sub";
    case BinaryOp::Mul: return "binary mul";
    case BinaryOp::Div: return "binary div";
  }
  return "binary";
}

// Times one call and adds it to the op's row.
class Timer {
 public:
  Timer(std::string op, double flops, double bytes) : op_(std::move(op)), flops_(flops), bytes_(bytes), t0_(Clock::now()) {}
  ~Timer() {
    const double s = std::chrono::duration<double>(Clock::now() - t0_).count();
    std::lock_guard<std::mutex> g(g_mu);
    OpStat& st = g_stats[op_];
    st.op = op_;
    st.calls += 1;
    st.seconds += s;
    st.flops += flops_;
    st.bytes += bytes_;
  }

 private:
  using Clock = std::chrono::steady_clock;
  std::string op_;
  double flops_, bytes_;
  Clock::time_point t0_;
};

class ProfilingBackend final : public Backend {
 public:
  explicit ProfilingBackend(Backend& inner) : in_(inner) {}
  const char* name() const override { return in_.name(); }
  Device device() const override { return in_.device(); }
  void* allocate(size_t bytes) override { return in_.allocate(bytes); }
  void release(void* p, size_t bytes) override { in_.release(p, bytes); }
  void copy_to_host(const void* src, void* dst, size_t bytes) override {
    Timer t("copy_to_host", 0, static_cast<double>(bytes));
    in_.copy_to_host(src, dst, bytes);
  }
  void copy_from_host(const void* src, void* dst, size_t bytes) override {
    Timer t("copy_from_host", 0, static_cast<double>(bytes));
    in_.copy_from_host(src, dst, bytes);
  }
  bool host_addressable() const override { return in_.host_addressable(); }
  MemoryStats memory_stats() const override { return in_.memory_stats(); }
  void reset_peak() override { in_.reset_peak(); }
  void trim() override { in_.trim(); }
  void synchronize() override { in_.synchronize(); }
  void convert(const Tensor& src, const Tensor& out) override {
    Timer t("convert", 0, bytes_of(src) + bytes_of(out));
    in_.convert(src, out);
  }
  int64_t count_nonfinite(const Tensor& x, bool negative_too) override {
    Timer t("count_nonfinite", 0, bytes_of(x));
    return in_.count_nonfinite(x, negative_too);
  }
  void adamw_step(const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v, const AdamWStep& h) override {
    Timer t("adamw_step", 0, 4 * bytes_of(p) + 3 * bytes_of(p));
    in_.adamw_step(p, g, m, v, h);
  }
  void fill(const Tensor& out, double value) override {
    Timer t("fill", 0, bytes_of(out));
    in_.fill(out, value);
  }
  void copy(const Tensor& src, const Tensor& out) override {
    Timer t("copy", 0, bytes_of(src) + bytes_of(out));
    in_.copy(src, out);
  }
  void unary(UnaryOp op, const Tensor& x, const Tensor& out, double alpha) override {
    Timer t(unary_name(op), 0, bytes_of(x) + bytes_of(out));
    in_.unary(op, x, out, alpha);
  }
  void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) override {
    std::string name = binary_name(op);
    if (g_shapes.load(std::memory_order_relaxed)) {  // " [a] [b]": which elementwise products cost
      for (const Tensor* t : {&a, &b}) {
        name.append(" [");
        for (int64_t i = 0; i < t->dim(); ++i) {
          if (i) name.append(",");
          name.append(std::to_string(t->size(i)));
        }
        name.append("]");
      }
    }
    Timer t(name, 0, bytes_of(a) + bytes_of(b) + bytes_of(out));
    in_.binary(op, a, b, out);
  }
  void sum_to(const Tensor& x, const Tensor& out) override {
    Timer t("sum_to", 0, bytes_of(x) + bytes_of(out));
    in_.sum_to(x, out);
  }
  void matmul(const Tensor& a, bool ta, const Tensor& b, bool tb, const Tensor& out, int64_t batch, int64_t m,
              int64_t n, int64_t k, int64_t stride_a, int64_t stride_b) override {
    std::string op = m == 1 ? "matmul gemv (1 row)" : batch > 1 ? "matmul batched" : "matmul gemm";
    if (g_shapes.load(std::memory_order_relaxed)) {
      char shape[128];
      std::snprintf(shape, sizeof shape, " %lldx[%lld,%lld]%sx[%lld,%lld]%s", static_cast<long long>(batch),
                    static_cast<long long>(m), static_cast<long long>(k), ta ? "^T" : "", static_cast<long long>(k),
                    static_cast<long long>(n), tb ? "^T" : "");
      op.append(shape);
    }
    Timer t(op, 2.0 * static_cast<double>(batch) * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k),
            bytes_of(a) + bytes_of(b) + bytes_of(out));
    in_.matmul(a, ta, b, tb, out, batch, m, n, k, stride_a, stride_b);
  }
  void rmsnorm(const Tensor& x, const Tensor& w, double eps, const Tensor& out) override {
    Timer t("rmsnorm", 0, bytes_of(x) + bytes_of(out));
    in_.rmsnorm(x, w, eps, out);
  }
  void rms_rstd(const Tensor& x, double eps, const Tensor& out) override {
    Timer t("rms_rstd", 0, bytes_of(x) + bytes_of(out));
    in_.rms_rstd(x, eps, out);
  }
  void rope(const Tensor& x, int64_t pos0, double theta, bool inverse, const Tensor& out) override {
    Timer t("rope", 0, bytes_of(x) + bytes_of(out));
    in_.rope(x, pos0, theta, inverse, out);
  }
  void unit_lower_inverse(const Tensor& l, const Tensor& out) override {
    Timer t("unit_lower_inverse", 0, bytes_of(l) + bytes_of(out));
    in_.unit_lower_inverse(l, out);
  }
  void causal_decay(const Tensor& cs, const Tensor& out) override {
    Timer t("causal_decay", 0, bytes_of(cs) + bytes_of(out));
    in_.causal_decay(cs, out);
  }
  void softmax(const Tensor& x, const Tensor& out) override {
    Timer t("softmax", 0, bytes_of(x) + bytes_of(out));
    in_.softmax(x, out);
  }
  void masked_softmax(const Tensor& x, const AttentionShape& s, const Tensor& out) override {
    Timer t("masked_softmax", 0, bytes_of(x) + bytes_of(out));
    in_.masked_softmax(x, s, out);
  }
  void cross_entropy(const Tensor& logits, const std::vector<int32_t>& targets, const Tensor& nll) override {
    Timer t("cross_entropy", 0, bytes_of(logits) + bytes_of(nll));
    in_.cross_entropy(logits, targets, nll);
  }
  void onehot_sub(const Tensor& x, const std::vector<int32_t>& targets, const Tensor& out) override {
    Timer t("onehot_sub", 0, bytes_of(x) + bytes_of(out));
    in_.onehot_sub(x, targets, out);
  }
  void gather_rows(const Tensor& table, const std::vector<int32_t>& ids, const Tensor& out) override {
    Timer t("gather_rows", 0, 2 * bytes_of(out));
    in_.gather_rows(table, ids, out);
  }
  void scatter_add_rows(const Tensor& rows, const std::vector<int32_t>& ids, const Tensor& out) override {
    Timer t("scatter_add_rows", 0, 2 * bytes_of(rows));
    in_.scatter_add_rows(rows, ids, out);
  }
  void silu_mul(const Tensor& a, const Tensor& b, const Tensor& out) override {
    Timer t("silu_mul", 0, bytes_of(a) + bytes_of(b) + bytes_of(out));
    in_.silu_mul(a, b, out);
  }
  void silu_mul_backward(const Tensor& a, const Tensor& b, const Tensor& g, const Tensor& da,
                         const Tensor& db) override {
    Timer t("silu_mul_backward", 0, bytes_of(a) + bytes_of(b) + bytes_of(g) + bytes_of(da) + bytes_of(db));
    in_.silu_mul_backward(a, b, g, da, db);
  }
  void rmsnorm_backward(const Tensor& x, const Tensor& w, const Tensor& g, double eps, const Tensor& dx,
                        const Tensor& dw) override {
    Timer t("rmsnorm_backward", 0, bytes_of(x) + bytes_of(g) + bytes_of(dx));
    in_.rmsnorm_backward(x, w, g, eps, dx, dw);
  }
  void cross_entropy_backward(const Tensor& logits, const std::vector<int32_t>& targets, const Tensor& g,
                              const Tensor& dlogits) override {
    Timer t("cross_entropy_backward", 0, bytes_of(logits) + bytes_of(dlogits));
    in_.cross_entropy_backward(logits, targets, g, dlogits);
  }
  void cross_entropy_backward_backward(const Tensor& logits, const Tensor& b, const std::vector<int32_t>& targets,
                                       const Tensor& g, const Tensor& dz, const Tensor& c, const Tensor& dg) override {
    Timer t("cross_entropy_backward_backward", 0, bytes_of(logits) + bytes_of(b) + bytes_of(dz) + bytes_of(c));
    in_.cross_entropy_backward_backward(logits, b, targets, g, dz, c, dg);
  }
  void attention_forward(const AttentionShape& s, const Tensor& q, const Tensor& k, const Tensor& v,
                         const Tensor& o, const Tensor& lse) override {
    Timer t("attention_forward", 4.0 * static_cast<double>(s.head_dim) * visible_pairs(s), 0);
    in_.attention_forward(s, q, k, v, o, lse);
  }
  void attention_backward(const AttentionShape& s, const Tensor& q, const Tensor& k, const Tensor& v,
                          const Tensor& o, const Tensor& lse, const Tensor& dout, const Tensor& dq, const Tensor& dk,
                          const Tensor& dv) override {
    // Recomputed scores, dV, dP, dQ and dK: five products per visible pair.
    Timer t("attention_backward", 10.0 * static_cast<double>(s.head_dim) * visible_pairs(s), 0);
    in_.attention_backward(s, q, k, v, o, lse, dout, dq, dk, dv);
  }
  void attention_forward_bf16_cache(const AttentionShape& s, const Tensor& q, const Tensor& kc, const Tensor& vc,
                                    const Tensor& k, const Tensor& v, const Tensor& o, const Tensor& lse) override {
    Timer t("attention_forward_bf16_cache", 4.0 * static_cast<double>(s.head_dim) * visible_pairs(s), 0);
    in_.attention_forward_bf16_cache(s, q, kc, vc, k, v, o, lse);
  }
  void attention_backward_bf16_cache(const AttentionShape& s, const Tensor& q, const Tensor& kc, const Tensor& vc,
                                     const Tensor& k, const Tensor& v, const Tensor& o, const Tensor& lse,
                                     const Tensor& dout, const Tensor& dq, const Tensor& dk, const Tensor& dv) override {
    Timer t("attention_backward_bf16_cache", 10.0 * static_cast<double>(s.head_dim) * visible_pairs(s), 0);
    in_.attention_backward_bf16_cache(s, q, kc, vc, k, v, o, lse, dout, dq, dk, dv);
  }
  void attention_backward_backward(const AttentionShape& s, const Tensor& q, const Tensor& k,
                                   const Tensor& v, const Tensor& o, const Tensor& lse, const Tensor& dout,
                                   const Tensor& aq, const Tensor& ak, const Tensor& av, const Tensor& gq,
                                   const Tensor& gk, const Tensor& gv, const Tensor& gdout) override {
    // Scores, dP, B (two), X, then gq, gk (two each), gdout (two), gv: twelve products per
    // visible pair when the tile's band fits one key block (the usual case).
    Timer t("attention_backward_backward", 24.0 * static_cast<double>(s.head_dim) * visible_pairs(s), 0);
    in_.attention_backward_backward(s, q, k, v, o, lse, dout, aq, ak, av, gq, gk, gv, gdout);
  }

 private:
  Backend& in_;
};

}  // namespace

void enable(bool on) { g_on = on; }
void by_shape(bool on) { g_shapes = on; }
bool enabled() { return g_on.load(std::memory_order_relaxed); }

void reset() {
  std::lock_guard<std::mutex> g(g_mu);
  g_stats.clear();
}

std::vector<OpStat> snapshot() {
  std::vector<OpStat> out;
  {
    std::lock_guard<std::mutex> g(g_mu);
    for (auto& [k, v] : g_stats) out.push_back(v);
  }
  std::sort(out.begin(), out.end(), [](const OpStat& a, const OpStat& b) { return a.seconds > b.seconds; });
  return out;
}

Backend& wrap(Backend& inner) {
  static std::mutex mu;
  static auto* wrappers = new std::map<Backend*, ProfilingBackend*>;  // one per backend, never freed
  std::lock_guard<std::mutex> g(mu);
  auto& w = (*wrappers)[&inner];
  if (!w) w = new ProfilingBackend(inner);
  return *w;
}

void print(const std::vector<OpStat>& ops, double wall, double peak_gflops, std::FILE* out) {
  double inside = 0;
  for (auto& o : ops) inside += o.seconds;
  std::fprintf(out, "| op | calls | seconds | share of wall | GFLOP/s | %% of sgemm peak | GB/s |\n"
                    "|---|---:|---:|---:|---:|---:|---:|\n");
  for (auto& o : ops) {
    std::fprintf(out, "| %s | %lld | %.4f | %.1f%% |", o.op.c_str(), static_cast<long long>(o.calls), o.seconds,
                 wall > 0 ? 100.0 * o.seconds / wall : 0.0);
    if (o.flops > 0)
      std::fprintf(out, " %.1f | %.1f%% | |\n", o.flops / o.seconds * 1e-9,
                   peak_gflops > 0 ? 100.0 * o.flops / o.seconds * 1e-9 / peak_gflops : 0.0);
    else
      std::fprintf(out, " | | %.2f |\n", o.seconds > 0 ? o.bytes / o.seconds * 1e-9 : 0.0);
  }
  std::fprintf(out, "| outside the backend (graph, allocation, dispatch, glue) | | %.4f | %.1f%% | | | |\n",
               std::max(0.0, wall - inside), wall > 0 ? 100.0 * std::max(0.0, wall - inside) / wall : 0.0);
}

}  // namespace ttt::profile
