#include "eval/report_tables.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <stdexcept>

#include "report/plot.h"
#include "ttt/inner_loop.h"

namespace ttt::eval {

namespace {
std::vector<std::vector<int32_t>> long_documents(const data::Dataset& ds, int64_t min_len, int64_t max_docs) {
  std::vector<std::vector<int32_t>> docs;
  const auto& split = ds.split("val-long");
  for (size_t i = 0; i < split.documents.size() && static_cast<int64_t>(docs.size()) < max_docs; ++i)
    if (split.documents[i].length >= min_len) docs.push_back(ds.document("val-long", i));
  if (docs.empty())
    throw std::runtime_error("the corpus has no validation document of at least " + std::to_string(min_len) +
                             " tokens (build it with a larger --min-val-doc-tokens or evaluate shorter lengths)");
  return docs;
}

}  // namespace

std::string short_len(int64_t n) {
  return n >= 1024 && n % 1024 == 0 ? std::to_string(n / 1024) + "K" : std::to_string(n);
}

double nll_of(const std::vector<float>& logits, int32_t target) {
  float mx = -INFINITY;
  for (float v : logits) mx = std::max(mx, v);
  double s = 0;
  for (float v : logits) s += std::exp(static_cast<double>(v) - mx);
  return std::log(s) + mx - logits[static_cast<size_t>(target)];
}

LongEvalResult long_context_eval(const std::vector<NamedModel>& models, const data::Dataset& ds,
                                 const std::vector<int64_t>& lengths, int64_t max_docs, std::FILE* progress) {
  if (lengths.empty()) throw std::invalid_argument("long_context_eval: no lengths");
  LongEvalResult r;
  r.lengths = lengths;
  std::sort(r.lengths.begin(), r.lengths.end());
  const int64_t lmax = r.lengths.back();
  const auto docs = long_documents(ds, lmax + 1, max_docs);
  r.documents = static_cast<int64_t>(docs.size());
  for (auto& nm : models) {
    const auto t0 = std::chrono::steady_clock::now();
    if (progress) std::fprintf(progress, "  eval-long: %s on %zu documents of %lld tokens...", nm.name.c_str(), docs.size(),
                               static_cast<long long>(lmax));
    if (progress) std::fflush(progress);
    r.models.push_back(nm.name);
    r.curves.push_back(position_nll(*nm.model, docs, lmax, nm.ttt, nm.kv_dtype));
    if (progress)
      std::fprintf(progress, " %.0f s\n", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    std::vector<double> upto, late;
    std::vector<Interval> ci_upto, ci_late;
    for (int64_t l : r.lengths) {
      for (int pass = 0; pass < 2; ++pass) {
        std::vector<double> num, den;
        for (auto& d : r.curves.back().doc_nll) {
          const auto [sum, n] = doc_range_sum(d, pass == 0 ? 0 : l / 2, l);
          num.push_back(sum);
          den.push_back(n);
        }
        const Interval iv = bootstrap_ratio(num, den);
        (pass == 0 ? upto : late).push_back(iv.value);
        (pass == 0 ? ci_upto : ci_late).push_back(iv);
      }
    }
    r.loss_upto.push_back(upto);
    r.loss_late.push_back(late);
    r.ci_upto.push_back(ci_upto);
    r.ci_late.push_back(ci_late);
  }
  return r;
}

Interval LongEvalResult::late_difference(size_t a, size_t ja, size_t b, size_t jb) const {
  const int64_t la = lengths.at(ja), lb = lengths.at(jb);
  std::vector<double> na, nb, da, db;
  for (size_t d = 0; d < curves.at(a).doc_nll.size(); ++d) {
    const auto [sa, ca] = doc_range_sum(curves[a].doc_nll[d], la / 2, la);
    const auto [sb, cb] = doc_range_sum(curves.at(b).doc_nll.at(d), lb / 2, lb);
    na.push_back(sa);
    da.push_back(ca);
    nb.push_back(sb);
    db.push_back(cb);
  }
  return bootstrap_paired_difference(na, nb, da, {}, db);
}

size_t LongEvalResult::model_index(const std::string& name) const {
  for (size_t i = 0; i < models.size(); ++i)
    if (models[i] == name) return i;
  throw std::out_of_range("no model named " + name + " in the long-context results");
}

SplitLossResult split_loss_eval(const std::vector<NamedModel>& models, const data::Dataset& ds, const std::string& split,
                                int64_t max_docs, int64_t max_tokens, int64_t max_doc_tokens, std::FILE* progress) {
  SplitLossResult r;
  r.split = split;
  const auto& sp = ds.split(split);
  std::vector<std::vector<int32_t>> docs;
  for (size_t i = 0; i < sp.documents.size() && static_cast<int64_t>(docs.size()) < max_docs && r.tokens < max_tokens; ++i) {
    auto d = ds.document(split, i);
    if (static_cast<int64_t>(d.size()) > max_doc_tokens + 1) d.resize(static_cast<size_t>(max_doc_tokens + 1));
    if (d.size() < 2) continue;
    r.tokens += static_cast<int64_t>(d.size()) - 1;
    docs.push_back(std::move(d));
  }
  if (docs.empty()) throw std::runtime_error("the corpus's " + split + " split holds no document of two tokens or more");
  r.documents = static_cast<int64_t>(docs.size());
  for (auto& nm : models) {
    const auto t0 = std::chrono::steady_clock::now();
    if (progress) std::fprintf(progress, "  %s loss: %s on %zu documents (%lld tokens)...", split.c_str(), nm.name.c_str(),
                               docs.size(), static_cast<long long>(r.tokens));
    if (progress) std::fflush(progress);
    r.models.push_back(nm.name);
    std::vector<double> sums, counts;
    e2e::TTTOptions opt;
    opt.ttt = nm.ttt;
    const int32_t bos = static_cast<int32_t>(nm.model->config().bos_token_id);
    for (auto& d : docs) {
      std::vector<int32_t> in(d.begin(), d.end() - 1), tg(d.begin() + 1, d.end());
      const auto res = e2e::prefill(*nm.model, in, tg, opt);
      double s = 0, n = 0;
      for (size_t i = 0; i < tg.size(); ++i)
        if (tg[i] != bos) {
          s += res.nll[i];
          n += 1;
        }
      sums.push_back(s);
      counts.push_back(n);
    }
    r.loss.push_back(bootstrap_ratio(sums, counts));
    r.doc_sum.push_back(std::move(sums));
    r.doc_count.push_back(std::move(counts));
    if (progress)
      std::fprintf(progress, " %.4f, %.0f s\n", r.loss.back().value,
                   std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return r;
}

Interval SplitLossResult::difference(size_t a, size_t b) const {
  return bootstrap_paired_difference(doc_sum.at(a), doc_sum.at(b), doc_count.at(a), {}, doc_count.at(b));
}

void print_long_eval(const LongEvalResult& r, std::FILE* out) {
  for (int pass = 0; pass < 2; ++pass) {
    std::fprintf(out, "\n%s (%lld held-out documents; 95%% bootstrap intervals over documents)\n\n| model |",
                 pass == 0 ? "Loss vs context length: mean NLL over positions [0, L)"
                           : "Loss deep in the context: mean NLL over positions [L/2, L)",
                 static_cast<long long>(r.documents));
    for (int64_t l : r.lengths) std::fprintf(out, " %s |", short_len(l).c_str());
    std::fprintf(out, "\n|---|");
    for (size_t j = 0; j < r.lengths.size(); ++j) std::fprintf(out, "---:|");
    std::fprintf(out, "\n");
    const auto& tab = pass == 0 ? r.ci_upto : r.ci_late;
    for (size_t i = 0; i < r.models.size(); ++i) {
      std::fprintf(out, "| %s |", r.models[i].c_str());
      for (size_t j = 0; j < r.lengths.size(); ++j) std::fprintf(out, " %s |", format_interval(tab[i][j]).c_str());
      std::fprintf(out, "\n");
    }
  }
}

void plot_long_eval(const LongEvalResult& r, const std::string& dir, int64_t window) {
  std::vector<report::Series> vs_ctx, vs_pos;
  for (size_t i = 0; i < r.models.size(); ++i) {
    report::Series s{r.models[i], {}, {}};
    s.markers = true;
    for (size_t j = 0; j < r.lengths.size(); ++j) {
      s.x.push_back(static_cast<double>(r.lengths[j]));
      s.y.push_back(r.loss_late[i][j]);
    }
    vs_ctx.push_back(s);
    report::Series p{r.models[i], {}, {}};
    const int64_t bin = std::max<int64_t>(64, static_cast<int64_t>(r.curves[i].mean_nll.size()) / 64);
    for (auto& [x, y] : binned(r.curves[i], bin)) {
      p.x.push_back(x);
      p.y.push_back(y);
    }
    vs_pos.push_back(p);
  }
  report::ChartOptions c;
  c.title = "Held-out loss deep in the context, positions [L/2, L)";
  c.x_label = "context length L (tokens)";
  c.y_label = "loss (nats/token)";
  c.log_x = true;
  report::write_line_chart(dir + "/loss_vs_context.png", vs_ctx, c);
  report::ChartOptions p;
  p.title = "Held-out loss by position (window " + std::to_string(window) + ")";
  p.x_label = "position in document (tokens)";
  p.y_label = "loss (nats/token)";
  report::write_line_chart(dir + "/loss_vs_position.png", vs_pos, p);
}

SpanProbeResult span_probe_eval(const std::vector<NamedModel>& models, const data::Dataset& ds,
                                const std::vector<int64_t>& gaps, int64_t span_len, int trials, std::FILE* progress) {
  SpanProbeResult r;
  r.gaps = gaps;
  const int64_t need = 64 + 2 * span_len + *std::max_element(gaps.begin(), gaps.end()) + 1;
  const auto docs = long_documents(ds, need + 1, trials);
  for (auto& nm : models) {
    if (progress) std::fprintf(progress, "  span probe: %s, %d trials over %zu documents...\n", nm.name.c_str(), trials,
                               docs.size());
    r.models.push_back(nm.name);
    r.probes.push_back(repeated_span_probe(*nm.model, docs, gaps, span_len, 64, trials, 7, nm.ttt, nm.kv_dtype));
  }
  return r;
}

void print_span_probe(const SpanProbeResult& r, std::FILE* out) {
  const size_t trials = r.probes.empty() || r.probes[0].empty() ? 0 : r.probes[0][0].repeat_trials.size();
  std::fprintf(out,
               "\nRepeated-span recall: NLL of a repeated random span after a gap, and the control (first copy "
               "replaced) minus it: how much the first copy helps (%zu trials; 95%% bootstrap intervals over trials)\n\n| model |",
               trials);
  for (int64_t g : r.gaps) std::fprintf(out, " repeat, gap %lld | help, gap %lld |", static_cast<long long>(g), static_cast<long long>(g));
  std::fprintf(out, "\n|---|");
  for (size_t g = 0; g < r.gaps.size(); ++g) std::fprintf(out, "---:|---:|");
  std::fprintf(out, "\n");
  for (size_t i = 0; i < r.models.size(); ++i) {
    std::fprintf(out, "| %s |", r.models[i].c_str());
    for (size_t g = 0; g < r.gaps.size(); ++g) {
      const auto& p = r.probes[i][g];
      std::fprintf(out, " %s | %s |", format_interval(bootstrap_mean(p.repeat_trials), "%.3f").c_str(),
                   format_interval(bootstrap_paired_difference(p.control_trials, p.repeat_trials, {}), "%.3f").c_str());
    }
    std::fprintf(out, "\n");
  }
}

}  // namespace ttt::eval
