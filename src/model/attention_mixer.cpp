#include "model/attention_mixer.h"

#include <algorithm>
#include <stdexcept>

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
  if (!in.empty() && in.tensors[0].dtype() == DType::BF16) return forward_bf16(q, k, v, pos0, in, out);
  // Appended in place where possible (decoding: O(1) per token instead of a copy of the cache).
  Tensor keys = cached ? append_rows(in.tensors[0], k, 0) : k;
  Tensor vals = cached ? append_rows(in.tensors[1], v, 0) : v;
  if (out) *out = window_state(keys, vals);
  AttentionOptions opt;
  opt.q_pos0 = pos0;
  opt.k_pos0 = pos0 - cached;
  opt.window = window_;
  opt.bf16_products = p_.wq.dtype() == DType::BF16 && p_.wq.impl()->storage->bf16_products;
  // A cache that carries no graph (prefill, decoding) is a constant for the inner step's gradient.
  if (cached && !in.tensors[0].requires_grad() && !in.tensors[1].requires_grad()) opt.k_grad_from = cached;
  return matmul(reshape(attention(q, keys, vals, opt), {t, heads_ * head_dim_}), p_.wo);
}

// The state after a chunk: the last W rows of [cache; chunk] (all of them for full attention).
MixerState AttentionMixer::window_state(const Tensor& keys, const Tensor& vals) const {
  const int64_t n = keys.size(0);
  const int64_t keep = window_ > 0 ? std::min(window_, n) : n;
  if (keep == n) return MixerState{{keys, vals}};
  return MixerState{{slice(keys, 0, n - keep, n), slice(vals, 0, n - keep, n)}};
}

// A bf16 cache: the cache is read as it is (a constant), the chunk's keys and values in float32;
// the rows kept for later are the chunk's rounded to bf16.
Tensor AttentionMixer::forward_bf16(const Tensor& q, const Tensor& k, const Tensor& v, int64_t pos0,
                                    const MixerState& in, MixerState* out) const {
  const int64_t t = q.size(0), cached = in.tensors[0].size(0);
  if (out) {
    Tensor kb, vb;
    {
      NoGrad ng;
      kb = to_dtype(k.detach(), DType::BF16);
      vb = to_dtype(v.detach(), DType::BF16);
    }
    Tensor keys = cached ? append_rows(in.tensors[0], kb, 0) : kb;
    Tensor vals = cached ? append_rows(in.tensors[1], vb, 0) : vb;
    *out = window_state(keys, vals);
  }
  AttentionOptions opt;
  opt.q_pos0 = pos0;
  opt.k_pos0 = pos0 - cached;
  opt.window = window_;
  opt.bf16_products = p_.wq.dtype() == DType::BF16 && p_.wq.impl()->storage->bf16_products;
  // The rows appended above lie after the view `in` holds: its rows are unchanged.
  const Tensor o = cached ? attention_bf16_cache(q, in.tensors[0], in.tensors[1], k, v, opt) : attention(q, k, v, opt);
  return matmul(reshape(o, {t, heads_ * head_dim_}), p_.wo);
}

MixerState AttentionMixer::start_state(KvDtype kv) const {
  if (kv != KvDtype::BF16) return {};
  if (p_.wq.dtype() != DType::F32 && p_.wq.dtype() != DType::BF16)
    throw std::invalid_argument("a bf16 window cache (--kv-dtype bf16) needs a float32 model, this one is " +
                                std::string(dtype_name(p_.wq.dtype())));
  const Tensor e = Tensor::empty({0, heads_, head_dim_}, DType::BF16, p_.wq.device());
  return MixerState{{e, Tensor::empty({0, heads_, head_dim_}, DType::BF16, p_.wq.device())}};
}

std::vector<Shape> AttentionMixer::state_shapes(int64_t pos) const {
  const int64_t rows = window_ > 0 ? std::min(window_, pos) : pos;
  return {{rows, heads_, head_dim_}, {rows, heads_, head_dim_}};
}

std::string AttentionMixer::describe() const {
  return window_ > 0 ? "window " + std::to_string(window_) : "full attention";
}

}  // namespace ttt::model
