// AdamW with decoupled weight decay (SPEC section 4: beta 0.9 / 0.95, weight decay 0.1), the
// learning-rate schedule (linear warmup, cosine decay to a floor) and the inner learning-rate
// warmup of meta-learning: the official recipe (optax's adamw without a mask and
// warmup_cosine_decay_schedule with init 0; the official ilr multiplier), so that fine-tuning an
// imported model trains as the official code would.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "tensor/tensor.h"

namespace ttt::train {

struct AdamWOptions {
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.1;
  // false (the official recipe): weight decay on every parameter. true: matrices only (rank >= 2),
  // not norm weights, as many Transformer recipes do.
  bool decay_matrices_only = false;
};

class AdamW {
 public:
  // params: name and tensor (updated in place).
  AdamW(std::vector<std::pair<std::string, Tensor>> params, const AdamWOptions& opt);
  void step(const std::vector<Tensor>& grads, double lr);
  int64_t steps() const { return t_; }
  void set_steps(int64_t t) { t_ = t; }

  // Moments as named tensors ("m.<name>", "v.<name>") for checkpoints, and back. Sharded: the
  // kept parameters' moments only (load_state still needs every one and drops the others).
  std::vector<std::pair<std::string, Tensor>> state_tensors() const;
  void load_state(const std::vector<std::pair<std::string, Tensor>>& tensors, int64_t steps);

  // ZeRO-1: keep moments for, and update, only the parameters where keep[i] is true; step()
  // leaves the others alone (another rank updates them and sends them).
  void shard(const std::vector<bool>& keep);
  bool keeps(size_t i) const { return m_[i].defined(); }
  // The moments of parameter i (undefined when sharded away), and replacing them.
  std::pair<Tensor, Tensor> moments(size_t i) const { return {m_[i], v_[i]}; }
  const std::vector<std::pair<std::string, Tensor>>& params() const { return params_; }

 private:
  std::vector<std::pair<std::string, Tensor>> params_;
  std::vector<Tensor> m_, v_;
  AdamWOptions opt_;
  int64_t t_ = 0;
};

// The learning rate of 0-based step `step`: optax.warmup_cosine_decay_schedule(init_value 0,
// peak, warmup, decay_steps = total, end_value = floor): peak * step / warmup during the warmup
// (0 at step 0), then cosine decay to `floor` at `total`.
double cosine_lr(int64_t step, int64_t total, int64_t warmup, double peak, double floor);
// Inner learning-rate multiplier of 0-based step `step`, as the official code computes it:
// init + (1 - init) * min(1, (step + 1) / warmup); 1.0 when warmup is 0.
double inner_lr_warmup(int64_t step, int64_t warmup, double init);

// sqrt of the sum of squares of all gradients, and scaling them in place to at most max_norm.
double clip_global_norm(std::vector<Tensor>& grads, double max_norm);

}  // namespace ttt::train
