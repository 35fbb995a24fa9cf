// Long-context evaluation (the paper's comparisons at small scale).
//
// Loss vs context length: one prefill per held-out document over its first L_max tokens gives
// the NLL of every position. For every model here (full attention, SWA, TTT-E2E) a position's
// prediction depends only on the tokens before it (TTT-E2E scores chunk c with phi_{c-1}), so the
// mean NLL over positions [0, L) is exactly the loss of a prefill of length L, and the mean over
// [L/2, L) is the loss "deep in" a context of length L.
//
// Repeated-span probe: a random span is placed early in a document and repeated after a gap; the
// NLL of the repeat measures recall across that distance (below the window, attention sees the
// first copy; beyond it, only the compressed memory can help).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/model.h"

namespace ttt::eval {

struct PositionCurve {
  std::vector<double> mean_nll;  // per position, averaged over documents
  int64_t documents = 0;
  // Per document and position: the NLL, NaN where the target is BOS (masked). Kept for the
  // bootstrap over documents.
  std::vector<std::vector<float>> doc_nll;
};

// Sum and count of the unmasked NLLs of one document over positions [lo, hi).
std::pair<double, double> doc_range_sum(const std::vector<float>& nll, int64_t lo, int64_t hi);

// Documents must hold at least `length`+1 tokens; longer ones are cut.
PositionCurve position_nll(const model::Model& m, const std::vector<std::vector<int32_t>>& docs, int64_t length,
                           bool ttt = true, model::KvDtype kv = model::KvDtype::F32);

// Mean of curve.mean_nll over [lo, hi).
double mean_range(const PositionCurve& c, int64_t lo, int64_t hi);

// Curve averaged in bins of `bin` positions: (bin centre, mean).
std::vector<std::pair<double, double>> binned(const PositionCurve& c, int64_t bin);

struct SpanProbe {
  int64_t gap = 0;         // tokens between the end of the first copy and the start of the repeat
  double repeat_nll = 0;   // mean NLL over the repeated span (excluding its first token)
  double control_nll = 0;  // the same positions when the first copy is replaced by other random tokens
  std::vector<double> repeat_trials, control_trials;  // per trial (the means above average them)
};

// For each gap: filler from held-out text (trial t uses texts[t % texts.size()]), a span of
// `span_len` random ids placed at `span_pos`, repeated after the gap; `trials` seeds.
std::vector<SpanProbe> repeated_span_probe(const model::Model& m, const std::vector<std::vector<int32_t>>& texts,
                                           const std::vector<int64_t>& gaps, int64_t span_len, int64_t span_pos,
                                           int trials, uint64_t seed, bool ttt = true,
                                           model::KvDtype kv = model::KvDtype::F32);

}  // namespace ttt::eval
