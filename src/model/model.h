// The TTT-E2E Transformer of SPEC section 2: parameters, initialization, and the block, head and
// loss functions that prefill, decode, training and the meta-gradient are built from.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "autodiff/ops.h"
#include "model/config.h"
#include "model/sequence_memory.h"

namespace ttt::model {

struct BlockParams {
  Tensor attn_norm, wq, wk, wv, wo, q_norm, k_norm, attn_post_norm;
  Tensor mlp_norm, w1, w2, w3, mlp_post_norm;
  Tensor prime_norm, prime_w1, prime_w2, prime_w3, prime_post_norm;  // undefined outside the suffix
};


// Inner (fast) weights: for each prime block, in order, {w1, w3, w2} of its prime MLP.
using Phi = std::vector<Tensor>;

// How a model holds its large weight matrices in memory (see bf16_weight()).
//   F32:  everything float32 (training, gradients; BF16 files widen at load).
//   BF16: the large matrices bfloat16, inference only: half the memory, and a decode step
//         streams half the bytes. A float32 file is rounded to nearest even at load.
//   Auto: BF16 if the file stores them as BF16 (what a user who saved a bf16 model expects),
//         else F32.
enum class Weights { F32, BF16, Auto };
// Parses "f32", "bf16" or "auto" (a one-line error otherwise).
Weights parse_weights(const std::string& text);

// Storage dtype of model files: F32, or BF16 for the large matrices (norms stay F32: they are
// tiny, and rounding them buys nothing).
enum class Storage { F32, BF16 };

class Model {
 public:
  // N(0, initializer_range) for matrices and the embedding, ones for norm weights. float64
  // models run the same code for gradient checks.
  static Model init(const ModelConfig& cfg, uint64_t seed, DType dtype = DType::F32);
  // Requires exactly the tensors of parameter_shapes(cfg); converts them to `dtype`.
  static Model from_tensors(const ModelConfig& cfg, std::map<std::string, Tensor> tensors,
                            DType dtype = DType::F32);
  // DIR/config.json + DIR/model.safetensors. Training and gradients need Weights::F32 (a model
  // with bf16 weights refuses set_requires_grad); inference may keep them bf16.
  static Model load(const std::string& dir, Weights weights = Weights::Auto);
  void save(const std::string& dir, Storage storage = Storage::F32) const;  // atomic writes

  // The parameters that may be held as bf16: the attention projections, the block MLPs and the
  // embedding / head, i.e. every large matrix the inner TTT step does not update. The prime MLPs
  // (phi_0, the fast weights' start) and the norms always stay float32, as do the recurrent
  // baselines' parameters.
  static bool bf16_weight(const std::string& name);
  // The same model with its bf16-eligible matrices rounded to bf16 (inference only).
  Model with_bf16_weights() const;
  bool has_bf16_weights() const;
  // Products with the bf16 weights: float32 x bf16 (off) or bf16 x bf16 with float32
  // accumulation (on: `--compute bf16`, AVX512_BF16). A property of this model's weights that the
  // backend reads per product, not a process-wide switch.
  void set_bf16_products(bool on);
  // The device every parameter lives on (and every op of this model runs on).
  Device device() const { return final_norm_.device(); }
  // The same model on another device (the parameters copied; *this when already there).
  Model to(Device device) const;
  // The compute (activation) dtype: float32, or float64 for the gradient-check models.
  DType dtype() const { return final_norm_.dtype(); }

  const ModelConfig& config() const { return cfg_; }
  const std::vector<std::pair<std::string, Tensor>>& named_parameters() const { return params_; }
  std::vector<Tensor> parameters() const;
  void set_requires_grad(bool r);

  const Tensor& embed() const { return embed_; }
  const BlockParams& block(int64_t l) const { return blocks_[l]; }
  Phi phi0() const;  // the checkpoint's prime weights (the tensors themselves)

  // The sequence mixer of block l (sequence_memory.h): it defines the block's state.
  const SequenceMixer& mixer(int64_t l) const { return *mixers_[l]; }

  // h [T, d] at absolute positions pos0..pos0+T-1 through block l. state: what the block's mixer
  // carried from earlier tokens (may be null: none); new_state, if given, receives the state the
  // next call needs. phi: {w1, w3, w2} for a prime block (else ignored; null uses the
  // checkpoint's).
  Tensor block_forward(int64_t l, const Tensor& h, int64_t pos0, const MixerState* state, MixerState* new_state,
                       const Tensor* phi = nullptr) const;
  Tensor embed_tokens(const std::vector<int32_t>& ids) const;
  Tensor logits(const Tensor& h) const;  // final norm and (tied) head: [T, V]
  // Per-token NLL [T] of targets given final hidden states, computed in row blocks so that long
  // sequences never hold a [T, V] logits matrix (when no graph is being recorded).
  Tensor token_nll(const Tensor& h, const std::vector<int32_t>& targets) const;

 private:
  ModelConfig cfg_;
  std::vector<std::pair<std::string, Tensor>> params_;
  Tensor embed_, final_norm_, lm_head_;
  std::vector<BlockParams> blocks_;
  std::vector<std::shared_ptr<const SequenceMixer>> mixers_;  // immutable, shared by copies
  void bind();
};

// Loss mask: 1 where the target is not BOS.
std::vector<double> target_mask(const std::vector<int32_t>& targets, int32_t bos);
// sum(nll * mask) / max(1, count): mean masked loss as a 0-d tensor (differentiable in nll).
Tensor masked_mean(const Tensor& nll, const std::vector<int32_t>& targets, int32_t bos);

// Name of the first parameter holding a NaN or an infinity ("" if every weight is finite).
std::string first_nonfinite_parameter(const Model& m);

}  // namespace ttt::model
