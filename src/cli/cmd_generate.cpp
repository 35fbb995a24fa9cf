// `ttt generate`: decode with test-time training from a prompt, sampling new tokens.
//
// The prompt is fed through a Session (its bulk path; a TTT step runs whenever b tokens have
// accumulated); then max-new-tokens tokens are sampled, each fed back, so TTT steps continue
// every b tokens. --state-in continues a saved document (the prompt may then be empty: the
// state holds the logits of its last step); --state-out saves the document after the last
// generated token has been fed, so that a later run continues exactly where this one ended.
// With --tokenizer, --prompt-text is encoded (after BOS, unless --state-in continues a
// document) and the generated tokens are printed as text (their ids go to stderr). The prompt
// rules, feeding, sampling and stopping are inference::generate's (inference/generation.h),
// shared with the needle evaluation and `ttt serve`.
#include <charconv>
#include <cstdio>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "data/tokenizer.h"
#include "inference/generation.h"
#include "inference/recall.h"
#include "inference/sampling.h"
#include "inference/session.h"
#include "io/tokens.h"
#include "memory/exact_store.h"
#include "model/model.h"

namespace ttt::cli {
namespace {

struct GenerateArgs {
  std::string model, prompt_tokens, prompt, state_in, state_out, out, tokenizer, prompt_text;
  bool have_prompt = false, have_prompt_text = false;
  int64_t max_new_tokens = 16;
  inference::SamplingOptions sampling;
  bool no_ttt = false;
  // The exact store and recall (inference/recall.h).
  std::string store, store_policy = "all", recall_mode = "window";
  std::string compute = "f32", device = "cpu", kv = "f32";
  int64_t store_budget = 0, store_span = 64;
  int recall = 0;
} g_gen;

std::vector<int32_t> parse_prompt(const std::string& text) {
  std::vector<int32_t> out;
  size_t i = 0;
  while (i < text.size()) {
    const char c = text[i];
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == ',') {
      ++i;
      continue;
    }
    int64_t v = 0;
    auto [p, ec] = std::from_chars(text.data() + i, text.data() + text.size(), v);
    const size_t end = static_cast<size_t>(p - text.data());
    if (ec != std::errc() || (end < text.size() && text[end] != ' ' && text[end] != '\t' && text[end] != ',' &&
                              text[end] != '\n' && text[end] != '\r')) {
      size_t stop = i;
      while (stop < text.size() && text[stop] != ' ' && text[stop] != ',') ++stop;
      throw std::runtime_error("--prompt: '" + text.substr(i, stop - i) + "' is not a token id");
    }
    if (v < INT32_MIN || v > INT32_MAX) throw std::runtime_error("--prompt: token id " + text.substr(i, end - i) + " is out of range");
    out.push_back(static_cast<int32_t>(v));
    i = end;
  }
  return out;
}

int run_generate() {
  const auto& a = g_gen;
  if (a.max_new_tokens < 0) throw std::runtime_error("--max-new-tokens must be >= 0, got " + std::to_string(a.max_new_tokens));
  inference::validate(a.sampling);  // before any loading
  const auto m = load_model(a.model, model::Weights::Auto, a.compute, a.device);
  const auto& cfg = m.config();

  std::optional<data::Tokenizer> tok;
  if (!a.tokenizer.empty()) {
    tok = data::Tokenizer::load(a.tokenizer);
    inference::check_tokenizer(*tok, cfg, a.tokenizer);
  }
  if (a.have_prompt_text && !tok) throw std::runtime_error("--prompt-text needs --tokenizer PREFIX.model");

  std::vector<int32_t> prompt;
  if (!a.prompt_tokens.empty()) prompt = io::read_tokens(a.prompt_tokens);
  else if (a.have_prompt) prompt = parse_prompt(a.prompt);
  else if (a.have_prompt_text) prompt = inference::encode_prompt(*tok, a.prompt_text, /*new_document=*/a.state_in.empty());
  inference::check_token_ids(prompt, cfg.vocab_size, a.prompt_tokens.empty() ? std::string("--prompt") : a.prompt_tokens);

  e2e::TTTOptions opt;
  opt.ttt = !a.no_ttt;
  opt.kv_dtype = model::parse_kv_dtype(a.kv);
  inference::Session s(m, opt);
  if (!a.state_in.empty()) {
    s.restore_state(a.state_in);
    if (a.no_ttt && s.options().ttt)
      throw std::runtime_error("--no-ttt: the state in " + a.state_in + " was saved with test-time training on");
  }
  if (prompt.empty() && s.last_logits().empty())
    throw std::runtime_error(a.state_in.empty() ? "the prompt is empty (give at least one token)"
                                                : "the prompt is empty and the state in " + a.state_in +
                                                      " is at position 0 (give at least one token)");

  // The exact store reads exactly what the saved session reads: nothing without --state-out.
  std::unique_ptr<memory::ExactStore> store;
  if (!a.store.empty()) {
    memory::StoreOptions so;
    so.policy = memory::parse_keep_policy(a.store_policy);
    so.budget_bytes = a.store_budget;
    so.span_tokens = a.store_span;
    store = std::make_unique<memory::ExactStore>(a.store, so);
    if (store->size() != s.position())
      throw std::runtime_error("--store " + a.store + " has read " + std::to_string(store->size()) +
                               " tokens but the session is at position " + std::to_string(s.position()) +
                               ": not this session's store");
  }
  inference::RecallOptions ro;
  ro.k = a.recall;
  ro.mode = inference::parse_recall_mode(a.recall_mode);
  if (ro.k < 0) throw std::runtime_error("--recall must be >= 0");
  if (ro.k > 0 && !store) throw std::runtime_error("--recall needs --store FILE (the session's exact store)");
  if (ro.k > 0 && prompt.empty()) throw std::runtime_error("--recall needs a prompt to recall for");
  std::vector<std::pair<int64_t, std::vector<float>>> nll_events;  // for the store, on commit
  s.set_nll_observer([&](int64_t pos, const std::vector<float>& nll) { nll_events.emplace_back(pos, nll); });

  inference::GenerateOptions go;
  go.max_new_tokens = a.max_new_tokens;
  go.sampling = a.sampling;
  go.feed_last = !a.state_out.empty();  // a saved state has read its whole answer
  // Recall on a fork: the session itself reads only the prompt and the answer (when kept).
  inference::RecallResult rr;
  const std::vector<int32_t> generated =
      inference::generate_with_recall(s, store.get(), prompt, go, ro, {}, &rr).tokens;
  if (ro.k > 0)
    std::fprintf(stderr, "recall: %zu stretches, %lld tokens, %s mode, %.3f s\n", rr.spans.size(),
                 static_cast<long long>(rr.tokens), inference::recall_mode_name(ro.mode), rr.seconds);
  if (store && !a.state_out.empty()) {
    std::vector<int32_t> read = prompt;
    read.insert(read.end(), generated.begin(), generated.end());
    store->append(read);
    for (const auto& [pos, nll] : nll_events) store->set_losses(pos, nll);
  }

  std::string line;
  for (size_t i = 0; i < generated.size(); ++i) {
    if (i) line += ' ';
    line += std::to_string(generated[i]);
  }
  if (tok) {
    const std::string text = tok->decode(generated);
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::printf("\n");
    std::fprintf(stderr, "ids: %s\n", line.c_str());
  } else {
    std::printf("%s\n", line.c_str());
  }
  if (!a.out.empty()) io::write_tokens(a.out, generated);
  if (!a.state_out.empty()) s.save_state(a.state_out);
  std::fflush(stdout);
  return 0;
}

}  // namespace

void register_generate(CLI::App& app, Registry& reg) {
  auto* g = app.add_subcommand("generate", "Sample new tokens after a prompt, with test-time training while decoding");
  g->add_option("--model", g_gen.model, "model directory")->required();
  add_compute_option(g, g_gen.compute);
  add_kv_dtype_option(g, g_gen.kv);
  add_device_option(g, g_gen.device);
  auto* pt = g->add_option("--prompt-tokens", g_gen.prompt_tokens, "prompt as an int32 little-endian token file");
  auto* pr = g->add_option("--prompt", g_gen.prompt, "prompt as token ids, e.g. \"1 2 3\"")
                 ->each([](const std::string&) { g_gen.have_prompt = true; });
  pt->excludes(pr);
  auto* ptx = g->add_option("--prompt-text", g_gen.prompt_text, "prompt as text (needs --tokenizer)")
                  ->each([](const std::string&) { g_gen.have_prompt_text = true; });
  ptx->excludes(pt);
  ptx->excludes(pr);
  g->add_option("--tokenizer", g_gen.tokenizer, "PREFIX.model: print the generated tokens as text (ids on stderr)");
  g->add_option("--max-new-tokens", g_gen.max_new_tokens, "number of tokens to generate")->capture_default_str();
  g->add_option("--temperature", g_gen.sampling.temperature, "softmax temperature (0 = greedy)")->capture_default_str();
  g->add_option("--top-k", g_gen.sampling.top_k, "sample among the k most likely tokens (0 = off)")->capture_default_str();
  g->add_option("--top-p", g_gen.sampling.top_p, "nucleus sampling mass in (0, 1] (1 = off)")->capture_default_str();
  g->add_option("--repetition-penalty", g_gen.sampling.repetition_penalty,
                "CTRL-style penalty for recently seen tokens (1 = off)")
      ->capture_default_str();
  g->add_option("--repetition-window", g_gen.sampling.repetition_window,
                "how many recent tokens the penalty looks at (0 = all fed in this run)")
      ->capture_default_str();
  g->add_option("--seed", g_gen.sampling.seed, "sampling seed")->capture_default_str();
  g->add_flag("--no-ttt", g_gen.no_ttt, "keep phi_0 (no inner updates)");
  g->add_option("--state-in", g_gen.state_in, "restore a saved session state before the prompt");
  g->add_option("--state-out", g_gen.state_out, "save the session state after generating");
  g->add_option("--out", g_gen.out, "also write the generated ids as int32 little-endian");
  g->add_option("--store", g_gen.store,
                "the session's exact store (SQLite; created if absent): with --state-out it keeps every token the "
                "session reads; --recall reads from it");
  g->add_option("--store-policy", g_gen.store_policy, "all, or surprising (the highest-loss spans within --store-budget)")
      ->capture_default_str();
  g->add_option("--store-budget", g_gen.store_budget, "bytes the surprising policy keeps")->capture_default_str();
  g->add_option("--store-span", g_gen.store_span, "tokens per retrieval span (fixed when the store is created)")
      ->capture_default_str();
  g->add_option("--recall", g_gen.recall, "recall this many stretches of the store relevant to the prompt (0: off)")
      ->capture_default_str();
  g->add_option("--recall-mode", g_gen.recall_mode,
                "window (read them into the window, no learning), review (learn them, window unchanged) or both")
      ->capture_default_str();
  reg.push_back({g, run_generate});
}

}  // namespace ttt::cli
