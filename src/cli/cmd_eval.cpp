// `ttt eval-long` and `ttt probe`: the long-context comparisons of several models on a corpus.
#include <cstdio>
#include <filesystem>

#include <unistd.h>

#include "cli/commands.h"
#include "data/dataset.h"
#include "eval/report_tables.h"
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

std::string base_name(std::string dir) {
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  return dir.substr(dir.find_last_of('/') + 1);
}

std::FILE* progress() { return isatty(fileno(stderr)) ? stderr : nullptr; }

int run_eval_long(const EvalLongArgs& a) {
  const auto ds = data::Dataset::open(a.data);
  std::vector<model::Model> ms;
  for (auto& d : a.models) {
    ms.push_back(model::Model::load(d));
    ds.check_model(ms.back().config().vocab_size, ms.back().config().bos_token_id);
  }
  std::vector<eval::NamedModel> named;
  for (size_t i = 0; i < ms.size(); ++i) named.push_back({base_name(a.models[i]), &ms[i]});
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
  std::vector<model::Model> ms;
  for (auto& d : a.models) ms.push_back(model::Model::load(d));
  std::vector<eval::NamedModel> named;
  for (size_t i = 0; i < ms.size(); ++i) named.push_back({base_name(a.models[i]), &ms[i]});
  eval::print_span_probe(eval::span_probe_eval(named, ds, a.gaps, a.span, a.trials, progress()), stdout);
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
  reg.push_back({el, [] { return run_eval_long(g_long); }});

  auto* pr = app.add_subcommand("probe", "Recall probe: NLL of a repeated random span after gaps shorter and longer than the window");
  pr->add_option("--model", g_probe.models, "model directory (repeatable)")->required();
  pr->add_option("--data", g_probe.data, "corpus directory (filler text from its val-long split)")->required();
  pr->add_option("--gaps", g_probe.gaps, "gaps between the two copies")->delimiter(',')->capture_default_str();
  pr->add_option("--span", g_probe.span, "span length")->capture_default_str();
  pr->add_option("--trials", g_probe.trials, "random spans per gap")->capture_default_str();
  reg.push_back({pr, [] { return run_probe(g_probe); }});
}

}  // namespace ttt::cli
