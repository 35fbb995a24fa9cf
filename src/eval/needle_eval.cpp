#include "eval/needle_eval.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <stdexcept>

#include "inference/generation.h"
#include "inference/recall.h"
#include "memory/exact_store.h"
#include "inference/session.h"
#include "report/plot.h"

namespace ttt::eval {

namespace {

int32_t argmax(const std::vector<float>& logits) {
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}


template <class F>
double mean_of(const std::vector<NeedleRecord>& rs, F&& keep, double (*value)(const NeedleRecord&)) {
  double s = 0, n = 0;
  for (auto& r : rs)
    if (keep(r)) {
      s += value(r);
      n += 1;
    }
  return n > 0 ? s / n : std::nan("");
}

}  // namespace

double NeedleEvalResult::accuracy(size_t model, const data::NeedleTask* task, int64_t length) const {
  return mean_of(
      records,
      [&](const NeedleRecord& r) { return r.model == model && (!task || r.task == *task) && (length < 0 || r.length == length); },
      [](const NeedleRecord& r) { return r.correct ? 1.0 : 0.0; });
}

double NeedleEvalResult::answer_nll(size_t model, const data::NeedleTask* task, int64_t length) const {
  return mean_of(
      records,
      [&](const NeedleRecord& r) { return r.model == model && (!task || r.task == *task) && (length < 0 || r.length == length); },
      [](const NeedleRecord& r) { return r.answer_nll; });
}

double NeedleEvalResult::accuracy_by_distance(size_t model, int64_t lo, int64_t hi) const {
  return mean_of(
      records, [&](const NeedleRecord& r) { return r.model == model && r.distance >= lo && r.distance < hi; },
      [](const NeedleRecord& r) { return r.correct ? 1.0 : 0.0; });
}

namespace {
template <class Keep>
std::vector<double> values_of(const std::vector<NeedleRecord>& rs, Keep&& keep, bool nll) {
  std::vector<double> v;
  for (auto& r : rs)
    if (keep(r)) v.push_back(nll ? r.answer_nll : (r.correct ? 1.0 : 0.0));
  return v;
}
Interval interval_or_none(const std::vector<double>& v) { return v.empty() ? Interval{std::nan(""), 0, 0, 0} : bootstrap_mean(v); }
}  // namespace

Interval NeedleEvalResult::accuracy_interval(size_t model, const data::NeedleTask* task, int64_t length) const {
  return interval_or_none(values_of(
      records,
      [&](const NeedleRecord& r) { return r.model == model && (!task || r.task == *task) && (length < 0 || r.length == length); },
      false));
}

Interval NeedleEvalResult::answer_nll_interval(size_t model, const data::NeedleTask* task, int64_t length) const {
  return interval_or_none(values_of(
      records,
      [&](const NeedleRecord& r) { return r.model == model && (!task || r.task == *task) && (length < 0 || r.length == length); },
      true));
}

Interval NeedleEvalResult::distance_interval(size_t model, int64_t lo, int64_t hi, int64_t length, bool nll) const {
  return interval_or_none(values_of(
      records,
      [&](const NeedleRecord& r) {
        return r.model == model && r.distance >= lo && r.distance < hi && (length < 0 || r.length == length);
      },
      nll));
}

Interval NeedleEvalResult::hit_rate_interval(size_t model, int64_t length) const {
  std::vector<double> v;
  for (auto& r : records)
    if (r.model == model && r.recalled && r.beyond_window && (length < 0 || r.length == length))
      v.push_back(r.hit ? 1.0 : 0.0);
  return interval_or_none(v);
}

Interval NeedleEvalResult::distance_difference(size_t a, size_t b, int64_t lo, int64_t hi) const {
  // Every model answers the cases in the same order, so the k-th kept record of a and of b are
  // the same prompt (the distance depends on the prompt only).
  const auto va = values_of(records, [&](const NeedleRecord& r) { return r.model == a && r.distance >= lo && r.distance < hi; }, false);
  const auto vb = values_of(records, [&](const NeedleRecord& r) { return r.model == b && r.distance >= lo && r.distance < hi; }, false);
  if (va.empty() || va.size() != vb.size()) return Interval{std::nan(""), 0, 0, 0};
  return bootstrap_paired_difference(va, vb, {});
}

std::vector<int32_t> needle_haystack(const std::vector<std::vector<int32_t>>& docs, int32_t bos) {
  std::vector<int32_t> out;
  for (auto& d : docs)
    for (int32_t t : d)
      if (t != bos) out.push_back(t);
  return out;
}

namespace {

// What every model answering one case shares: the context before the question, read once per
// (model, TTT on/off) and, for the models that recall, written to an exact store.
struct ReadContext {
  inference::Session s;
  std::unique_ptr<memory::ExactStore> store;
  double read_seconds = 0, store_seconds = 0;
  int64_t store_bytes = 0;
};

ReadContext read_context(const model::Model& m, bool ttt, const std::vector<int32_t>& body, bool with_store) {
  using Clock = std::chrono::steady_clock;
  e2e::TTTOptions opt;
  opt.ttt = ttt;
  ReadContext c{inference::Session(m, opt), nullptr};
  auto t0 = Clock::now();
  c.s.feed(body);
  c.read_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  if (with_store) {
    t0 = Clock::now();
    c.store = std::make_unique<memory::ExactStore>("");
    c.store->append(body);
    c.store_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    c.store_bytes = c.store->bytes();
  }
  return c;
}

// Answers one case from a session that has read the context before the question (s is used up).
NeedleRecord answer_case(inference::Session& s, const ReadContext& ctx, const data::Tokenizer& tok,
                         const data::NeedleInstance& inst, const data::NeedlePrompt& prompt, int64_t extra_tokens,
                         int recall, const std::string& recall_mode) {
  NeedleRecord rec;
  rec.length = static_cast<int64_t>(prompt.tokens.size());
  rec.distance = prompt.distance;
  rec.value = inst.value;
  rec.read_seconds = ctx.read_seconds;
  const auto q = prompt.tokens.end() - static_cast<std::ptrdiff_t>(inst.query.size());
  const std::vector<int32_t> query(q, prompt.tokens.end());
  const int64_t value_pos = rec.length - prompt.distance;  // where the needle's value ids begin
  rec.beyond_window = value_pos + static_cast<int64_t>(inst.answer.size()) <= inference::recall_horizon(s);
  if (recall > 0) {
    // The question recalls from the store of the context before it.
    rec.recalled = true;
    rec.store_seconds = ctx.store_seconds;
    rec.store_bytes = ctx.store_bytes;
    inference::RecallOptions ro;
    ro.k = recall;
    ro.mode = inference::parse_recall_mode(recall_mode);
    const auto rr = inference::recall(s, *ctx.store, query, ro);
    rec.recall_tokens = rr.tokens;
    rec.recall_seconds = rr.seconds;
    for (const auto& sp : rr.spans)
      rec.hit |= sp.start <= value_pos && value_pos + static_cast<int64_t>(inst.answer.size()) <=
                                              sp.start + static_cast<int64_t>(sp.tokens.size());
  }
  s.feed(query);
  // Teacher-forced NLL of the answer ids, on a fork so that the greedy answer starts from the prompt.
  {
    auto f = s.fork();
    std::vector<float> logits = f.last_logits();
    double nll = 0;
    for (size_t i = 0; i < inst.answer.size(); ++i) {
      nll += nll_of(logits, inst.answer[i]);
      if (i + 1 < inst.answer.size()) logits = f.step(inst.answer[i]);
    }
    rec.answer_nll = nll / static_cast<double>(inst.answer.size());
  }
  // The greedy answer, continuing from the prompt's last logits. The pick rule is this file's
  // argmax (first maximum) so that scores stay those of earlier runs whatever the logits hold.
  inference::GenerateOptions go;
  go.max_new_tokens = static_cast<int64_t>(inst.answer.size()) + extra_tokens;
  go.pick = [](const std::vector<float>& logits, const std::vector<int32_t>&) { return argmax(logits); };
  const std::vector<int32_t> gen = inference::generate(s, {}, go).tokens;
  rec.generated = tok.decode(gen);
  rec.correct = rec.generated.find(inst.value) != std::string::npos;
  return rec;
}

std::vector<int32_t> context_of(const data::NeedleInstance& inst, const data::NeedlePrompt& prompt) {
  return std::vector<int32_t>(prompt.tokens.begin(), prompt.tokens.end() - static_cast<std::ptrdiff_t>(inst.query.size()));
}

}  // namespace

NeedleRecord score_needle_case(const model::Model& m, const data::Tokenizer& tok, const data::NeedleInstance& inst,
                               const data::NeedlePrompt& prompt, int64_t extra_tokens, bool ttt, int recall,
                               const std::string& recall_mode) {
  ReadContext ctx = read_context(m, ttt, context_of(inst, prompt), recall > 0);
  return answer_case(ctx.s, ctx, tok, inst, prompt, extra_tokens, recall, recall_mode);
}

NeedleEvalResult needle_eval(const std::vector<NamedModel>& models, const data::Tokenizer& tok,
                             const std::vector<int32_t>& haystack, const NeedleEvalOptions& o, std::FILE* progress) {
  if (o.tasks.empty()) throw std::invalid_argument("needle eval: no tasks");
  if (o.lengths.empty()) throw std::invalid_argument("needle eval: no context lengths");
  if (o.depths < 1 || o.trials < 1) throw std::invalid_argument("needle eval: depths and trials must be at least 1");
  for (auto& nm : models)
    if (nm.model->config().vocab_size != tok.vocab_size())
      throw std::invalid_argument("model " + nm.name + " has a vocabulary of " +
                                  std::to_string(nm.model->config().vocab_size) + " but the tokenizer has " +
                                  std::to_string(tok.vocab_size()) + " pieces");
  NeedleEvalResult r;
  r.tasks = o.tasks;
  r.lengths = o.lengths;
  std::sort(r.lengths.begin(), r.lengths.end());
  for (auto& nm : models) {
    r.models.push_back(nm.name);
    r.models_ttt.push_back(nm.ttt);
  }
  const data::NeedleTaskMaker maker(tok);
  const int32_t bos = static_cast<int32_t>(tok.bos_id());

  // All cases first (the same for every model), then each model answers them.
  struct Case {
    data::NeedleTask task;
    double depth;
    data::NeedleInstance inst;
    data::NeedlePrompt prompt;
  };
  std::vector<Case> cases;
  Rng rng(o.seed);
  for (auto task : r.tasks)
    for (int64_t len : r.lengths)
      for (int d = 0; d < o.depths; ++d)
        for (int t = 0; t < o.trials; ++t) {
          Case c{task, o.depths == 1 ? 0.5 : static_cast<double>(d) / (o.depths - 1), maker.make(task, rng), {}};
          std::vector<int32_t> hay;
          if (task == data::NeedleTask::kPassKey) {
            hay = maker.filler(len);
          } else {
            if (static_cast<int64_t>(haystack.size()) < len)
              throw std::invalid_argument("the held-out haystack has " + std::to_string(haystack.size()) +
                                          " tokens, fewer than the context length " + std::to_string(len));
            const int64_t off = static_cast<int64_t>(rng.next_u64() % static_cast<uint64_t>(haystack.size() - len + 1));
            hay.assign(haystack.begin() + off, haystack.begin() + off + len);
          }
          c.prompt = data::build_needle_prompt(c.inst, hay, len, c.depth, bos);
          cases.push_back(std::move(c));
        }

  // Models that are the same weights read the same way (with or without recall) share the reading
  // of each case's context: it is read once, and each of them answers from a fork of it.
  std::vector<std::vector<size_t>> groups;
  for (size_t mi = 0; mi < models.size(); ++mi) {
    auto g = std::find_if(groups.begin(), groups.end(), [&](const std::vector<size_t>& x) {
      return models[x[0]].model == models[mi].model && models[x[0]].ttt == models[mi].ttt;
    });
    if (g == groups.end()) groups.push_back({mi});
    else g->push_back(mi);
  }
  std::vector<std::vector<NeedleRecord>> per_model(models.size());
  std::vector<int> correct(models.size(), 0);
  const auto t0 = std::chrono::steady_clock::now();
  for (size_t ci = 0; ci < cases.size(); ++ci) {
    const auto& c = cases[ci];
    for (const auto& g : groups) {
      bool store = false;
      for (size_t mi : g) store |= models[mi].recall > 0;
      ReadContext ctx = read_context(*models[g[0]].model, models[g[0]].ttt, context_of(c.inst, c.prompt), store);
      for (size_t j = 0; j < g.size(); ++j) {
        const size_t mi = g[j];
        inference::Session s = j + 1 == g.size() ? std::move(ctx.s) : ctx.s.fork();
        NeedleRecord rec = answer_case(s, ctx, tok, c.inst, c.prompt, o.extra_tokens, models[mi].recall, models[mi].recall_mode);
        rec.model = mi;
        rec.task = c.task;
        rec.depth = c.depth;
        correct[mi] += rec.correct;
        per_model[mi].push_back(std::move(rec));
      }
    }
    if (progress) {
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::fprintf(progress, "\r  needle: %zu/%zu cases (%s, %s), correct so far:", ci + 1, cases.size(),
                   data::needle_task_name(c.task), short_len(static_cast<int64_t>(c.prompt.tokens.size())).c_str());
      for (size_t mi = 0; mi < models.size(); ++mi) std::fprintf(progress, " %d", correct[mi]);
      std::fprintf(progress, ", %.0f s%s", secs, ci + 1 == cases.size() ? "\n" : "");
      std::fflush(progress);
    }
  }
  for (auto& v : per_model)
    for (auto& rec : v) r.records.push_back(std::move(rec));
  return r;
}

void print_needle_eval(const NeedleEvalResult& r, int64_t window, std::FILE* out) {
  auto cell = [&](const Interval& iv, const char* f) {
    std::fprintf(out, " %s |", iv.units == 0 ? "-" : format_interval(iv, f).c_str());
  };
  auto length_header = [&]() {
    std::fprintf(out, "\n| model |");
    for (int64_t len : r.lengths) std::fprintf(out, " %s |", short_len(len).c_str());
    std::fprintf(out, "\n|---|");
    for (size_t j = 0; j < r.lengths.size(); ++j) std::fprintf(out, "---:|");
    std::fprintf(out, "\n");
  };
  auto by_length = [&](auto&& interval, const char* f) {
    length_header();
    for (size_t i = 0; i < r.models.size(); ++i) {
      std::fprintf(out, "| %s |", r.models[i].c_str());
      for (int64_t len : r.lengths) cell(interval(i, len), f);
      std::fprintf(out, "\n");
    }
  };
  int64_t per_cell = 0;
  for (auto& rec : r.records)
    per_cell += rec.model == 0 && rec.task == r.tasks[0] && rec.length == r.lengths[0];
  std::string names;
  for (auto t : r.tasks) names += std::string(names.empty() ? "" : ", ") + data::needle_task_name(t);
  std::fprintf(out, "\nNeedle accuracy vs context length, all tasks (%s; %lld cases per task and length: needle depths "
               "spread over the context; greedy answer must contain the value; 95%% bootstrap intervals over cases)\n",
               names.c_str(), static_cast<long long>(per_cell));
  by_length([&](size_t i, int64_t len) { return r.accuracy_interval(i, nullptr, len); }, "%.2f");
  if (r.tasks.size() > 1)
    for (auto t : r.tasks) {
      std::fprintf(out, "\nNeedle accuracy, %s\n", data::needle_task_name(t));
      by_length([&](size_t i, int64_t len) { return r.accuracy_interval(i, &t, len); }, "%.2f");
    }
  std::fprintf(out, "\nTeacher-forced NLL of the answer (nats per answer token), all tasks\n");
  by_length([&](size_t i, int64_t len) { return r.answer_nll_interval(i, nullptr, len); }, "%.3f");
  if (window > 0) {
    std::fprintf(out, "\nNeedle accuracy by distance from the needle's value to the question (window %lld), all tasks and lengths\n",
                 static_cast<long long>(window));
    const std::pair<int64_t, int64_t> bands[] = {{0, window}, {window, 4 * window}, {4 * window, INT64_MAX}};
    const std::string labels[] = {"< " + std::to_string(window),
                                  std::to_string(window) + " to " + std::to_string(4 * window),
                                  ">= " + std::to_string(4 * window)};
    std::fprintf(out, "\n| model |");
    for (int b = 0; b < 3; ++b) {
      int64_t n = 0;
      for (auto& rec : r.records) n += rec.model == 0 && rec.distance >= bands[b].first && rec.distance < bands[b].second;
      std::fprintf(out, " %s (%lld cases) |", labels[b].c_str(), static_cast<long long>(n));
    }
    std::fprintf(out, "\n|---|---:|---:|---:|\n");
    for (size_t i = 0; i < r.models.size(); ++i) {
      std::fprintf(out, "| %s |", r.models[i].c_str());
      for (int b = 0; b < 3; ++b) cell(r.distance_interval(i, bands[b].first, bands[b].second), "%.2f");
      std::fprintf(out, "\n");
    }
  }
  // Per length, inside vs beyond the window: where distance stops mattering (issue 13's goal).
  for (int table = 0; window > 0 && table < 2; ++table) {
    const bool nll = table == 1;
    std::fprintf(out, "\n%s inside (distance < %lld) and beyond the window, per context length, all tasks\n",
                 nll ? "Answer NLL (nats per answer token)" : "Needle accuracy", static_cast<long long>(window));
    std::fprintf(out, "\n| model |");
    for (int64_t len : r.lengths) std::fprintf(out, " %s inside | %s beyond |", short_len(len).c_str(), short_len(len).c_str());
    std::fprintf(out, "\n|---|");
    for (size_t j = 0; j < r.lengths.size(); ++j) std::fprintf(out, "---:|---:|");
    std::fprintf(out, "\n| cases |");
    for (int64_t len : r.lengths) {
      int64_t in = 0, out_n = 0;
      for (auto& rec : r.records)
        if (rec.model == 0 && rec.length == len) (rec.distance < window ? in : out_n) += 1;
      std::fprintf(out, " %lld | %lld |", static_cast<long long>(in), static_cast<long long>(out_n));
    }
    std::fprintf(out, "\n");
    for (size_t i = 0; i < r.models.size(); ++i) {
      std::fprintf(out, "| %s |", r.models[i].c_str());
      for (int64_t len : r.lengths) {
        cell(r.distance_interval(i, 0, window, len, nll), nll ? "%.3f" : "%.2f");
        cell(r.distance_interval(i, window, INT64_MAX, len, nll), nll ? "%.3f" : "%.2f");
      }
      std::fprintf(out, "\n");
    }
  }
  // Recall: did the store give the needle back, and what did it cost.
  bool any = false;
  for (auto& rec : r.records) any |= rec.recalled;
  if (!any) return;
  std::fprintf(out,
               "\nRecall: retrieval hit rate (the needle's value inside a recalled stretch), cases whose needle lies "
               "beyond the window, all tasks\n");
  length_header();
  for (size_t i = 0; i < r.models.size(); ++i) {
    bool rec_model = false;
    for (auto& rec : r.records) rec_model |= rec.model == i && rec.recalled;
    if (!rec_model) continue;
    std::fprintf(out, "| %s |", r.models[i].c_str());
    for (int64_t len : r.lengths) cell(r.hit_rate_interval(i, len), "%.2f");
    std::fprintf(out, "\n");
  }
  std::fprintf(out,
               "\nRecall cost (means over cases): time per query (retrieval and reading the recalled tokens), "
               "recalled tokens, store bytes per 1K tokens read, time to write the store as a share of the time "
               "to read the same tokens\n\n| model | s per query | recalled tokens | store bytes / 1K tokens | "
               "store write / read |\n|---|---:|---:|---:|---:|\n");
  for (size_t i = 0; i < r.models.size(); ++i) {
    double q = 0, toks = 0, bytes_per_k = 0, write = 0, read = 0;
    int64_t n = 0;
    for (auto& rec : r.records) {
      if (rec.model != i || !rec.recalled) continue;
      ++n;
      q += rec.recall_seconds;
      toks += static_cast<double>(rec.recall_tokens);
      bytes_per_k += static_cast<double>(rec.store_bytes) * 1000.0 / static_cast<double>(std::max<int64_t>(rec.length, 1));
      write += rec.store_seconds;
      read += rec.read_seconds;
    }
    if (n == 0) continue;
    std::fprintf(out, "| %s | %.4f | %.0f | %.0f | %.1f%% |\n", r.models[i].c_str(), q / static_cast<double>(n),
                 toks / static_cast<double>(n), bytes_per_k / static_cast<double>(n), read > 0 ? 100.0 * write / read : 0.0);
  }
}

void plot_needle_eval(const NeedleEvalResult& r, const std::string& path) {
  std::vector<report::Series> s;
  for (size_t i = 0; i < r.models.size(); ++i) {
    report::Series t{r.models[i], {}, {}};
    t.markers = true;
    t.dashed = i < r.models_ttt.size() && !r.models_ttt[i];  // ablations dashed (and visible over a line they share)
    for (int64_t len : r.lengths) {
      t.x.push_back(static_cast<double>(len));
      t.y.push_back(r.accuracy(i, nullptr, len));
    }
    s.push_back(t);
  }
  report::ChartOptions c;
  std::string names;
  for (auto t : r.tasks) names += std::string(names.empty() ? "" : ", ") + data::needle_task_name(t);
  c.title = "Needle-in-a-haystack accuracy (" + names + ")";
  c.x_label = "context length (tokens)";
  c.y_label = "accuracy";
  c.log_x = true;
  c.y_min = 0;
  c.y_max = 1;
  report::write_line_chart(path, s, c);
}

}  // namespace ttt::eval
