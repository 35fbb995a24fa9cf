#include "model/attention_mixer.h"

#include <algorithm>

namespace ttt::model {

AttentionMixer::AttentionMixer(const ModelConfig& cfg, AttentionParams p, int64_t window)
    : p_(std::move(p)),
      heads_(cfg.num_attention_heads),
      head_dim_(cfg.head_dim()),
      window_(window),
      eps_(cfg.rms_norm_eps),
      rope_theta_(cfg.rope_theta) {}

Tensor AttentionMixer::forward(const Tensor& a, int64_t pos0, const MixerState& in, MixerState* out) const {
  const int64_t t = a.size(0);
  Tensor q = rmsnorm(reshape(matmul(a, p_.wq), {t, heads_, head_dim_}), p_.q_norm, eps_);
  Tensor k = rmsnorm(reshape(matmul(a, p_.wk), {t, heads_, head_dim_}), p_.k_norm, eps_);
  Tensor v = reshape(matmul(a, p_.wv), {t, heads_, head_dim_});
  q = rope(q, pos0, rope_theta_);
  k = rope(k, pos0, rope_theta_);
  const int64_t cached = in.empty() ? 0 : in.tensors[0].size(0);
  // Appended in place where possible (decoding: O(1) per token instead of a copy of the cache).
  Tensor keys = cached ? append_rows(in.tensors[0], k, 0) : k;
  Tensor vals = cached ? append_rows(in.tensors[1], v, 0) : v;
  if (out) {
    const int64_t n = keys.size(0);
    const int64_t keep = window_ > 0 ? std::min(window_, n) : n;
    out->tensors = {keep == n ? keys : slice(keys, 0, n - keep, n), keep == n ? vals : slice(vals, 0, n - keep, n)};
  }
  AttentionOptions opt;
  opt.q_pos0 = pos0;
  opt.k_pos0 = pos0 - cached;
  opt.window = window_;
  // A cache that carries no graph (prefill, decoding) is a constant for the inner step's gradient.
  if (cached && !in.tensors[0].requires_grad() && !in.tensors[1].requires_grad()) opt.k_grad_from = cached;
  return matmul(reshape(attention(q, keys, vals, opt), {t, heads_ * head_dim_}), p_.wo);
}

std::vector<Shape> AttentionMixer::state_shapes(int64_t pos) const {
  const int64_t rows = window_ > 0 ? std::min(window_, pos) : pos;
  return {{rows, heads_, head_dim_}, {rows, heads_, head_dim_}};
}

std::string AttentionMixer::describe() const {
  return window_ > 0 ? "window " + std::to_string(window_) : "full attention";
}

}  // namespace ttt::model
