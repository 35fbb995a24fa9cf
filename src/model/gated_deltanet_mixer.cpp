#include "model/gated_deltanet_mixer.h"

#include "model/mixer_ops.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace ttt::model {
namespace {
// Tokens scanned per batched call (a few MB of decay blocks at the bench shapes).
constexpr int64_t kScanGroupTokens = 4096;
}  // namespace

GatedDeltaNetMixer::GatedDeltaNetMixer(const ModelConfig& cfg, GatedDeltaNetParams p)
    : p_(std::move(p)),
      heads_(cfg.num_attention_heads),
      dk_(cfg.head_dim()),
      dv_(cfg.gated_deltanet.expand_v * cfg.head_dim()),
      conv_size_(cfg.gated_deltanet.conv_size),
      chunk_(cfg.chunk_size),
      eps_(cfg.rms_norm_eps) {}

std::vector<Shape> GatedDeltaNetMixer::state_shapes(int64_t) const {
  return {{conv_size_ - 1, heads_ * (2 * dk_ + dv_)}, {heads_, dk_, dv_}};
}

// nc chunks of n tokens: q, k [nc n, H, dk], v [nc n, H, dv], beta and g [nc n, H]. *S is the state
// entering the first chunk; it receives the state leaving the last. Returns o [nc n, H, dv].
Tensor GatedDeltaNetMixer::delta_chunks(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& beta,
                                        const Tensor& g, int64_t nc, int64_t n, Tensor* S) const {
  const int64_t H = heads_, NH = nc * H;
  const DType dt = q.dtype();
  const ChunkConstants c = chunk_constants(n, dt, q.device());
  auto heads_first = [&](const Tensor& t, int64_t d) {  // [nc n, H, d] -> [nc H, n, d]
    return reshape(contiguous(transpose(reshape(contiguous(t), {nc, n, H, d}), 1, 2)), {NH, n, d});
  };
  const Tensor G = matmul(reshape(heads_first(g, 1), {NH, n}), c.upper);  // cumulative log decay [nc H, n]
  const Tensor decay = causal_decay(G);                                    // exp(G_i - G_j), j <= i
  const Tensor qh = heads_first(q, dk_), kh = heads_first(k, dk_), vh = heads_first(v, dv_);
  const Tensor bh = heads_first(beta, 1);  // [nc H, n, 1]
  const Tensor kb = mul(kh, bh);
  const Tensor eG = reshape(exp(G), {NH, n, 1});
  // UT transform: T = (I + L)^-1 with L strictly lower, by forward substitution. (A Neumann
  // product (I - L)(I + L^2)(I + L^4)... is exact in exact arithmetic but its powers grow like
  // binomial coefficients when trained keys align, and float32 loses everything: NaN by chunk
  // 13 of a model trained for 10 steps.)
  const Tensor inv = unit_lower_inverse(mul(mul(matmul(kb, kh, false, true), decay), c.strict));
  const Tensor u = matmul(inv, mul(vh, bh));       // [nc H, n, dv]
  const Tensor w = matmul(inv, mul(kb, eG));       // [nc H, n, dk]
  const Tensor qg = mul(qh, eG);                   // reads the entering state
  const Tensor intra = mul(matmul(qh, kh, false, true), decay);
  const Tensor last = slice(G, 1, n - 1, n);       // [nc H, 1]
  const Tensor kdec = mul(kh, reshape(exp(sub(last, G)), {NH, n, 1}));
  const Tensor elast = reshape(exp(last), {NH, 1, 1});
  std::vector<Tensor> outs;
  for (int64_t i = 0; i < nc; ++i) {
    auto at = [&](const Tensor& t) { return slice(t, 0, i * H, (i + 1) * H); };
    const Tensor v_new = sub(at(u), matmul(at(w), *S));  // [H, n, dv]
    outs.push_back(add(matmul(at(qg), *S), matmul(at(intra), v_new)));
    *S = add(mul(*S, at(elast)), matmul(at(kdec), v_new, true, false));
  }
  const Tensor o = outs.size() == 1 ? outs[0] : concat(outs, 0);  // [nc H, n, dv]
  return reshape(contiguous(transpose(reshape(o, {nc, H, n, dv_}), 1, 2)), {nc * n, H, dv_});
}

Tensor GatedDeltaNetMixer::forward(const Tensor& x, int64_t, const MixerState& in, MixerState* out) const {
  const int64_t T = x.size(0), H = heads_, K = conv_size_, kd = H * dk_, vd = H * dv_;
  const DType dt = x.dtype();
  const Tensor qkv_raw = concat({matmul(x, p_.q_proj), matmul(x, p_.k_proj), matmul(x, p_.v_proj)}, 1);
  Tensor conv_tail;
  const Tensor prev = in.empty() ? zeros({K - 1, kd * 2 + vd}, dt, x.device()) : in.tensors[0];
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

  // Many chunks of one length per call (delta_chunks); only the state-dependent part runs chunk by
  // chunk.
  Tensor S = in.empty() ? zeros({H, dk_, dv_}, dt, x.device()) : in.tensors[1];
  // Up to kScanGroupTokens at a time, so that the [chunks, n, n] blocks stay bounded at any length.
  const int64_t group = chunk_ * std::max<int64_t>(1, kScanGroupTokens / chunk_);
  std::vector<Tensor> outs;
  for (int64_t s = 0; s < T;) {
    const int64_t nc = std::max<int64_t>(1, std::min(T - s, group) / chunk_), n = std::min(chunk_, T - s),
                  e = s + nc * n;
    outs.push_back(delta_chunks(slice(q, 0, s, e), slice(k, 0, s, e), slice(v, 0, s, e), slice(beta, 0, s, e),
                                slice(g, 0, s, e), nc, n, &S));
    s = e;
  }
  const Tensor o = outs.size() == 1 ? outs[0] : concat(outs, 0);  // [T, H, dv]
  const Tensor gate = reshape(matmul(x, p_.g_proj), {T, H, dv_});
  const Tensor y = mul(rmsnorm(o, p_.o_norm, eps_), silu(gate));
  if (out) out->tensors = {conv_tail, S};
  return matmul(reshape(y, {T, vd}), p_.o_proj);
}

}  // namespace ttt::model
