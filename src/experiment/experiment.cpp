#include "experiment/experiment.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <algorithm>
#include <functional>
#include <map>
#include <optional>
#include <nlohmann/json.hpp>
#include <sstream>

#include <unistd.h>

#include "backend/cpu/blas.h"
#include "backend/thread_pool.h"
#include "bench/context_bench.h"
#include "data/corpus.h"
#include "data/dataset.h"
#include "eval/needle_eval.h"
#include "eval/recall_eval.h"
#include "eval/report_tables.h"
#include "io/atomic_file.h"
#include "io/file_read.h"
#include "io/json_read.h"
#include "model/families/family.h"
#include "report/plot.h"
#include "train/trainer.h"

namespace ttt::experiment {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

using Clock = std::chrono::steady_clock;
using eval::short_len;


void stage(const char* what) {
  std::fprintf(stderr, "\n== %s\n", what);
  std::fflush(stderr);
}

struct Variant {
  std::string name;
  model::ModelConfig cfg;
};

// The seven models of the paper's comparison on one shape: d 128, 4 layers, 2 heads of 64, f 384;
// window 256. TTT-E2E: SWA with a prime MLP in the last block (a quarter of the layers, as in the
// paper), chunk b 128. The hybrids keep one SWA block in four (the last); the SWA/full hybrid one
// full-attention block in four. TTT-KVB's fast weights sit beside window attention in every
// block, updated every 256 tokens (the window), so they hold what the window has let go.
std::vector<Variant> variants(int64_t vocab, int64_t bos) {
  model::ModelConfig base;
  base.vocab_size = vocab;
  base.hidden_size = 128;
  base.num_hidden_layers = 4;
  base.num_attention_heads = 2;
  base.intermediate_size = 384;
  base.sliding_window_size = 256;
  base.mini_batch_size = 128;
  base.rope_theta = 10000;
  base.bos_token_id = bos;
  std::vector<Variant> v;
  auto add = [&](const char* name, auto&& edit) {
    Variant x{name, base};
    edit(x.cfg);
    v.push_back(x);
  };
  add("full-attention", [](model::ModelConfig& c) { c.seq_modeling_block = "self_attention"; });
  add("swa", [](model::ModelConfig& c) { c.seq_modeling_block = "SWA"; });
  add("hybrid", [](model::ModelConfig& c) {
    c.seq_modeling_block = "SWA";
    c.full_attention_every = 4;
  });
  add("mamba2", [](model::ModelConfig& c) {
    c.seq_modeling_block = "mamba2";
    c.swa_every = 4;
    c.chunk_size = 128;
  });
  add("gated-deltanet", [](model::ModelConfig& c) {
    c.seq_modeling_block = "gated_deltanet";
    c.swa_every = 4;
    c.chunk_size = 64;
  });
  add("ttt-kvb", [](model::ModelConfig& c) {
    c.seq_modeling_block = "ttt_kvb";
    c.ttt_kvb.num_lact_heads = 2;
    c.ttt_kvb.lact_chunk_size = 256;
  });
  add("ttt-e2e", [](model::ModelConfig& c) {
    c.seq_modeling_block = "SWA";
    c.prime = true;
    c.suffix_len = 1;
  });
  return v;
}

std::string describe_variant(const model::ModelConfig& c) { return model::describe_model(c); }

int64_t param_count(const model::Model& m) {
  int64_t n = 0;
  for (auto& [name, t] : m.named_parameters()) n += t.numel();
  return n;
}

// Steps finished by the run in dir (0 if none).
int64_t finished_steps(const fs::path& dir) {
  try {
    const json j = io::parse_json(io::read_regular_file((dir / "checkpoint" / "trainer.json").string(), "training state",
                                                       uint64_t{1} << 24),
                                  "trainer.json");
    const auto it = j.find("step");
    return it != j.end() && it->is_number_integer() ? std::max<int64_t>(0, it->get<int64_t>()) : 0;
  } catch (...) {
    return 0;
  }
}

struct TrainRecord {
  double seconds = 0;
  int64_t tokens = 0;
};

std::vector<std::pair<double, double>> read_losses(const fs::path& metrics, const char* key) {
  std::vector<std::pair<double, double>> out;
  std::string text;
  try {
    text = io::read_regular_file(metrics.string(), "metrics file", uint64_t{1} << 30);
  } catch (...) {
    return out;
  }
  std::istringstream f(text);
  std::string line;
  while (std::getline(f, line)) {
    try {
      const json j = io::parse_json(line, "metrics line");
      if (j.contains(key)) out.emplace_back(j.at("step").get<double>(), j.at(key).get<double>());
    } catch (...) {
    }
  }
  return out;
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}



// The held-out sets the report's intervals rest on (issue 10): at least 50 documents and 100K
// tokens in `val`, 20 documents of at least 32K tokens in `val-long`.
constexpr int64_t kMinValDocs = 50, kMinValTokens = 100000, kMinLongDocs = 20, kLongDocTokens = 32768;

std::string held_out_shortfall(const data::Dataset& ds) {
  const auto& v = ds.split("val");
  int64_t long_docs = 0;
  for (auto& d : ds.split("val-long").documents) long_docs += d.length >= kLongDocTokens + 1;
  std::string s;
  if (static_cast<int64_t>(v.documents.size()) < kMinValDocs || v.tokens < kMinValTokens)
    s += "val has " + std::to_string(v.documents.size()) + " documents and " + std::to_string(v.tokens) +
         " tokens (wanted at least " + std::to_string(kMinValDocs) + " and " + std::to_string(kMinValTokens) + ")";
  if (long_docs < kMinLongDocs)
    s += std::string(s.empty() ? "" : "; ") + "val-long has " + std::to_string(long_docs) + " documents of more than " +
         std::to_string(kLongDocTokens) + " tokens (wanted at least " + std::to_string(kMinLongDocs) + ")";
  return s;
}

// "a - b = d [lo, hi] nats: a lower" or "no difference measured (...)".
std::string finding(const std::string& a, const std::string& b, const eval::Interval& d, const char* unit,
                    const char* lower_word = "lower", const char* higher_word = "higher", const char* f = "%+.4f") {
  std::string s = a + " − " + b + " = " + eval::format_interval(d, f) + (unit[0] ? std::string(" ") + unit : std::string());
  if (!d.excludes_zero()) return s + ": no difference measured";
  return s + ": " + a + " " + (d.value < 0 ? lower_word : higher_word);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// The stages. Each reads what earlier stages left in the Run, adds its results, and writes its
// own section of REPORT.md (and its findings) from those results.

namespace {

constexpr int kRecallK = 2;  // stretches recalled: 2 x (64 + 64) tokens at most, within the window of 256
constexpr int64_t kNeedleSeq = 512, kNeedleBatch = 8;
const char* const kTTT = "ttt-e2e";  // the model every comparison is against
const char* const kSWA = "swa";      // its window is the window of every SWA model
const char* const kFull = "full-attention";

// Everything the stages share: the options, then each stage's results.
struct Run {
  ExperimentOptions o;
  fs::path out;
  Clock::time_point start;
  // corpus
  std::optional<data::Dataset> ds;
  std::string shortfall;
  // training
  std::vector<Variant> variants;
  std::map<std::string, TrainRecord> trained;
  std::vector<model::Model> models;        // in the order of `variants`
  std::vector<eval::NamedModel> named;     // the variants, then TTT-E2E with its inner steps off
  std::string ttt_off;                     // that last row's name
  // evaluations
  eval::SplitLossResult held;
  eval::LongEvalResult le;
  std::vector<int64_t> gaps;
  eval::SpanProbeResult sp;
  std::vector<model::Model> tuned;         // needle-tuned, in the order of `variants`
  std::vector<std::vector<int32_t>> long_docs;
  eval::NeedleEvalResult needle, layered;
  eval::RecallLossResult recall_loss;
  std::vector<bench::NamedModel> bench_models;
  bench::ContextReport lat;

  size_t index(const std::string& name) const {
    for (size_t i = 0; i < variants.size(); ++i)
      if (variants[i].name == name) return i;
    throw std::logic_error("experiment: no model named " + name);
  }
  const model::ModelConfig& config(const std::string& name) const { return variants[index(name)].cfg; }
  int64_t window() const { return config(kSWA).sliding_window_size; }
  const data::Dataset& data() const { return *ds; }
};

struct Stage {
  const char* name;
  // Runs the stage (skipping what an earlier run finished, by the stage's resume rule).
  std::function<void(Run&)> run;
  // Its section of REPORT.md and its findings; either may be empty.
  std::function<void(const Run&, std::ostream&)> section, findings;
};

std::string capture(const std::function<void(std::FILE*)>& print) {
  char* buf = nullptr;
  size_t len = 0;
  std::FILE* f = open_memstream(&buf, &len);
  print(f);
  std::fclose(f);
  std::string s(buf, len);
  std::free(buf);
  return s;
}

std::string resuming_note(int64_t done) {
  return done > 0 ? " (resuming at step " + std::to_string(done) + ")" : "";
}

// 1. Corpus. Inputs: --data. Output: the opened dataset. Resume: the default corpus is
// (re)built only when missing or when an older recipe left held-out sets too small for the
// intervals; any other directory is used as it is.
void corpus_run(Run& x) {
  const ExperimentOptions& o = x.o;
  const bool have = fs::exists(fs::path(o.data_dir) / "index.json");
  std::string shortfall;
  if (have) shortfall = held_out_shortfall(data::Dataset::open(o.data_dir));
  const bool default_dir = o.data_dir == ExperimentOptions{}.data_dir;
  if (!have || (!shortfall.empty() && default_dir)) {
    if (have) std::fprintf(stderr, "rebuilding %s: %s\n", o.data_dir.c_str(), shortfall.c_str());
    data::LinuxRecipeOptions lr;
    lr.out = o.data_dir;
    lr.cache_dir = fs::path(o.data_dir).parent_path().empty() ? "." : fs::path(o.data_dir).parent_path().string();
    lr.corpus.max_tokens = o.max_corpus_tokens;
    std::fprintf(stderr, "building %s (training split capped at %lld tokens)...\n", o.data_dir.c_str(),
                 static_cast<long long>(o.max_corpus_tokens));
    std::fprintf(stderr, "%s\n", data::format_summary(data::build_linux_corpus(lr)).c_str());
  }
  x.ds.emplace(data::Dataset::open(o.data_dir));
  std::fprintf(stderr, "%s\n", x.data().describe().c_str());
  x.shortfall = held_out_shortfall(x.data());
  if (!x.shortfall.empty())
    std::fprintf(stderr, "warning: %s; the report's intervals will be wide\n", x.shortfall.c_str());
}

void corpus_section(const Run& x, std::ostream& r) {
  r << "## Setup\n\n- Corpus: " << x.data().describe() << "\n";
  if (!x.shortfall.empty()) r << "- **Held-out sets smaller than intended:** " << x.shortfall << ".\n";
}

// 2. Training: the same steps, batch and sequences (same sampler seed) for every model. Output:
// models/NAME (checkpoint, metrics, loss plot) and training_loss.png. Resume: a model whose
// checkpoint has all the steps is skipped; one with fewer continues from its checkpoint.
void train_one(Run& x, const Variant& v) {
  const ExperimentOptions& o = x.o;
  const fs::path dir = x.out / "models" / v.name;
  train::TrainOptions to;
  to.steps = o.steps;
  to.batch = o.batch;
  to.seq_len = o.seq_len;
  to.lr = 3e-3;
  to.val_every = std::max<int64_t>(10, o.steps / 10);
  to.val_seqs = 8;
  to.ckpt_every = std::max<int64_t>(10, o.steps / 10);
  to.out_dir = dir.string();
  to.seed = o.seed;
  const int64_t done = finished_steps(dir);
  TrainRecord r;
  const auto t0 = Clock::now();
  if (done >= o.steps) {
    std::fprintf(stderr, "%s: already trained (%lld steps)\n", v.name.c_str(), static_cast<long long>(done));
  } else {
    to.resume = true;  // continues whatever checkpoint train finds (also one a kill left as checkpoint.old)
    std::fprintf(stderr, "%s (%s): %s, %lld steps of %lld x %lld tokens%s\n", v.name.c_str(), describe_variant(v.cfg).c_str(),
                 v.cfg.prime ? "meta-learning" : "pretraining", static_cast<long long>(o.steps),
                 static_cast<long long>(o.batch), static_cast<long long>(o.seq_len), resuming_note(done).c_str());
    auto m = model::Model::init(v.cfg, o.seed);
    auto src = train::corpus_source(o.data_dir, o.seed);
    train::train(m, *src, to, stderr);
  }
  r.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  r.tokens = o.steps * o.batch * o.seq_len;
  x.trained[v.name] = r;
}

void training_run(Run& x) {
  x.variants = variants(x.data().vocab_size(), x.data().bos_id());
  for (auto& v : x.variants) train_one(x, v);
  for (auto& v : x.variants) x.models.push_back(model::Model::load((x.out / "models" / v.name).string()));
  for (size_t i = 0; i < x.variants.size(); ++i) x.named.push_back({x.variants[i].name, &x.models[i]});
  // Ablation: the same TTT-E2E weights read with the inner steps off. What it loses beyond the
  // window is what the fast weights remembered.
  x.ttt_off = std::string(kTTT) + " (TTT off)";
  x.named.push_back({x.ttt_off, &x.models[x.index(kTTT)], false});

  std::vector<report::Series> s;
  for (auto& v : x.variants) {
    report::Series t{v.name, {}, {}};
    for (auto& [step, loss] : read_losses(x.out / "models" / v.name / "metrics.jsonl", "val_loss")) {
      t.x.push_back(step);
      t.y.push_back(loss);
    }
    t.markers = true;
    s.push_back(t);
  }
  report::ChartOptions c;
  c.title = "Validation loss during training (8 sequences)";
  c.x_label = "step";
  c.y_label = "loss (nats/token)";
  report::write_line_chart((x.out / "training_loss.png").string(), s, c);
}

void training_section(const Run& x, std::ostream& r) {
  const auto& c = x.variants.front().cfg;
  r << "- Shape shared by all models: d " << c.hidden_size << ", " << c.num_hidden_layers << " layers, "
    << c.num_attention_heads << " heads, f " << c.intermediate_size << ", vocab " << c.vocab_size << ", window "
    << x.window() << " wherever there is SWA; only the sequence mixer differs (SPEC sections 2 and 9).\n";
  r << "- Training: " << x.o.steps << " steps of " << x.o.batch << " x " << x.o.seq_len
    << " tokens for each model, the same sequences (same sampler seed), AdamW peak lr 3e-3 with warmup and cosine decay; "
       "TTT-E2E is meta-learned (inner learning rate warming up from 0.1 to 1 over the first 10% of steps).\n";
}

// 3. Held-out loss on whole short documents. Output: the loss of every row. Recomputed each run.
void held_out_run(Run& x) {
  x.held = eval::split_loss_eval(x.named, x.data(), "val", 400, x.o.quick ? 150000 : 400000, kLongDocTokens, stderr);
}

void held_out_section(const Run& x, std::ostream& r) {
  r << "- Held-out loss: " << x.held.documents << " whole documents of the `val` split (" << x.held.tokens
    << " tokens, each read from its start with test-time training where the model has it).\n\n";
  r << "| model | sequence mixer | parameters | training tokens | train minutes (this run) | held-out loss |\n"
       "|---|---|---:|---:|---:|---:|\n";
  for (size_t i = 0; i < x.named.size(); ++i) {
    const bool off = x.named[i].name == x.ttt_off;
    const auto& cfg = x.named[i].model->config();
    const TrainRecord* t = off ? nullptr : &x.trained.at(x.named[i].name);
    r << "| " << x.named[i].name << " | "
      << (off ? "the TTT-E2E weights, inner steps off (phi_0 throughout)" : describe_variant(cfg)) << " | "
      << param_count(*x.named[i].model) << " | " << (off ? std::string("-") : std::to_string(t->tokens)) << " | "
      << (off ? std::string("-") : fmt("%.1f", t->seconds / 60)) << " | " << eval::format_interval(x.held.loss[i])
      << " |\n";
  }
  r << "\n![validation loss during training](training_loss.png)\n\n";
}

void held_out_findings(const Run& x, std::ostream& r) {
  const size_t iT = x.index(kTTT);
  r << "### Held-out loss (whole `val` documents)\n\n";
  for (size_t i = 0; i < x.named.size(); ++i)
    if (i != iT) r << "- " << finding(kTTT, x.named[i].name, x.held.difference(iT, i), "nats") << ".\n";
}

// 4. Loss vs context length on held-out long documents. Output: the tables and two plots.
void long_context_run(Run& x) {
  int64_t longest = 0;
  for (auto& d : x.data().split("val-long").documents) longest = std::max(longest, d.length);
  std::vector<int64_t> lengths;
  const int64_t cap = x.o.quick ? 8192 : 32768;
  for (int64_t l = 512; l <= cap && l + 1 <= longest; l *= 2) lengths.push_back(l);
  if (lengths.empty()) throw std::runtime_error("the corpus has no long validation document to evaluate on");
  x.le = eval::long_context_eval(x.named, x.data(), lengths, x.o.quick ? 20 : 24, stderr);
  eval::plot_long_eval(x.le, x.out.string(), x.window());
}

void long_context_section(const Run& x, std::ostream& r) {
  r << "## Loss vs context length\n" << capture([&](std::FILE* f) { eval::print_long_eval(x.le, f); });
  r << "\n![loss vs context](loss_vs_context.png)\n\n![loss by position](loss_vs_position.png)\n\n";
}

// Rows of the ordering table: the models by loss deep in the longest context.
void ordering_table(const Run& x, std::ostream& r, size_t last) {
  const auto& le = x.le;
  std::vector<size_t> order(x.named.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return le.loss_late[a][last] < le.loss_late[b][last]; });
  r << "| rank | model | loss [95% interval] | against the next |\n|---:|---|---:|---|\n";
  for (size_t k = 0; k < order.size(); ++k) {
    r << "| " << k + 1 << " | " << x.named[order[k]].name << " | " << eval::format_interval(le.ci_late[order[k]][last]) << " | ";
    if (k + 1 < order.size()) {
      const auto d = le.late_difference(order[k], last, order[k + 1], last);
      r << (d.excludes_zero() ? "lower by " + fmt("%.4f", -d.value) + " [" + fmt("%.4f", -d.hi) + ", " + fmt("%.4f", -d.lo) + "]"
                              : std::string("no difference measured"));
    }
    r << " |\n";
  }
}

void long_context_findings(const Run& x, std::ostream& r) {
  const auto& le = x.le;
  const size_t iT = x.index(kTTT), last = le.lengths.size() - 1;
  const std::string L = short_len(le.lengths[last]), Lh = short_len(le.lengths[last] / 2);
  r << "\n### Deep in a " << L << " context (positions " << Lh << " to " << L << ", window " << x.window() << ")\n\n";
  for (size_t i = 0; i < x.named.size(); ++i)
    if (i != iT) r << "- " << finding(kTTT, x.named[i].name, le.late_difference(iT, last, i, last), "nats") << ".\n";
  // Does a model keep gaining from longer contexts? Loss at positions [L/2, L) for the longest L
  // against the same for L/4 (paired over documents); the paper finds the recurrent models stop
  // improving where TTT-E2E and full attention keep going.
  if (last >= 2) {
    const std::string Ls = short_len(le.lengths[last - 2]);
    r << "\n### Does longer context keep helping? Loss deep in a " << L << " context minus deep in a " << Ls
      << " context (negative: the longer context helps)\n\n";
    for (size_t i = 0; i < x.named.size(); ++i)
      r << "- " << finding(x.named[i].name + " at " + L, Ls, le.late_difference(i, last, i, last - 2), "nats") << ".\n";
  }
  r << "\n### Ordering against the paper's Figure 1\n\n"
       "The paper (3B, 164B tokens; SPEC section 7) orders the loss at 32K as TTT-E2E (2.270) < full attention (2.283) "
       "< SWA (2.299), with the hybrid and recurrent models between full attention and SWA, and TTT-E2E's advantage "
       "growing with context. Here, deep in a "
    << L << " context:\n\n";
  ordering_table(x, r, last);
  const auto dS = le.late_difference(iT, last, x.index(kSWA), last), dF = le.late_difference(iT, last, x.index(kFull), last);
  r << "\nTTT-E2E against SWA: "
    << (dS.excludes_zero() ? (dS.value < 0 ? "lower, as in the paper" : "higher, unlike the paper")
                           : "no difference measured (the paper: lower by 0.029 at 32K)")
    << "; against full attention: "
    << (dF.excludes_zero() ? (dF.value < 0 ? "lower, as in the paper" : "higher (the paper: lower by 0.013 at 32K)")
                           : "no difference measured (the paper: lower by 0.013 at 32K)")
    << ". At " << x.o.steps * x.o.batch * x.o.seq_len
    << " training tokens per model (the paper: 164B) these are small models early in training; the ordering "
       "is what this run measured, not a prediction for scale.\n";
}

// 5. Recall: a repeated span below and beyond the window.
void recall_run(Run& x) {
  const int64_t w = x.window();
  x.gaps = {w / 4, w / 2, 2 * w, 8 * w};
  x.sp = eval::span_probe_eval(x.named, x.data(), x.gaps, 32, x.o.quick ? 8 : 20, stderr);
}

void recall_section(const Run& x, std::ostream& r) {
  r << "## Recall\n" << capture([&](std::FILE* f) { eval::print_span_probe(x.sp, f); });
  r << "\nGaps below the window (" << x.window() << ") leave the first copy visible to attention; beyond it only a memory "
       "(full attention's cache, a recurrent state, fast weights) can carry it.\n\n";
}

void recall_findings(const Run& x, std::ostream& r) {
  r << "\n### Recall beyond the window (gap " << x.gaps.back() << ")\n\n";
  r << "How much the first copy lowers the repeat's NLL (control minus repeat; a model that recalls shows a large "
       "positive value; the paper expects full attention far above TTT-E2E):\n\n";
  for (size_t i = 0; i < x.named.size(); ++i) {
    const auto& p = x.sp.probes[i].back();
    const auto h = eval::bootstrap_paired_difference(p.control_trials, p.repeat_trials, {});
    r << "- " << x.named[i].name << ": " << eval::format_interval(h, "%.3f") << " nats"
      << (h.excludes_zero() ? "" : " (no effect measured)") << "\n";
  }
}

// 6. Needle tests. These small code models have never seen a question; a short tuning on a
// needle-task mix (RULER-style pairs spliced into corpus sequences) teaches them the format,
// then pass-key / number / UUID retrieval is measured vs context length. Output:
// models/NAME-needle and needle_accuracy.png. Resume: as training. Skipped by --needle-steps -1.
void tune_for_needles(Run& x, const Variant& v, const std::string& tok_path) {
  const ExperimentOptions& o = x.o;
  const fs::path dir = x.out / "models" / (v.name + "-needle");
  const int64_t done = finished_steps(dir);
  if (done >= o.needle_steps) {
    std::fprintf(stderr, "%s-needle: already tuned (%lld steps)\n", v.name.c_str(), static_cast<long long>(done));
    return;
  }
  train::TrainOptions to;
  to.steps = o.needle_steps;
  to.batch = kNeedleBatch;
  to.seq_len = kNeedleSeq;
  to.lr = 2e-3;
  to.ilr_warmup_frac = 0;  // the TTT-E2E model is already meta-learned: inner lr 1 throughout
  to.val_every = std::max<int64_t>(10, o.needle_steps / 4);
  to.val_seqs = 8;
  to.ckpt_every = std::max<int64_t>(10, o.needle_steps / 10);
  to.out_dir = dir.string();
  to.seed = o.seed;
  to.resume = true;
  std::fprintf(stderr, "%s-needle: %lld steps of %lld x %lld tokens on the needle-task mix%s\n", v.name.c_str(),
               static_cast<long long>(o.needle_steps), static_cast<long long>(kNeedleBatch),
               static_cast<long long>(kNeedleSeq), resuming_note(done).c_str());
  auto m = model::Model::load((x.out / "models" / v.name).string(), model::Weights::F32);  // tuned below
  auto src = train::needle_mix_source(train::corpus_source(o.data_dir, o.seed + 1), tok_path, 1.0, 8, o.seed);
  train::train(m, *src, to, stderr);
}

std::string tokenizer_path(const Run& x) { return (fs::path(x.o.data_dir) / "tokenizer.model").string(); }

void needle_run(Run& x) {
  const std::string tok_path = tokenizer_path(x);
  for (auto& v : x.variants) {
    tune_for_needles(x, v, tok_path);
    x.tuned.push_back(model::Model::load((x.out / "models" / (v.name + "-needle")).string()));
  }
  std::vector<eval::NamedModel> tn;
  for (size_t i = 0; i < x.variants.size(); ++i) tn.push_back({x.variants[i].name, &x.tuned[i]});
  tn.push_back({x.ttt_off, &x.tuned[x.index(kTTT)], false});
  const auto tok = data::Tokenizer::load(tok_path);
  for (size_t i = 0; i < x.data().split("val-long").documents.size(); ++i) x.long_docs.push_back(x.data().document("val-long", i));
  eval::NeedleEvalOptions no;
  no.tasks = data::parse_needle_tasks("all");
  no.lengths = x.o.quick ? std::vector<int64_t>{512, 1024, 2048, 4096} : std::vector<int64_t>{512, 1024, 2048, 4096, 8192};
  no.depths = x.o.quick ? 3 : 5;
  no.trials = 2;
  no.seed = x.o.seed;
  x.needle = eval::needle_eval(tn, tok, eval::needle_haystack(x.long_docs, tok.bos_id()), no, stderr);
  eval::plot_needle_eval(x.needle, (x.out / "needle_accuracy.png").string());
}

void needle_section(const Run& x, std::ostream& r) {
  if (x.needle.records.empty()) return;
  r << "## Needle in a haystack (RULER-style S-NIAH: pass-key, number, UUID)\n\n"
    << "The models above have never seen a question, so each is first tuned for " << x.o.needle_steps << " more steps of "
    << kNeedleBatch << " x " << kNeedleSeq
    << " tokens on a needle-task mix: every training sequence gets up to 8 (needle, question + answer) pairs of the "
       "three tasks spliced in at random places (keys and values random; the corpus text around them unchanged). "
       "Then each prompt (BOS, haystack, the needle at a depth, the question) is read (with test-time training "
       "where the model has it) and answered greedily; a case is correct when the answer contains the value. "
       "Pass-key haystacks are repeated filler sentences; number and UUID haystacks are held-out kernel source. "
    << "Training sequences are " << kNeedleSeq << " tokens, so longer contexts test length generalization too. "
    << "`" << x.ttt_off << "` is the tuned TTT-E2E model reading with its initial fast weights.\n"
    << capture([&](std::FILE* f) { eval::print_needle_eval(x.needle, x.window(), f); })
    << "\n![needle accuracy](needle_accuracy.png)\n\n";
}

void needle_findings(const Run& x, std::ostream& r) {
  const auto& needle = x.needle;
  if (needle.records.empty()) return;
  const size_t iT = x.index(kTTT);
  const int64_t far = 4 * x.window();
  r << "\n### Needles more than " << far << " tokens before the question\n\n";
  for (size_t i = 0; i < needle.models.size(); ++i)
    r << "- " << needle.models[i] << ": accuracy " << eval::format_interval(needle.distance_interval(i, far, INT64_MAX), "%.2f")
      << "\n";
  r << "\n";
  for (size_t i = 0; i < needle.models.size(); ++i)
    if (i != iT) {
      const auto d = needle.distance_difference(iT, i, far, INT64_MAX);
      if (d.units > 0) r << "- " << finding(kTTT, needle.models[i], d, "", "less accurate", "more accurate", "%+.2f") << ".\n";
    }
  r << "\nThe paper (3B, 128K): full attention 0.99, TTT-E2E 0.06: its compressed memory does not recall arbitrary "
       "strings far outside the window.\n";
}

// 7. Layered memory (issue 13): the needle-tuned full-attention, SWA and TTT-E2E models at long
// contexts, TTT-E2E also with an exact store and recall in each mode; then recall on ordinary
// text with the base TTT-E2E model. Needs stage 6's tuned models (skipped with it).
void layered_run(Run& x) {
  if (x.tuned.empty()) return;
  const size_t iT = x.index(kTTT);
  std::vector<eval::NamedModel> lm;
  for (const char* name : {kFull, kSWA, kTTT}) lm.push_back({name, &x.tuned[x.index(name)]});
  for (const char* mode : {"window", "review", "both"}) {
    eval::NamedModel nm{std::string(kTTT) + " + recall " + mode, &x.tuned[iT], true};
    nm.recall = kRecallK;
    nm.recall_mode = mode;
    lm.push_back(nm);
  }
  const auto tok = data::Tokenizer::load(tokenizer_path(x));
  eval::NeedleEvalOptions lo;
  lo.tasks = data::parse_needle_tasks("all");
  lo.lengths = {8192, 32768, 65536};
  lo.depths = x.o.quick ? 2 : 4;  // depth 1: the needle inside the window; the others beyond it
  lo.trials = x.o.quick ? 1 : 2;
  lo.seed = x.o.seed + 13;
  x.layered = eval::needle_eval(lm, tok, eval::needle_haystack(x.long_docs, tok.bos_id()), lo, stderr);
  eval::plot_needle_eval(x.layered, (x.out / "layered_memory_needles.png").string());
  eval::RecallLossOptions rl;
  rl.k = kRecallK;
  rl.length = x.o.quick ? 8192 : 16384;
  std::vector<std::vector<int32_t>> rdocs;
  for (auto& d : x.long_docs)
    if (static_cast<int64_t>(d.size()) > rl.length + rl.probe_tokens && static_cast<int64_t>(rdocs.size()) < (x.o.quick ? 4 : 10))
      rdocs.emplace_back(d.begin(), d.begin() + rl.length + rl.probe_tokens + 1);
  x.recall_loss = eval::recall_loss_eval(x.models[iT], rdocs, rl, stderr);
}

void layered_section(const Run& x, std::ostream& r) {
  if (x.layered.records.empty()) return;
  r << "## Layered memory: window, weights and an exact store\n\n"
    << "The needle-tuned models again, at 8K to 64K tokens, and TTT-E2E also with an exact store of everything "
       "it read (SQLite, FTS5 BM25 over token unigrams and bigrams, spans of 64 tokens): before the question it "
       "recalls the "
    << kRecallK
    << " stretches most relevant to the question from beyond the window and either reads them into the window "
       "(`window`), learns them with one inner step and restores the window (`review`), or both (`both`). "
       "Hit rate: the share of cases with the needle beyond the window whose recalled stretches held its value.\n"
    << capture([&](std::FILE* f) { eval::print_needle_eval(x.layered, x.window(), f); })
    << "\n![needles with recall](layered_memory_needles.png)\n\n"
    << "### Recall on ordinary text\n\nThe base TTT-E2E model reads held-out long documents; at every probe it "
       "forks, recalls from its store with the next "
    << eval::RecallLossOptions{}.prompt_tokens << " tokens as the query (or does not), reads them, and predicts the "
    << eval::RecallLossOptions{}.probe_tokens << " tokens after them, teacher-forced.\n"
    << capture([&](std::FILE* f) { eval::print_recall_loss(x.recall_loss, f); }) << "\n";
}

// 8. Latency vs context. Output: the table (ratios against TTT-E2E) and latency_vs_context.png.
void latency_run(Run& x) {
  const size_t iT = x.index(kTTT);
  x.bench_models.push_back({kTTT, x.models[iT]});  // first: the table's ratios are against TTT-E2E
  for (size_t i = 0; i < x.variants.size(); ++i)
    if (i != iT) x.bench_models.push_back({x.variants[i].name, x.models[i]});
  bench::ContextBenchOptions co;
  co.prefill_lengths = x.o.quick ? std::vector<int64_t>{1024, 4096, 8192} : std::vector<int64_t>{1024, 4096, 8192, 16384, 32768};
  co.decode_lengths = x.o.quick ? std::vector<int64_t>{1024, 8192} : std::vector<int64_t>{1024, 8192, 32768};
  co.decode_tokens = 16;
  x.lat = bench::run_context_bench(x.bench_models, co, stderr);
  std::vector<report::Series> s;
  for (auto& m : x.bench_models)
    for (const char* mode : {"prefill", "decode"}) {
      report::Series t{m.name + " " + mode, {}, {}};
      t.markers = true;
      t.dashed = std::string(mode) == "decode";
      for (auto& row : x.lat.rows)
        if (row.model == m.name && row.mode == mode && !row.skipped) {
          t.x.push_back(static_cast<double>(row.context));
          t.y.push_back(row.s_per_1k);
        }
      s.push_back(t);
    }
  report::ChartOptions c;
  c.title = "Seconds per 1K tokens vs context length";
  c.x_label = "context length (tokens)";
  c.y_label = "seconds per 1K tokens";
  c.log_x = true;
  c.log_y = true;
  report::write_line_chart((x.out / "latency_vs_context.png").string(), s, c);
}

void latency_section(const Run& x, std::ostream& r) {
  r << "## Latency\n\n" << capture([&](std::FILE* f) { bench::print_context_bench(x.lat, x.bench_models, f); });
  r << "![latency vs context](latency_vs_context.png)\n\n";
}

void latency_findings(const Run& x, std::ostream& r) {
  double ttt_min = 1e300, ttt_max = 0;
  for (auto& row : x.lat.rows)
    if (row.mode == "prefill" && row.model == kTTT && !row.skipped) {
      ttt_min = std::min(ttt_min, row.s_per_1k);
      ttt_max = std::max(ttt_max, row.s_per_1k);
    }
  r << "\n### Latency\n\nTTT-E2E prefill spans " << fmt("%.4f", ttt_min) << " to " << fmt("%.4f", ttt_max)
    << " s per 1K tokens over the lengths measured (flat means a ratio near 1: here " << fmt("%.2f", ttt_max / ttt_min)
    << "); the table above gives every model's ratio to it. At this tiny scale the per-chunk inner step costs "
       "relatively more than in the paper's 3B model, so full attention's crossover comes later.\n";
}

std::vector<Stage> stages(const ExperimentOptions& o) {
  std::vector<Stage> s = {
      {"corpus", corpus_run, corpus_section, {}},
      {"training", training_run, training_section, {}},
      {"held-out loss", held_out_run, held_out_section, held_out_findings},
      {"long-context loss", long_context_run, long_context_section, long_context_findings},
      {"recall probe", recall_run, recall_section, recall_findings},
      {"needle tests", needle_run, needle_section, needle_findings},
      {"layered memory", layered_run, layered_section, {}},
      {"latency", latency_run, latency_section, latency_findings},
  };
  if (o.needle_steps <= 0) {
    s[5].run = [](Run&) {};
    s[6].name = "layered memory: skipped (it uses the needle-tuned models; --needle-steps -1 skips them)";
  }
  return s;
}

std::string report_text(const Run& x, const std::vector<Stage>& list) {
  std::ostringstream r;
  const auto& b = blas::info();
  const double total_min = std::chrono::duration<double>(Clock::now() - x.start).count() / 60.0;
  r << "# TTT-E2E against six sequence models at small scale\n\n";
  r << "Written by `ttt experiment" << (x.o.quick ? " --quick" : "") << "` (" << fmt("%.1f", total_min)
    << " minutes for the stages run this time). Machine: " << num_threads() << " CPU threads, BLAS " << b.library
    << " with " << b.core << " kernels.\n\n";
  r << "Every loss and accuracy below comes with a 95% bootstrap confidence interval (2000 resamples; over documents "
       "for losses, over trials for the recall probe, over cases for the needle tests). Differences between models "
       "are bootstrapped paired (the same documents or cases for both); a difference whose interval includes zero "
       "is reported as \"no difference measured\".\n\n";
  for (const Stage& s : list)
    if (s.section) s.section(x, r);
  r << "## Findings\n\n";
  for (const Stage& s : list)
    if (s.findings) s.findings(x, r);
  return r.str();
}

// The headline table on stdout.
void print_headline(const Run& x) {
  const auto& le = x.le;
  const size_t last = le.lengths.size() - 1;
  const std::string L = short_len(le.lengths[last]), Lh = short_len(le.lengths[last] / 2);
  int64_t pre_ctx = 0;
  for (auto& row : x.lat.rows)
    if (row.mode == "prefill" && !row.skipped) pre_ctx = std::max(pre_ctx, row.context);
  std::printf("\n%-26s %24s %24s %14s %12s %13s\n", "model", "held-out loss", ("loss deep in " + L).c_str(),
              "recall help", "needle acc", "prefill s/1K");
  for (size_t i = 0; i < x.named.size(); ++i) {
    double pre = std::nan("");
    for (auto& row : x.lat.rows)
      if (row.mode == "prefill" && row.model == x.named[i].name && row.context == pre_ctx && !row.skipped) pre = row.s_per_1k;
    const double acc = x.needle.records.empty() ? std::nan("") : x.needle.accuracy(i, nullptr, -1);
    const auto& p = x.sp.probes[i].back();
    std::printf("%-26s %24s %24s %14.3f %12.2f %13.4f\n", x.named[i].name.c_str(),
                eval::format_interval(x.held.loss[i]).c_str(), eval::format_interval(le.ci_late[i][last]).c_str(),
                p.control_nll - p.repeat_nll, acc, pre);
  }
  std::printf("\n(held-out loss: %lld whole val documents; loss deep in %s: positions %s-%s of %lld long held-out "
              "documents; recall help: control minus repeat NLL at gap %lld; needle acc: all tasks and lengths, after "
              "needle-task tuning; prefill at %s)\n",
              static_cast<long long>(x.held.documents), L.c_str(), Lh.c_str(), L.c_str(),
              static_cast<long long>(le.documents), static_cast<long long>(x.gaps.back()), short_len(pre_ctx).c_str());
}

}  // namespace

int run_experiment(ExperimentOptions o) {
  Run x;
  x.start = Clock::now();
  if (o.out_dir.empty()) o.out_dir = o.quick ? "runs/quick" : "runs/experiment";
  if (o.steps == 0) o.steps = o.quick ? 100 : 300;
  if (o.max_corpus_tokens == 0) o.max_corpus_tokens = 20'000'000;
  if (o.needle_steps == 0) o.needle_steps = o.quick ? 60 : 150;
  x.o = o;
  x.out = fs::path(o.out_dir);
  fs::create_directories(x.out);
  std::fprintf(stderr,
               "ttt experiment%s: full attention, SWA, SWA/full hybrid, Mamba 2, Gated DeltaNet, TTT-KVB and TTT-E2E on "
               "the Linux kernel source -> %s\n",
               o.quick ? " --quick" : "", x.out.c_str());
  const std::vector<Stage> list = stages(o);
  for (size_t i = 0; i < list.size(); ++i) {
    stage((std::to_string(i + 1) + "/" + std::to_string(list.size()) + " " + list[i].name).c_str());
    list[i].run(x);
  }
  const std::string text = report_text(x, list);
  io::write_file_atomic((x.out / "REPORT.md").string(), text.data(), text.size());
  print_headline(x);
  std::printf("wrote %s/REPORT.md with tables and plots\n", x.out.c_str());
  return 0;
}

}  // namespace ttt::experiment
