// Evaluation runs shared by `ttt eval-long`, `ttt probe` and `ttt experiment`: they take loaded
// models and a corpus, return plain tables, and draw the PNGs.
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "eval/long_context.h"
#include "model/model.h"

namespace ttt::eval {

struct NamedModel {
  std::string name;
  const model::Model* model;
  bool ttt = true;  // false: test-time training off (phi_0 throughout), the ablation of the inner loop
};

struct LongEvalResult {
  std::vector<int64_t> lengths;
  std::vector<std::string> models;
  // [model][length]: mean loss over [0, L) and over [L/2, L)
  std::vector<std::vector<double>> loss_upto, loss_late;
  std::vector<PositionCurve> curves;  // per model, over the longest length
  int64_t documents = 0;
};

// Uses up to `max_docs` documents of the corpus's "val-long" split holding at least
// max(lengths)+1 tokens.
LongEvalResult long_context_eval(const std::vector<NamedModel>& models, const data::Dataset& ds,
                                 const std::vector<int64_t>& lengths, int64_t max_docs, std::FILE* progress);
void print_long_eval(const LongEvalResult& r, std::FILE* out);
// loss_vs_context.png and loss_vs_position.png in dir.
void plot_long_eval(const LongEvalResult& r, const std::string& dir, int64_t window);

struct SpanProbeResult {
  std::vector<int64_t> gaps;
  std::vector<std::string> models;
  std::vector<std::vector<SpanProbe>> probes;  // [model][gap]
};
SpanProbeResult span_probe_eval(const std::vector<NamedModel>& models, const data::Dataset& ds,
                                const std::vector<int64_t>& gaps, int64_t span_len, int trials, std::FILE* progress);
void print_span_probe(const SpanProbeResult& r, std::FILE* out);

}  // namespace ttt::eval
