// Evaluation runs shared by `ttt eval-long`, `ttt probe` and `ttt experiment`: they take loaded
// models and a corpus, return plain tables, and draw the PNGs.
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "eval/bootstrap.h"
#include "eval/long_context.h"
#include "model/model.h"

namespace ttt::eval {

// "8K" for 8192 (multiples of 1024), the number itself otherwise: context lengths in tables.
std::string short_len(int64_t n);
// -log softmax(logits)[target], computed stably.
double nll_of(const std::vector<float>& logits, int32_t target);


struct NamedModel {
  std::string name;
  const model::Model* model;
  bool ttt = true;  // false: test-time training off (phi_0 throughout), the ablation of the inner loop
  model::KvDtype kv_dtype = model::KvDtype::F32;  // attention's window cache in prefill (eval-long, probe)
  // Needle tests: recall this many stretches of the exact store before answering (0: none), in
  // recall_mode ("window", "review", "both"; inference/recall.h).
  int recall = 0;
  std::string recall_mode = "window";
};

struct LongEvalResult {
  std::vector<int64_t> lengths;
  std::vector<std::string> models;
  // [model][length]: loss over positions [0, L) and over [L/2, L) (token-weighted mean over the
  // documents), with 95% bootstrap intervals over documents.
  std::vector<std::vector<double>> loss_upto, loss_late;
  std::vector<std::vector<Interval>> ci_upto, ci_late;
  std::vector<PositionCurve> curves;  // per model, over the longest length
  int64_t documents = 0;

  // Paired bootstrap over documents of loss_late[a][ja] - loss_late[b][jb] (negative: a is
  // lower). The same model at two lengths measures how much longer contexts help it.
  Interval late_difference(size_t a, size_t ja, size_t b, size_t jb) const;
  size_t model_index(const std::string& name) const;  // throws std::out_of_range
};

// Uses up to `max_docs` documents of the corpus's "val-long" split holding at least
// max(lengths)+1 tokens.
LongEvalResult long_context_eval(const std::vector<NamedModel>& models, const data::Dataset& ds,
                                 const std::vector<int64_t>& lengths, int64_t max_docs, std::FILE* progress);
// Two tables (one row per model, one column per length), each cell "loss [95% interval]".
void print_long_eval(const LongEvalResult& r, std::FILE* out);

// Loss over whole held-out documents of one split (each read from its start, with test-time
// training for TTT-E2E models), token-weighted, with a bootstrap interval over documents.
struct SplitLossResult {
  std::string split;
  std::vector<std::string> models;
  int64_t documents = 0, tokens = 0;
  std::vector<std::vector<double>> doc_sum, doc_count;  // [model][document]
  std::vector<Interval> loss;                           // per model
  Interval difference(size_t a, size_t b) const;        // paired: loss[a] - loss[b]
};
// Documents of `split` in corpus order, up to max_docs and max_tokens in all, each cut to
// max_doc_tokens.
SplitLossResult split_loss_eval(const std::vector<NamedModel>& models, const data::Dataset& ds, const std::string& split,
                                int64_t max_docs, int64_t max_tokens, int64_t max_doc_tokens, std::FILE* progress);
// loss_vs_context.png and loss_vs_position.png in dir.
void plot_long_eval(const LongEvalResult& r, const std::string& dir, int64_t window);

struct SpanProbeResult {
  std::vector<int64_t> gaps;
  std::vector<std::string> models;
  std::vector<std::vector<SpanProbe>> probes;  // [model][gap]
};
// Trial t fills from the t-th long held-out document (cycling when there are fewer).
SpanProbeResult span_probe_eval(const std::vector<NamedModel>& models, const data::Dataset& ds,
                                const std::vector<int64_t>& gaps, int64_t span_len, int trials, std::FILE* progress);
// "repeat [interval]" and "control [interval]" per model and gap, intervals over trials.
void print_span_probe(const SpanProbeResult& r, std::FILE* out);

}  // namespace ttt::eval
