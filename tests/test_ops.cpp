// Every differentiable op through the harness (gradcheck.h): values, gradients and Hessian-vector
// products in float64 on random shapes and seeds, and float32 against float64.
#include <cmath>

#include "gradcheck.h"
#include "op_cases.h"
#include "backend/cpu/attention_cpu.h"
#include "backend/thread_pool.h"
#include "model/model.h"

namespace ttt::test {
namespace {

using V = std::vector<Tensor>;
using D = std::vector<double>;


// The fused attention against its composite form in float64, on shapes the small op cases
// above do not reach: several query tiles, heads not a multiple of the thread count (private
// key accumulators), sliding windows with a cache, and bands wider than one key block (the
// second-order kernel then recomputes its blocks). Values, first derivatives (the fused
// backward) and second derivatives (the fused backward of the backward, the path the
// meta-gradient takes) must agree to rounding; a third derivative runs through the composite
// fallback of the fused backward's backward.
struct AttnCase {
  int64_t tq, tk, heads, dim, window;
};

void expect_close(const Tensor& a, const Tensor& b, const std::string& what) {
  ASSERT_TRUE(a.defined() && b.defined()) << what;
  ASSERT_EQ(a.shape(), b.shape()) << what;
  EXPECT_LT(rel_err(a.to_vector(), b.to_vector()), 1e-11) << what;
}

TEST(FusedAttentionSecondOrder, MatchesCompositeInFloat64) {
  const int saved = num_threads();
  for (const AttnCase c : {AttnCase{300, 300, 3, 8, 0}, AttnCase{260, 260 + 70, 3, 4, 100}, AttnCase{130, 130, 2, 6, 7},
                           AttnCase{5, 2200, 1, 4, 0}, AttnCase{150, 2300, 2, 4, 2250}}) {
    for (int nt : {1, 2, 4}) {
      set_num_threads(nt);
      SCOPED_TRACE(::testing::Message() << "tq " << c.tq << " tk " << c.tk << " H " << c.heads << " D " << c.dim
                                        << " window " << c.window << " threads " << nt);
      Rng r(static_cast<uint64_t>(c.tq * 31 + c.tk + nt));
      const Tensor q = rn(r, {c.tq, c.heads, c.dim}).set_requires_grad(true);
      const Tensor k = rn(r, {c.tk, c.heads, c.dim}).set_requires_grad(true);
      const Tensor v = rn(r, {c.tk, c.heads, c.dim}).set_requires_grad(true);
      const Tensor g = rn(r, {c.tq, c.heads, c.dim}).set_requires_grad(true);
      const Tensor aq = rn(r, {c.tq, c.heads, c.dim}), ak = rn(r, {c.tk, c.heads, c.dim}),
                   av = rn(r, {c.tk, c.heads, c.dim});
      AttentionOptions o;
      o.window = c.window;
      o.q_pos0 = 3 + c.tk - c.tq;
      o.k_pos0 = 3;
      std::vector<std::vector<Tensor>> res;
      for (int fused = 0; fused < 2; ++fused) {
        const Tensor out = fused ? attention(q, k, v, o) : attention_composite(q, k, v, o);
        auto d = grad({out}, {q, k, v}, {g}, /*create_graph=*/true);
        const Tensor inner = add(add(sum(mul(d[0], aq)), sum(mul(d[1], ak))), sum(mul(d[2], av)));
        // Without a graph: the fused second-order kernel. With one: its composite fallback, and
        // a third derivative along one direction, d/dq of <d2_q, aq>.
        auto d2 = grad({inner}, {q, k, v, g});
        auto d2g = grad({inner}, {q, k, v, g}, {}, /*create_graph=*/true);
        std::vector<Tensor> all = {out.detach(), d[0].detach(), d[1].detach(), d[2].detach()};
        for (auto& t : d2) all.push_back(t);
        all.push_back(d2g[3].detach());
        all.push_back(grad({sum(mul(d2g[0], aq))}, {q})[0]);
        res.push_back(all);
      }
      const char* names[] = {"output", "dq", "dk", "dv", "d2 q", "d2 k", "d2 v", "d2 dout", "d2 dout with a graph", "d3 q"};
      for (size_t i = 0; i < res[0].size(); ++i) expect_close(res[1][i], res[0][i], names[i]);
    }
  }
  set_num_threads(saved);
}

// The head's loss as the inner step meets it (gradient in x only, the head frozen but requiring
// grad like every parameter), fused against plain cross_entropy on explicit logits: the forward's
// kept logits (one block) and recomputed row blocks, both head layouts; first, second (the fused
// kernel) and third derivatives (its composite fallback), including those in the head weight
// and in the incoming per-row gradient.
TEST(FusedLinearCrossEntropySecondOrder, MatchesCompositeInFloat64) {
  for (bool wt : {false, true})
    for (int64_t block_rows : {int64_t{0}, int64_t{3}}) {
      SCOPED_TRACE(::testing::Message() << "w transposed " << wt << " block rows " << block_rows);
      Rng r(wt * 10 + static_cast<uint64_t>(block_rows));
      const int64_t T = 10, d = 5, V = 13;
      const Tensor x = rn(r, {T, d}).set_requires_grad(true);
      const Tensor w = rn(r, wt ? Shape{d, V} : Shape{V, d}).set_requires_grad(true);
      const Tensor g = rn(r, {T}).set_requires_grad(true);
      const Tensor a = rn(r, {T, d});
      const auto targets = rand_ids(r, T, V);
      std::vector<std::vector<Tensor>> res;
      for (int fused = 0; fused < 2; ++fused) {
        const Tensor y = fused ? linear_cross_entropy(x, w, targets, wt, block_rows)
                               : cross_entropy(wt ? matmul(x, w) : matmul(x, w, false, true), targets);
        const Tensor dx = grad({y}, {x}, {g}, /*create_graph=*/true)[0];
        const Tensor inner = sum(mul(dx, a));
        auto d2 = grad({inner}, {x, w, g});
        auto d2g = grad({inner}, {x, w, g}, {}, /*create_graph=*/true);
        std::vector<Tensor> all = {y.detach(), dx.detach(), d2[0], d2[1], d2[2], d2g[1].detach(),
                                   grad({sum(mul(d2g[0], a))}, {x, w})[1]};
        res.push_back(all);
      }
      const char* names[] = {"loss", "dx", "d2 x", "d2 w", "d2 g", "d2 w with a graph", "d3 w"};
      for (size_t i = 0; i < res[0].size(); ++i) expect_close(res[1][i], res[0][i], names[i]);
    }
}

// SwiGLU's fused gate against mul(silu(a), b) in float32, over many blocks, threads and a tail:
// the forward and the one-pass first-order backward bit for bit, the backward under create_graph
// (the composite formula) to rounding.
TEST(FusedSiluMul, MatchesCompositeBitForBit) {
  Rng r(17);
  const Tensor a = randn({37, 1001}, r, 2.0).set_requires_grad(true);
  const Tensor b = randn({37, 1001}, r, 1.0).set_requires_grad(true);
  const Tensor g = randn({37, 1001}, r, 1.0);
  const Tensor yf = silu_mul(a, b), yc = mul(silu(a), b);
  EXPECT_EQ(yf.to_vector(), yc.to_vector());
  const auto df = grad({yf}, {a, b}, {g}), dc = grad({yc}, {a, b}, {g});
  EXPECT_EQ(df[0].to_vector(), dc[0].to_vector());
  EXPECT_EQ(df[1].to_vector(), dc[1].to_vector());
  const auto dg = grad({silu_mul(a, b)}, {a, b}, {g}, /*create_graph=*/true);
  for (int i = 0; i < 2; ++i) {
    const auto x = dg[static_cast<size_t>(i)].to_vector(), y = dc[static_cast<size_t>(i)].to_vector();
    double err = 0;
    for (size_t j = 0; j < x.size(); ++j) err = std::max(err, std::fabs(x[j] - y[j]) / (1 + std::fabs(y[j])));
    EXPECT_LT(err, 1e-6) << "input " << i;
  }
  EXPECT_THROW(silu_mul(a, randn({37, 1000}, r)), std::exception);
}

class OpCheck : public ::testing::TestWithParam<size_t> {};

TEST_P(OpCheck, ValuesGradientsAndSecondDerivatives) {
  static const auto cases = all_op_cases();
  const OpCase& c = cases[GetParam()];
  for (uint64_t seed : {1, 2, 3}) {
    const CheckReport rep = check_op(c, seed * 101 + GetParam());
    EXPECT_LT(rep.value_err, 1e-10) << c.name << " seed " << seed << ": values differ from the reference";
    EXPECT_LT(rep.f32_err, 1e-4) << c.name << " seed " << seed << ": float32 differs from float64";
    EXPECT_LT(rep.grad_err, c.tol) << c.name << " seed " << seed << ": gradient differs from finite differences";
    if (c.second_order) {
      EXPECT_LT(rep.hvp_err, c.tol) << c.name << " seed " << seed << ": Hessian-vector product differs from finite differences";
    }
  }
}

std::string case_name(const ::testing::TestParamInfo<size_t>& info) {
  static const auto cases = all_op_cases();
  return cases[info.param].name;
}

INSTANTIATE_TEST_SUITE_P(AllOps, OpCheck, ::testing::Range<size_t>(0, all_op_cases().size()), case_name);

}  // namespace
}  // namespace ttt::test
