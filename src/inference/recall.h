// Recall before answering (issue 13): the exact store (memory/exact_store.h) gives back the
// stretches most relevant to a prompt from what the window no longer holds, and they are put in
// front of the model in one of three ways:
//   window  read into the window just before the prompt, test-time training off from then on
//           (the fast weights stay as they were; only attention sees the recalled tokens);
//   review  read with test-time training and learned at once (one inner step on them), then the
//           window is put back as it was: only the weights took them in ("a review of past
//           mini-batches", the paper's future work);
//   both    learned at once and left in the window.
// Recall changes the session it is given: callers pass a fork unless the caller commits.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "inference/generation.h"
#include "inference/session.h"
#include "memory/exact_store.h"

namespace ttt::inference {

enum class RecallMode { kWindow, kReview, kBoth };
const char* recall_mode_name(RecallMode m);        // "window", "review", "both"
RecallMode parse_recall_mode(const std::string& s);  // throws std::invalid_argument

struct RecallOptions {
  int k = 0;  // stretches to recall (0: no recall)
  RecallMode mode = RecallMode::kWindow;
  int64_t query_tokens = 256;  // the prompt's last ids that form the query
};

struct RecallResult {
  std::vector<memory::RecalledSpan> spans;  // what was recalled, in order of position
  int64_t tokens = 0;                       // recalled tokens fed
  double seconds = 0;                       // retrieval plus feeding
};

// The positions of the store the session's window no longer holds: [0, before). Full attention
// holds everything (0); sliding windows hold the last W positions.
int64_t recall_horizon(const Session& s);

// Retrieves up to o.k stretches of `store` relevant to `prompt` from before recall_horizon(s)
// and applies them to `s` by o.mode. `prompt` must not be empty (its first id is the target of a
// review step's last token).
RecallResult recall(Session& s, const memory::ExactStore& store, const std::vector<int32_t>& prompt,
                    const RecallOptions& o);

// generate() with recall first, as `ttt generate --recall` and the server's requests run it.
// Without recall (o.k == 0 or no store) it is generate(s, prompt, go, on_token). With recall the
// answer comes from a fork of s that recalled; then, when go.feed_last (the session is kept),
// s reads the prompt and the answer only, so recall itself never enters it. Without feed_last
// s is scratch, as generate leaves it: the recall is applied to it directly. `rr` (optional)
// receives what was recalled.
GenerateResult generate_with_recall(Session& s, const memory::ExactStore* store, const std::vector<int32_t>& prompt,
                                    const GenerateOptions& go, const RecallOptions& o,
                                    const TokenCallback& on_token = {}, RecallResult* rr = nullptr);

}  // namespace ttt::inference
