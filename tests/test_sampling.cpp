// Sampling: greedy, temperature, top-k, top-p and repetition penalty; option validation.
#include <gtest/gtest.h>

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "inference/sampling.h"

namespace ttt::test {
namespace {

using inference::Sampler;
using inference::SamplingOptions;

const std::vector<float> kLogits = {0.5f, 2.0f, -1.0f, 1.5f, 0.0f, 1.9f};  // argmax 1

SamplingOptions opts(double temperature, int64_t top_k = 0, double top_p = 1.0, double penalty = 1.0,
                     uint64_t seed = 7) {
  SamplingOptions o;
  o.temperature = temperature;
  o.top_k = top_k;
  o.top_p = top_p;
  o.repetition_penalty = penalty;
  o.seed = seed;
  return o;
}

std::vector<double> softmax(const std::vector<float>& z, double t = 1.0) {
  double mx = z[0];
  for (float v : z) mx = std::max(mx, static_cast<double>(v));
  std::vector<double> p(z.size());
  double s = 0;
  for (size_t i = 0; i < z.size(); ++i) s += p[i] = std::exp((z[i] - mx) / t);
  for (auto& v : p) v /= s;
  return p;
}

TEST(Sampling, GreedyPicksArgmax) {
  Sampler s(opts(0.0));
  for (int i = 0; i < 20; ++i) EXPECT_EQ(s.sample(kLogits), 1);
  EXPECT_EQ(s.sample({3.0f, 3.0f, 1.0f}), 0);  // ties: the lowest id
  EXPECT_EQ(s.sample({-INFINITY, -5.0f, -INFINITY}), 1);
  const auto d = s.distribution(kLogits);
  EXPECT_EQ(d[1], 1.0);
}

TEST(Sampling, TopK1AndTinyTopPEqualGreedy) {
  Rng r(11);
  Sampler greedy(opts(0.0));
  Sampler k1(opts(1.3, 1, 1.0, 1.0, 3));
  Sampler p_tiny(opts(0.7, 0, 1e-9, 1.0, 4));
  Sampler both(opts(5.0, 3, 1e-6, 1.0, 5));
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<float> z(9);
    for (auto& v : z) v = static_cast<float>(r.normal() * 3);
    const int32_t g = greedy.sample(z);
    EXPECT_EQ(k1.sample(z), g);
    EXPECT_EQ(p_tiny.sample(z), g);
    EXPECT_EQ(both.sample(z), g);
  }
}

TEST(Sampling, TemperatureFrequenciesMatchSoftmax) {
  for (double t : {1.0, 0.6, 2.5}) {
    Sampler s(opts(t, 0, 1.0, 1.0, 123));
    const auto p = softmax(kLogits, t);
    const int n = 200000;
    std::vector<int> count(kLogits.size());
    for (int i = 0; i < n; ++i) ++count[s.sample(kLogits)];
    for (size_t k = 0; k < p.size(); ++k) {
      const double sd = std::sqrt(p[k] * (1 - p[k]) / n);
      EXPECT_NEAR(static_cast<double>(count[k]) / n, p[k], 5 * sd + 1e-9) << "temperature " << t << " token " << k;
    }
    const auto d = s.distribution(kLogits);
    for (size_t k = 0; k < p.size(); ++k) EXPECT_NEAR(d[k], p[k], 1e-12);
  }
}

TEST(Sampling, TopKAndTopPRestrictTheSupport) {
  // top-k 2: only the two most likely (ids 1 and 5), renormalized.
  Sampler k2(opts(1.0, 2, 1.0, 1.0, 9));
  const auto p = softmax(kLogits);
  const auto d = k2.distribution(kLogits);
  EXPECT_NEAR(d[1], p[1] / (p[1] + p[5]), 1e-12);
  EXPECT_NEAR(d[5], p[5] / (p[1] + p[5]), 1e-12);
  for (int i = 0; i < 2000; ++i) {
    const int32_t t = k2.sample(kLogits);
    EXPECT_TRUE(t == 1 || t == 5) << t;
  }
  // top-p: the smallest prefix reaching the mass. p sorted: 1, 5, 3, 0, 4, 2.
  const double two = p[1] + p[5];
  Sampler pp(opts(1.0, 0, two + 1e-6, 1.0, 10));  // needs the third token too
  const auto dp = pp.distribution(kLogits);
  EXPECT_GT(dp[3], 0.0);
  EXPECT_EQ(dp[0], 0.0);
  Sampler pp2(opts(1.0, 0, two - 1e-6, 1.0, 10));
  const auto dp2 = pp2.distribution(kLogits);
  EXPECT_EQ(dp2[3], 0.0);
  EXPECT_GT(dp2[5], 0.0);
}

TEST(Sampling, RepetitionPenaltyLowersRepeatedToken) {
  Sampler s(opts(1.0, 0, 1.0, 1.5));
  const auto base = softmax(kLogits);
  const std::vector<int32_t> ctx = {1, 1, 2};
  const auto d = s.distribution(kLogits, ctx);
  EXPECT_LT(d[1], base[1]);  // positive logit divided
  EXPECT_LT(d[2], base[2]);  // negative logit multiplied
  EXPECT_GT(d[3], base[3]);  // the others gain
  // CTRL rule exactly: logits 2.0 / 1.5 and -1.0 * 1.5, each token once however often it occurs.
  std::vector<float> z = kLogits;
  z[1] = static_cast<float>(2.0 / 1.5);
  z[2] = -1.5f;
  const auto want = softmax(z);
  for (size_t k = 0; k < z.size(); ++k) EXPECT_NEAR(d[k], want[k], 1e-6) << k;
  // Greedy with a strong penalty moves off the repeated argmax.
  Sampler g(opts(0.0, 0, 1.0, 2.0));
  EXPECT_EQ(g.sample(kLogits, {1}), 5);
  // Only the last repetition_window tokens count.
  SamplingOptions w = opts(0.0, 0, 1.0, 2.0);
  w.repetition_window = 2;
  Sampler gw(w);
  EXPECT_EQ(gw.sample(kLogits, {1, 4, 4}), 1);
  EXPECT_EQ(gw.sample(kLogits, {4, 1, 4}), 5);
}

TEST(Sampling, DeterministicGivenSeed) {
  Sampler a(opts(1.0, 0, 0.9, 1.2, 42)), b(opts(1.0, 0, 0.9, 1.2, 42)), c(opts(1.0, 0, 0.9, 1.2, 43));
  std::vector<int32_t> ra, rb, rc;
  for (int i = 0; i < 100; ++i) {
    ra.push_back(a.sample(kLogits, ra));
    rb.push_back(b.sample(kLogits, rb));
    rc.push_back(c.sample(kLogits, rc));
  }
  EXPECT_EQ(ra, rb);
  EXPECT_NE(ra, rc);
}

void expect_invalid(const SamplingOptions& o, const std::string& what) {
  try {
    Sampler s(o);
    ADD_FAILURE() << "accepted invalid " << what;
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
  }
}

TEST(Sampling, InvalidOptionsThrow) {
  expect_invalid(opts(-0.5), "temperature");
  expect_invalid(opts(NAN), "temperature");
  expect_invalid(opts(INFINITY), "temperature");
  expect_invalid(opts(1.0, -1), "top-k");
  expect_invalid(opts(1.0, 0, 0.0), "top-p");
  expect_invalid(opts(1.0, 0, 1.5), "top-p");
  expect_invalid(opts(1.0, 0, -0.1), "top-p");
  expect_invalid(opts(1.0, 0, 1.0, 0.0), "repetition penalty");
  expect_invalid(opts(1.0, 0, 1.0, -2.0), "repetition penalty");
  SamplingOptions w;
  w.repetition_window = -1;
  expect_invalid(w, "repetition window");
  Sampler s(opts(1.0));
  EXPECT_THROW(s.sample({}), std::invalid_argument);
  EXPECT_THROW(s.sample({1.0f, NAN}), std::invalid_argument);
  EXPECT_THROW(s.sample({-INFINITY, -INFINITY}), std::invalid_argument);
}

}  // namespace
}  // namespace ttt::test
