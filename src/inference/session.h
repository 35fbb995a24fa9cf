// Token-by-token decoding with test-time training (SPEC section 3, "Decoding").
//
// A session is the model's memory of one document: the window caches of every layer, the
// current fast weights phi, and what the next TTT step needs (the hidden states entering the
// first prime block for the tokens since the last step, and the prime blocks' caches as they
// were when that chunk began). All of it is bounded by W and b: memory does not grow with the
// context (except for full-attention layers, whose cache is the whole context by definition).
#pragma once
#include <cstdint>
#include <vector>

#include "model/model.h"
#include "ttt/test_time_training.h"

namespace ttt::inference {

class Session {
 public:
  Session(const model::Model& m, const e2e::TTTOptions& opt = {});

  // Feeds the token at the next position; returns the logits [V] predicting the one after it.
  // When b tokens have accumulated since the last step, their targets are now all known (the
  // last one is `token`), so one TTT step on them runs first.
  std::vector<float> step(int32_t token);

  void reset();  // back to phi_0 and empty caches
  int64_t position() const { return pos_; }
  int64_t ttt_steps() const { return steps_; }
  size_t state_bytes() const;  // bytes held by the state tensors

 private:
  void ttt_step(int32_t last_target);

  const model::Model& m_;
  e2e::TTTOptions opt_;
  bool use_ttt_ = false;
  int64_t pos_ = 0, steps_ = 0;
  std::vector<model::KVCache> caches_;      // per layer
  std::vector<model::KVCache> chunk_start_; // per prime layer: caches when the pending chunk began
  model::Phi phi_;
  std::vector<Tensor> pending_h_;           // [1, d] inputs of the first prime block
  std::vector<int32_t> pending_tokens_;     // inputs of the pending chunk
  int64_t chunk_pos0_ = 0;
};

}  // namespace ttt::inference
