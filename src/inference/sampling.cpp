#include "inference/sampling.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <string>
#include <unordered_set>

namespace ttt::inference {

namespace {

std::string num(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

}  // namespace

void validate(const SamplingOptions& o) {
  if (!(o.temperature >= 0) || !std::isfinite(o.temperature))
    throw std::invalid_argument("sampling: temperature must be a finite number >= 0 (0 = greedy), got " +
                                num(o.temperature));
  if (o.top_k < 0) throw std::invalid_argument("sampling: top-k must be >= 0 (0 = off), got " + std::to_string(o.top_k));
  if (!(o.top_p > 0 && o.top_p <= 1))
    throw std::invalid_argument("sampling: top-p must be in (0, 1] (1 = off), got " + num(o.top_p));
  if (!(o.repetition_penalty > 0) || !std::isfinite(o.repetition_penalty))
    throw std::invalid_argument("sampling: repetition penalty must be a finite number > 0 (1 = off), got " +
                                num(o.repetition_penalty));
  if (o.repetition_window < 0)
    throw std::invalid_argument("sampling: repetition window must be >= 0 (0 = whole context), got " +
                                std::to_string(o.repetition_window));
}

Sampler::Sampler(const SamplingOptions& o) : o_(o), rng_(o.seed) { validate(o_); }

std::vector<double> Sampler::penalized(const std::vector<float>& logits, const std::vector<int32_t>& context) const {
  if (logits.empty()) throw std::invalid_argument("sampling: empty logits");
  std::vector<double> z(logits.begin(), logits.end());
  bool any_finite = false;
  for (size_t i = 0; i < z.size(); ++i) {
    if (std::isnan(z[i])) throw std::invalid_argument("sampling: logit " + std::to_string(i) + " is NaN");
    any_finite |= std::isfinite(z[i]);
  }
  if (!any_finite) throw std::invalid_argument("sampling: no token has a finite logit");
  if (o_.repetition_penalty != 1.0 && !context.empty()) {
    const size_t n = context.size();
    const size_t start = o_.repetition_window > 0 && static_cast<size_t>(o_.repetition_window) < n
                             ? n - static_cast<size_t>(o_.repetition_window)
                             : 0;
    std::unordered_set<int32_t> seen;
    for (size_t i = start; i < n; ++i) {
      const int32_t t = context[i];
      if (t < 0 || static_cast<size_t>(t) >= z.size() || !seen.insert(t).second) continue;
      z[t] = z[t] > 0 ? z[t] / o_.repetition_penalty : z[t] * o_.repetition_penalty;
    }
  }
  return z;
}

void Sampler::candidates(const std::vector<double>& z, std::vector<int32_t>& ids, std::vector<double>& p) const {
  const double mx = *std::max_element(z.begin(), z.end());  // finite: at least one logit is
  std::vector<double> e(z.size());
  double total = 0;
  for (size_t i = 0; i < z.size(); ++i) {
    e[i] = std::exp((z[i] - mx) / o_.temperature);  // -inf -> 0; the max -> 1
    total += e[i];
  }
  ids.resize(z.size());
  std::iota(ids.begin(), ids.end(), 0);
  std::stable_sort(ids.begin(), ids.end(), [&](int32_t a, int32_t b) { return z[a] > z[b]; });
  size_t keep = ids.size();
  if (o_.top_k > 0) keep = std::min(keep, static_cast<size_t>(o_.top_k));
  if (o_.top_p < 1.0) {
    double mass = 0;
    size_t n = 0;
    while (n < keep) {
      mass += e[ids[n]] / total;
      ++n;
      if (mass >= o_.top_p) break;
    }
    keep = std::max<size_t>(n, 1);
  }
  // Tokens of probability zero are never candidates (the first one never is zero: it is the max).
  while (keep > 1 && e[ids[keep - 1]] == 0) --keep;
  ids.resize(keep);
  p.resize(keep);
  for (size_t i = 0; i < keep; ++i) p[i] = e[ids[i]];
}

std::vector<double> Sampler::distribution(const std::vector<float>& logits, const std::vector<int32_t>& context) const {
  const auto z = penalized(logits, context);
  std::vector<double> out(z.size(), 0.0);
  if (o_.temperature == 0) {
    out[std::max_element(z.begin(), z.end()) - z.begin()] = 1.0;
    return out;
  }
  std::vector<int32_t> ids;
  std::vector<double> p;
  candidates(z, ids, p);
  const double total = std::accumulate(p.begin(), p.end(), 0.0);
  for (size_t i = 0; i < ids.size(); ++i) out[ids[i]] = p[i] / total;
  return out;
}

int32_t Sampler::sample(const std::vector<float>& logits, const std::vector<int32_t>& context) {
  const auto z = penalized(logits, context);
  if (o_.temperature == 0) return static_cast<int32_t>(std::max_element(z.begin(), z.end()) - z.begin());
  std::vector<int32_t> ids;
  std::vector<double> p;
  candidates(z, ids, p);
  const double total = std::accumulate(p.begin(), p.end(), 0.0);
  const double u = rng_.uniform() * total;
  double acc = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    acc += p[i];
    if (u < acc) return ids[i];
  }
  return ids.back();  // rounding: u landed on the total
}

}  // namespace ttt::inference
