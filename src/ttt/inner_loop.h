// The chunk loop of test-time training: prefill (SPEC section 3) and the meta-learning
// objective (SPEC section 4).
//
// The first L-S blocks run once over the whole sequence. The last S blocks run chunk by chunk
// (b tokens) with per-block key/value caches, so every chunk sees exactly its window. Chunk c is
// scored with phi_{c-1}; then one SGD step on its mean loss (gradient clipped to global norm 1
// over all inner weights together) gives phi_c. A partial last chunk is scored, never trained on.
#pragma once
#include <cstdint>
#include <vector>

#include "model/model.h"
#include "ttt/inner_step.h"
#include "ttt/suffix_memory.h"

namespace ttt::e2e {

struct PrefillResult {
  std::vector<float> nll;  // per input position (masked positions included)
  double loss = 0;         // mean NLL over positions whose target is not BOS
  int64_t updates = 0;     // inner steps taken
};

// Inference: no graph is kept beyond one chunk. The sequence is read in segments (the TTT
// chunks; 1024 tokens for models without prime blocks or with ttt = false), each block carrying
// its mixer state between them, so memory does not grow with the sequence beyond the windows.
PrefillResult prefill(const model::Model& m, const std::vector<int32_t>& inputs,
                      const std::vector<int32_t>& targets, const TTTOptions& opt = {});

// The training objective of one sequence, as a 0-d tensor with its graph (the model's parameters
// must require grad). Models with prime blocks: mean over chunks of each chunk's mean loss,
// chunk c scored with phi_{c-1}, differentiable through every inner update (second-order terms,
// clipping, caches, the first L-S blocks); needs T to be a multiple of b. Other models
// (pretraining, the official pretrain mode): the mean over chunks of b tokens of each chunk's
// masked mean, the whole sequence read at once.
Tensor training_loss(const model::Model& m, const std::vector<int32_t>& inputs,
                     const std::vector<int32_t>& targets, const TTTOptions& opt = {});

}  // namespace ttt::e2e
