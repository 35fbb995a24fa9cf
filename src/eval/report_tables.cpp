#include "eval/report_tables.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "report/plot.h"

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

std::string short_len(int64_t n) {
  return n >= 1024 && n % 1024 == 0 ? std::to_string(n / 1024) + "K" : std::to_string(n);
}
}  // namespace

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
    if (progress) std::fprintf(progress, "  eval-long: %s on %zu documents of %lld tokens...\n", nm.name.c_str(), docs.size(),
                               static_cast<long long>(lmax));
    r.models.push_back(nm.name);
    r.curves.push_back(position_nll(*nm.model, docs, lmax, nm.ttt));
    std::vector<double> upto, late;
    for (int64_t l : r.lengths) {
      upto.push_back(mean_range(r.curves.back(), 0, l));
      late.push_back(mean_range(r.curves.back(), l / 2, l));
    }
    r.loss_upto.push_back(upto);
    r.loss_late.push_back(late);
  }
  return r;
}

void print_long_eval(const LongEvalResult& r, std::FILE* out) {
  for (int pass = 0; pass < 2; ++pass) {
    std::fprintf(out, "\n%s (%lld held-out documents)\n\n| context |",
                 pass == 0 ? "Loss vs context length: mean NLL over positions [0, L)"
                           : "Loss deep in the context: mean NLL over positions [L/2, L)",
                 static_cast<long long>(r.documents));
    for (auto& m : r.models) std::fprintf(out, " %s |", m.c_str());
    std::fprintf(out, "\n|---:|");
    for (size_t i = 0; i < r.models.size(); ++i) std::fprintf(out, "---:|");
    std::fprintf(out, "\n");
    const auto& tab = pass == 0 ? r.loss_upto : r.loss_late;
    for (size_t j = 0; j < r.lengths.size(); ++j) {
      std::fprintf(out, "| %s |", short_len(r.lengths[j]).c_str());
      for (size_t i = 0; i < r.models.size(); ++i) std::fprintf(out, " %.4f |", tab[i][j]);
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
  report::write_line_chart_png(dir + "/loss_vs_context.png", vs_ctx, c);
  report::ChartOptions p;
  p.title = "Held-out loss by position (window " + std::to_string(window) + ")";
  p.x_label = "position in document (tokens)";
  p.y_label = "loss (nats/token)";
  report::write_line_chart_png(dir + "/loss_vs_position.png", vs_pos, p);
}

SpanProbeResult span_probe_eval(const std::vector<NamedModel>& models, const data::Dataset& ds,
                                const std::vector<int64_t>& gaps, int64_t span_len, int trials, std::FILE* progress) {
  SpanProbeResult r;
  r.gaps = gaps;
  const int64_t need = 64 + 2 * span_len + *std::max_element(gaps.begin(), gaps.end()) + 1;
  const auto docs = long_documents(ds, need + 1, 1);
  for (auto& nm : models) {
    if (progress) std::fprintf(progress, "  span probe: %s...\n", nm.name.c_str());
    r.models.push_back(nm.name);
    r.probes.push_back(repeated_span_probe(*nm.model, docs[0], gaps, span_len, 64, trials, 7, nm.ttt));
  }
  return r;
}

void print_span_probe(const SpanProbeResult& r, std::FILE* out) {
  std::fprintf(out, "\nRepeated-span recall: NLL of a repeated random span after a gap (control: first copy replaced)\n\n| gap |");
  for (auto& m : r.models) std::fprintf(out, " %s repeat | %s control |", m.c_str(), m.c_str());
  std::fprintf(out, "\n|---:|");
  for (size_t i = 0; i < r.models.size(); ++i) std::fprintf(out, "---:|---:|");
  std::fprintf(out, "\n");
  for (size_t g = 0; g < r.gaps.size(); ++g) {
    std::fprintf(out, "| %lld |", static_cast<long long>(r.gaps[g]));
    for (size_t i = 0; i < r.models.size(); ++i)
      std::fprintf(out, " %.3f | %.3f |", r.probes[i][g].repeat_nll, r.probes[i][g].control_nll);
    std::fprintf(out, "\n");
  }
}

}  // namespace ttt::eval
