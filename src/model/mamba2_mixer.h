// Mamba 2 as a sequence mixer (SPEC section 9; state-spaces/mamba modules/mamba2.py with
// ngroups 1, and ssd_minimal.py for the chunked scan):
//   in_proj -> z, xBC, dt; xBC through a causal depthwise conv1d (width d_conv) and SiLU, split
//   into x [T, H, P], B [T, N], C [T, N]; dt = softplus(dt + dt_bias); A = -exp(A_log);
//   per head the selective state space h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T,
//   y_t = h_t C_t + D x_t; then RMSNorm(y * silu(z)) (norm after the gate) and out_proj.
// The scan is the chunked SSD algorithm (ssd_minimal): within a chunk of chunk_size tokens the
// quadratic matrix form with decays exp(segsum(dt A)); across chunks the states, carried by a
// scan. A chunk of one token is exactly the recurrence, which is the decode step. Its state is
// {conv: the last d_conv - 1 inputs of the conv [d_conv-1, conv_dim], ssm: h [H, P, N]}: the
// same size at every position.
#pragma once
#include "model/config.h"
#include "model/sequence_memory.h"

namespace ttt::model {

struct Mamba2Params {
  Tensor in_proj, conv_weight, conv_bias, dt_bias, A_log, D, norm_weight, out_proj;
};

class Mamba2Mixer final : public SequenceMixer {
 public:
  Mamba2Mixer(const ModelConfig& cfg, Mamba2Params p);

  Tensor forward(const Tensor& x, int64_t pos0, const MixerState& in, MixerState* out) const override;
  std::vector<std::string> state_names() const override { return {"conv", "ssm"}; }
  std::vector<Shape> state_shapes(int64_t pos) const override;
  std::string describe() const override { return "Mamba 2"; }

 private:
  Tensor ssd_chunks(const Tensor& xdt, const Tensor& a, const Tensor& B, const Tensor& C, int64_t nc, int64_t n,
                    Tensor* S) const;

  Mamba2Params p_;
  int64_t d_inner_, heads_, headdim_, d_state_, d_conv_, conv_dim_, chunk_;
  double eps_;
};

}  // namespace ttt::model
