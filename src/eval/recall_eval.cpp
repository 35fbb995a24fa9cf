#include "eval/recall_eval.h"

#include <chrono>
#include <cmath>
#include <stdexcept>

#include "eval/report_tables.h"
#include "inference/session.h"
#include "memory/exact_store.h"

namespace ttt::eval {

namespace {

// Reads `prompt` into s, then returns the mean NLL of probe[0..n), each predicted from everything
// before it (teacher-forced, one decode step per token).
double probe_nll(inference::Session& s, const std::vector<int32_t>& prompt, const std::vector<int32_t>& probe) {
  std::vector<float> logits = s.feed(prompt);
  double sum = 0;
  for (size_t i = 0; i < probe.size(); ++i) {
    sum += nll_of(logits, probe[i]);
    if (i + 1 < probe.size()) logits = s.step(probe[i]);
  }
  return sum / static_cast<double>(probe.size());
}

}  // namespace

namespace {

// One document's probe NLL for a variant: at probe j, or the mean over its probes (j < 0).
double doc_value(const std::vector<double>& doc, int64_t j) {
  if (j >= 0) return doc[static_cast<size_t>(j)];
  double s = 0;
  for (double x : doc) s += x;
  return s / static_cast<double>(doc.size());
}

}  // namespace

Interval RecallLossResult::mean(size_t variant, int64_t probe) const {
  std::vector<double> v;
  for (const auto& doc : nll[variant]) v.push_back(doc_value(doc, probe));
  return v.empty() ? Interval{std::nan(""), 0, 0, 0} : bootstrap_mean(v);
}

Interval RecallLossResult::difference(size_t variant, int64_t probe) const {
  std::vector<double> a, b;
  for (size_t d = 0; d < nll[variant].size(); ++d) {
    a.push_back(doc_value(nll[variant][d], probe));
    b.push_back(doc_value(nll[0][d], probe));
  }
  return a.empty() ? Interval{std::nan(""), 0, 0, 0} : bootstrap_paired_difference(a, b, {});
}

RecallLossResult recall_loss_eval(const model::Model& m, const std::vector<std::vector<int32_t>>& docs,
                                  const RecallLossOptions& o, std::FILE* progress) {
  using Clock = std::chrono::steady_clock;
  if (o.probe_every <= o.prompt_tokens || o.prompt_tokens < 1 || o.probe_tokens < 1 || o.k < 1)
    throw std::invalid_argument("recall loss eval: probe_every must exceed prompt_tokens, and k, prompt and probe be >= 1");
  RecallLossResult r;
  r.variants.push_back("no recall");
  for (auto md : o.modes) r.variants.push_back(std::string("recall ") + inference::recall_mode_name(md));
  for (int64_t p = o.probe_every; p + o.probe_tokens <= o.length; p += o.probe_every) r.probes.push_back(p);
  if (r.probes.empty()) throw std::invalid_argument("recall loss eval: the length holds no probe");
  r.nll.assign(r.variants.size(), {});
  int64_t recalls = 0;
  const auto t_start = Clock::now();
  for (size_t d = 0; d < docs.size(); ++d) {
    const auto& doc = docs[d];
    if (static_cast<int64_t>(doc.size()) < o.length + o.probe_tokens + 1)
      throw std::invalid_argument("recall loss eval: document " + std::to_string(d) + " has " +
                                  std::to_string(doc.size()) + " tokens, fewer than the length and a probe");
    inference::Session s(m);
    memory::ExactStore store("");
    for (auto& v : r.nll) v.emplace_back();
    int64_t pos = 0;
    for (int64_t p : r.probes) {
      const int64_t prompt_at = p - o.prompt_tokens;
      const std::vector<int32_t> chunk(doc.begin() + pos, doc.begin() + prompt_at);
      auto t0 = Clock::now();
      s.feed(chunk);
      r.read_seconds += std::chrono::duration<double>(Clock::now() - t0).count();
      t0 = Clock::now();
      store.append(chunk);
      r.store_seconds += std::chrono::duration<double>(Clock::now() - t0).count();
      r.tokens_read += static_cast<int64_t>(chunk.size());
      pos = prompt_at;
      const std::vector<int32_t> prompt(doc.begin() + prompt_at, doc.begin() + p);
      const std::vector<int32_t> probe(doc.begin() + p, doc.begin() + p + o.probe_tokens);
      for (size_t v = 0; v < r.variants.size(); ++v) {
        inference::Session f = s.fork();
        if (v > 0) {
          inference::RecallOptions ro;
          ro.k = o.k;
          ro.mode = o.modes[v - 1];
          ro.query_tokens = o.prompt_tokens;
          r.recalled_tokens += static_cast<double>(inference::recall(f, store, prompt, ro).tokens);
          ++recalls;
        }
        r.nll[v].back().push_back(probe_nll(f, prompt, probe));
      }
    }
    r.store_bytes += store.bytes();
    ++r.documents;
    if (progress) {
      std::fprintf(progress, "\r  recall loss: %zu/%zu documents, %.0f s", d + 1, docs.size(),
                   std::chrono::duration<double>(Clock::now() - t_start).count());
      if (d + 1 == docs.size()) std::fprintf(progress, "\n");
      std::fflush(progress);
    }
  }
  if (recalls > 0) r.recalled_tokens /= static_cast<double>(recalls);
  return r;
}

void print_recall_loss(const RecallLossResult& r, std::FILE* out) {
  std::fprintf(out,
               "\nProbe NLL (nats per token) with and without recall, by the probe's position in the document "
               "(%lld documents; 95%% bootstrap intervals over documents)\n\n| variant |",
               static_cast<long long>(r.documents));
  for (int64_t p : r.probes) std::fprintf(out, " %s |", short_len(p).c_str());
  std::fprintf(out, " all probes | all probes: minus no recall |\n|---|");
  for (size_t j = 0; j < r.probes.size() + 2; ++j) std::fprintf(out, "---:|");
  std::fprintf(out, "\n");
  for (size_t v = 0; v < r.variants.size(); ++v) {
    std::fprintf(out, "| %s |", r.variants[v].c_str());
    for (size_t j = 0; j < r.probes.size(); ++j)
      std::fprintf(out, " %s |", format_interval(r.mean(v, static_cast<int64_t>(j)), "%.3f").c_str());
    std::fprintf(out, " %s |", format_interval(r.mean(v, -1), "%.3f").c_str());
    std::fprintf(out, " %s |\n", v == 0 ? "-" : format_interval(r.difference(v, -1), "%+.4f").c_str());
  }
  const double tps = r.read_seconds > 0 ? static_cast<double>(r.tokens_read) / r.read_seconds : 0;
  const double tps_store = r.read_seconds + r.store_seconds > 0
                               ? static_cast<double>(r.tokens_read) / (r.read_seconds + r.store_seconds)
                               : 0;
  std::fprintf(out,
               "\nReading with the store: %.0f tokens/s without it, %.0f with it (writing the store costs %.2f%% of "
               "the reading time); %.0f store bytes per 1K tokens; %.0f tokens recalled per probe on average.\n",
               tps, tps_store, r.read_seconds > 0 ? 100.0 * r.store_seconds / r.read_seconds : 0.0,
               r.tokens_read > 0 ? 1000.0 * static_cast<double>(r.store_bytes) / static_cast<double>(r.tokens_read) : 0.0,
               r.recalled_tokens);
}

}  // namespace ttt::eval
