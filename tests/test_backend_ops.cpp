// The cross-backend op harness (llama.cpp's test-backend-ops idea, at this project's standard):
// every op case of tests/op_cases.h (every op of autodiff/ops.h, the fused ones and each sequence
// mixer as one op) runs on each backend that is built and present and on the CPU backend, in
// float64 on the same inputs, and the two must agree on the values, the first derivatives and
// the Hessian-vector products. A planted wrong kernel must be caught. TTT_BACKEND_OPS_PERF=1
// adds a perf mode that prints the time per op case on each backend.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <stdexcept>
#include <set>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/attention_cpu.h"
#include "op_cases.h"

namespace ttt::test {
namespace {

struct Derivatives {
  std::vector<double> values, grads, hvp;
};

std::vector<double> flatten(const std::vector<Tensor>& gs, const std::vector<Tensor>& like) {
  std::vector<double> out;
  for (size_t i = 0; i < like.size(); ++i) {
    const std::vector<double> v = gs[i].defined() ? gs[i].to_vector() : std::vector<double>(like[i].numel(), 0.0);
    out.insert(out.end(), v.begin(), v.end());
  }
  return out;
}

// Values, gradient of sum(f(x) * r) and its Hessian-vector product along dirs, on device d.
// The inputs, r and dirs are made on the CPU and copied, so every backend sees the same numbers.
Derivatives run_on(const OpCase& c, Device d, const std::vector<Tensor>& inputs, const Tensor& r,
                   const std::vector<Tensor>& dirs) {
  std::vector<Tensor> xs;
  for (const auto& x : inputs) xs.push_back(to_device(x, d).detach().set_requires_grad(true));
  Derivatives out;
  const Tensor y = c.fn(xs);
  if (y.device() != d) throw std::runtime_error(c.name + ": the result left device " + d.str());
  out.values = y.to_vector();
  const Tensor loss = sum(mul(y, to_device(r, d)));
  out.grads = flatten(grad({loss}, xs), xs);  // first order: the fused backward kernels
  if (c.second_order) {  // the gradient's own graph: the backward-of-backward kernels
    const auto gs = grad({loss}, xs, {}, /*create_graph=*/true);
    Tensor s;
    for (size_t i = 0; i < xs.size(); ++i) {
      if (!gs[i].defined() || !gs[i].requires_grad()) continue;
      const Tensor term = sum(mul(gs[i], to_device(dirs[i], d)));
      s = s.defined() ? add(s, term) : term;
    }
    out.hvp = s.defined() ? flatten(grad({s}, xs), xs) : std::vector<double>();
  }
  return out;
}

// Max |a - b| / max(1, max |b|), and infinity for a length mismatch or a NaN.
double rel_diff(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) return INFINITY;
  double err = 0, scale = 1;
  for (size_t i = 0; i < a.size(); ++i) {
    const double e = std::fabs(a[i] - b[i]);
    if (std::isnan(e)) return INFINITY;
    err = std::max(err, e);
    scale = std::max(scale, std::fabs(b[i]));
  }
  return err / scale;
}

struct OpDiff {
  std::string op;
  double value = 0, grad = 0, hvp = 0;
  std::string error;  // an exception on the backend
};

// Every case on device d against the CPU backend, over two seeds; the worst of each measure.
std::vector<OpDiff> compare_with_cpu(Device d, const std::vector<OpCase>& cases) {
  std::vector<OpDiff> out;
  for (size_t i = 0; i < cases.size(); ++i) {
    const OpCase& c = cases[i];
    OpDiff diff;
    diff.op = c.name;
    for (uint64_t seed : {11, 12}) {
      Rng rng(seed * 1009 + i);
      const std::vector<Tensor> inputs = c.make_inputs(rng);
      std::vector<Tensor> dirs;
      for (const auto& x : inputs) dirs.push_back(randn(x.shape(), rng, 1.0, DType::F64));
      Tensor r;
      {
        NoGrad ng;
        std::vector<Tensor> leaves;
        for (const auto& x : inputs) leaves.push_back(x.detach());
        r = randn(c.fn(leaves).shape(), rng, 1.0, DType::F64);
      }
      const Derivatives want = run_on(c, Device::cpu(), inputs, r, dirs);
      try {
        const Derivatives got = run_on(c, d, inputs, r, dirs);
        diff.value = std::max(diff.value, rel_diff(got.values, want.values));
        diff.grad = std::max(diff.grad, rel_diff(got.grads, want.grads));
        diff.hvp = std::max(diff.hvp, rel_diff(got.hvp, want.hvp));
      } catch (const std::exception& e) {
        diff.error = e.what();
      }
    }
    out.push_back(diff);
  }
  return out;
}

// Cases for the cross-backend comparison only (too large for the finite-difference op check):
// shapes that reach the paths a GPU backend has and the small cases do not: attention over
// several 32-key blocks, head dimensions above 32 (a warp's lanes hold more than one entry),
// decoding rows (one query), k_grad_from, and rows longer than a thread block.
std::vector<OpCase> large_cases() {
  using V = std::vector<Tensor>;
  std::vector<OpCase> cs;
  auto add = [&](std::string name, std::function<V(Rng&)> make, std::function<Tensor(const V&)> fn) {
    OpCase c;
    c.name = std::move(name);
    c.make_inputs = std::move(make);
    c.fn = std::move(fn);
    cs.push_back(std::move(c));
  };
  auto rn = [](Rng& r, const Shape& s) { return randn(s, r, 1.0, DType::F64); };
  struct A {
    const char* name;
    int64_t tq, cache, heads, dim, window, k_grad_from;
  };
  for (const A a : {A{"attention_large_causal", 40, 50, 2, 40, 0, 0}, A{"attention_large_window", 70, 30, 3, 72, 45, 30},
                    A{"attention_large_decode", 1, 100, 2, 64, 0, 0}, A{"attention_large_decode_window", 1, 100, 2, 33, 37, 0}}) {
    add(
        a.name,
        [a, rn](Rng& r) {
          const int64_t tk = a.tq + a.cache;
          return V{rn(r, {a.tq, a.heads, a.dim}), rn(r, {tk, a.heads, a.dim}), rn(r, {tk, a.heads, a.dim})};
        },
        [a](const V& x) {
          AttentionOptions o;
          o.window = a.window;
          o.q_pos0 = 7 + a.cache;
          o.k_pos0 = 7;
          o.k_grad_from = a.k_grad_from;
          return attention(x[0], x[1], x[2], o);
        });
  }
  add("softmax_long_rows", [rn](Rng& r) { return V{rn(r, {3, 700})}; }, [](const V& x) { return softmax(x[0]); });
  add("cross_entropy_long_rows", [rn](Rng& r) { return V{rn(r, {5, 600})}; },
      [](const V& x) { return cross_entropy(x[0], {3, 599, 0, 250, 77}); });
  add("rmsnorm_long_rows", [rn](Rng& r) { return V{rn(r, {4, 513}), rn(r, {513})}; },
      [](const V& x) { return rmsnorm(x[0], x[1], 1e-6); });
  add("matmul_batched_broadcast", [rn](Rng& r) { return V{rn(r, {3, 37, 45}), rn(r, {45, 29})}; },
      [](const V& x) { return matmul(x[0], x[1]); });
  add("sum_to_columns", [rn](Rng& r) { return V{rn(r, {300, 5, 7})}; }, [](const V& x) { return sum_to(x[0], {1, 5, 1}); });
  // The head frozen (the inner step's case): its gradient in x is the fused differentiable op whose
  // backward is cross_entropy_backward_backward, in row blocks of 4. w is an input only so that
  // both backends see the same numbers; the finite-difference check cannot take this case.
  for (bool wt : {false, true})
    add(std::string("linear_cross_entropy_frozen_head") + (wt ? "_transposed" : ""),
        [rn, wt](Rng& r) { return V{rn(r, {9, 6}), rn(r, wt ? Shape{6, 11} : Shape{11, 6})}; },
        [wt](const V& x) { return linear_cross_entropy(x[0], x[1].detach(), {1, 4, 0, 10, 7, 7, 2, 9, 5}, wt, 4); });
  return cs;
}

// Float64 on two backends: only the order of floating-point sums may differ.
constexpr double kTol = 1e-10;

std::vector<Device> other_devices() {
  std::vector<Device> ds;
  for (const auto& b : backends())
    for (Device d : b.devices)
      if (b.built && d != Device::cpu()) ds.push_back(d);
  return ds;
}

TEST(BackendOps, EveryOpOfEveryBackendMatchesTheCpuInFloat64) {
  auto cases = all_op_cases();
  for (auto& c : large_cases()) cases.push_back(std::move(c));
  const auto devices = other_devices();
  ASSERT_FALSE(devices.empty()) << "no second backend to compare (cpu-checked is always built)";
  for (Device d : devices) {
    for (const OpDiff& r : compare_with_cpu(d, cases)) {
      EXPECT_TRUE(r.error.empty()) << d.str() << " " << r.op << ": " << r.error;
      EXPECT_LT(r.value, kTol) << d.str() << " " << r.op << ": values differ from the CPU";
      EXPECT_LT(r.grad, kTol) << d.str() << " " << r.op << ": first derivatives differ from the CPU";
      EXPECT_LT(r.hvp, kTol) << d.str() << " " << r.op << ": Hessian-vector products differ from the CPU";
    }
  }
}

// The CUDA backend where it is not built, built without a GPU (this project's CI) or present:
// `ttt info`'s entry and --device cuda's one-line error say which, and a present GPU's memory is
// served from the cache on the steady path (no cudaMalloc for a size seen before).
TEST(BackendOps, CudaIsReportedAsBuiltAndPresentOrAbsentCleanly) {
  const BackendInfo* cuda = nullptr;
  const auto all = backends();
  for (const auto& b : all)
    if (b.name == "cuda") cuda = &b;
  ASSERT_NE(cuda, nullptr) << "backends() has no cuda entry";
  auto error_of = [](const std::string& dev) -> std::string {
    try {
      require_device(dev);
    } catch (const std::invalid_argument& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_NE(error_of("cuda:99"), "");
  if (!cuda->built) {
    EXPECT_TRUE(cuda->devices.empty());
    EXPECT_NE(error_of("cuda").find("not built"), std::string::npos) << error_of("cuda");
    return;
  }
  if (cuda->devices.empty()) {
    EXPECT_EQ(cuda->note, "built, no GPU present");
    const std::string e = error_of("cuda");
    EXPECT_NE(e.find("no CUDA device present"), std::string::npos) << e;
    EXPECT_EQ(e.find('\n'), std::string::npos) << "not one line: " << e;
    GTEST_SKIP() << "CUDA backend built, no GPU present: the op comparison runs where one is";
  }
  EXPECT_EQ(error_of("cuda"), "");
  Backend& b = backend_for(cuda->devices.front());
  EXPECT_STREQ(b.name(), "cuda");
  EXPECT_FALSE(b.host_addressable());
  const std::vector<double> host = {1.5, -2.25, 3.0};
  Tensor t = Tensor::empty({3}, DType::F64, cuda->devices.front());
  copy_from_host(host.data(), t);
  EXPECT_EQ(t.to_vector(), host);
  const uint64_t misses = b.memory_stats().system_allocs;
  for (int i = 0; i < 4; ++i) Tensor::empty({1000, 1000}, DType::F32, cuda->devices.front());
  EXPECT_LE(b.memory_stats().system_allocs, misses + 1) << "the caching allocator called cudaMalloc on the steady path";
}

// A backend that forwards everything to the checked one, with one kernel of each order wrong.
class PlantedBackend final : public Backend {
 public:
  explicit PlantedBackend(Backend& in) : in_(in) {}
  enum class Fault { None, SiluMulValue, RmsnormBackward, AttentionBackwardBackward } fault = Fault::None;

  const char* name() const override {
    used.insert(__func__); return "planted"; }
  Device device() const override {
    used.insert(__func__); return in_.device(); }
  void* allocate(size_t b) override {
    used.insert(__func__); return in_.allocate(b); }
  void release(void* p, size_t b) override {
    used.insert(__func__); in_.release(p, b); }
  void copy_to_host(const void* s, void* d, size_t b) override {
    used.insert(__func__); in_.copy_to_host(s, d, b); }
  void copy_from_host(const void* s, void* d, size_t b) override {
    used.insert(__func__); in_.copy_from_host(s, d, b); }
  bool host_addressable() const override {
    used.insert(__func__); return in_.host_addressable(); }
  MemoryStats memory_stats() const override {
    used.insert(__func__); return in_.memory_stats(); }
  void reset_peak() override {
    used.insert(__func__); in_.reset_peak(); }
  void trim() override {
    used.insert(__func__); in_.trim(); }
  void fill(const Tensor& o, double v) override {
    used.insert(__func__); in_.fill(o, v); }
  void copy(const Tensor& s, const Tensor& o) override {
    used.insert(__func__); in_.copy(s, o); }
  void convert(const Tensor& s, const Tensor& o) override {
    used.insert(__func__); in_.convert(s, o); }
  int64_t count_nonfinite(const Tensor& x, bool n) override {
    used.insert(__func__); return in_.count_nonfinite(x, n); }
  void adamw_step(const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v, const AdamWStep& h) override {
    used.insert(__func__);
    in_.adamw_step(p, g, m, v, h);
  }
  void unary(UnaryOp op, const Tensor& x, const Tensor& o, double a) override {
    used.insert(__func__); in_.unary(op, x, o, a); }
  void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& o) override {
    used.insert(__func__); in_.binary(op, a, b, o); }
  void sum_to(const Tensor& x, const Tensor& o) override {
    used.insert(__func__); in_.sum_to(x, o); }
  void matmul(const Tensor& a, bool ta, const Tensor& b, bool tb, const Tensor& o, int64_t batch, int64_t m,
              int64_t n, int64_t k, int64_t sa, int64_t sb) override {
    used.insert(__func__);
    in_.matmul(a, ta, b, tb, o, batch, m, n, k, sa, sb);
  }
  void rmsnorm(const Tensor& x, const Tensor& w, double eps, const Tensor& o) override {
    used.insert(__func__); in_.rmsnorm(x, w, eps, o); }
  void rms_rstd(const Tensor& x, double eps, const Tensor& o) override {
    used.insert(__func__); in_.rms_rstd(x, eps, o); }
  void rope(const Tensor& x, int64_t p, double t, bool inv, const Tensor& o) override {
    used.insert(__func__); in_.rope(x, p, t, inv, o); }
  void unit_lower_inverse(const Tensor& l, const Tensor& o) override {
    used.insert(__func__); in_.unit_lower_inverse(l, o); }
  void causal_decay(const Tensor& cs, const Tensor& o) override {
    used.insert(__func__); in_.causal_decay(cs, o); }
  void softmax(const Tensor& x, const Tensor& o) override {
    used.insert(__func__); in_.softmax(x, o); }
  void masked_softmax(const Tensor& x, const AttentionShape& s, const Tensor& o) override {
    used.insert(__func__); in_.masked_softmax(x, s, o); }
  void cross_entropy(const Tensor& l, const std::vector<int32_t>& t, const Tensor& n) override {
    used.insert(__func__); in_.cross_entropy(l, t, n); }
  void onehot_sub(const Tensor& x, const std::vector<int32_t>& t, const Tensor& o) override {
    used.insert(__func__); in_.onehot_sub(x, t, o); }
  void gather_rows(const Tensor& t, const std::vector<int32_t>& ids, const Tensor& o) override {
    used.insert(__func__); in_.gather_rows(t, ids, o); }
  void scatter_add_rows(const Tensor& r, const std::vector<int32_t>& ids, const Tensor& o) override {
    used.insert(__func__);
    in_.scatter_add_rows(r, ids, o);
  }
  void silu_mul(const Tensor& a, const Tensor& b, const Tensor& o) override {
    used.insert(__func__);
    in_.silu_mul(a, b, o);
    if (fault == Fault::SiluMulValue) in_.unary(UnaryOp::MulScalar, o, o, 1.0 + 1e-6);  // a 1e-6 relative error
  }
  void silu_mul_backward(const Tensor& a, const Tensor& b, const Tensor& g, const Tensor& da, const Tensor& db) override {
    used.insert(__func__);
    in_.silu_mul_backward(a, b, g, da, db);
  }
  void rmsnorm_backward(const Tensor& x, const Tensor& w, const Tensor& g, double eps, const Tensor& dx,
                        const Tensor& dw) override {
    used.insert(__func__);
    in_.rmsnorm_backward(x, w, g, eps * (fault == Fault::RmsnormBackward ? 10 : 1), dx, dw);  // the wrong epsilon
  }
  void cross_entropy_backward(const Tensor& l, const std::vector<int32_t>& t, const Tensor& g, const Tensor& d) override {
    used.insert(__func__);
    in_.cross_entropy_backward(l, t, g, d);
  }
  void cross_entropy_backward_backward(const Tensor& l, const Tensor& b, const std::vector<int32_t>& t,
                                       const Tensor& g, const Tensor& dz, const Tensor& c, const Tensor& dg) override {
    used.insert(__func__);
    in_.cross_entropy_backward_backward(l, b, t, g, dz, c, dg);
  }
  void attention_forward(const AttentionShape& s, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& o,
                         const Tensor& lse) override {
    used.insert(__func__);
    in_.attention_forward(s, q, k, v, o, lse);
  }
  void attention_backward(const AttentionShape& s, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& o,
                          const Tensor& lse, const Tensor& dout, const Tensor& dq, const Tensor& dk,
                          const Tensor& dv) override {
    used.insert(__func__);
    in_.attention_backward(s, q, k, v, o, lse, dout, dq, dk, dv);
  }
  void attention_forward_bf16_cache(const AttentionShape& s, const Tensor& q, const Tensor& kc, const Tensor& vc,
                                    const Tensor& k, const Tensor& v, const Tensor& o, const Tensor& lse) override {
    used.insert(__func__);
    in_.attention_forward_bf16_cache(s, q, kc, vc, k, v, o, lse);
  }
  void attention_backward_bf16_cache(const AttentionShape& s, const Tensor& q, const Tensor& kc, const Tensor& vc,
                                     const Tensor& k, const Tensor& v, const Tensor& o, const Tensor& lse,
                                     const Tensor& dout, const Tensor& dq, const Tensor& dk, const Tensor& dv) override {
    used.insert(__func__);
    in_.attention_backward_bf16_cache(s, q, kc, vc, k, v, o, lse, dout, dq, dk, dv);
  }
  void attention_backward_backward(const AttentionShape& s, const Tensor& q, const Tensor& k, const Tensor& v,
                                   const Tensor& o, const Tensor& lse, const Tensor& dout, const Tensor& aq,
                                   const Tensor& ak, const Tensor& av, const Tensor& gq, const Tensor& gk,
                                   const Tensor& gv, const Tensor& gdout) override {
    used.insert(__func__);
    in_.attention_backward_backward(s, q, k, v, o, lse, dout, aq, ak, av, gq, gk, gv, gdout);
    if (fault == Fault::AttentionBackwardBackward) in_.unary(UnaryOp::MulScalar, gk, gk, 0.999);  // gk 0.1% off
  }

 private:
  Backend& in_;

 public:
  mutable std::set<std::string> used;  // the interface methods called through this backend
};

std::vector<OpCase> cases_named(const std::string& prefix) {
  std::vector<OpCase> out;
  for (auto& c : all_op_cases())
    if (c.name.rfind(prefix, 0) == 0) out.push_back(c);
  return out;
}

TEST(BackendOps, CatchesAPlantedWrongKernelOfEachOrder) {
  const Device checked{DeviceKind::CheckedCPU, 0};
  PlantedBackend planted(checked_cpu_backend());
  ScopedBackendOverride route(DeviceKind::CheckedCPU, planted);
  using F = PlantedBackend::Fault;
  struct Plant {
    F fault;
    std::string cases;
    double OpDiff::*measure;
    const char* what;
  };
  for (const Plant& p : {Plant{F::SiluMulValue, "silu_mul", &OpDiff::value, "silu_mul's values"},
                         Plant{F::RmsnormBackward, "rmsnorm", &OpDiff::grad, "rmsnorm's fused backward"},
                         Plant{F::AttentionBackwardBackward, "attention", &OpDiff::hvp,
                               "attention's backward of the backward"}}) {
    const auto cases = cases_named(p.cases);
    ASSERT_FALSE(cases.empty()) << p.cases;
    planted.fault = F::None;
    double clean = 0, caught = 0;
    for (const auto& r : compare_with_cpu(checked, cases)) clean = std::max(clean, r.*p.measure);
    planted.fault = p.fault;
    for (const auto& r : compare_with_cpu(checked, cases)) caught = std::max(caught, r.*p.measure);
    EXPECT_LT(clean, kTol) << p.what << " without the fault";
    EXPECT_GT(caught, kTol) << "the harness missed a planted error in " << p.what;
  }
}

// Attention over a bf16 window cache (--kv-dtype bf16) on device d, forward and first-order
// gradients of <r, o> with respect to q and the chunk's k and v, against the float64 reference
// kernels over the same keys (the cache's bf16 values widened exactly). Shapes cover decoding
// (one query over a long cache), chunks whose key band crosses the cache's end and key blocks of
// more than 2048 keys, with and without a window.
void expect_bf16_cache_attention_matches_float64(Device d) {
  struct Case {
    int64_t tq, tc, heads, dim, window;
  };
  for (const Case c : {Case{1, 2500, 3, 16, 0}, Case{1, 40, 2, 8, 16}, Case{37, 2200, 2, 16, 2100}, Case{130, 90, 2, 8, 0},
                       Case{5, 3, 1, 4, 4}}) {
    Rng rng(91 + static_cast<uint64_t>(c.tq + c.tc));
    const int64_t H = c.heads, D = c.dim, tk = c.tc + c.tq;
    const Tensor q = randn({c.tq, H, D}, rng), k = randn({c.tq, H, D}, rng), v = randn({c.tq, H, D}, rng);
    const Tensor kc = to_dtype(randn({c.tc, H, D}, rng), DType::BF16), vc = to_dtype(randn({c.tc, H, D}, rng), DType::BF16);
    const Tensor r = randn({c.tq, H, D}, rng);
    AttentionOptions opt;
    opt.window = c.window;
    opt.q_pos0 = 100 + c.tc;
    opt.k_pos0 = 100;
    std::vector<double> got_o, got_dq, got_dk, got_dv;
    {
      GradMode on(true);
      const Tensor qd = to_device(q, d).set_requires_grad(true), kd = to_device(k, d).set_requires_grad(true),
                   vd = to_device(v, d).set_requires_grad(true);
      const Tensor o = attention_bf16_cache(qd, to_device(kc, d), to_device(vc, d), kd, vd, opt);
      const auto g = grad({sum(mul(o, to_device(r, d)))}, {qd, kd, vd});
      got_o = o.to_vector();
      got_dq = g[0].to_vector();
      got_dk = g[1].to_vector();
      got_dv = g[2].to_vector();
    }
    // The oracle: float64 over [widened cache; chunk].
    std::vector<double> K = to_dtype(kc, DType::F32).to_vector(), V = to_dtype(vc, DType::F32).to_vector();
    for (double x : k.to_vector()) K.push_back(x);
    for (double x : v.to_vector()) V.push_back(x);
    const std::vector<double> Q = q.to_vector(), R = r.to_vector();
    AttentionShape s;
    s.tq = c.tq;
    s.tk = tk;
    s.heads = H;
    s.head_dim = D;
    s.q_pos0 = opt.q_pos0;
    s.k_pos0 = opt.k_pos0;
    s.window = c.window;
    s.scale = 1 / std::sqrt(static_cast<double>(D));
    std::vector<double> o(Q.size()), lse(static_cast<size_t>(H * c.tq)), dq(Q.size()), dk(K.size()), dv(V.size());
    kernels::attention_forward_reference<double>(s, Q.data(), K.data(), V.data(), o.data(), lse.data());
    kernels::attention_backward_reference<double>(s, Q.data(), K.data(), V.data(), o.data(), lse.data(), R.data(),
                                                  dq.data(), dk.data(), dv.data());
    const size_t chunk0 = static_cast<size_t>(c.tc * H * D);
    const std::string what = d.str() + " bf16 cache tq " + std::to_string(c.tq) + " cache " + std::to_string(c.tc);
    EXPECT_LT(rel_diff(got_o, o), 2e-5) << what << " o";
    EXPECT_LT(rel_diff(got_dq, dq), 2e-5) << what << " dq";
    EXPECT_LT(rel_diff(got_dk, std::vector<double>(dk.begin() + chunk0, dk.end())), 2e-5) << what << " dk";
    EXPECT_LT(rel_diff(got_dv, std::vector<double>(dv.begin() + chunk0, dv.end())), 2e-5) << what << " dv";
  }
}

TEST(BackendOps, Bf16CacheAttentionMatchesFloat64OnEachBackend) {
  expect_bf16_cache_attention_matches_float64(Device::cpu());
  for (Device d : other_devices()) expect_bf16_cache_attention_matches_float64(d);
}

// The ops without derivatives, on device d against the CPU: the fused AdamW step (three steps,
// moments and parameters), the non-finite counts (planted NaN, infinities and negatives, in
// every dtype) and dtype conversions (float64 -> float32 -> bf16 -> float32, exactly).
void expect_non_differentiable_ops_match(Device d) {
  Rng rng(5);
  const Shape sh{37, 19};
  const Tensor p0 = randn(sh, rng), g0 = randn(sh, rng);
  auto run_adamw = [&](Device dev) {
    Tensor p = clone(to_device(p0, dev)), m = zeros(sh, DType::F32, dev), v = zeros(sh, DType::F32, dev);
    const Tensor g = to_device(g0, dev);
    for (int t = 1; t <= 3; ++t) {
      AdamWStep h;
      h.beta1 = 0.9f;
      h.beta2 = 0.95f;
      h.step = static_cast<float>(1e-2 / (1 - std::pow(0.9, t)));
      h.inv_bc2 = static_cast<float>(1 / (1 - std::pow(0.95, t)));
      h.eps = 1e-8f;
      h.decay = 0.999f;
      backend_for(dev).adamw_step(p, g, m, v, h);
    }
    std::vector<double> out = p.to_vector(), mv = m.to_vector(), vv = v.to_vector();
    out.insert(out.end(), mv.begin(), mv.end());
    out.insert(out.end(), vv.begin(), vv.end());
    return out;
  };
  EXPECT_LT(rel_diff(run_adamw(d), run_adamw(Device::cpu())), 1e-6) << d.str() << " adamw_step";

  std::vector<double> vals(64);
  for (size_t i = 0; i < vals.size(); ++i) vals[i] = rng.normal();
  vals[3] = NAN;
  vals[10] = INFINITY;
  vals[11] = -INFINITY;
  vals[20] = -2.5;
  for (DType dt : {DType::F32, DType::F64, DType::BF16})
    for (bool neg : {false, true}) {
      const Tensor here = from_vector(vals, {8, 8}, dt), there = from_vector(vals, {8, 8}, dt, d);
      EXPECT_EQ(count_nonfinite(there, neg), count_nonfinite(here, neg))
          << d.str() << " count_nonfinite " << dtype_name(dt) << (neg ? " with negatives" : "");
    }

  const Tensor x = randn({5, 7}, rng, 3.0, DType::F64);
  auto chain = [&](Device dev) {
    return to_dtype(to_dtype(to_dtype(to_device(x, dev), DType::F32), DType::BF16), DType::F32).to_vector();
  };
  EXPECT_EQ(chain(d), chain(Device::cpu())) << d.str() << " convert";
}

TEST(BackendOps, OpsWithoutDerivativesMatchTheCpu) {
  for (Device d : other_devices()) expect_non_differentiable_ops_match(d);
}

// Every method of the Backend interface is reached by the harness (through a recording backend
// over the checked one): no op of the interface goes unchecked.
TEST(BackendOps, TheHarnessReachesEveryOpOfTheInterface) {
  const Device checked{DeviceKind::CheckedCPU, 0};
  PlantedBackend rec(checked_cpu_backend());
  ScopedBackendOverride route(DeviceKind::CheckedCPU, rec);
  auto cases = all_op_cases();
  for (auto& c : large_cases()) cases.push_back(std::move(c));
  compare_with_cpu(checked, cases);
  expect_non_differentiable_ops_match(checked);
  expect_bf16_cache_attention_matches_float64(checked);
  for (const char* op :
       {"allocate", "release", "copy_to_host", "copy_from_host", "fill", "copy", "convert", "count_nonfinite",
        "adamw_step", "unary", "binary", "sum_to", "matmul", "rmsnorm", "rms_rstd", "rope", "unit_lower_inverse",
        "causal_decay", "softmax", "masked_softmax", "cross_entropy", "onehot_sub", "gather_rows", "scatter_add_rows",
        "silu_mul", "silu_mul_backward", "rmsnorm_backward", "cross_entropy_backward",
        "cross_entropy_backward_backward", "attention_forward", "attention_backward", "attention_backward_backward",
        "attention_forward_bf16_cache", "attention_backward_bf16_cache"})
    EXPECT_TRUE(rec.used.count(op)) << "the harness never calls the backend's " << op;
}

TEST(BackendOps, PerfPrintsTimePerOpOnEachBackend) {
  if (!std::getenv("TTT_BACKEND_OPS_PERF")) GTEST_SKIP() << "set TTT_BACKEND_OPS_PERF=1 for the perf mode";
  const auto cases = all_op_cases();
  std::vector<Device> devices = {Device::cpu()};
  for (Device d : other_devices()) devices.push_back(d);
  std::printf("| op case |");
  for (Device d : devices) std::printf(" %s (us, forward + backward + HVP) |", d.str().c_str());
  std::printf("\n|---|");
  for (size_t i = 0; i < devices.size(); ++i) std::printf("---:|");
  std::printf("\n");
  for (const auto& c : cases) {
    std::printf("| %s |", c.name.c_str());
    for (Device d : devices) {
      Rng rng(7);
      const auto inputs = c.make_inputs(rng);
      std::vector<Tensor> dirs;
      for (const auto& x : inputs) dirs.push_back(randn(x.shape(), rng, 1.0, DType::F64));
      Tensor r;
      {
        NoGrad ng;
        r = randn(c.fn(inputs).shape(), rng, 1.0, DType::F64);
      }
      double best = INFINITY;
      for (int rep = 0; rep < 5; ++rep) {
        const auto t0 = std::chrono::steady_clock::now();
        run_on(c, d, inputs, r, dirs);
        best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      }
      std::printf(" %.1f |", best * 1e6);
    }
    std::printf("\n");
  }
}

}  // namespace
}  // namespace ttt::test
