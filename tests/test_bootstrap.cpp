// Bootstrap intervals (eval/bootstrap.h): checked against what the sampling distribution of a
// mean must give, and on the cases where the answer is exact.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "eval/bootstrap.h"

namespace {
using ttt::eval::bootstrap_mean;
using ttt::eval::bootstrap_paired_difference;
using ttt::eval::bootstrap_ratio;

TEST(Bootstrap, ConstantDataHasAZeroWidthInterval) {
  const auto iv = bootstrap_mean(std::vector<double>(30, 2.5));
  EXPECT_EQ(iv.value, 2.5);
  EXPECT_EQ(iv.lo, 2.5);
  EXPECT_EQ(iv.hi, 2.5);
  EXPECT_EQ(iv.units, 30);
  EXPECT_TRUE(iv.excludes_zero());
}

TEST(Bootstrap, MeanIntervalMatchesTheNormalApproximation) {
  // 400 draws of N(1, 2^2): the 95% interval of the mean is close to mean +- 1.96 * 2 / 20.
  std::mt19937_64 g(7);
  std::normal_distribution<double> n(1.0, 2.0);
  std::vector<double> x(400);
  double s = 0;
  for (auto& v : x) s += (v = n(g));
  const double mean = s / 400;
  const auto iv = bootstrap_mean(x, {4000, 0.95, 3});
  EXPECT_NEAR(iv.value, mean, 1e-12);
  const double half = 1.96 * 2.0 / 20.0;
  EXPECT_NEAR(iv.lo, mean - half, 0.15 * half);
  EXPECT_NEAR(iv.hi, mean + half, 0.15 * half);
}

TEST(Bootstrap, RatioWeightsUnitsByTheirDenominators) {
  // Two documents: 10 tokens of loss 1 and 30 tokens of loss 3: the token-weighted loss is 2.5.
  const auto iv = bootstrap_ratio({10.0, 90.0}, {10.0, 30.0});
  EXPECT_DOUBLE_EQ(iv.value, 2.5);
  EXPECT_GE(iv.lo, 1.0);
  EXPECT_LE(iv.hi, 3.0);
}

TEST(Bootstrap, PairedDifferenceCancelsWhatUnitsShare) {
  // b = a + 0.1 exactly on every unit, the units themselves very different: the paired interval
  // is the shift itself, whatever the spread of the units.
  std::vector<double> a, b;
  for (int i = 0; i < 50; ++i) {
    a.push_back(i * 1.7);
    b.push_back(i * 1.7 + 0.1);
  }
  const auto d = bootstrap_paired_difference(b, a, {});
  EXPECT_NEAR(d.value, 0.1, 1e-12);
  EXPECT_NEAR(d.lo, 0.1, 1e-9);
  EXPECT_NEAR(d.hi, 0.1, 1e-9);
  EXPECT_TRUE(d.excludes_zero());
  const auto same = bootstrap_paired_difference(a, a, {});
  EXPECT_EQ(same.lo, 0.0);
  EXPECT_EQ(same.hi, 0.0);
  EXPECT_FALSE(same.excludes_zero());
}

TEST(Bootstrap, DeterministicForASeed) {
  const std::vector<double> x = {1, 5, 2, 8, 3, 9, 4};
  const auto a = bootstrap_mean(x, {500, 0.9, 11}), b = bootstrap_mean(x, {500, 0.9, 11});
  EXPECT_EQ(a.lo, b.lo);
  EXPECT_EQ(a.hi, b.hi);
  EXPECT_LT(a.lo, a.value);
  EXPECT_GT(a.hi, a.value);
}

TEST(Bootstrap, BadInputIsAnError) {
  EXPECT_THROW(bootstrap_mean({}), std::invalid_argument);
  EXPECT_THROW(bootstrap_ratio({1, 2}, {1}), std::invalid_argument);
  EXPECT_THROW(bootstrap_ratio({1, 2}, {0, 0}), std::invalid_argument);
  EXPECT_THROW(bootstrap_paired_difference({1, 2}, {1}, {}), std::invalid_argument);
  EXPECT_THROW(bootstrap_mean({1, 2}, {0, 0.95, 1}), std::invalid_argument);
  EXPECT_THROW(bootstrap_mean({1, 2}, {10, 1.5, 1}), std::invalid_argument);
}

TEST(Bootstrap, FormatsValueAndBounds) {
  EXPECT_EQ(ttt::eval::format_interval({0.5, 0.25, 0.75, 3}, "%.2f"), "0.50 [0.25, 0.75]");
}

}  // namespace
