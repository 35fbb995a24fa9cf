#include "experiment/experiment.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include <unistd.h>

#include "backend/blas.h"
#include "backend/thread_pool.h"
#include "bench/context_bench.h"
#include "data/corpus.h"
#include "data/dataset.h"
#include "eval/needle_eval.h"
#include "eval/report_tables.h"
#include "io/atomic_file.h"
#include "io/file_read.h"
#include "io/json_read.h"
#include "report/plot.h"
#include "train/trainer.h"

namespace ttt::experiment {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

using Clock = std::chrono::steady_clock;


void stage(const char* what) {
  std::fprintf(stderr, "\n== %s\n", what);
  std::fflush(stderr);
}

struct Variant {
  std::string name;
  model::ModelConfig cfg;
};

// Same shape for all three: d 128, 4 layers, 2 heads of 64, f 384; window 256, b 128, one prime
// block (a quarter of the layers, as in the paper).
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
  Variant full{"full-attention", base}, swa{"swa", base}, ttt{"ttt-e2e", base};
  full.cfg.seq_modeling_block = "self_attention";
  swa.cfg.seq_modeling_block = "SWA";
  ttt.cfg.seq_modeling_block = "SWA";
  ttt.cfg.prime = true;
  ttt.cfg.suffix_len = 1;
  return {full, swa, ttt};
}

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
  double seconds = 0, final_loss = 0, final_val = 0;
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

std::string short_len(int64_t n) {
  return n >= 1024 && n % 1024 == 0 ? std::to_string(n / 1024) + "K" : std::to_string(n);
}

}  // namespace

int run_experiment(ExperimentOptions o) {
  const auto t_start = Clock::now();
  if (o.out_dir.empty()) o.out_dir = o.quick ? "runs/quick" : "runs/experiment";
  if (o.steps == 0) o.steps = o.quick ? 100 : 400;
  if (o.max_corpus_tokens == 0) o.max_corpus_tokens = o.quick ? 5'000'000 : 20'000'000;
  if (o.needle_steps == 0) o.needle_steps = o.quick ? 100 : 300;
  const fs::path out(o.out_dir);
  fs::create_directories(out);
  std::fprintf(stderr, "ttt experiment%s: full attention vs SWA vs TTT-E2E on the Linux kernel source -> %s\n",
               o.quick ? " --quick" : "", out.c_str());

  // 1. Corpus.
  stage("1/6 corpus");
  if (!fs::exists(fs::path(o.data_dir) / "index.json")) {
    data::LinuxRecipeOptions lr;
    lr.out = o.data_dir;
    lr.cache_dir = fs::path(o.data_dir).parent_path().empty() ? "." : fs::path(o.data_dir).parent_path().string();
    lr.corpus.max_tokens = o.max_corpus_tokens;
    std::fprintf(stderr, "building %s (capped at %lld tokens)...\n", o.data_dir.c_str(),
                 static_cast<long long>(o.max_corpus_tokens));
    std::fprintf(stderr, "%s\n", data::format_summary(data::build_linux_corpus(lr)).c_str());
  }
  const auto ds = data::Dataset::open(o.data_dir);
  std::fprintf(stderr, "%s\n", ds.describe().c_str());

  // 2. Training: the same steps, batch and sequences (same sampler seed) for every model.
  stage("2/6 training");
  auto vs = variants(ds.vocab_size(), ds.bos_id());
  std::map<std::string, TrainRecord> rec;
  for (auto& v : vs) {
    const fs::path dir = out / "models" / v.name;
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
      std::fprintf(stderr, "%s: %s, %lld steps of %lld x %lld tokens%s\n", v.name.c_str(),
                   v.cfg.prime ? "meta-learning" : "pretraining", static_cast<long long>(o.steps),
                   static_cast<long long>(o.batch), static_cast<long long>(o.seq_len),
                   done > 0 ? (" (resuming at step " + std::to_string(done) + ")").c_str() : "");
      auto m = model::Model::init(v.cfg, o.seed);
      auto src = train::corpus_source(o.data_dir, o.seed);
      train::train(m, *src, to, stderr);
    }
    r.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    r.tokens = o.steps * o.batch * o.seq_len;
    const auto losses = read_losses(dir / "metrics.jsonl", "loss");
    const auto vals = read_losses(dir / "metrics.jsonl", "val_loss");
    r.final_loss = losses.empty() ? std::nan("") : losses.back().second;
    r.final_val = vals.empty() ? std::nan("") : vals.back().second;
    rec[v.name] = r;
  }
  std::vector<model::Model> models;
  for (auto& v : vs) models.push_back(model::Model::load((out / "models" / v.name).string()));
  std::vector<eval::NamedModel> named;
  for (size_t i = 0; i < vs.size(); ++i) named.push_back({vs[i].name, &models[i]});
  {
    std::vector<report::Series> s;
    for (auto& v : vs) {
      report::Series t{v.name, {}, {}};
      for (auto& [x, y] : read_losses(out / "models" / v.name / "metrics.jsonl", "val_loss")) {
        t.x.push_back(x);
        t.y.push_back(y);
      }
      t.markers = true;
      s.push_back(t);
    }
    report::ChartOptions c;
    c.title = "Validation loss during training";
    c.x_label = "step";
    c.y_label = "loss (nats/token)";
    report::write_line_chart_png((out / "training_loss.png").string(), s, c);
  }

  // 3. Loss vs context length on held-out long documents.
  stage("3/6 long-context loss");
  int64_t longest = 0;
  for (auto& d : ds.split("val-long").documents) longest = std::max(longest, d.length);
  std::vector<int64_t> lengths;
  const int64_t cap = o.quick ? 4096 : 8192;
  for (int64_t l = 256; l <= cap && l + 1 <= longest; l *= 2) lengths.push_back(l);
  if (lengths.empty()) throw std::runtime_error("the corpus has no long validation document to evaluate on");
  const auto le = eval::long_context_eval(named, ds, lengths, o.quick ? 2 : 4, stderr);
  eval::plot_long_eval(le, out.string(), vs[1].cfg.sliding_window_size);

  // 4. Recall: repeated span below and beyond the window.
  stage("4/6 recall probe");
  const int64_t w = vs[1].cfg.sliding_window_size;
  const std::vector<int64_t> gaps = {w / 4, w / 2, 2 * w, 8 * w};
  const auto sp = eval::span_probe_eval(named, ds, gaps, 32, o.quick ? 2 : 4, stderr);

  // 5. Needle tests. These small code models have never seen a question; a short tuning on a
  // needle-task mix (RULER-style pairs spliced into corpus sequences) teaches them the format,
  // then pass-key / number / UUID retrieval is measured vs context length.
  stage("5/6 needle tests");
  eval::NeedleEvalResult needle;
  std::vector<model::Model> tuned;
  const int64_t needle_seq = 512, needle_batch = 8;
  if (o.needle_steps > 0) {
    const std::string tok_path = (fs::path(o.data_dir) / "tokenizer.model").string();
    for (auto& v : vs) {
      const fs::path dir = out / "models" / (v.name + "-needle");
      const int64_t done = finished_steps(dir);
      if (done >= o.needle_steps) {
        std::fprintf(stderr, "%s-needle: already tuned (%lld steps)\n", v.name.c_str(), static_cast<long long>(done));
      } else {
        train::TrainOptions to;
        to.steps = o.needle_steps;
        to.batch = needle_batch;
        to.seq_len = needle_seq;
        to.lr = 2e-3;
        to.ilr_warmup_frac = 0;  // the TTT-E2E model is already meta-learned: inner lr 1 throughout
        to.val_every = std::max<int64_t>(10, o.needle_steps / 4);
        to.val_seqs = 8;
        to.ckpt_every = std::max<int64_t>(10, o.needle_steps / 10);
        to.out_dir = dir.string();
        to.seed = o.seed;
        to.resume = true;
        std::fprintf(stderr, "%s-needle: %lld steps of %lld x %lld tokens on the needle-task mix%s\n", v.name.c_str(),
                     static_cast<long long>(o.needle_steps), static_cast<long long>(needle_batch),
                     static_cast<long long>(needle_seq),
                     done > 0 ? (" (resuming at step " + std::to_string(done) + ")").c_str() : "");
        auto m = model::Model::load((out / "models" / v.name).string());
        auto src = train::needle_mix_source(train::corpus_source(o.data_dir, o.seed + 1), tok_path, 1.0, 8, o.seed);
        train::train(m, *src, to, stderr);
      }
      tuned.push_back(model::Model::load(dir.string()));
    }
    std::vector<eval::NamedModel> tn;
    for (size_t i = 0; i < vs.size(); ++i) tn.push_back({vs[i].name, &tuned[i]});
    // Ablation: the same TTT-E2E weights with the inner steps off. What it loses beyond the window
    // is what the fast weights remembered.
    tn.push_back({vs[2].name + " (TTT off)", &tuned[2], false});
    const auto tok = data::Tokenizer::load(tok_path);
    std::vector<std::vector<int32_t>> docs;
    for (size_t i = 0; i < ds.split("val-long").documents.size(); ++i) docs.push_back(ds.document("val-long", i));
    eval::NeedleEvalOptions no;
    no.tasks = data::parse_needle_tasks("all");
    no.lengths = o.quick ? std::vector<int64_t>{512, 1024, 2048, 4096} : std::vector<int64_t>{512, 1024, 2048, 4096, 8192};
    no.depths = o.quick ? 3 : 5;
    no.trials = 2;
    no.seed = o.seed;
    needle = eval::needle_eval(tn, tok, eval::needle_haystack(docs, tok.bos_id()), no, stderr);
    eval::plot_needle_eval(needle, (out / "needle_accuracy.png").string());
  }

  // 5. Latency vs context.
  stage("6/6 latency");
  std::vector<bench::NamedModel> bm;
  for (size_t i = 0; i < vs.size(); ++i) bm.push_back({vs[i].name, models[i]});
  std::reverse(bm.begin(), bm.end());  // ttt-e2e, swa, full: the table's ratio is full / ttt-e2e
  bench::ContextBenchOptions co;
  co.prefill_lengths = o.quick ? std::vector<int64_t>{1024, 2048, 4096, 8192} : std::vector<int64_t>{1024, 2048, 4096, 8192, 16384, 32768};
  co.decode_lengths = o.quick ? std::vector<int64_t>{1024, 8192} : std::vector<int64_t>{1024, 8192, 32768};
  co.decode_tokens = 16;
  const auto lat = bench::run_context_bench(bm, co, stderr);
  {
    std::vector<report::Series> s;
    for (auto& m : bm)
      for (const char* mode : {"prefill", "decode"}) {
        report::Series t{m.name + " " + mode, {}, {}};
        t.markers = true;
        t.dashed = std::string(mode) == "decode";
        for (auto& row : lat.rows)
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
    report::write_line_chart_png((out / "latency_vs_context.png").string(), s, c);
  }

  // REPORT.md
  std::ostringstream r;
  auto capture = [](auto&& print) {
    char* buf = nullptr;
    size_t len = 0;
    std::FILE* f = open_memstream(&buf, &len);
    print(f);
    std::fclose(f);
    std::string s(buf, len);
    std::free(buf);
    return s;
  };
  const auto& b = blas::info();
  const double total_min = std::chrono::duration<double>(Clock::now() - t_start).count() / 60.0;
  r << "# TTT-E2E vs SWA vs full attention at small scale\n\n";
  r << "Written by `ttt experiment" << (o.quick ? " --quick" : "") << "` (" << fmt("%.1f", total_min)
    << " minutes for the stages run this time). Machine: " << num_threads() << " CPU threads, BLAS " << b.library
    << " with " << b.core << " kernels.\n\n";
  r << "## Setup\n\n- Corpus: " << ds.describe() << "\n";
  r << "- Models (same shape): d " << vs[0].cfg.hidden_size << ", " << vs[0].cfg.num_hidden_layers << " layers, "
    << vs[0].cfg.num_attention_heads << " heads, f " << vs[0].cfg.intermediate_size << ", vocab " << vs[0].cfg.vocab_size
    << "; SWA window " << w << "; TTT-E2E: SWA plus a prime MLP in the last " << vs[2].cfg.suffix_len
    << " block, chunk b " << vs[2].cfg.mini_batch_size << ".\n";
  r << "- Training: " << o.steps << " steps of " << o.batch << " x " << o.seq_len
    << " tokens for each model, the same sequences (same sampler seed), AdamW peak lr 3e-3 with warmup and cosine decay; "
       "TTT-E2E is meta-learned (inner learning rate warming up from 0.1 to 1 over the first 10% of steps).\n\n";
  r << "| model | parameters | training tokens | final train loss | final val loss (" << o.seq_len << " ctx) | train minutes (this run) |\n|---|---:|---:|---:|---:|---:|\n";
  for (size_t i = 0; i < vs.size(); ++i) {
    auto& t = rec[vs[i].name];
    r << "| " << vs[i].name << " | " << param_count(models[i]) << " | " << t.tokens << " | " << fmt("%.4f", t.final_loss)
      << " | " << fmt("%.4f", t.final_val) << " | " << fmt("%.1f", t.seconds / 60) << " |\n";
  }
  r << "\n![validation loss during training](training_loss.png)\n\n";
  r << "## Loss vs context length\n" << capture([&](std::FILE* f) { eval::print_long_eval(le, f); });
  r << "\n![loss vs context](loss_vs_context.png)\n\n![loss by position](loss_vs_position.png)\n\n";
  r << "## Recall\n" << capture([&](std::FILE* f) { eval::print_span_probe(sp, f); });
  r << "\nGaps below the window (" << w << ") leave the first copy visible to attention; beyond it only TTT-E2E's "
       "weights (or full attention) can carry it.\n\n";
  if (!needle.records.empty()) {
    r << "### Needle in a haystack (RULER-style S-NIAH: pass-key, number, UUID)\n\n"
      << "The models above have never seen a question, so each is first tuned for " << o.needle_steps << " more steps of "
      << needle_batch << " x " << needle_seq
      << " tokens on a needle-task mix: every training sequence gets up to 8 (needle, question + answer) pairs of the "
         "three tasks spliced in at random places (keys and values random; the corpus text around them unchanged). "
         "Then each prompt (BOS, haystack, the needle at a depth, the question) is read with test-time training on "
         "and answered greedily; a case is correct when the answer contains the value. Pass-key haystacks are "
         "repeated filler sentences; number and UUID haystacks are held-out kernel source. "
      << "Training sequences are " << needle_seq << " tokens, so longer contexts test length generalization too. "
      << "`" << vs[2].name << " (TTT off)` is the same tuned TTT-E2E model reading with its initial fast weights "
         "(no inner steps): an ablation of the inner loop.\n"
      << capture([&](std::FILE* f) { eval::print_needle_eval(needle, w, f); })
      << "\n![needle accuracy](needle_accuracy.png)\n\n";
  }
  r << "## Latency\n\n" << capture([&](std::FILE* f) { bench::print_context_bench(lat, bm, f); });
  r << "![latency vs context](latency_vs_context.png)\n\n";

  // Findings, computed from the numbers above.
  auto col = [&](const std::string& name) {
    for (size_t i = 0; i < le.models.size(); ++i)
      if (le.models[i] == name) return i;
    return size_t(0);
  };
  const size_t iF = col("full-attention"), iS = col("swa"), iT = col("ttt-e2e");
  const size_t last = le.lengths.size() - 1;
  const double lf = le.loss_late[iF][last], ls = le.loss_late[iS][last], lt = le.loss_late[iT][last];
  const auto probe_far = [&](size_t i) { return sp.probes[i].back().repeat_nll; };
  double ttt_min = 1e300, ttt_max = 0, ratio_max = 0;
  int64_t ratio_ctx = 0;
  for (auto& row : lat.rows)
    if (row.mode == "prefill" && row.model == "ttt-e2e" && !row.skipped) {
      ttt_min = std::min(ttt_min, row.s_per_1k);
      ttt_max = std::max(ttt_max, row.s_per_1k);
    }
  for (auto& row : lat.rows)
    if (row.mode == "prefill" && row.model == "full-attention" && !row.skipped)
      for (auto& t : lat.rows)
        if (t.mode == "prefill" && t.model == "ttt-e2e" && t.context == row.context && t.s_per_1k > 0 &&
            row.context >= ratio_ctx) {
          ratio_ctx = row.context;
          ratio_max = row.s_per_1k / t.s_per_1k;
        }
  r << "## Findings\n\n";
  r << "- **Beyond the window** (positions " << short_len(le.lengths[last] / 2) << " to " << short_len(le.lengths[last])
    << ", window " << w << "): TTT-E2E " << fmt("%.4f", lt) << ", SWA " << fmt("%.4f", ls) << ", full attention "
    << fmt("%.4f", lf) << ". The paper expects TTT-E2E below SWA and close to full attention: here TTT-E2E is "
    << (lt < ls ? "below" : "not below") << " SWA by " << fmt("%.4f", ls - lt) << " nats and "
    << (lt <= lf ? "at or below" : "above") << " full attention by " << fmt("%.4f", std::fabs(lt - lf)) << ".\n";
  r << "- **Recall beyond the window** (gap " << gaps.back() << "): repeat NLL TTT-E2E " << fmt("%.3f", probe_far(iT))
    << ", SWA " << fmt("%.3f", probe_far(iS)) << ", full attention " << fmt("%.3f", probe_far(iF))
    << ". The paper expects TTT-E2E near SWA (the compressed memory does not recall arbitrary strings) and full "
       "attention far lower. Here the first copy lowers the repeat's NLL (control minus repeat) by "
    << fmt("%.3f", sp.probes[iT].back().control_nll - probe_far(iT)) << " nats for TTT-E2E, "
    << fmt("%.3f", sp.probes[iS].back().control_nll - probe_far(iS)) << " for SWA and "
    << fmt("%.3f", sp.probes[iF].back().control_nll - probe_far(iF))
    << " for full attention: a model that recalls shows a large positive gap.\n";
  r << "- **Latency**: TTT-E2E prefill spans " << fmt("%.4f", ttt_min) << " to " << fmt("%.4f", ttt_max)
    << " s per 1K tokens over the lengths measured (flat means a ratio near 1: here " << fmt("%.2f", ttt_max / ttt_min)
    << "); full attention / TTT-E2E at " << short_len(ratio_ctx) << ": " << fmt("%.2f", ratio_max)
    << "x. At this tiny scale the per-chunk inner step costs relatively more than in the paper's 3B model, so the "
       "crossover comes later.\n";
  if (!needle.records.empty()) {
    const int64_t lmin = needle.lengths.front(), lmax = needle.lengths.back();
    const double nf = needle.accuracy(iF, nullptr, lmax), ns = needle.accuracy(iS, nullptr, lmax),
                 nt = needle.accuracy(iT, nullptr, lmax);
    const double ff = needle.accuracy_by_distance(iF, 4 * w, INT64_MAX), fs_ = needle.accuracy_by_distance(iS, 4 * w, INT64_MAX),
                 ft = needle.accuracy_by_distance(iT, 4 * w, INT64_MAX);
    const size_t iO = needle.models.size() - 1;  // TTT-E2E with TTT off
    const double fo = needle.accuracy_by_distance(iO, 4 * w, INT64_MAX);
    r << "- **Needle in a haystack** (after needle-task tuning): accuracy at " << short_len(lmin) << " full attention "
      << fmt("%.2f", needle.accuracy(iF, nullptr, lmin)) << ", SWA " << fmt("%.2f", needle.accuracy(iS, nullptr, lmin))
      << ", TTT-E2E " << fmt("%.2f", needle.accuracy(iT, nullptr, lmin)) << "; at " << short_len(lmax) << " "
      << fmt("%.2f", nf) << ", " << fmt("%.2f", ns) << ", " << fmt("%.2f", nt) << "; needles more than " << 4 * w
      << " tokens before the question: " << fmt("%.2f", ff) << ", " << fmt("%.2f", fs_) << ", " << fmt("%.2f", ft)
      << " (TTT-E2E with TTT off: " << fmt("%.2f", fo) << "). The paper (3B, 128K): full attention 0.99, TTT-E2E 0.06. "
      << (ft > fs_ + 0.1 && ft > ff + 0.1
              ? "This disagrees with the paper's expectation: here only TTT-E2E retrieves beyond the window. The "
                "ablation places the memory in the inner steps (" + fmt("%.2f", ft) + " with them, " + fmt("%.2f", fo) +
                    " without): one SGD step on the chunk holding the needle stores the value in the fast weights, "
                    "and the question recalls it. Full attention could read the needle directly but, at this size "
                    "and budget, never learned to copy (answer NLL " + fmt("%.2f", needle.answer_nll(iF, nullptr, lmin)) +
                    " at " + short_len(lmin) + ", " + fmt("%.2f", needle.answer_nll(iF, nullptr, lmax)) + " at " +
                    short_len(lmax) + "), so it is no upper bound here. TTT-E2E's accuracy falls with the needle's "
                    "distance (table above), consistent with later chunks' steps overwriting the memory: the "
                    "direction of the paper's 0.06 at 128K. "
              : std::string())
      << (std::max({nf, ns, nt, needle.accuracy(iF, nullptr, lmin)}) < 0.05
              ? "Here no model retrieves even at the shortest length: at this size and training budget none has "
                "learned to copy a value it saw once (mean answer NLL " +
                    fmt("%.2f", needle.answer_nll(iF, nullptr, lmin)) + ", " + fmt("%.2f", needle.answer_nll(iS, nullptr, lmin)) +
                    ", " + fmt("%.2f", needle.answer_nll(iT, nullptr, lmin)) + " nats per token at " + short_len(lmin) +
                    ", against 2.30 for a uniform guess of a digit and 2.77 of a hex digit), so these numbers do not "
                    "separate the architectures."
              : std::string())
      << "\n";
  }
  r << "- Scale: " << o.steps * o.batch * o.seq_len << " training tokens per model against the paper's 164B; "
    << "differences of a few hundredths of a nat are within run-to-run noise at this size.\n";
  const std::string text = r.str();
  io::write_file_atomic((out / "REPORT.md").string(), text.data(), text.size());

  // Headline table on stdout.
  std::printf("\n%-16s %14s %14s %16s %12s %14s\n", "model", "val loss", "loss beyond W", "recall NLL far", "needle acc",
              "prefill s/1K");
  for (auto& m : bm) {
    const size_t i = col(m.name);
    double pre = std::nan("");
    for (auto& row : lat.rows)
      if (row.mode == "prefill" && row.model == m.name && row.context == ratio_ctx) pre = row.s_per_1k;
    const double acc = needle.records.empty() ? std::nan("") : needle.accuracy(i, nullptr, -1);
    std::printf("%-16s %14.4f %14.4f %16.3f %12.2f %14.4f\n", m.name.c_str(), rec[m.name].final_val, le.loss_late[i][last],
                probe_far(i), acc, pre);
  }
  std::printf("\n(loss beyond W: positions %s-%s of held-out documents; recall: gap %lld; needle acc: all tasks and "
              "lengths, after needle-task tuning; prefill at %s)\n",
              short_len(le.lengths[last] / 2).c_str(), short_len(le.lengths[last]).c_str(),
              static_cast<long long>(gaps.back()), short_len(ratio_ctx).c_str());
  std::printf("wrote %s/REPORT.md with tables and plots\n", out.c_str());
  return 0;
}

}  // namespace ttt::experiment
