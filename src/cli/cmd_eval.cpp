// `ttt eval-long`, `ttt probe` and `ttt eval-needle`: the long-context comparisons of several
// models on a corpus.
#include <cstdio>
#include <filesystem>
#include <sstream>
#include <nlohmann/json.hpp>

#include <unistd.h>

#include "cli/commands.h"
#include "model/families/family.h"
#include "inference/recall.h"
#include "data/dataset.h"
#include "eval/needle_eval.h"
#include "eval/report_tables.h"
#include "io/atomic_file.h"
#include "model/model.h"

namespace ttt::cli {
namespace {

struct EvalLongArgs {
  std::vector<std::string> models;
  std::string data, out;
  std::vector<int64_t> lengths = {1024, 2048, 4096, 8192, 16384, 32768};
  int64_t docs = 4;
} g_long;

struct ProbeArgs {
  std::vector<std::string> models;
  std::string data;
  std::vector<int64_t> gaps = {128, 512, 2048, 8192};
  int64_t span = 64;
  int trials = 4;
} g_probe;

struct NeedleArgs {
  std::vector<std::string> models;
  std::string data, tokenizer, tasks = "all", out, records;
  std::vector<int64_t> lengths = {1024, 2048, 4096, 8192};
  int depths = 5, trials = 2;
  uint64_t seed = 1;
  bool ttt_off_too = false;
  int recall = 0;
  std::string recall_modes = "window,review,both";
} g_needle;

std::string base_name(std::string dir) {
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  return dir.substr(dir.find_last_of('/') + 1);
}

std::FILE* progress() { return isatty(fileno(stderr)) ? stderr : nullptr; }

// Loads every model directory and checks it against the corpus (vocabulary, BOS id).
std::string g_eval_device = "cpu";  // --device of eval-long, probe and eval-needle
std::string g_eval_compute = "f32";  // --compute of eval-long and probe (eval-needle: f32)
std::string g_eval_kv = "f32";       // --kv-dtype of eval-long and probe (eval-needle: f32)

std::vector<model::Model> load_models(const std::vector<std::string>& dirs, const data::Dataset& ds) {
  std::vector<model::Model> ms;
  for (auto& d : dirs) {
    ms.push_back(load_model(d, model::Weights::Auto, g_eval_compute, g_eval_device));
    ds.check_model(ms.back().config().vocab_size, ms.back().config().bos_token_id);
  }
  return ms;
}

// Models named after their directories (pointers into ms, which must outlive the result).
std::vector<eval::NamedModel> named_models(const std::vector<std::string>& dirs, const std::vector<model::Model>& ms) {
  std::vector<eval::NamedModel> named;
  for (size_t i = 0; i < ms.size(); ++i) {
    named.push_back({base_name(dirs[i]), &ms[i]});
    named.back().kv_dtype = model::parse_kv_dtype(g_eval_kv);
  }
  return named;
}

int run_eval_long(const EvalLongArgs& a) {
  const auto ds = data::Dataset::open(a.data);
  const auto ms = load_models(a.models, ds);
  const auto named = named_models(a.models, ms);
  const auto r = eval::long_context_eval(named, ds, a.lengths, a.docs, progress());
  eval::print_long_eval(r, stdout);
  if (!a.out.empty()) {
    std::filesystem::create_directories(a.out);
    eval::plot_long_eval(r, a.out, ms.front().config().sliding_window_size);
    std::printf("\nwrote %s/loss_vs_context.png and %s/loss_vs_position.png\n", a.out.c_str(), a.out.c_str());
  }
  return 0;
}

int run_probe(const ProbeArgs& a) {
  const auto ds = data::Dataset::open(a.data);
  const auto ms = load_models(a.models, ds);
  eval::print_span_probe(eval::span_probe_eval(named_models(a.models, ms), ds, a.gaps, a.span, a.trials, progress()), stdout);
  return 0;
}

int run_eval_needle(NeedleArgs a) {
  eval::NeedleEvalOptions o;
  o.tasks = data::parse_needle_tasks(a.tasks);  // before any loading: a typo fails fast
  const auto ds = data::Dataset::open(a.data);
  if (a.tokenizer.empty()) a.tokenizer = (std::filesystem::path(a.data) / "tokenizer.model").string();
  const auto tok = data::Tokenizer::load(a.tokenizer);
  const auto ms = load_models(a.models, ds);
  auto named = named_models(a.models, ms);
  if (a.ttt_off_too)
    for (size_t i = 0; i < ms.size(); ++i)
      if (ms[i].config().prime) named.push_back({base_name(a.models[i]) + " (TTT off)", &ms[i], false});
  if (a.recall < 0) throw std::invalid_argument("--recall must be >= 0");
  if (a.recall > 0) {
    // Each model that has a window again with each recall mode (review and both learn: TTT-E2E only).
    std::vector<std::string> modes;
    std::stringstream ss(a.recall_modes);
    for (std::string m; std::getline(ss, m, ',');) {
      inference::parse_recall_mode(m);  // a typo fails before any work
      modes.push_back(m);
    }
    for (size_t i = 0; i < ms.size(); ++i) {
      const auto& c = ms[i].config();
      bool windowed = false;
      for (int64_t l = 0; l < c.num_hidden_layers; ++l) windowed |= !c.is_recurrent(l) && c.window_of(l) > 0;
      for (const auto& m : modes) {
        if (!windowed || (m != "window" && !c.prime)) continue;
        eval::NamedModel nm{base_name(a.models[i]) + " + recall " + m, &ms[i], true};
        nm.recall = a.recall;
        nm.recall_mode = m;
        named.push_back(nm);
      }
    }
  }
  o.lengths = a.lengths;
  o.depths = a.depths;
  o.trials = a.trials;
  o.seed = a.seed;
  std::vector<std::vector<int32_t>> docs;
  for (size_t i = 0; i < ds.split("val-long").documents.size(); ++i) docs.push_back(ds.document("val-long", i));
  const auto r = eval::needle_eval(named, tok, eval::needle_haystack(docs, tok.bos_id()), o, progress());
  int64_t window = 0;
  for (auto& m : ms)
    if (m.config().family().windowed_attention()) window = window ? std::min(window, m.config().sliding_window_size) : m.config().sliding_window_size;
  eval::print_needle_eval(r, window, stdout);
  if (!a.records.empty()) {
    std::string text;
    for (auto& rec : r.records)
      text += nlohmann::json{{"model", r.models[rec.model]}, {"task", data::needle_task_name(rec.task)},
                             {"length", rec.length},          {"depth", rec.depth},
                             {"distance", rec.distance},      {"value", rec.value},
                             {"generated", rec.generated},    {"correct", rec.correct},
                             {"answer_nll", rec.answer_nll}, {"recalled", rec.recalled},
                             {"hit", rec.hit},                {"beyond_window", rec.beyond_window},
                             {"recall_tokens", rec.recall_tokens},
                             {"recall_seconds", rec.recall_seconds}, {"store_bytes", rec.store_bytes}}
                  .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) +
              "\n";
    io::write_file_atomic(a.records, text.data(), text.size());
    std::printf("\nwrote %zu records to %s\n", r.records.size(), a.records.c_str());
  }
  if (!a.out.empty()) {
    std::filesystem::create_directories(a.out);
    eval::plot_needle_eval(r, a.out + "/needle_accuracy.png");
    std::printf("\nwrote %s/needle_accuracy.png\n", a.out.c_str());
  }
  return 0;
}

}  // namespace

void register_eval_commands(CLI::App& app, Registry& reg) {
  auto* el = app.add_subcommand("eval-long", "Loss vs context length and per position for several models on held-out long documents");
  el->add_option("--model", g_long.models, "model directory (repeatable)")->required();
  el->add_option("--data", g_long.data, "corpus directory from `ttt data build` (its val-long split)")->required();
  el->add_option("--lengths", g_long.lengths, "context lengths")->delimiter(',')->capture_default_str();
  el->add_option("--docs", g_long.docs, "documents to average over")->capture_default_str();
  el->add_option("--out", g_long.out, "write loss_vs_context.png and loss_vs_position.png here");
  add_compute_option(el, g_eval_compute);
  add_kv_dtype_option(el, g_eval_kv);
  add_device_option(el, g_eval_device);
  reg.push_back({el, [] { return run_eval_long(g_long); }});

  auto* pr = app.add_subcommand("probe", "Recall probe: NLL of a repeated random span after gaps shorter and longer than the window");
  pr->add_option("--model", g_probe.models, "model directory (repeatable)")->required();
  pr->add_option("--data", g_probe.data, "corpus directory (filler text from its val-long split)")->required();
  pr->add_option("--gaps", g_probe.gaps, "gaps between the two copies")->delimiter(',')->capture_default_str();
  pr->add_option("--span", g_probe.span, "span length")->capture_default_str();
  pr->add_option("--trials", g_probe.trials, "random spans per gap")->capture_default_str();
  add_compute_option(pr, g_eval_compute);
  add_kv_dtype_option(pr, g_eval_kv);
  add_device_option(pr, g_eval_device);
  reg.push_back({pr, [] { return run_probe(g_probe); }});

  auto* nd = app.add_subcommand("eval-needle",
                                "RULER-style single-needle tests (pass-key, number, UUID): accuracy vs context length");
  nd->add_option("--model", g_needle.models, "model directory (repeatable)")->required();
  nd->add_option("--data", g_needle.data, "corpus directory (haystack text from its val-long split, its tokenizer)")
      ->required();
  nd->add_option("--tokenizer", g_needle.tokenizer, "tokenizer PREFIX.model (default: the corpus's)");
  nd->add_option("--tasks", g_needle.tasks, "passkey, number, uuid (comma list) or all")->capture_default_str();
  nd->add_option("--lengths", g_needle.lengths, "context lengths (prompt tokens)")->delimiter(',')->capture_default_str();
  nd->add_option("--depths", g_needle.depths, "needle depths spread over the context")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  nd->add_option("--trials", g_needle.trials, "random instances per task, length and depth")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  nd->add_option("--seed", g_needle.seed, "seed of the instances and haystack offsets")->capture_default_str();
  nd->add_flag("--ttt-off-too", g_needle.ttt_off_too,
               "also evaluate every TTT-E2E model with test-time training off (phi_0 throughout): what the inner steps add");
  nd->add_option("--recall", g_needle.recall,
                 "also evaluate each model with a window again, recalling this many stretches of an exact store of "
                 "the context before answering (0: off)")
      ->capture_default_str();
  nd->add_option("--recall-mode", g_needle.recall_modes,
                 "recall modes to evaluate (comma list of window, review, both; review and both only for TTT-E2E)")
      ->capture_default_str();
  nd->add_option("--records", g_needle.records, "write every case (value, generated text, NLL) as JSON lines here");
  nd->add_option("--out", g_needle.out, "write needle_accuracy.png here");
  add_device_option(nd, g_eval_device);
  reg.push_back({nd, [] { return run_eval_needle(g_needle); }});
}

}  // namespace ttt::cli
