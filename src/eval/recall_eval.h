// Recall on ordinary text (issue 13): does recalling from the exact store harm, or help, plain
// language modeling of long documents? And what does keeping the store cost the reader?
//
// Each held-out document is read by one session (TTT as usual) while every token also goes to an
// exact store. At probe positions p (every probe_every tokens) the reader forks: the fork recalls
// k stretches from beyond the window with the next prompt_tokens of the document as the query
// (in each mode, or not at all), reads that prompt, then predicts the probe_tokens after it
// teacher-forced, one step at a time. Every variant sees the same document, prompt and probe;
// only recall differs, so differences are paired over documents.
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "eval/bootstrap.h"
#include "inference/recall.h"
#include "model/model.h"

namespace ttt::eval {

struct RecallLossOptions {
  int64_t length = 16384;      // tokens of each document read
  int64_t probe_every = 2048;  // probes at p = probe_every, 2 probe_every, ... (the prompt ends at p)
  int64_t prompt_tokens = 128;  // the query: the document's tokens just before the probe
  int64_t probe_tokens = 64;    // teacher-forced targets per probe
  int k = 2;
  std::vector<inference::RecallMode> modes = {inference::RecallMode::kWindow, inference::RecallMode::kReview,
                                              inference::RecallMode::kBoth};
};

struct RecallLossResult {
  std::vector<std::string> variants;      // "no recall", then "recall <mode>"
  std::vector<int64_t> probes;            // probe positions
  // nll[variant][document][probe]: mean NLL of the probe's targets
  std::vector<std::vector<std::vector<double>>> nll;
  int64_t documents = 0, tokens_read = 0;
  double read_seconds = 0;   // the sessions reading the documents
  double store_seconds = 0;  // appending the same tokens to the stores
  int64_t store_bytes = 0;   // the stores' sizes at the end, summed
  double recalled_tokens = 0;  // mean per recalling probe

  Interval mean(size_t variant, int64_t probe) const;  // over documents (probe -1: all probes)
  // variant minus "no recall", paired over documents (probe -1: each document's mean over probes)
  Interval difference(size_t variant, int64_t probe) const;
};

// Documents must hold at least o.length + o.probe_tokens + 1 tokens (longer ones are cut).
RecallLossResult recall_loss_eval(const model::Model& m, const std::vector<std::vector<int32_t>>& docs,
                                  const RecallLossOptions& o, std::FILE* progress);

// Mean probe NLL per variant and context position with 95% intervals, the paired difference to no
// recall, and the store's cost (write time as a share of reading, bytes per 1K tokens).
void print_recall_loss(const RecallLossResult& r, std::FILE* out);

}  // namespace ttt::eval
