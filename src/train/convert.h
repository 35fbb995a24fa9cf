// `ttt convert`: a pretrained full-attention or SWA checkpoint becomes a TTT-E2E one whose
// function is unchanged at the start (the paper's cheaper recipe: pretrain, then meta-learn).
//
// The last `suffix_len` blocks get prime MLPs with freshly initialized W1, W3, W2 and a prime
// post-norm weight of zero, so the prime branch adds exactly 0 until meta-learning grows that
// weight. Full attention becomes SWA with the given window (the converted model is an SWA model:
// TTT-E2E carries long context in phi, not in the window).
#pragma once
#include <cstdint>

#include "model/model.h"

namespace ttt::train {

struct ConvertOptions {
  int64_t suffix_len = 0;         // 0: a quarter of the layers (the paper's choice), at least 1
  int64_t window = 0;             // 0: keep the model's window (required for full-attention models)
  int64_t mini_batch_size = 0;    // 0: keep
  uint64_t seed = 0;
};

model::Model convert_to_ttt(const model::Model& m, const ConvertOptions& opt);

}  // namespace ttt::train
