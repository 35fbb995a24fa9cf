#include "eval/bootstrap.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "tensor/random.h"

namespace ttt::eval {
namespace {

void check(const std::vector<double>& num, const std::vector<double>& den) {
  if (num.empty()) throw std::invalid_argument("bootstrap: no units");
  if (!den.empty() && den.size() != num.size())
    throw std::invalid_argument("bootstrap: " + std::to_string(num.size()) + " numerators but " +
                                std::to_string(den.size()) + " denominators");
}

double quantile(std::vector<double>& v, double q) {
  // Linear interpolation between order statistics (type 7, numpy's default).
  std::sort(v.begin(), v.end());
  const double pos = q * static_cast<double>(v.size() - 1);
  const size_t i = static_cast<size_t>(std::floor(pos));
  const size_t j = std::min(i + 1, v.size() - 1);
  return v[i] + (pos - static_cast<double>(i)) * (v[j] - v[i]);
}

// Draws `resamples` index multisets and evaluates `stat(counts)` on each, where counts[u] is how
// often unit u was drawn.
template <class Stat>
Interval run(size_t n, const BootstrapOptions& o, double value, Stat stat) {
  if (o.resamples < 1) throw std::invalid_argument("bootstrap: resamples must be >= 1");
  if (!(o.level > 0 && o.level < 1)) throw std::invalid_argument("bootstrap: level must be in (0, 1)");
  Rng rng(o.seed);
  std::vector<double> stats;
  stats.reserve(static_cast<size_t>(o.resamples));
  std::vector<double> counts(n);
  for (int r = 0; r < o.resamples; ++r) {
    std::fill(counts.begin(), counts.end(), 0.0);
    for (size_t k = 0; k < n; ++k) counts[rng.next_u64() % n] += 1;
    const double s = stat(counts);
    if (std::isfinite(s)) stats.push_back(s);  // a draw with no denominator mass is skipped
  }
  Interval iv;
  iv.value = value;
  iv.units = static_cast<int64_t>(n);
  if (stats.empty()) {
    iv.lo = iv.hi = value;
    return iv;
  }
  const double a = (1 - o.level) / 2;
  iv.lo = quantile(stats, a);
  iv.hi = quantile(stats, 1 - a);
  return iv;
}

double weighted_ratio(const std::vector<double>& num, const std::vector<double>& den, const std::vector<double>& w) {
  double s = 0, d = 0;
  for (size_t u = 0; u < num.size(); ++u) {
    s += w[u] * num[u];
    d += w[u] * (den.empty() ? 1.0 : den[u]);
  }
  return d > 0 ? s / d : std::nan("");
}

}  // namespace

Interval bootstrap_ratio(const std::vector<double>& num, const std::vector<double>& den, const BootstrapOptions& o) {
  check(num, den);
  const std::vector<double> ones(num.size(), 1.0);
  const double value = weighted_ratio(num, den, ones);
  if (!std::isfinite(value)) throw std::invalid_argument("bootstrap: the denominators sum to zero or a value is not finite");
  return run(num.size(), o, value, [&](const std::vector<double>& w) { return weighted_ratio(num, den, w); });
}

Interval bootstrap_mean(const std::vector<double>& x, const BootstrapOptions& o) { return bootstrap_ratio(x, {}, o); }

Interval bootstrap_paired_difference(const std::vector<double>& num_a, const std::vector<double>& num_b,
                                     const std::vector<double>& den_a, const BootstrapOptions& o,
                                     const std::vector<double>& den_b_in) {
  const std::vector<double>& den_b = den_b_in.empty() ? den_a : den_b_in;
  check(num_a, den_a);
  check(num_b, den_b);
  if (num_a.size() != num_b.size()) throw std::invalid_argument("bootstrap: paired samples differ in size");
  const std::vector<double> ones(num_a.size(), 1.0);
  const double value = weighted_ratio(num_a, den_a, ones) - weighted_ratio(num_b, den_b, ones);
  if (!std::isfinite(value)) throw std::invalid_argument("bootstrap: the denominators sum to zero or a value is not finite");
  return run(num_a.size(), o, value, [&](const std::vector<double>& w) {
    return weighted_ratio(num_a, den_a, w) - weighted_ratio(num_b, den_b, w);
  });
}

std::string format_interval(const Interval& i, const char* f) {
  char a[48], b[48], c[48];
  std::snprintf(a, sizeof a, f, i.value);
  std::snprintf(b, sizeof b, f, i.lo);
  std::snprintf(c, sizeof c, f, i.hi);
  return std::string(a) + " [" + b + ", " + c + "]";
}

}  // namespace ttt::eval
