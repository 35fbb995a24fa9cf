#include "inference/generation.h"

#include <stdexcept>

#include "data/tokenizer.h"

namespace ttt::inference {

void check_tokenizer(const data::Tokenizer& tok, const model::ModelConfig& cfg, const std::string& what) {
  if (tok.vocab_size() != cfg.vocab_size)
    throw std::runtime_error("tokenizer " + what + " has vocab_size " + std::to_string(tok.vocab_size()) +
                             ", the model has vocab_size " + std::to_string(cfg.vocab_size));
  if (tok.bos_id() != cfg.bos_token_id)
    throw std::runtime_error("tokenizer " + what + " has BOS id " + std::to_string(tok.bos_id()) +
                             ", the model has bos_token_id " + std::to_string(cfg.bos_token_id));
}

void check_token_ids(const std::vector<int32_t>& ids, int64_t vocab_size, const std::string& what) {
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] < 0 || ids[i] >= vocab_size)
      throw std::invalid_argument(what + ": token " + std::to_string(i) + " has id " + std::to_string(ids[i]) +
                                  ", outside the vocabulary [0, " + std::to_string(vocab_size) + ")");
}

std::vector<int32_t> encode_prompt(const data::Tokenizer& tok, std::string_view text, bool new_document) {
  std::vector<int32_t> out;
  if (new_document) out.push_back(tok.bos_id());  // a new document starts with BOS
  tok.encode_append(text, out);
  return out;
}

const char* stop_reason_name(StopReason r) {
  switch (r) {
    case StopReason::kLength: return "length";
    case StopReason::kStopToken: return "stop";
    case StopReason::kCancelled: return "cancelled";
  }
  return "length";
}

GenerateResult generate(Session& s, const std::vector<int32_t>& prompt, const GenerateOptions& o,
                        const TokenCallback& on_token) {
  if (o.max_new_tokens < 0)
    throw std::invalid_argument("max_new_tokens must be >= 0, got " + std::to_string(o.max_new_tokens));
  Sampler sampler(o.sampling);  // validates before the session is touched
  const int64_t V = s.model().config().vocab_size;
  check_token_ids(prompt, V, "prompt");
  check_token_ids(o.stop_ids, V, "stop ids");
  if (prompt.empty() && s.last_logits().empty())
    throw std::invalid_argument("the prompt is empty and the session has read nothing (give at least one token)");

  GenerateResult r;
  const int64_t steps0 = s.ttt_steps();
  r.prompt_tokens = static_cast<int64_t>(prompt.size());
  // Context for the repetition penalty: the recent tokens, newest last. Trimmed to the window
  // now and then (not every token) so that long generations stay linear.
  std::vector<int32_t> context;
  const size_t keep = o.sampling.repetition_window > 0 ? static_cast<size_t>(o.sampling.repetition_window) : 0;
  auto remember = [&](int32_t t) {
    context.push_back(t);
    if (keep > 0 && context.size() > 2 * keep) context.erase(context.begin(), context.end() - keep);
  };
  std::vector<float> logits = prompt.empty() ? s.last_logits() : s.feed(prompt);
  for (int32_t t : prompt) remember(t);
  for (int64_t i = 0; i < o.max_new_tokens; ++i) {
    const int32_t t = o.pick ? o.pick(logits, context) : sampler.sample(logits, context);
    r.tokens.push_back(t);
    remember(t);
    bool last = i + 1 == o.max_new_tokens;
    for (int32_t sid : o.stop_ids)
      if (t == sid) {
        r.stop = StopReason::kStopToken;
        last = true;
      }
    if (on_token && !on_token(t, i)) {
      r.stop = StopReason::kCancelled;
      last = true;
    }
    // Feed it back; the last one only when the session is kept (its logits are not needed).
    if (!last || o.feed_last) logits = s.step(t);
    if (last) break;
  }
  r.ttt_steps = s.ttt_steps() - steps0;
  return r;
}

std::vector<double> ingest(Session& s, const std::vector<int32_t>& tokens,
                           const std::function<void(int64_t chunk, double loss)>& on_chunk) {
  check_token_ids(tokens, s.model().config().vocab_size, "tokens");
  std::vector<double> losses;
  if (tokens.empty()) return losses;
  s.feed(tokens, [&](int64_t chunk, double loss) {
    losses.push_back(loss);
    if (on_chunk) on_chunk(chunk, loss);
  });
  return losses;
}

}  // namespace ttt::inference
