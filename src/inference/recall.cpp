#include "inference/recall.h"

#include <chrono>
#include <stdexcept>

#include "io/messages.h"

namespace ttt::inference {

const char* recall_mode_name(RecallMode m) {
  switch (m) {
    case RecallMode::kWindow: return "window";
    case RecallMode::kReview: return "review";
    case RecallMode::kBoth: return "both";
  }
  return "?";
}

RecallMode parse_recall_mode(const std::string& s) {
  if (s == "window") return RecallMode::kWindow;
  if (s == "review") return RecallMode::kReview;
  if (s == "both") return RecallMode::kBoth;
  throw std::invalid_argument("recall mode must be window, review or both, got " + io::one_line(s, 40));
}

int64_t recall_horizon(const Session& s) {
  const auto& cfg = s.model().config();
  int64_t window = 0;  // the largest window any layer sees through; 0: a layer sees everything
  bool full = false;
  for (int64_t l = 0; l < cfg.num_hidden_layers; ++l) {
    if (cfg.is_recurrent(l)) continue;
    const int64_t w = cfg.window_of(l);
    if (w <= 0) full = true;
    window = std::max(window, w);
  }
  if (full) return 0;
  return std::max<int64_t>(0, s.position() - window);
}

RecallResult recall(Session& s, const memory::ExactStore& store, const std::vector<int32_t>& prompt,
                    const RecallOptions& o) {
  RecallResult r;
  if (o.k <= 0) return r;
  if (prompt.empty()) throw std::invalid_argument("recall: an empty prompt has nothing to recall for");
  const auto t0 = std::chrono::steady_clock::now();
  r.spans = store.retrieve(prompt, o.k, recall_horizon(s), o.query_tokens);
  std::vector<int32_t> ids;
  for (const auto& sp : r.spans) ids.insert(ids.end(), sp.tokens.begin(), sp.tokens.end());
  r.tokens = static_cast<int64_t>(ids.size());
  if (!ids.empty()) {
    switch (o.mode) {
      case RecallMode::kWindow:
        s.stop_learning();
        s.feed(ids);
        break;
      case RecallMode::kReview: s.learn_now(ids, prompt[0], /*keep_in_window=*/false); break;
      case RecallMode::kBoth: s.learn_now(ids, prompt[0], /*keep_in_window=*/true); break;
    }
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

GenerateResult generate_with_recall(Session& s, const memory::ExactStore* store, const std::vector<int32_t>& prompt,
                                    const GenerateOptions& go, const RecallOptions& o, const TokenCallback& on_token,
                                    RecallResult* rr) {
  if (o.k <= 0 || !store) return generate(s, prompt, go, on_token);
  if (prompt.empty()) throw std::invalid_argument("recall needs a prompt to recall for");
  auto answer = [&](Session& w) {
    const RecallResult got = recall(w, *store, prompt, o);
    if (rr) *rr = got;
    GenerateOptions gw = go;
    gw.feed_last = false;
    return generate(w, prompt, gw, on_token);
  };
  if (!go.feed_last) return answer(s);
  Session w = s.fork();
  GenerateResult r = answer(w);
  std::vector<int32_t> read = prompt;
  read.insert(read.end(), r.tokens.begin(), r.tokens.end());
  s.feed(read);
  return r;
}

}  // namespace ttt::inference
