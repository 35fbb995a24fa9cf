// Bootstrap confidence intervals over independent units (documents, trials, needle cases), for
// the numbers REPORT.md states: a loss or accuracy is the ratio sum(num) / sum(den) over the
// units (den = token counts for a token-weighted loss, 1 for a plain mean), and units are drawn
// with replacement. A difference between two models is bootstrapped paired: the same draw of
// units for both, so what the documents share (their difficulty) cancels.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace ttt::eval {

struct Interval {
  double value = 0;  // the estimate on all units
  double lo = 0, hi = 0;  // percentile interval
  int64_t units = 0;

  bool excludes_zero() const { return lo > 0 || hi < 0; }
};

struct BootstrapOptions {
  int resamples = 2000;
  double level = 0.95;
  uint64_t seed = 12345;
};

// sum(num) / sum(den) with its interval. num and den have one entry per unit; den defaults to
// all ones (the mean). Throws std::invalid_argument on empty or mismatched input or a
// non-positive denominator sum.
Interval bootstrap_ratio(const std::vector<double>& num, const std::vector<double>& den, const BootstrapOptions& o = {});
Interval bootstrap_mean(const std::vector<double>& x, const BootstrapOptions& o = {});
// ratio(a) - ratio(b) over the same units (paired: one draw serves both). Positive: a is
// larger. den_b empty: the same denominators as a (den_a empty: all ones).
Interval bootstrap_paired_difference(const std::vector<double>& num_a, const std::vector<double>& num_b,
                                     const std::vector<double>& den_a, const BootstrapOptions& o = {},
                                     const std::vector<double>& den_b = {});

// "0.1234 [0.1200, 0.1270]" with the given printf format for each number.
std::string format_interval(const Interval& i, const char* number_format = "%.4f");

}  // namespace ttt::eval
