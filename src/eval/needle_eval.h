// RULER-style single-needle tests (pass-key, number, UUID; data/needle_task.h): accuracy vs
// context length for several models, as `ttt eval-needle` and the main job run them.
//
// One case: a prompt of exactly L tokens (BOS, haystack with the needle at some depth, the
// question) is fed through an inference::Session (prefill path; TTT-E2E models keep training on
// the context as they read it), then the model answers greedily. Scored like RULER: correct when
// the decoded answer (the answer's length in tokens plus a few more) contains the value. The
// teacher-forced NLL of the answer ids is reported beside it: a graded signal where accuracy is
// all 0 or all 1.
//
// Haystacks: the pass-key test uses its repeated filler sentences; the number and UUID tests use
// held-out corpus text (BOS separators removed), at a seeded random offset per case, the same for
// every model.
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "data/needle_task.h"
#include "eval/bootstrap.h"
#include "eval/report_tables.h"

namespace ttt::eval {

struct NeedleEvalOptions {
  std::vector<data::NeedleTask> tasks;
  std::vector<int64_t> lengths;
  int depths = 5;            // needle depths evenly spaced over [0, 1] (1: a single depth of 0.5)
  int trials = 2;            // instances per (task, length, depth)
  int64_t extra_tokens = 4;  // generated beyond the answer's own length
  uint64_t seed = 1;
};

struct NeedleRecord {
  size_t model = 0;
  data::NeedleTask task = data::NeedleTask::kPassKey;
  int64_t length = 0;
  double depth = 0;
  int64_t distance = 0;  // tokens from the needle's value to the end of the prompt
  bool correct = false;
  double answer_nll = 0;  // mean NLL per answer token, teacher-forced
  std::string value, generated;
  // With recall (the model's NamedModel::recall > 0): the context before the question was also
  // written to an exact store; the question then recalled from it.
  bool recalled = false;
  bool hit = false;             // a recalled stretch held the needle's value
  bool beyond_window = false;   // the value lay where the window no longer reached (recall's job)
  int64_t recall_tokens = 0;    // tokens recalled
  double recall_seconds = 0;    // retrieval and feeding the recalled tokens
  double read_seconds = 0;      // reading the context before the question (the session alone)
  double store_seconds = 0;     // writing that context to the store
  int64_t store_bytes = 0;      // the store's size afterwards
};

struct NeedleEvalResult {
  std::vector<std::string> models;
  std::vector<bool> models_ttt;  // per model: read with test-time training (false: the ablation)
  std::vector<data::NeedleTask> tasks;
  std::vector<int64_t> lengths;
  std::vector<NeedleRecord> records;

  // Means over the records matching model (and task and length when given; -1 / nullptr: all).
  double accuracy(size_t model, const data::NeedleTask* task, int64_t length) const;
  double answer_nll(size_t model, const data::NeedleTask* task, int64_t length) const;
  // Accuracy over records whose distance lies in [lo, hi); NaN when none do.
  double accuracy_by_distance(size_t model, int64_t lo, int64_t hi) const;

  // The same with 95% bootstrap intervals over cases (units 0 when no case matches).
  Interval accuracy_interval(size_t model, const data::NeedleTask* task, int64_t length) const;
  Interval answer_nll_interval(size_t model, const data::NeedleTask* task, int64_t length) const;
  // (length >= 0: only cases of that length; nll: the answer NLL instead of accuracy)
  Interval distance_interval(size_t model, int64_t lo, int64_t hi, int64_t length = -1, bool nll = false) const;
  // Paired over the same cases (every model answers the same prompts): accuracy of a minus b for
  // needles at distance [lo, hi).
  Interval distance_difference(size_t a, size_t b, int64_t lo, int64_t hi) const;
  // Recall: the share of cases with the needle beyond the window whose recalled stretches held
  // it, with its interval.
  Interval hit_rate_interval(size_t model, int64_t length) const;
};

// The haystack of held-out text: the given documents concatenated without BOS tokens.
std::vector<int32_t> needle_haystack(const std::vector<std::vector<int32_t>>& docs, int32_t bos);

// Scores one prompt: feeds it, answers greedily, returns (correct, answer NLL, generated text).
// ttt false: the model reads and answers with phi_0 (no inner steps).
// recall > 0: the context before the question goes to an in-memory exact store too, and the
// question recalls `recall` stretches from it (recall_mode) before it is read.
NeedleRecord score_needle_case(const model::Model& m, const data::Tokenizer& tok, const data::NeedleInstance& inst,
                               const data::NeedlePrompt& prompt, int64_t extra_tokens, bool ttt = true, int recall = 0,
                               const std::string& recall_mode = "window");

// Throws std::invalid_argument when a model's vocabulary does not match the tokenizer, a length
// is too short for a needle and its question, or the haystack is too short.
NeedleEvalResult needle_eval(const std::vector<NamedModel>& models, const data::Tokenizer& tok,
                             const std::vector<int32_t>& haystack, const NeedleEvalOptions& o, std::FILE* progress);

// Tables (one row per model, each cell with its 95% interval over cases): accuracy vs context
// length per task and over all tasks, answer NLL, and accuracy by the needle's distance from the
// question (below the window, up to 4 windows, beyond).
void print_needle_eval(const NeedleEvalResult& r, int64_t window, std::FILE* out);
// Accuracy vs context length, one line per model (all tasks), to `path`.
void plot_needle_eval(const NeedleEvalResult& r, const std::string& path);

}  // namespace ttt::eval
