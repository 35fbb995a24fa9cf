#include "model/gated_deltanet_mixer.h"

#include "model/mixer_ops.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace ttt::model {
GatedDeltaNetMixer::GatedDeltaNetMixer(const ModelConfig& cfg, GatedDeltaNetParams p)
    : p_(std::move(p)),
      heads_(cfg.num_attention_heads),
      dk_(cfg.head_dim()),
      dv_(cfg.expand_v * cfg.head_dim()),
      conv_size_(cfg.conv_size),
      chunk_(cfg.chunk_size),
      eps_(cfg.rms_norm_eps) {}

std::vector<Shape> GatedDeltaNetMixer::state_shapes(int64_t) const {
  return {{conv_size_ - 1, heads_ * (2 * dk_ + dv_)}, {heads_, dk_, dv_}};
}

Tensor GatedDeltaNetMixer::forward(const Tensor& x, int64_t, const MixerState& in, MixerState* out) const {
  const int64_t T = x.size(0), H = heads_, K = conv_size_, kd = H * dk_, vd = H * dv_;
  const DType dt = x.dtype();
  const Tensor qkv_raw = concat({matmul(x, p_.q_proj), matmul(x, p_.k_proj), matmul(x, p_.v_proj)}, 1);
  Tensor conv_tail;
  const Tensor prev = in.empty() ? zeros({K - 1, kd * 2 + vd}, dt) : in.tensors[0];
  const Tensor qkv = silu(causal_conv(qkv_raw, prev, p_.conv_weight, K, &conv_tail));
  // L2 norm over each head: x / sqrt(sum x^2 + 1e-6) = x rms_rstd(x, 1e-6 / d) / sqrt(d).
  auto l2norm = [&](const Tensor& v, double scale) {
    return mul(v, mul_scalar(rms_rstd(v, 1e-6 / static_cast<double>(dk_)), scale / std::sqrt(static_cast<double>(dk_))));
  };
  const Tensor q = l2norm(reshape(contiguous(slice(qkv, 1, 0, kd)), {T, H, dk_}), 1.0 / std::sqrt(static_cast<double>(dk_)));
  const Tensor k = l2norm(reshape(contiguous(slice(qkv, 1, kd, 2 * kd)), {T, H, dk_}), 1.0);
  const Tensor v = reshape(contiguous(slice(qkv, 1, 2 * kd, 2 * kd + vd)), {T, H, dv_});
  const Tensor beta = sigmoid(matmul(x, p_.b_proj));                                              // [T, H]
  const Tensor g = mul(neg(exp(p_.A_log)), softplus(add(matmul(x, p_.a_proj), p_.dt_bias)));     // [T, H]

  Tensor S = in.empty() ? zeros({H, dk_, dv_}, dt) : in.tensors[1];
  std::vector<Tensor> outs;
  ChunkConstants c;
  int64_t c_n = -1;
  for (int64_t s = 0; s < T; s += chunk_) {
    const int64_t e = std::min(T, s + chunk_), n = e - s;
    if (n != c_n) {
      c = chunk_constants(n, dt);
      c_n = n;
    }
    const Tensor G = matmul(contiguous(transpose(slice(g, 0, s, e), 0, 1)), c.upper);  // cumulative log decay [H, n]
    const Tensor decay = exp(add(mul(sub(reshape(G, {H, n, 1}), reshape(G, {H, 1, n})), c.lower), c.neg_big));
    const Tensor qh = contiguous(transpose(slice(q, 0, s, e), 0, 1));  // [H, n, dk]
    const Tensor kh = contiguous(transpose(slice(k, 0, s, e), 0, 1));
    const Tensor vh = contiguous(transpose(slice(v, 0, s, e), 0, 1));  // [H, n, dv]
    const Tensor bh = reshape(contiguous(transpose(slice(beta, 0, s, e), 0, 1)), {H, n, 1});
    const Tensor kb = mul(kh, bh);
    // UT transform: T = (I + L)^-1 with L strictly lower, by forward substitution. (A Neumann
    // product (I - L)(I + L^2)(I + L^4)... is exact in exact arithmetic but its powers grow like
    // binomial coefficients when trained keys align, and float32 loses everything: NaN by chunk
    // 13 of a model trained for 10 steps.)
    const Tensor L = mul(mul(matmul(kb, kh, false, true), decay), c.strict);
    const Tensor inv = unit_lower_inverse(L);
    const Tensor u = matmul(inv, mul(vh, bh));                                // [H, n, dv]
    const Tensor w = matmul(inv, mul(kb, reshape(exp(G), {H, n, 1})));        // [H, n, dk]
    const Tensor v_new = sub(u, matmul(w, S));                                // [H, n, dv]
    const Tensor o = add(matmul(mul(qh, reshape(exp(G), {H, n, 1})), S),
                         matmul(mul(matmul(qh, kh, false, true), decay), v_new));
    outs.push_back(contiguous(transpose(o, 0, 1)));  // [n, H, dv]
    const Tensor last = slice(G, 1, n - 1, n);       // [H, 1]
    const Tensor kdec = mul(kh, reshape(exp(sub(last, G)), {H, n, 1}));
    S = add(mul(S, reshape(exp(last), {H, 1, 1})), matmul(kdec, v_new, true, false));
  }
  const Tensor o = outs.size() == 1 ? outs[0] : concat(outs, 0);  // [T, H, dv]
  const Tensor gate = reshape(matmul(x, p_.g_proj), {T, H, dv_});
  const Tensor y = mul(rmsnorm(o, p_.o_norm, eps_), silu(gate));
  if (out) out->tensors = {conv_tail, S};
  return matmul(reshape(y, {T, vd}), p_.o_proj);
}

}  // namespace ttt::model
