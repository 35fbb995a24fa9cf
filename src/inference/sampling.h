// Next-token sampling from logits: greedy, temperature, top-k, top-p (nucleus) and a CTRL-style
// repetition penalty, deterministic given the seed (ttt::Rng, the same on every platform).
//
// Order of operations for one draw:
//   1. repetition penalty: for every distinct token among the last `repetition_window` context
//      tokens (all of them when the window is 0), a positive logit is divided by the penalty and
//      a negative one multiplied by it (Keskar et al. 2019, "CTRL").
//   2. temperature 0: the argmax (lowest id on ties); no random number is drawn.
//   3. otherwise softmax(logits / temperature) in double precision, tokens sorted by probability
//      (descending, lower id first on ties), cut to the top_k most likely (0: no cut), then to
//      the smallest prefix whose probability mass reaches top_p (at least one token), and one
//      token drawn from what is left, renormalized, with one uniform number from the Rng.
#pragma once
#include <cstdint>
#include <vector>

#include "tensor/random.h"

namespace ttt::inference {

struct SamplingOptions {
  double temperature = 1.0;         // 0: greedy; must be >= 0 and finite
  int64_t top_k = 0;                // 0: off; must be >= 0
  double top_p = 1.0;               // in (0, 1]; 1: off
  double repetition_penalty = 1.0;  // > 0; 1: off; > 1 discourages repeats
  int64_t repetition_window = 64;   // how many most recent context tokens are penalized; 0: all
  uint64_t seed = 0;
};

// Throws std::invalid_argument with a one-line message naming the bad option.
void validate(const SamplingOptions& o);

class Sampler {
 public:
  explicit Sampler(const SamplingOptions& o = {});  // validates

  // Picks the next token id from logits [V]. `context` is the tokens seen so far (oldest first);
  // only its last repetition_window entries matter. Throws std::invalid_argument on empty logits
  // or a NaN logit, and when no token has a finite logit.
  int32_t sample(const std::vector<float>& logits, const std::vector<int32_t>& context = {});

  // The distribution sample() draws from (after penalty, temperature, top-k and top-p), as
  // probabilities over all V ids; greedy gives a one-hot vector. For tests and diagnostics.
  std::vector<double> distribution(const std::vector<float>& logits, const std::vector<int32_t>& context = {}) const;

  const SamplingOptions& options() const { return o_; }
  Rng& rng() { return rng_; }  // its state can be saved and restored (Rng::state / set_state)

 private:
  std::vector<double> penalized(const std::vector<float>& logits, const std::vector<int32_t>& context) const;
  // Candidate ids (most likely first) and their unnormalized probabilities after the cuts.
  void candidates(const std::vector<double>& z, std::vector<int32_t>& ids, std::vector<double>& p) const;

  SamplingOptions o_;
  Rng rng_;
};

}  // namespace ttt::inference
