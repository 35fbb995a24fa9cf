// Token-by-token decoding with test-time training (SPEC section 3, "Decoding").
//
// A session is the model's memory of one document: every block's mixer state (sequence_memory.h:
// for attention the window caches), the
// current fast weights phi, and what the next TTT step needs (the hidden states entering the
// first prime block for the tokens since the last step, and the prime blocks' caches as they
// were when that chunk began). All of it is bounded by W and b: memory does not grow with the
// context (except for full-attention layers, whose cache is the whole context by definition).
//
// The state can be saved to a file and restored (save_state / restore_state / load_state),
// forked (an independent deep copy) and reset to phi_0. Restoring and continuing gives exactly
// the same logits, bit for bit, as never having stopped.
//
// State file: a safetensors file (io/safetensors.h, written atomically) whose metadata holds
//   format "ttt-session", version "1", model_config (config_to_json text of the model),
//   param_checksum (64-bit hash of every parameter's name, shape and values, hex), model_dtype,
//   position, ttt_steps, chunk_start_position, pending_tokens (space-separated ids),
//   ttt ("true"/"false"), inner_lr, clip_norm (%.17g), kv_dtype ("bf16" only for a bf16 cache; absent: f32)
// and the tensors (float32; float64 for float64 models; a bf16 window cache as bf16). A session's
// kv dtype is fixed when it is made: restore_state refuses a file with another one (one line),
// load_state makes the session the file describes.
//   cache.{l}.{name}                  every layer l's mixer state, one tensor per name of its
//                                     mixer (attention: k, v [n, H, head_dim], n may be 0)
//   chunk_start.{l}.{name}            the same for every prime layer l when the chunk began
//   phi.{l}.w1, phi.{l}.w3, phi.{l}.w2  the current fast weights of every prime layer l
//   pending_h                         [pending, d] inputs of the first prime block
//   last_logits                       [V] (or [0] at position 0): what the last step returned
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "model/model.h"
#include "ttt/inner_loop.h"
#include "ttt/suffix_memory.h"

namespace ttt::inference {

class Session {
 public:
  static constexpr const char* kStateFormat = "ttt-session";
  static constexpr const char* kStateVersion = "1";

  Session(const model::Model& m, const e2e::TTTOptions& opt = {});

  // Feeds the token at the next position; returns the logits [V] predicting the one after it.
  // When b tokens have accumulated since the last step, their targets are now all known (the
  // last one is `token`), so one TTT step on them runs first. The same as feed({token}).
  std::vector<float> step(int32_t token);

  // The bulk path: feeds many tokens at once, running every block over segments of up to b
  // tokens (up to 1024 without TTT) instead of one token at a time; TTT steps happen exactly where
  // step() would take them. Returns the logits after the last token (last_logits()). The state
  // afterwards is the one stepping would give, up to float rounding (matrix products over
  // several rows may round differently from one row at a time). Token ids are checked first: a
  // bad one throws std::invalid_argument and changes nothing.
  std::vector<float> feed(const std::vector<int32_t>& tokens);
  // The same, and on_step sees every TTT step this feed takes: the index of the chunk it trained
  // on (0-based) and that chunk's mean NLL over its targets that are not BOS, scored with the
  // fast weights from before the step (what a reader learned from; SPEC section 3).
  using StepObserver = std::function<void(int64_t chunk, double loss)>;
  std::vector<float> feed(const std::vector<int32_t>& tokens, const StepObserver& on_step);

  void reset();  // back to phi_0 and empty caches (the TTT options are kept)

  // Sees every TTT step's per-token NLL (scored before the step): nll[i] is the loss with which
  // the token at position pos + i was predicted (the exact store records it).
  using NllObserver = std::function<void(int64_t pos, const std::vector<float>& nll)>;
  void set_nll_observer(NllObserver f) { nll_observer_ = std::move(f); }
  // Sees every token the session reads, at its position (the exact store keeps them): called by
  // feed (and step) once the ids are checked, before they are read. Tokens that learn_now reads
  // without keeping them in the window are not reported (the position does not move).
  // Observers are not part of the state: forks start without them, saves do not keep them.
  using ReadObserver = std::function<void(int64_t pos, const std::vector<int32_t>& tokens)>;
  void set_read_observer(ReadObserver f) { read_observer_ = std::move(f); }

  // For recall (inference/recall.h), on a fork that reads recalled text:
  // test-time training off for the rest of this session (what it reads only enters the window);
  void stop_learning();
  // feeds `tokens`, then takes the TTT step on the pending chunk at once (a partial chunk whose
  // last target is `next`) instead of waiting for b tokens. keep_in_window false: afterwards the
  // mixer states, position and pending chunk are those from before the call; only the fast
  // weights (and the step count) changed. Without TTT: feeds them, or does nothing.
  void learn_now(const std::vector<int32_t>& tokens, int32_t next, bool keep_in_window);

  // An independent copy (every state tensor is copied): stepping either one never affects the
  // other, and both continue exactly as this session would.
  Session fork() const;

  // Writes the whole state atomically (see the file layout above). Throws std::runtime_error.
  void save_state(const std::string& path) const;
  // Replaces this session's state (TTT options included) with the one in `path`. Every problem
  // (unreadable file, wrong format or version, a different model config or parameters, missing
  // or unexpected tensors, wrong shapes, inconsistent counts) throws a one-line
  // std::runtime_error naming the file and the problem, and leaves the session unchanged.
  void restore_state(const std::string& path);
  static Session load_state(const model::Model& m, const std::string& path);

  int64_t position() const { return s_.pos; }
  int64_t ttt_steps() const { return s_.steps; }
  int64_t pending_tokens() const { return static_cast<int64_t>(s_.pending_tokens.size()); }
  int64_t chunk_start_position() const { return s_.chunk_pos0; }
  const e2e::TTTOptions& options() const { return s_.opt; }
  bool ttt_enabled() const { return s_.use_ttt; }
  // The logits returned by the most recent step (empty at position 0); kept in the state so that
  // a restored session can sample its next token without feeding another one.
  const std::vector<float>& last_logits() const { return s_.last_logits; }
  const model::Model& model() const { return m_; }
  size_t state_bytes() const;  // bytes held by the state tensors

 private:
  struct State {
    e2e::TTTOptions opt;
    bool use_ttt = false;
    int64_t pos = 0, steps = 0;
    std::vector<model::MixerState> caches;  // per layer: its mixer's state
    // The suffix memory the next TTT step reads the pending chunk with: the suffix blocks'
    // mixer states when the chunk began, and the current fast weights (they change only at a step).
    e2e::SuffixMemory chunk;
    std::vector<Tensor> pending_h;            // [n, d] row groups: inputs of the first prime block
    std::vector<int32_t> pending_tokens;      // inputs of the pending chunk
    int64_t chunk_pos0 = 0;
    std::vector<float> last_logits;
  };

  double ttt_step(int32_t last_target);  // returns the chunk's loss before the step
  void rebase_chunk_state(int64_t i, const model::MixerState& now, int64_t gap);
  State read_state(const std::string& path) const;
  uint64_t param_checksum() const;

  const model::Model& m_;
  State s_;
  NllObserver nll_observer_;
  ReadObserver read_observer_;
  mutable uint64_t checksum_ = 0;  // of m_'s parameters, computed on first use
  mutable bool have_checksum_ = false;
};

}  // namespace ttt::inference
