#include "eval/long_context.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "tensor/random.h"
#include "ttt/inner_loop.h"

namespace ttt::eval {

PositionCurve position_nll(const model::Model& m, const std::vector<std::vector<int32_t>>& docs, int64_t length,
                           bool ttt, model::KvDtype kv) {
  PositionCurve c;
  c.mean_nll.assign(length, 0.0);
  std::vector<double> count(length, 0.0);
  e2e::TTTOptions opt;
  opt.ttt = ttt;
  opt.kv_dtype = kv;
  const int32_t bos = static_cast<int32_t>(m.config().bos_token_id);
  for (auto& d : docs) {
    if (static_cast<int64_t>(d.size()) < length + 1)
      throw std::invalid_argument("position_nll: a document holds " + std::to_string(d.size()) + " tokens, fewer than " +
                                  std::to_string(length + 1));
    std::vector<int32_t> in(d.begin(), d.begin() + length), tg(d.begin() + 1, d.begin() + length + 1);
    const auto res = e2e::prefill(m, in, tg, opt);
    std::vector<float> doc(length, std::nanf(""));
    for (int64_t i = 0; i < length; ++i)
      if (tg[i] != bos) {
        c.mean_nll[i] += res.nll[i];
        count[i] += 1;
        doc[i] = res.nll[i];
      }
    c.doc_nll.push_back(std::move(doc));
    ++c.documents;
  }
  for (int64_t i = 0; i < length; ++i) c.mean_nll[i] = count[i] > 0 ? c.mean_nll[i] / count[i] : std::nan("");
  return c;
}

std::pair<double, double> doc_range_sum(const std::vector<float>& nll, int64_t lo, int64_t hi) {
  double s = 0, n = 0;
  for (int64_t i = std::max<int64_t>(lo, 0); i < hi && i < static_cast<int64_t>(nll.size()); ++i)
    if (!std::isnan(nll[i])) {
      s += nll[i];
      n += 1;
    }
  return {s, n};
}

double mean_range(const PositionCurve& c, int64_t lo, int64_t hi) {
  double s = 0, n = 0;
  for (int64_t i = lo; i < hi && i < static_cast<int64_t>(c.mean_nll.size()); ++i)
    if (!std::isnan(c.mean_nll[i])) {
      s += c.mean_nll[i];
      n += 1;
    }
  return n > 0 ? s / n : std::nan("");
}

std::vector<std::pair<double, double>> binned(const PositionCurve& c, int64_t bin) {
  std::vector<std::pair<double, double>> out;
  const int64_t n = static_cast<int64_t>(c.mean_nll.size());
  for (int64_t lo = 0; lo < n; lo += bin) {
    const int64_t hi = std::min(n, lo + bin);
    out.emplace_back(0.5 * static_cast<double>(lo + hi), mean_range(c, lo, hi));
  }
  return out;
}

std::vector<SpanProbe> repeated_span_probe(const model::Model& m, const std::vector<std::vector<int32_t>>& texts,
                                           const std::vector<int64_t>& gaps, int64_t span_len, int64_t span_pos,
                                           int trials, uint64_t seed, bool ttt, model::KvDtype kv) {
  if (texts.empty()) throw std::invalid_argument("repeated_span_probe: no filler text");
  if (trials < 1) throw std::invalid_argument("repeated_span_probe: trials must be at least 1");
  const auto& cfg = m.config();
  e2e::TTTOptions opt;
  opt.ttt = ttt;
  opt.kv_dtype = kv;
  std::vector<SpanProbe> out;
  for (int64_t gap : gaps) {
    const int64_t total = span_pos + 2 * span_len + gap + 1;
    for (auto& text : texts)
      if (static_cast<int64_t>(text.size()) < total)
        throw std::invalid_argument("repeated_span_probe: filler text of " + std::to_string(text.size()) +
                                    " tokens is shorter than the probe (" + std::to_string(total) + ")");
    SpanProbe p;
    p.gap = gap;
    p.repeat_trials.assign(trials, 0.0);
    p.control_trials.assign(trials, 0.0);
    for (int t = 0; t < trials; ++t) {
      const auto& text = texts[static_cast<size_t>(t) % texts.size()];
      Rng r(seed + 1000 * t + gap);
      std::vector<int32_t> span(span_len), other(span_len);
      for (auto& x : span) x = static_cast<int32_t>(1 + r.next_u64() % (cfg.vocab_size - 1));
      for (auto& x : other) x = static_cast<int32_t>(1 + r.next_u64() % (cfg.vocab_size - 1));
      const int64_t off = static_cast<int64_t>(r.next_u64() % (text.size() - total + 1));
      for (int variant = 0; variant < 2; ++variant) {
        std::vector<int32_t> seq(text.begin() + off, text.begin() + off + total);
        const auto& first = variant == 0 ? span : other;
        std::copy(first.begin(), first.end(), seq.begin() + span_pos);
        const int64_t rep = span_pos + span_len + gap;
        std::copy(span.begin(), span.end(), seq.begin() + rep);
        std::vector<int32_t> in(seq.begin(), seq.end() - 1), tg(seq.begin() + 1, seq.end());
        const auto res = e2e::prefill(m, in, tg, opt);
        // Targets rep+1 .. rep+span_len-1 are predicted from inputs inside the repeat.
        double s = 0;
        for (int64_t i = rep; i < rep + span_len - 1; ++i) s += res.nll[i];
        const double mean = s / static_cast<double>(span_len - 1);
        (variant == 0 ? p.repeat_trials : p.control_trials)[t] = mean;
        (variant == 0 ? p.repeat_nll : p.control_nll) += mean / trials;
      }
    }
    out.push_back(p);
  }
  return out;
}

}  // namespace ttt::eval
