// Small model configurations shared by the test files.
#pragma once
#include <cstdint>

#include "model/config.h"

namespace ttt::test {

// Three layers (two prime when `prime`), window 6, b 4: several chunks and window wrap-arounds
// within a few dozen tokens.
inline model::ModelConfig session_config(bool prime, int64_t full_every = 0) {
  model::ModelConfig c;
  c.vocab_size = 13;
  c.hidden_size = 16;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 2;
  c.intermediate_size = 24;
  c.seq_modeling_block = "SWA";
  c.sliding_window_size = 6;
  c.full_attention_every = full_every;
  c.mini_batch_size = 4;
  c.prime = prime;
  c.suffix_len = prime ? 2 : 0;
  c.rope_theta = 10000;
  c.bos_token_id = 0;
  c.initializer_range = 0.2;
  return c;
}

}  // namespace ttt::test
