// The inference API: what `ttt generate`, the needle evaluation and `ttt serve` share.
//
// One place owns the rules that every caller must get the same way:
//   - the prompt: text is encoded with the tokenizer; a new document (a session at position 0)
//     starts with BOS, a continued one does not; token ids are checked against the vocabulary
//     before anything is fed;
//   - feeding: the prompt goes through Session::feed (the bulk path: TTT steps at the same places
//     as token-by-token decoding); an empty prompt continues from the session's last logits;
//   - sampling: inference::Sampler (temperature, top-k, top-p, seed, repetition penalty over the
//     prompt and the generated tokens), or a caller's own rule;
//   - stopping: max_new_tokens, a stop id (EOS, ...), or the per-token callback returning false
//     (streaming, client disconnects);
//   - what the session has seen afterwards: every generated token is fed back except the last,
//     unless feed_last (a session that is kept, or saved, must have read its own answer).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "inference/sampling.h"
#include "inference/session.h"

namespace ttt::data {
class Tokenizer;
}

namespace ttt::inference {

// Checks a tokenizer against a model (same vocabulary size and BOS id); throws
// std::runtime_error naming `what` (e.g. the tokenizer's path) and both values.
void check_tokenizer(const data::Tokenizer& tok, const model::ModelConfig& cfg, const std::string& what);

// Throws std::invalid_argument "<what>: token I has id X, outside the vocabulary [0, V)" for the
// first id out of range.
void check_token_ids(const std::vector<int32_t>& ids, int64_t vocab_size, const std::string& what);

// The BOS rule: text encoded after the BOS id when `new_document` (nothing read yet), without it
// when continuing. BOS is the tokenizer's (check_tokenizer makes it the model's too).
std::vector<int32_t> encode_prompt(const data::Tokenizer& tok, std::string_view text, bool new_document);

// Why generation ended.
enum class StopReason { kLength, kStopToken, kCancelled };
const char* stop_reason_name(StopReason r);  // "length", "stop", "cancelled"

struct GenerateOptions {
  int64_t max_new_tokens = 16;
  SamplingOptions sampling;
  std::vector<int32_t> stop_ids;  // generation ends after any of these (it is returned)
  bool feed_last = false;         // feed the last generated token too (the session is kept)
  // Replaces the sampler when set: picks the next id from the logits and the recent context.
  std::function<int32_t(const std::vector<float>& logits, const std::vector<int32_t>& context)> pick;
};

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated ids, in order
  StopReason stop = StopReason::kLength;
  int64_t prompt_tokens = 0;    // how many prompt ids were fed
  int64_t ttt_steps = 0;        // TTT steps taken while feeding the prompt and the answer
};

// Called with each new token and its index; return false to stop after it (cancellation).
using TokenCallback = std::function<bool(int32_t token, int64_t index)>;

// Feeds `prompt` (may be empty when the session has read something: its last logits are used),
// then samples up to max_new_tokens ids. Options and ids are validated before the session is
// touched (std::invalid_argument); an empty prompt at position 0 is std::invalid_argument too.
GenerateResult generate(Session& s, const std::vector<int32_t>& prompt, const GenerateOptions& o,
                        const TokenCallback& on_token = {});

// Reading without generating: feeds `tokens` and returns, for every chunk whose TTT step this
// feed takes, the chunk's mean NLL over its targets that are not BOS, scored with the fast
// weights from before the step (SPEC section 3; the chunk means of `ttt eval --nll-out`).
// on_chunk (optional) sees each one as it is taken (streamed progress).
std::vector<double> ingest(Session& s, const std::vector<int32_t>& tokens,
                           const std::function<void(int64_t chunk, double loss)>& on_chunk = {});

}  // namespace ttt::inference
