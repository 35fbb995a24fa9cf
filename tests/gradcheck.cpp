#include "gradcheck.h"

#include <cmath>

namespace ttt::test {

double rel_err(const std::vector<double>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double err = 0, scale = 1;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    err = std::max(err, std::fabs(a[i] - b[i]));
    scale = std::max(scale, std::fabs(b[i]));
  }
  return err / scale;
}

namespace {

std::vector<Tensor> leaves(const std::vector<Tensor>& xs) {
  std::vector<Tensor> out;
  for (auto& x : xs) out.push_back(x.detach().set_requires_grad(true));
  return out;
}

std::vector<Tensor> perturbed(const std::vector<Tensor>& xs, const std::vector<Tensor>& dir, double s) {
  std::vector<Tensor> out;
  NoGrad ng;
  for (size_t i = 0; i < xs.size(); ++i)
    out.push_back(add(xs[i].detach(), mul_scalar(dir[i], s)).detach().set_requires_grad(true));
  return out;
}

// f(x) = sum(fn(x) * R): a scalar whose gradient exercises every output element.
Tensor scalar_of(const OpCase& c, const std::vector<Tensor>& xs, const Tensor& r) {
  return sum(mul(c.fn(xs), r));
}

std::vector<double> flat_grad(const OpCase& c, const std::vector<Tensor>& xs, const Tensor& r) {
  auto gs = grad({scalar_of(c, xs, r)}, xs);
  std::vector<double> out;
  for (auto& g : gs) {
    auto v = g.to_vector();
    out.insert(out.end(), v.begin(), v.end());
  }
  return out;
}

}  // namespace

CheckReport check_op(const OpCase& c, uint64_t seed) {
  CheckReport rep;
  Rng rng(seed);
  std::vector<Tensor> xs = leaves(c.make_inputs(rng));
  Tensor y = c.fn(xs);
  Tensor r = randn(y.shape(), rng, 1.0, DType::F64);

  if (c.reference) rep.value_err = rel_err(y.to_vector(), c.reference(xs));

  // float32 run of the same op against float64.
  {
    std::vector<Tensor> x32;
    for (auto& x : xs) x32.push_back(to_dtype(x.detach(), DType::F32));
    rep.f32_err = rel_err(c.fn(x32).to_vector(), y.to_vector());
  }

  // First order: analytic gradient vs central differences, element by element.
  std::vector<double> analytic = flat_grad(c, xs, r);
  std::vector<double> numeric;
  {
    NoGrad ng;
    for (size_t i = 0; i < xs.size(); ++i) {
      const int64_t n = xs[i].numel();
      for (int64_t j = 0; j < n; ++j) {
        std::vector<Tensor> dir;
        for (size_t k = 0; k < xs.size(); ++k) dir.push_back(zeros_like(xs[k]));
        dir[i].data<double>()[j] = 1.0;
        const double fp = scalar_of(c, perturbed(xs, dir, c.fd_eps), r).item();
        const double fm = scalar_of(c, perturbed(xs, dir, -c.fd_eps), r).item();
        numeric.push_back((fp - fm) / (2 * c.fd_eps));
      }
    }
  }
  rep.grad_err = rel_err(analytic, numeric);

  if (c.second_order) {
    // Hessian-vector product through create_graph vs differences of the analytic gradient.
    std::vector<Tensor> v;
    for (auto& x : xs) v.push_back(randn(x.shape(), rng, 1.0, DType::F64));
    auto gs = grad({scalar_of(c, xs, r)}, xs, {}, /*create_graph=*/true);
    Tensor gv;
    for (size_t i = 0; i < gs.size(); ++i) {
      Tensor t = sum(mul(gs[i], v[i]));
      gv = gv.defined() ? add(gv, t) : t;
    }
    std::vector<double> hvp;
    if (gv.requires_grad()) {
      for (auto& h : grad({gv}, xs)) {
        auto hv = h.to_vector();
        hvp.insert(hvp.end(), hv.begin(), hv.end());
      }
    } else {
      hvp.assign(analytic.size(), 0.0);  // gradient independent of x: Hessian is zero
    }
    // Central differences at steps e and e/2, Richardson-extrapolated: the truncation error
    // falls from O(e^2) to O(e^4), which strongly nonlinear ops (a mixer with fast weights)
    // need to be judged at 1e-6 rather than at their third derivative's size.
    auto central = [&](double e) {
      auto gp = flat_grad(c, perturbed(xs, v, e), r);
      auto gm = flat_grad(c, perturbed(xs, v, -e), r);
      std::vector<double> d(gp.size());
      for (size_t i = 0; i < gp.size(); ++i) d[i] = (gp[i] - gm[i]) / (2 * e);
      return d;
    };
    const double e = 1e-4;
    const auto d1 = central(e), d2 = central(e / 2);
    std::vector<double> fd(d1.size());
    for (size_t i = 0; i < d1.size(); ++i) fd[i] = (4 * d2[i] - d1[i]) / 3;
    rep.hvp_err = rel_err(hvp, fd);
  }
  return rep;
}

}  // namespace ttt::test
