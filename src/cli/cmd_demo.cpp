// `ttt demo`: test-time training in miniature, end to end on the engine.
//
// Each synthetic "document" hides its own linear map y = x A. A reader sees the document in
// chunks; before each chunk it predicts y with fast weights phi, then takes one SGD step on
// that chunk (the TTT inner loop). Meta-training learns phi_0 and a static feature map P by
// differentiating the loss *after* the inner steps through those steps (gradients of gradients),
// exactly the structure of TTT-E2E, at toy scale. It also checks a Hessian-vector product
// against finite differences, so the demo doubles as a smoke test of second-order autodiff.
#include <chrono>
#include <cmath>
#include <cstdio>

#include "autodiff/ops.h"
#include "backend/cpu/blas.h"
#include "backend/thread_pool.h"
#include "cli/commands.h"

namespace ttt::cli {
namespace {

struct DemoOptions {
  int steps = 150;
  int dim = 16;
  int chunks = 6;
  int chunk_len = 32;
  double inner_lr = 0.5;
  uint64_t seed = 1;
};

struct Params {
  Tensor p;     // [d, d] static features (meta-learned)
  Tensor phi0;  // [d, d] initial fast weights (meta-learned)
};

// Outer loss of one document: mean over chunks of the chunk loss under phi_{c-1}.
Tensor document_loss(const Params& w, const Tensor& x, const Tensor& y, const DemoOptions& o, double inner_lr,
                     bool ttt) {
  Tensor phi = w.phi0;
  Tensor total;
  for (int c = 0; c < o.chunks; ++c) {
    Tensor xc = slice(x, 0, c * o.chunk_len, (c + 1) * o.chunk_len);
    Tensor yc = slice(y, 0, c * o.chunk_len, (c + 1) * o.chunk_len);
    Tensor pred = matmul(silu(matmul(xc, w.p)), phi);
    Tensor loss = mean(square(sub(pred, yc)));
    total = total.defined() ? add(total, loss) : loss;
    if (ttt && c + 1 < o.chunks) {
      // Inner step; create_graph keeps it differentiable for the outer gradient.
      Tensor g = grad({loss}, {phi}, {}, /*create_graph=*/true)[0];
      g = clip_by_global_norm({g}, 1.0)[0];
      phi = sub(phi, mul_scalar(g, inner_lr));
    }
  }
  return mul_scalar(total, 1.0 / o.chunks);
}

void make_document(Rng& rng, const DemoOptions& o, Tensor& x, Tensor& y) {
  const int n = o.chunks * o.chunk_len;
  Tensor a = randn({o.dim, o.dim}, rng, 1.0 / std::sqrt(o.dim));
  x = randn({n, o.dim}, rng);
  NoGrad ng;
  y = matmul(x, a);
}

double hvp_check(uint64_t seed) {
  // f(w) = sum(silu(X w)^2) for a small w; compare H v with (grad(w + e v) - grad(w - e v)) / 2e.
  Rng rng(seed);
  Tensor x = randn({8, 5}, rng, 1.0, DType::F64);
  Tensor w = randn({5, 3}, rng, 0.5, DType::F64).set_requires_grad(true);
  Tensor v = randn({5, 3}, rng, 1.0, DType::F64);
  auto f = [&](const Tensor& ww) { return sum(square(silu(matmul(x, ww)))); };
  Tensor g = grad({f(w)}, {w}, {}, true)[0];
  Tensor hv = grad({sum(mul(g, v))}, {w})[0];
  const double eps = 1e-5;
  auto grad_at = [&](double s) {
    Tensor ws = add(w.detach(), mul_scalar(v, s)).detach().set_requires_grad(true);
    return grad({f(ws)}, {ws})[0].to_vector();
  };
  auto gp = grad_at(eps), gm = grad_at(-eps);
  auto h = hv.to_vector();
  double err = 0, scale = 0;
  for (size_t i = 0; i < h.size(); ++i) {
    err = std::max(err, std::fabs(h[i] - (gp[i] - gm[i]) / (2 * eps)));
    scale = std::max(scale, std::fabs(h[i]));
  }
  return err / std::max(scale, 1e-12);
}

int run_demo(const DemoOptions& o) {
  const auto& b = blas::info();
  std::printf("ttt demo: test-time training in miniature (engine check)\n");
  std::printf("  BLAS: %s, kernel %s (%s), %d threads\n\n", b.library.c_str(), b.core.c_str(), b.how.c_str(),
              num_threads());

  const double rel = hvp_check(o.seed);
  std::printf("1. Hessian-vector product vs finite differences (float64): relative error %.2e  %s\n\n", rel,
              rel < 1e-6 ? "OK" : "MISMATCH");

  Rng rng(o.seed);
  Params w;
  w.p = add(randn({o.dim, o.dim}, rng, 1.0 / std::sqrt(o.dim)), zeros({o.dim, o.dim})).set_requires_grad(true);
  w.phi0 = zeros({o.dim, o.dim}).set_requires_grad(true);

  // Held-out documents to score before and after meta-training.
  std::vector<std::pair<Tensor, Tensor>> heldout(8);
  Rng eval_rng(o.seed + 1000);
  for (auto& [x, y] : heldout) make_document(eval_rng, o, x, y);
  auto evaluate = [&](bool ttt) {
    double s = 0;
    for (auto& [x, y] : heldout) {
      // TTT needs gradients inside evaluation, so grad mode stays on; results are detached.
      s += document_loss(w, x, y, o, o.inner_lr, ttt).item();
    }
    return s / heldout.size();
  };
  std::printf("2. Meta-learning phi_0 and P through %d inner SGD steps per document\n", o.chunks - 1);
  std::printf("   held-out loss before: with TTT %.4f, without TTT %.4f\n", evaluate(true), evaluate(false));

  // Adam on the outer loss.
  std::vector<Tensor> params = {w.p, w.phi0};
  std::vector<Tensor> m1, m2;
  for (auto& p : params) {
    m1.push_back(zeros_like(p));
    m2.push_back(zeros_like(p));
  }
  const double lr = 3e-3, b1 = 0.9, b2 = 0.999;
  const auto t0 = std::chrono::steady_clock::now();
  for (int step = 1; step <= o.steps; ++step) {
    Tensor x, y;
    make_document(rng, o, x, y);
    Tensor loss = document_loss(w, x, y, o, o.inner_lr, true);
    auto grads = grad({loss}, params);
    NoGrad ng;
    for (size_t i = 0; i < params.size(); ++i) {
      m1[i] = add(mul_scalar(m1[i], b1), mul_scalar(grads[i], 1 - b1));
      m2[i] = add(mul_scalar(m2[i], b2), mul_scalar(square(grads[i]), 1 - b2));
      Tensor mh = mul_scalar(m1[i], 1.0 / (1 - std::pow(b1, step)));
      Tensor vh = mul_scalar(m2[i], 1.0 / (1 - std::pow(b2, step)));
      Tensor upd = mul_scalar(div(mh, add_scalar(sqrt(vh), 1e-8)), lr);
      Tensor np = sub(params[i], upd);
      // Write in place: the parameters are leaves that the next step differentiates again.
      assign(params[i], np);
    }
    if (step % 25 == 0 || step == o.steps)
      std::printf("   step %4d/%d  outer loss %.4f\n", step, o.steps, loss.item());
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double after_ttt = evaluate(true), after_plain = evaluate(false);
  std::printf("   held-out loss after:  with TTT %.4f, without TTT %.4f  (%.1f s)\n\n", after_ttt, after_plain, secs);
  std::printf("Test-time training %s the loss on unseen documents: the learned phi_0 and P make one\n"
              "SGD step per chunk absorb each document's own map.\n",
              after_ttt < after_plain ? "lowers" : "does NOT lower");
  return rel < 1e-6 ? 0 : 1;
}

DemoOptions g_demo;

}  // namespace

void register_demo(CLI::App& app, Registry& reg) {
  auto* sub = app.add_subcommand("demo", "Meta-learn test-time training on a toy task (the default job)");
  sub->add_option("--steps", g_demo.steps, "outer (meta) steps")->capture_default_str()->check(CLI::PositiveNumber);
  sub->add_option("--dim", g_demo.dim, "feature dimension")->capture_default_str()->check(CLI::Range(2, 512));
  sub->add_option("--chunks", g_demo.chunks, "chunks per document")->capture_default_str()->check(CLI::Range(2, 64));
  sub->add_option("--inner-lr", g_demo.inner_lr, "inner SGD learning rate")->capture_default_str();
  sub->add_option("--seed", g_demo.seed, "random seed")->capture_default_str();
  reg.push_back({sub, [] { return run_demo(g_demo); }});
}

int run_demo_default() { return run_demo(g_demo); }

}  // namespace ttt::cli
