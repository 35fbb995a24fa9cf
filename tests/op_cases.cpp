// The op cases that every op check runs (tests/op_cases.h): random inputs, the op, and a
// reference for its values.
#include "op_cases.h"

#include <cmath>
#include <map>
#include <memory>
#include <mutex>

#include "backend/cpu/attention_cpu.h"
#include "model/model.h"

namespace ttt::test {
namespace {

using V = std::vector<Tensor>;
using D = std::vector<double>;

int64_t rint(Rng& r, int64_t lo, int64_t hi) { return lo + static_cast<int64_t>(r.next_u64() % (hi - lo + 1)); }
Tensor pos(Rng& r, const Shape& s) { return uniform(s, r, 0.5, 2.0, DType::F64); }

// Elementwise reference from a scalar function.
std::function<D(const V&)> ref1(double (*f)(double)) {
  return [f](const V& x) {
    D v = x[0].to_vector();
    for (auto& e : v) e = f(e);
    return v;
  };
}

// Attention cases share the reference kernel of backend/cpu/attention_cpu.h.
struct AttnSetup {
  int64_t tq, cache, heads, dim, window;
};
AttnSetup attn_setup(uint64_t seed) {
  Rng r(seed * 7 + 3);
  AttnSetup s;
  s.tq = rint(r, 1, 6);
  s.cache = rint(r, 0, 4);
  s.heads = rint(r, 1, 2);
  s.dim = 2 * rint(r, 1, 3);
  s.window = rint(r, 0, 1) ? rint(r, 1, 5) : 0;
  return s;
}

// A sequence mixer (model/sequence_memory.h) as one op: inputs are a chunk x [T, d] and the state
// an earlier chunk left; the output is the chunk's output and the new state, flattened. Values,
// first and second derivatives in x and in the state (the parameters are checked by the
// meta-gradient tests). Float64 and float32 models share their weights.
OpCase mixer_case(const std::string& name, model::ModelConfig cfg) {
  cfg.vocab_size = 11;
  cfg.hidden_size = 8;
  cfg.num_hidden_layers = 1;
  cfg.num_attention_heads = 2;
  cfg.intermediate_size = 8;
  cfg.sliding_window_size = 4;
  cfg.rope_theta = 10000;
  cfg.initializer_range = 0.4;
  auto m64 = std::make_shared<model::Model>(model::Model::init(cfg, 5, DType::F64));
  auto m32 = std::make_shared<model::Model>(model::Model::init(cfg, 5, DType::F32));
  OpCase c;
  c.name = name;
  c.make_inputs = [m64, cfg](Rng& r) {
    NoGrad ng;
    model::MixerState st;
    m64->mixer(0).forward(randn({5, cfg.hidden_size}, r, 1.0, DType::F64), 0, {}, &st);
    std::vector<Tensor> in = {randn({4, cfg.hidden_size}, r, 1.0, DType::F64)};
    for (auto& t : st.detached().tensors) in.push_back(clone(t));
    return in;
  };
  // The models on other devices (the cross-backend harness), made on first use.
  auto on_device = std::make_shared<std::map<std::pair<int, int>, std::shared_ptr<model::Model>>>();
  auto mu = std::make_shared<std::mutex>();
  c.fn = [m64, m32, on_device, mu](const std::vector<Tensor>& x) {
    const auto& base = x[0].dtype() == DType::F64 ? *m64 : *m32;
    const Device dev = x[0].device();
    const model::Model* mp = &base;
    if (dev != Device::cpu()) {
      std::lock_guard<std::mutex> g(*mu);
      auto& slot = (*on_device)[{static_cast<int>(dev.kind) * 16 + dev.index, x[0].dtype() == DType::F64}];
      if (!slot) slot = std::make_shared<model::Model>(base.to(dev));
      mp = slot.get();
    }
    const auto& m = *mp;
    model::MixerState in, out;
    in.tensors.assign(x.begin() + 1, x.end());
    std::vector<Tensor> parts = {reshape(m.mixer(0).forward(x[0], 5, in, &out), {-1})};
    for (auto& t : out.tensors) parts.push_back(reshape(contiguous(t), {-1}));
    return concat(parts, 0);
  };
  return c;
}

}  // namespace

Tensor rn(Rng& r, const Shape& s, double sd) { return randn(s, r, sd, DType::F64); }

std::vector<int32_t> rand_ids(Rng& r, int64_t n, int64_t limit) {
  std::vector<int32_t> ids(n);
  for (auto& i : ids) i = static_cast<int32_t>(r.next_u64() % limit);
  return ids;
}

std::vector<OpCase> all_op_cases() {
  std::vector<OpCase> cs;
  auto shape2 = [](Rng& r) { return Shape{rint(r, 1, 4), rint(r, 1, 5)}; };

  cs.push_back({"add_broadcast", [=](Rng& r) { Shape s = shape2(r); return V{rn(r, s), rn(r, {s[1]})}; },
                [](const V& x) { return add(x[0], x[1]); },
                [](const V& x) { D a = x[0].to_vector(), b = x[1].to_vector(); for (size_t i = 0; i < a.size(); ++i) a[i] += b[i % b.size()]; return a; }});
  cs.push_back({"sub_column_broadcast", [=](Rng& r) { Shape s = shape2(r); return V{rn(r, s), rn(r, {s[0], 1})}; },
                [](const V& x) { return sub(x[0], x[1]); },
                [](const V& x) { D a = x[0].to_vector(), b = x[1].to_vector(); const size_t n = a.size() / b.size(); for (size_t i = 0; i < a.size(); ++i) a[i] -= b[i / n]; return a; }});
  cs.push_back({"mul_scalar_tensor", [=](Rng& r) { return V{rn(r, shape2(r)), rn(r, {})}; },
                [](const V& x) { return mul(x[0], x[1]); },
                [](const V& x) { D a = x[0].to_vector(); const double b = x[1].item(); for (auto& e : a) e *= b; return a; }});
  cs.push_back({"mul_same_shape", [=](Rng& r) { Shape s = shape2(r); return V{rn(r, s), rn(r, s)}; },
                [](const V& x) { return mul(x[0], x[1]); },
                [](const V& x) { D a = x[0].to_vector(), b = x[1].to_vector(); for (size_t i = 0; i < a.size(); ++i) a[i] *= b[i]; return a; }});
  cs.push_back({"div", [=](Rng& r) { Shape s = shape2(r); return V{rn(r, s), pos(r, s)}; },
                [](const V& x) { return div(x[0], x[1]); },
                [](const V& x) { D a = x[0].to_vector(), b = x[1].to_vector(); for (size_t i = 0; i < a.size(); ++i) a[i] /= b[i]; return a; }});
  cs.push_back({"add_scalar", [=](Rng& r) { return V{rn(r, shape2(r))}; }, [](const V& x) { return add_scalar(x[0], 0.7); },
                ref1([](double v) { return v + 0.7; })});
  cs.push_back({"mul_scalar", [=](Rng& r) { return V{rn(r, shape2(r))}; }, [](const V& x) { return mul_scalar(x[0], -1.3); },
                ref1([](double v) { return v * -1.3; })});
  cs.push_back({"maximum_scalar", [=](Rng& r) {
                  D v(12);
                  for (auto& e : v) e = (r.uniform() < 0.5 ? -1 : 1) * (0.2 + r.uniform());  // away from the kink at 0
                  return V{from_vector(v, {3, 4}, DType::F64)};
                },
                [](const V& x) { return mul(maximum_scalar(x[0], 0.0), x[0]); },
                ref1([](double v) { return std::max(v, 0.0) * v; })});
  cs.push_back({"neg", [=](Rng& r) { return V{rn(r, shape2(r))}; }, [](const V& x) { return neg(x[0]); }, ref1([](double v) { return -v; })});
  cs.push_back({"exp", [=](Rng& r) { return V{rn(r, shape2(r))}; }, [](const V& x) { return exp(x[0]); }, ref1([](double v) { return std::exp(v); })});
  cs.push_back({"log", [=](Rng& r) { return V{pos(r, shape2(r))}; }, [](const V& x) { return log(x[0]); }, ref1([](double v) { return std::log(v); })});
  cs.push_back({"sqrt", [=](Rng& r) { return V{pos(r, shape2(r))}; }, [](const V& x) { return sqrt(x[0]); }, ref1([](double v) { return std::sqrt(v); })});
  cs.push_back({"rsqrt", [=](Rng& r) { return V{pos(r, shape2(r))}; }, [](const V& x) { return rsqrt(x[0]); }, ref1([](double v) { return 1 / std::sqrt(v); })});
  cs.push_back({"reciprocal", [=](Rng& r) { return V{pos(r, shape2(r))}; }, [](const V& x) { return reciprocal(x[0]); }, ref1([](double v) { return 1 / v; })});
  cs.push_back({"square", [=](Rng& r) { return V{rn(r, shape2(r))}; }, [](const V& x) { return square(x[0]); }, ref1([](double v) { return v * v; })});
  cs.push_back({"sigmoid", [=](Rng& r) { return V{rn(r, shape2(r), 2.0)}; }, [](const V& x) { return sigmoid(x[0]); }, ref1([](double v) { return 1 / (1 + std::exp(-v)); })});
  cs.push_back({"softplus", [=](Rng& r) { return V{rn(r, shape2(r), 3.0)}; }, [](const V& x) { return softplus(x[0]); }, ref1([](double v) { return std::log1p(std::exp(v)); })});
  cs.push_back({"silu", [=](Rng& r) { return V{rn(r, shape2(r), 2.0)}; }, [](const V& x) { return silu(x[0]); }, ref1([](double v) { return v / (1 + std::exp(-v)); })});
  cs.push_back({"silu_mul", [=](Rng& r) { Shape s = shape2(r); return V{rn(r, s, 2.0), rn(r, s)}; },
                [](const V& x) { return silu_mul(x[0], x[1]); },
                [](const V& x) { D a = x[0].to_vector(), b = x[1].to_vector(); for (size_t i = 0; i < a.size(); ++i) a[i] = a[i] / (1 + std::exp(-a[i])) * b[i]; return a; }});
  // A strided (transposed) gate: the second derivatives must flow through the view, not a copy.
  cs.push_back({"silu_mul_strided", [=](Rng& r) { Shape s = shape2(r); return V{rn(r, {s[1], s[0]}, 2.0), rn(r, s)}; },
                [](const V& x) { return silu_mul(transpose(x[0], 0, 1), x[1]); },
                [](const V& x) {
                  const int64_t rows = x[1].size(0), cols = x[1].size(1);
                  D a = x[0].to_vector(), b = x[1].to_vector(), y(b.size());
                  for (int64_t i = 0; i < rows; ++i)
                    for (int64_t j = 0; j < cols; ++j) {
                      const double v = a[static_cast<size_t>(j * rows + i)];
                      y[static_cast<size_t>(i * cols + j)] = v / (1 + std::exp(-v)) * b[static_cast<size_t>(i * cols + j)];
                    }
                  return y;
                }});
  // The gradients of silu_mul as a differentiable function of (a, b, g) (the inner step's path:
  // the nodes silu_mul_backward_a/_b), both flattened into one output.
  cs.push_back({"silu_mul_input_grads", [=](Rng& r) { Shape s = shape2(r); return V{rn(r, s, 2.0), rn(r, s), rn(r, s)}; },
                [](const V& x) {
                  GradMode on(true);  // finite differences call this without a graph too
                  Tensor a = x[0].requires_grad() ? x[0] : x[0].detach().set_requires_grad(true);
                  Tensor b = x[1].requires_grad() ? x[1] : x[1].detach().set_requires_grad(true);
                  auto d = grad({silu_mul(a, b)}, {a, b}, {x[2]}, true);
                  return concat({reshape(d[0], {-1}), reshape(d[1], {-1})}, 0);
                },
                [](const V& x) {
                  D a = x[0].to_vector(), b = x[1].to_vector(), g = x[2].to_vector(), o(2 * a.size());
                  for (size_t i = 0; i < a.size(); ++i) {
                    const double s = 1 / (1 + std::exp(-a[i]));
                    o[i] = g[i] * b[i] * s * (1 + a[i] * (1 - s));
                    o[a.size() + i] = g[i] * a[i] * s;
                  }
                  return o;
                }});
  // silu'' and silu''' are exercised by differentiating silu twice through a product.
  cs.push_back({"silu_third_order_path", [=](Rng& r) { return V{rn(r, {3, 3}, 2.0)}; },
                [](const V& x) {
                  // Works in no-grad mode too (finite differences): differentiate a fresh leaf.
                  GradMode on(true);
                  Tensor xi = x[0].requires_grad() ? x[0] : x[0].detach().set_requires_grad(true);
                  return grad({sum(silu(xi))}, {xi}, {}, true)[0];
                },
                ref1([](double v) { const double s = 1 / (1 + std::exp(-v)); return s * (1 + v * (1 - s)); })});
  cs.push_back({"sum_all", [=](Rng& r) { return V{rn(r, shape2(r))}; }, [](const V& x) { return sum(x[0]); },
                [](const V& x) { double s = 0; for (double e : x[0].to_vector()) s += e; return D{s}; }});
  cs.push_back({"sum_dim0", [=](Rng& r) { return V{rn(r, {rint(r, 1, 3), rint(r, 1, 3), rint(r, 1, 3)})}; },
                [](const V& x) { return sum(x[0], 0); },
                [](const V& x) { D a = x[0].to_vector(); const size_t n = a.size() / x[0].size(0); D o(n, 0); for (size_t i = 0; i < a.size(); ++i) o[i % n] += a[i]; return o; }});
  cs.push_back({"mean_lastdim_keepdim", [=](Rng& r) { return V{rn(r, shape2(r))}; }, [](const V& x) { return mean(x[0], -1, true); },
                [](const V& x) { D a = x[0].to_vector(); const int64_t n = x[0].size(-1); D o(a.size() / n, 0); for (size_t i = 0; i < a.size(); ++i) o[i / n] += a[i] / n; return o; }});
  cs.push_back({"sum_middle_dim", [=](Rng& r) { return V{rn(r, {2, 3, 4})}; }, [](const V& x) { return sum(x[0], 1); },
                [](const V& x) { D a = x[0].to_vector(); D o(8, 0); for (int i = 0; i < 2; ++i) for (int j = 0; j < 3; ++j) for (int k = 0; k < 4; ++k) o[i * 4 + k] += a[(i * 3 + j) * 4 + k]; return o; }});
  cs.push_back({"broadcast_to", [=](Rng& r) { return V{rn(r, {3, 1})}; }, [](const V& x) { return broadcast_to(x[0], {2, 3, 4}); },
                [](const V& x) { D a = x[0].to_vector(); D o; for (int i = 0; i < 2; ++i) for (int j = 0; j < 3; ++j) for (int k = 0; k < 4; ++k) o.push_back(a[j]); return o; }});
  cs.push_back({"reshape_transpose_slice", [=](Rng& r) { return V{rn(r, {4, 6})}; },
                [](const V& x) { return slice(transpose(reshape(x[0], {2, 2, 6}), 0, 2), 1, 1, 2); },
                [](const V& x) { D a = x[0].to_vector(); D o; for (int k = 0; k < 6; ++k) for (int i = 0; i < 2; ++i) o.push_back(a[(i * 2 + 1) * 6 + k]); return o; }});
  cs.push_back({"concat", [=](Rng& r) { const int64_t c = rint(r, 1, 3); return V{rn(r, {2, c}), rn(r, {2, 3})}; },
                [](const V& x) { return concat({x[0], x[1]}, 1); },
                [](const V& x) { D a = x[0].to_vector(), b = x[1].to_vector(); const int64_t c = x[0].size(1); D o; for (int i = 0; i < 2; ++i) { for (int j = 0; j < c; ++j) o.push_back(a[i * c + j]); for (int j = 0; j < 3; ++j) o.push_back(b[i * 3 + j]); } return o; }});
  for (int t = 0; t < 4; ++t) {
    const bool ta = t & 1, tb = t & 2;
    cs.push_back({std::string("matmul_") + (ta ? "T" : "N") + (tb ? "T" : "N"),
                  [=](Rng& r) {
                    const int64_t m = rint(r, 1, 4), k = rint(r, 1, 4), n = rint(r, 1, 4);
                    return V{rn(r, ta ? Shape{k, m} : Shape{m, k}), rn(r, tb ? Shape{n, k} : Shape{k, n})};
                  },
                  [=](const V& x) { return matmul(x[0], x[1], ta, tb); },
                  [=](const V& x) {
                    const int64_t m = ta ? x[0].size(1) : x[0].size(0), k = ta ? x[0].size(0) : x[0].size(1);
                    const int64_t n = tb ? x[1].size(0) : x[1].size(1);
                    D o(m * n, 0);
                    for (int64_t i = 0; i < m; ++i)
                      for (int64_t j = 0; j < n; ++j)
                        for (int64_t p = 0; p < k; ++p)
                          o[i * n + j] += (ta ? x[0].at({p, i}) : x[0].at({i, p})) * (tb ? x[1].at({j, p}) : x[1].at({p, j}));
                    return o;
                  }});
  }
  for (int variant = 0; variant < 2; ++variant) {
    // Blocks of 3 rows, so that the blocked forward and backward are exercised; tied ([V, d]) and
    // untied ([d, V]) weights. Reference: log-sum-exp minus the target's logit.
    const bool wt = variant == 1;
    cs.push_back({std::string("linear_cross_entropy") + (wt ? "_transposed" : ""),
                  [=](Rng& r) {
                    const int64_t t = rint(r, 1, 8), d = rint(r, 1, 4), v = rint(r, 2, 6);
                    return V{rn(r, {t, d}), rn(r, wt ? Shape{d, v} : Shape{v, d})};
                  },
                  [=](const V& x) {
                    const int64_t t = x[0].size(0), v = wt ? x[1].size(1) : x[1].size(0);
                    std::vector<int32_t> tg(t);
                    for (int64_t i = 0; i < t; ++i) tg[i] = static_cast<int32_t>((i * 5 + 1) % v);
                    return linear_cross_entropy(x[0], x[1], tg, wt, 3);
                  },
                  [=](const V& x) {
                    const int64_t t = x[0].size(0), d = x[0].size(1), v = wt ? x[1].size(1) : x[1].size(0);
                    D o;
                    for (int64_t i = 0; i < t; ++i) {
                      D lg(v, 0.0);
                      for (int64_t j = 0; j < v; ++j)
                        for (int64_t k = 0; k < d; ++k) lg[j] += x[0].at({i, k}) * (wt ? x[1].at({k, j}) : x[1].at({j, k}));
                      double mx = lg[0], s = 0;
                      for (double e : lg) mx = std::max(mx, e);
                      for (double e : lg) s += std::exp(e - mx);
                      o.push_back(mx + std::log(s) - lg[(i * 5 + 1) % v]);
                    }
                    return o;
                  }});
  }
  cs.push_back({"unit_lower_inverse",
                [=](Rng& r) { const int64_t n = rint(r, 1, 5); return V{rn(r, {rint(r, 1, 2), n, n}, 0.7)}; },
                [](const V& x) { return unit_lower_inverse(x[0]); },
                [](const V& x) {
                  // Solve (I + strict_lower(L)) X = I column by column.
                  const int64_t b = x[0].size(0), n = x[0].size(1);
                  D o;
                  for (int64_t k = 0; k < b; ++k) {
                    D inv(n * n, 0);
                    for (int64_t c = 0; c < n; ++c)
                      for (int64_t i = 0; i < n; ++i) {
                        double v = i == c ? 1 : 0;
                        for (int64_t j = 0; j < i; ++j) v -= x[0].at({k, i, j}) * inv[j * n + c];
                        inv[i * n + c] = v;
                      }
                    o.insert(o.end(), inv.begin(), inv.end());
                  }
                  return o;
                }});
  cs.push_back({"causal_decay",
                [=](Rng& r) { return V{rn(r, {rint(r, 1, 2), rint(r, 1, 5)}, 0.7)}; },
                [](const V& x) { return causal_decay(x[0]); },
                [](const V& x) {
                  const int64_t b = x[0].size(0), n = x[0].size(1);
                  D o;
                  for (int64_t k = 0; k < b; ++k)
                    for (int64_t i = 0; i < n; ++i)
                      for (int64_t j = 0; j < n; ++j)
                        o.push_back(j <= i ? std::exp(x[0].at({k, i}) - x[0].at({k, j})) : 0.0);
                  return o;
                }});
  cs.push_back({"matmul_batched", [=](Rng& r) { return V{rn(r, {2, 3, 4}), rn(r, {2, 4, 2})}; },
                [](const V& x) { return matmul(x[0], x[1]); },
                [](const V& x) { D o; for (int b = 0; b < 2; ++b) for (int i = 0; i < 3; ++i) for (int j = 0; j < 2; ++j) { double s = 0; for (int p = 0; p < 4; ++p) s += x[0].at({b, i, p}) * x[1].at({b, p, j}); o.push_back(s); } return o; }});
  cs.push_back({"matmul_nd_left", [=](Rng& r) { return V{rn(r, {2, 2, 3}), rn(r, {3, 2})}; },
                [](const V& x) { return matmul(x[0], x[1]); },
                [](const V& x) { D o; for (int b = 0; b < 2; ++b) for (int i = 0; i < 2; ++i) for (int j = 0; j < 2; ++j) { double s = 0; for (int p = 0; p < 3; ++p) s += x[0].at({b, i, p}) * x[1].at({p, j}); o.push_back(s); } return o; }});
  cs.push_back({"rmsnorm", [=](Rng& r) { Shape s = shape2(r); s[1] += 1; return V{rn(r, s), rn(r, {s[1]})}; },
                [](const V& x) { return rmsnorm(x[0], x[1], 1e-6); },
                [](const V& x) {
                  D a = x[0].to_vector(), w = x[1].to_vector();
                  const size_t n = w.size();
                  for (size_t i = 0; i < a.size(); i += n) {
                    double ss = 0;
                    for (size_t j = 0; j < n; ++j) ss += a[i + j] * a[i + j];
                    const double rs = 1 / std::sqrt(ss / n + 1e-6);
                    for (size_t j = 0; j < n; ++j) a[i + j] *= rs * w[j];
                  }
                  return a;
                }});
  // d/dx <rmsnorm(x, w), g> with the weight constant (the inner step's path): the fused op
  // rmsnorm_input_grad, whose derivatives in x, w and g (and their own, through the harness's
  // second order) are checked here; rows of [T, H, D] as the q/k norms have them.
  cs.push_back({"rmsnorm_input_grad",
                [=](Rng& r) {
                  Shape s = shape2(r);
                  s[1] += 1;
                  if (rint(r, 0, 1)) s = {s[0], 2, s[1]};
                  return V{rn(r, s), rn(r, {s.back()}), rn(r, s)};
                },
                [](const V& x) {
                  GradMode on(true);  // finite differences call this without a graph too
                  Tensor xi = x[0].requires_grad() ? x[0] : x[0].detach().set_requires_grad(true);
                  return grad({rmsnorm(xi, x[1], 1e-6)}, {xi}, {x[2]}, true)[0];
                },
                [](const V& x) {
                  D a = x[0].to_vector(), w = x[1].to_vector(), g = x[2].to_vector(), o(a.size());
                  const size_t n = w.size();
                  for (size_t i = 0; i < a.size(); i += n) {
                    double ss = 0, p = 0;
                    for (size_t j = 0; j < n; ++j) ss += a[i + j] * a[i + j], p += g[i + j] * w[j] * a[i + j];
                    const double rs = 1 / std::sqrt(ss / n + 1e-6);
                    p /= static_cast<double>(n);
                    for (size_t j = 0; j < n; ++j) o[i + j] = rs * g[i + j] * w[j] - rs * rs * rs * p * a[i + j];
                  }
                  return o;
                }});
  cs.push_back({"rope", [=](Rng& r) { return V{rn(r, {rint(r, 1, 4), rint(r, 1, 2), 2 * rint(r, 1, 3)})}; },
                [](const V& x) { return rope(x[0], 5, 10000.0); },
                [](const V& x) {
                  D a = x[0].to_vector(), o(a.size());
                  const int64_t t = x[0].size(0), h = x[0].size(1), d = x[0].size(2);
                  for (int64_t p = 0; p < t; ++p)
                    for (int64_t hh = 0; hh < h; ++hh)
                      for (int64_t i = 0; i < d / 2; ++i) {
                        const double ang = (5 + p) * std::pow(10000.0, -2.0 * i / d);
                        const int64_t b = (p * h + hh) * d + 2 * i;
                        o[b] = a[b] * std::cos(ang) - a[b + 1] * std::sin(ang);
                        o[b + 1] = a[b] * std::sin(ang) + a[b + 1] * std::cos(ang);
                      }
                  return o;
                }});
  cs.push_back({"softmax", [=](Rng& r) { return V{rn(r, shape2(r))}; }, [](const V& x) { return softmax(x[0]); },
                [](const V& x) {
                  D a = x[0].to_vector();
                  const int64_t n = x[0].size(-1);
                  for (size_t i = 0; i < a.size(); i += n) {
                    double m = -1e300, s = 0;
                    for (int64_t j = 0; j < n; ++j) m = std::max(m, a[i + j]);
                    for (int64_t j = 0; j < n; ++j) s += std::exp(a[i + j] - m);
                    for (int64_t j = 0; j < n; ++j) a[i + j] = std::exp(a[i + j] - m) / s;
                  }
                  return a;
                }});
  cs.push_back({"cross_entropy", [=](Rng& r) { return V{rn(r, {rint(r, 1, 4), rint(r, 2, 6)})}; },
                [](const V& x) { Rng r(x[0].numel()); return cross_entropy(x[0], rand_ids(r, x[0].size(0), x[0].size(1))); },
                [](const V& x) {
                  Rng r(x[0].numel());
                  auto tg = rand_ids(r, x[0].size(0), x[0].size(1));
                  D o;
                  const int64_t n = x[0].size(1);
                  D a = x[0].to_vector();
                  for (int64_t i = 0; i < x[0].size(0); ++i) {
                    double m = -1e300, s = 0;
                    for (int64_t j = 0; j < n; ++j) m = std::max(m, a[i * n + j]);
                    for (int64_t j = 0; j < n; ++j) s += std::exp(a[i * n + j] - m);
                    o.push_back(std::log(s) + m - a[i * n + tg[i]]);
                  }
                  return o;
                }});
  cs.push_back({"embedding", [=](Rng& r) { return V{rn(r, {5, 3})}; },
                [](const V& x) { return embedding(x[0], {4, 0, 4, 2}); },
                [](const V& x) { D a = x[0].to_vector(), o; for (int id : {4, 0, 4, 2}) for (int j = 0; j < 3; ++j) o.push_back(a[id * 3 + j]); return o; }});
  cs.push_back({"scatter_add_rows", [=](Rng& r) { return V{rn(r, {4, 3})}; },
                [](const V& x) { return scatter_add_rows(x[0], {1, 3, 1, 0}, 5); },
                [](const V& x) { D a = x[0].to_vector(), o(15, 0); const int ids[] = {1, 3, 1, 0}; for (int i = 0; i < 4; ++i) for (int j = 0; j < 3; ++j) o[ids[i] * 3 + j] += a[i * 3 + j]; return o; }});
  cs.push_back({"global_norm", [=](Rng& r) { return V{rn(r, shape2(r)), rn(r, {3})}; },
                [](const V& x) { return global_norm({x[0], x[1]}); },
                [](const V& x) { double s = 0; for (auto& t : x) for (double e : t.to_vector()) s += e * e; return D{std::sqrt(s)}; }});
  for (double maxn : {0.5, 100.0}) {  // clipping active / inactive
    cs.push_back({maxn < 1 ? "clip_active" : "clip_inactive", [=](Rng& r) { return V{rn(r, {2, 3}), rn(r, {3})}; },
                  [=](const V& x) { auto c = clip_by_global_norm({x[0], x[1]}, maxn); return concat({reshape(c[0], {-1}), c[1]}, 0); },
                  [=](const V& x) {
                    double s = 0; D o;
                    for (auto& t : x) for (double e : t.to_vector()) { s += e * e; o.push_back(e); }
                    const double sc = std::min(1.0, maxn / std::sqrt(s));
                    for (auto& e : o) e *= sc;
                    return o;
                  }});
  }
  // Attention: the fused op (fast forward, first derivative through the fused backward kernel,
  // second derivative through the composite backward) and the composite op.
  for (int fused = 0; fused < 2; ++fused) {
    cs.push_back({fused ? "attention_fused" : "attention_composite",
                  [](Rng& r) {
                    const auto s = attn_setup(r.next_u64() % 1000);
                    const int64_t tk = s.tq + s.cache;
                    return V{rn(r, {s.tq, s.heads, s.dim}), rn(r, {tk, s.heads, s.dim}), rn(r, {tk, s.heads, s.dim}),
                             from_vector({static_cast<double>(s.cache), static_cast<double>(s.window)}, {2}, DType::F64)};
                  },
                  [fused](const V& x) {
                    AttentionOptions o;
                    const int64_t cache = std::lround(x[3].at({0}));
                    o.window = std::lround(x[3].at({1}));
                    o.q_pos0 = 10 + cache;
                    o.k_pos0 = 10;
                    // x[3] only carries the configuration; keep it out of the function's value.
                    Tensor out = fused ? attention(x[0], x[1], x[2], o) : attention_composite(x[0], x[1], x[2], o);
                    return add(out, mul_scalar(sum(x[3]), 0.0));
                  },
                  [](const V& x) {
                    AttentionShape s;
                    s.tq = x[0].size(0); s.tk = x[1].size(0); s.heads = x[0].size(1); s.head_dim = x[0].size(2);
                    const int64_t cache = std::lround(x[3].at({0}));
                    s.window = std::lround(x[3].at({1}));
                    s.q_pos0 = 10 + cache; s.k_pos0 = 10; s.scale = 1 / std::sqrt(static_cast<double>(s.head_dim));
                    D q = x[0].to_vector(), k = x[1].to_vector(), v = x[2].to_vector(), o(q.size()), lse(s.heads * s.tq);
                    kernels::attention_forward_reference<double>(s, q.data(), k.data(), v.data(), o.data(), lse.data());
                    return o;
                  }});
  }
  {
    model::ModelConfig m;
    m.seq_modeling_block = "mamba2";
    m.mamba2.d_state = 3;
    m.mamba2.headdim = 4;
    m.chunk_size = 3;
    cs.push_back(mixer_case("mamba2_mixer", m));
    model::ModelConfig g;
    g.seq_modeling_block = "gated_deltanet";
    g.chunk_size = 3;
    cs.push_back(mixer_case("gated_deltanet_mixer", g));
    model::ModelConfig k;
    k.seq_modeling_block = "ttt_kvb";
    k.ttt_kvb.num_lact_heads = 2;
    k.ttt_kvb.lact_chunk_size = 3;
    cs.push_back(mixer_case("ttt_kvb_mixer", k));
    model::ModelConfig a;
    a.seq_modeling_block = "SWA";
    cs.push_back(mixer_case("swa_mixer", a));
  }
  return cs;
}

}  // namespace ttt::test
