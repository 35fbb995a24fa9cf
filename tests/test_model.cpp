// The TTT-E2E model: meta-gradient against finite differences in float64 for every parameter
// group, and the invariants of SPEC sections 3 and 4.
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "gradcheck.h"
#include "model/model.h"
#include "ttt/meta_gradient.h"
#include "ttt/inner_loop.h"

namespace ttt::test {
namespace {

model::ModelConfig tiny_config(bool prime, int64_t window = 5, int64_t full_every = 0) {
  model::ModelConfig c;
  c.vocab_size = 11;
  c.hidden_size = 8;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 2;
  c.intermediate_size = 12;
  c.seq_modeling_block = "SWA";
  c.sliding_window_size = window;
  c.full_attention_every = full_every;
  c.mini_batch_size = 4;
  c.prime = prime;
  c.suffix_len = prime ? 2 : 0;
  c.rope_theta = 10000;
  c.bos_token_id = 0;
  c.initializer_range = 0.3;  // large enough that every term matters in the checks
  return c;
}

std::vector<int32_t> tokens(uint64_t seed, int64_t n, int64_t vocab) {
  Rng r(seed);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = static_cast<int32_t>(r.next_u64() % vocab);
  t[5] = 0;  // a BOS target, masked out of the loss
  return t;
}

std::map<std::string, Tensor> tensor_map(const model::Model& m) {
  std::map<std::string, Tensor> t;
  for (auto& [n, v] : m.named_parameters()) t[n] = clone(v.detach());
  return t;
}

double loss_of(const model::ModelConfig& cfg, const std::map<std::string, Tensor>& t, const std::vector<int32_t>& in,
               const std::vector<int32_t>& tg, const e2e::TTTOptions& opt) {
  auto m = model::Model::from_tensors(cfg, t, DType::F64);
  m.set_requires_grad(true);  // the inner steps differentiate through the parameters
  return e2e::training_loss(m, in, tg, opt).item();
}

void check_meta_gradient(const model::ModelConfig& cfg, uint64_t seed) {
  auto m = model::Model::init(cfg, seed, DType::F64);
  const auto seq = tokens(seed, 13, cfg.vocab_size);
  std::vector<int32_t> in(seq.begin(), seq.end() - 1), tg(seq.begin() + 1, seq.end());
  e2e::TTTOptions opt;
  m.set_requires_grad(true);
  auto params = m.parameters();
  auto grads = grad({e2e::training_loss(m, in, tg, opt)}, params);
  auto base = tensor_map(m);
  Rng pick(seed + 99);
  for (size_t i = 0; i < params.size(); ++i) {
    const std::string& name = m.named_parameters()[i].first;
    // Three entries per parameter keep the test fast while touching every group.
    for (int rep = 0; rep < 3; ++rep) {
      const int64_t j = static_cast<int64_t>(pick.next_u64() % params[i].numel());
      const double e = 1e-6;
      auto plus = base, minus = base;
      plus[name] = clone(base[name]);
      minus[name] = clone(base[name]);
      plus[name].data<double>()[j] += e;
      minus[name].data<double>()[j] -= e;
      const double fd = (loss_of(cfg, plus, in, tg, opt) - loss_of(cfg, minus, in, tg, opt)) / (2 * e);
      const double an = grads[i].to_vector()[j];
      EXPECT_NEAR(an, fd, 1e-7 + 1e-6 * std::fabs(fd)) << name << "[" << j << "]";
    }
  }
}

TEST(MetaGradient, MatchesFiniteDifferencesForEveryParameterGroup) { check_meta_gradient(tiny_config(true), 1); }

TEST(MetaGradient, MatchesFiniteDifferencesWithHybridFullAttentionAndLongWindow) {
  check_meta_gradient(tiny_config(true, 9, 2), 2);
}

TEST(MetaGradient, PretrainGradientOfSwaModelMatchesFiniteDifferences) { check_meta_gradient(tiny_config(false), 3); }

// Mamba 2 blocks (sequence_memory.h) with an SWA block every third layer; the suffix holds a
// Mamba 2 block, so second derivatives flow through its chunked scan and conv state.
model::ModelConfig mamba_config(bool prime) {
  auto c = tiny_config(prime);
  c.seq_modeling_block = "mamba2";
  c.swa_every = 3;
  c.mamba2.d_state = 4;
  c.mamba2.headdim = 4;
  c.chunk_size = 3;
  return c;
}

TEST(MetaGradient, MatchesFiniteDifferencesWithMamba2InTheSuffix) { check_meta_gradient(mamba_config(true), 4); }
TEST(MetaGradient, PretrainGradientOfMamba2ModelMatchesFiniteDifferences) { check_meta_gradient(mamba_config(false), 5); }

// Gated DeltaNet in the same places: its UT transform and state sit in the TTT suffix.
model::ModelConfig gdn_config(bool prime) {
  auto c = tiny_config(prime);
  c.seq_modeling_block = "gated_deltanet";
  c.swa_every = 3;
  c.chunk_size = 3;
  return c;
}

TEST(MetaGradient, MatchesFiniteDifferencesWithGatedDeltaNetInTheSuffix) { check_meta_gradient(gdn_config(true), 6); }
// TTT-KVB: window attention beside fast weights updated inside the mixer, itself in the suffix.
model::ModelConfig kvb_config(bool prime) {
  auto c = tiny_config(prime);
  c.seq_modeling_block = "ttt_kvb";
  c.ttt_kvb.num_lact_heads = 2;
  c.ttt_kvb.lact_chunk_size = 5;
  return c;
}

TEST(MetaGradient, MatchesFiniteDifferencesWithTttKvbInTheSuffix) { check_meta_gradient(kvb_config(true), 8); }

TEST(MetaGradient, PretrainGradientOfGatedDeltaNetModelMatchesFiniteDifferences) {
  check_meta_gradient(gdn_config(false), 7);
}

TEST(MetaGradient, ZeroInnerLearningRateEqualsChunkedGradientWithoutTTT) {
  const auto cfg = tiny_config(true);
  auto m = model::Model::init(cfg, 4, DType::F64);
  m.set_requires_grad(true);
  const auto seq = tokens(4, 13, cfg.vocab_size);
  std::vector<int32_t> in(seq.begin(), seq.end() - 1), tg(seq.begin() + 1, seq.end());
  e2e::TTTOptions zero, off, on;
  zero.inner_lr = 0.0;
  off.ttt = false;
  auto gz = grad({e2e::training_loss(m, in, tg, zero)}, m.parameters());
  auto go = grad({e2e::training_loss(m, in, tg, off)}, m.parameters());
  auto gt = grad({e2e::training_loss(m, in, tg, on)}, m.parameters());
  double diff_ttt = 0;
  for (size_t i = 0; i < gz.size(); ++i) {
    EXPECT_LT(rel_err(gz[i].to_vector(), go[i].to_vector()), 1e-13) << m.named_parameters()[i].first;
    diff_ttt = std::max(diff_ttt, rel_err(gt[i].to_vector(), go[i].to_vector()));
  }
  EXPECT_GT(diff_ttt, 1e-4) << "the gradient with TTT should differ from the one without";
}

TEST(Prefill, FirstChunkEqualsNoTTTAndLaterChunksDiffer) {
  const auto cfg = tiny_config(true);
  const auto m = model::Model::init(cfg, 5);
  const auto seq = tokens(5, 15, cfg.vocab_size);  // 14 inputs: 3 full chunks and a partial one
  std::vector<int32_t> in(seq.begin(), seq.end() - 1), tg(seq.begin() + 1, seq.end());
  e2e::TTTOptions off;
  off.ttt = false;
  const auto with = e2e::prefill(m, in, tg), without = e2e::prefill(m, in, tg, off);
  ASSERT_EQ(with.nll.size(), 14u);
  EXPECT_EQ(with.updates, 3);  // the partial last chunk is scored, never trained on
  double later = 0;
  for (int i = 0; i < 14; ++i) {
    if (i < 4) {
      EXPECT_NEAR(with.nll[i], without.nll[i], 1e-5) << i;
    } else {
      later = std::max(later, static_cast<double>(std::fabs(with.nll[i] - without.nll[i])));
    }
  }
  EXPECT_GT(later, 1e-4);
}

TEST(Prefill, AgreesWithTheTrainingObjective) {
  // Inference prefill and the differentiable objective implement the same chunk semantics.
  const auto cfg = tiny_config(true);
  auto m = model::Model::init(cfg, 6, DType::F64);
  const auto seq = tokens(6, 13, cfg.vocab_size);
  std::vector<int32_t> in(seq.begin(), seq.end() - 1), tg(seq.begin() + 1, seq.end());
  const auto pre = e2e::prefill(m, in, tg);
  double chunk_mean_sum = 0;
  for (int c = 0; c < 3; ++c) {
    double s = 0, n = 0;
    for (int i = 4 * c; i < 4 * c + 4; ++i)
      if (tg[i] != 0) {
        s += pre.nll[i];
        n += 1;
      }
    chunk_mean_sum += s / std::max(1.0, n);
  }
  m.set_requires_grad(true);
  EXPECT_NEAR(e2e::training_loss(m, in, tg).item(), chunk_mean_sum / 3, 1e-6);
}

TEST(Prefill, RejectsOutOfRangeTokens) {
  const auto m = model::Model::init(tiny_config(true), 7);
  EXPECT_THROW(e2e::prefill(m, {1, 2, 11}, {2, 3, 4}), std::invalid_argument);
  EXPECT_THROW(e2e::prefill(m, {}, {}), std::invalid_argument);
}

TEST(MetaGradient, RequiresWholeChunks) {
  auto m = model::Model::init(tiny_config(true), 8);
  m.set_requires_grad(true);
  EXPECT_THROW(e2e::training_loss(m, {1, 2, 3, 4, 5}, {2, 3, 4, 5, 6}), std::invalid_argument);
}

}  // namespace
}  // namespace ttt::test

namespace ttt::test {
namespace {

void expect_remat_equal(const model::ModelConfig& cfg, bool ttt, uint64_t seed) {
  auto m = model::Model::init(cfg, seed, DType::F64);
  m.set_requires_grad(true);
  const auto seq = tokens(seed, 17, cfg.vocab_size);  // 16 inputs: 4 chunks
  std::vector<int32_t> in(seq.begin(), seq.end() - 1), tg(seq.begin() + 1, seq.end());
  e2e::TTTOptions opt;
  opt.ttt = ttt;
  const auto full = e2e::meta_gradient(m, in, tg, opt, e2e::GraphBudget::keep_all());
  const auto remat = e2e::meta_gradient(m, in, tg, opt, e2e::GraphBudget::rematerialize_all());
  EXPECT_NEAR(full.loss, remat.loss, 1e-12);
  EXPECT_EQ(full.kept_chunks, 4);
  EXPECT_EQ(remat.kept_chunks, 0);
  ASSERT_EQ(full.grads.size(), remat.grads.size());
  for (size_t i = 0; i < full.grads.size(); ++i)
    EXPECT_LT(rel_err(remat.grads[i].to_vector(), full.grads[i].to_vector()), 1e-10) << m.named_parameters()[i].first;
  // Budgets between the two: the first chunks keep their graph, the rest are rematerialized, and
  // the adjoint of the memory at the boundary joins them. Every split gives the same gradient.
  std::set<int64_t> splits;
  for (double bytes = 1; bytes < 1e12; bytes *= 1.1) {
    const auto part = e2e::meta_gradient(m, in, tg, opt, e2e::GraphBudget{static_cast<size_t>(bytes)});
    ASSERT_EQ(part.chunks, 4);
    if (part.kept_chunks == 4) break;
    if (part.kept_chunks == 0 || !splits.insert(part.kept_chunks).second) continue;
    EXPECT_NEAR(part.loss, full.loss, 1e-12) << "kept " << part.kept_chunks;
    for (size_t i = 0; i < full.grads.size(); ++i)
      EXPECT_LT(rel_err(part.grads[i].to_vector(), full.grads[i].to_vector()), 1e-10)
          << m.named_parameters()[i].first << ", " << part.kept_chunks << " chunks kept";
  }
  EXPECT_GE(splits.size(), 2u) << "budgets should split the chunks in several places";
}

TEST(MetaGradient, RematerializationGivesTheSameGradient) { expect_remat_equal(tiny_config(true), true, 11); }
TEST(MetaGradient, RematerializationGivesTheSameGradientWithoutTTT) { expect_remat_equal(tiny_config(true), false, 12); }
TEST(MetaGradient, RematerializationGivesTheSameGradientWithMamba2) { expect_remat_equal(mamba_config(true), true, 14); }
TEST(MetaGradient, RematerializationGivesTheSameGradientWithGatedDeltaNet) { expect_remat_equal(gdn_config(true), true, 15); }
TEST(MetaGradient, RematerializationGivesTheSameGradientWithTttKvb) { expect_remat_equal(kvb_config(true), true, 16); }
TEST(MetaGradient, RematerializationGivesTheSameGradientAllBlocksPrime) {
  auto cfg = tiny_config(true, 3, 2);
  cfg.suffix_len = 3;
  expect_remat_equal(cfg, true, 13);
}

}  // namespace
}  // namespace ttt::test

namespace ttt::test {
namespace {

// ||a - b|| / ||b|| (2-norms).
double norm_rel(const std::vector<double>& a, const std::vector<double>& b) {
  double d = 0, n = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    d += (a[i] - b[i]) * (a[i] - b[i]);
    n += b[i] * b[i];
  }
  return std::sqrt(d / std::max(n, 1e-300));
}

// The float32 meta-gradient against the float64 one from the same (float32-representable)
// weights: the oracle for kernels and fusions that change float32 rounding. Chunks of 32 tokens
// over a 48-token window, so the attention kernels run on multi-row tiles.
TEST(MetaGradient, Float32AgreesWithTheFloat64Oracle) {
  for (const bool prime : {true, false}) {
    model::ModelConfig cfg = tiny_config(prime, 48);
    cfg.vocab_size = 97;
    cfg.hidden_size = 64;
    cfg.num_hidden_layers = 2;
    cfg.intermediate_size = 96;
    cfg.mini_batch_size = 32;
    cfg.suffix_len = prime ? 1 : 0;
    cfg.initializer_range = 0.1;
    auto m32 = model::Model::init(cfg, 21, DType::F32);
    auto m64 = model::Model::from_tensors(cfg, tensor_map(m32), DType::F64);
    const auto seq = tokens(21, 257, cfg.vocab_size);
    std::vector<int32_t> in(seq.begin(), seq.end() - 1), tg(seq.begin() + 1, seq.end());
    const e2e::TTTOptions opt;
    m32.set_requires_grad(true);
    m64.set_requires_grad(true);
    const auto g32 = e2e::meta_gradient(m32, in, tg, opt, e2e::GraphBudget::keep_all());
    const auto g64 = e2e::meta_gradient(m64, in, tg, opt, e2e::GraphBudget::keep_all());
    std::vector<double> all32, all64;
    double worst = 0;
    for (size_t i = 0; i < g64.grads.size(); ++i) {
      const auto a = g32.grads[i].to_vector(), b = g64.grads[i].to_vector();
      worst = std::max(worst, norm_rel(a, b));
      all32.insert(all32.end(), a.begin(), a.end());
      all64.insert(all64.end(), b.begin(), b.end());
    }
    const double whole = norm_rel(all32, all64);
    std::printf("  %s: f32 vs f64 relative error %.3e (whole gradient, 2-norm), %.3e (worst group)\n",
                prime ? "meta-gradient" : "pretraining gradient", whole, worst);
    EXPECT_LT(whole, 2e-5);  // measured about 1e-6 (float32 rounding over a few thousand terms)
    EXPECT_LT(worst, 1e-4);
  }
}

}  // namespace
}  // namespace ttt::test
