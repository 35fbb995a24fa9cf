#include "model/mamba2_mixer.h"

#include "model/mixer_ops.h"

#include <algorithm>
#include <vector>

namespace ttt::model {
Mamba2Mixer::Mamba2Mixer(const ModelConfig& cfg, Mamba2Params p)
    : p_(std::move(p)),
      d_inner_(cfg.mamba_d_inner()),
      heads_(cfg.mamba_heads()),
      headdim_(cfg.headdim),
      d_state_(cfg.d_state),
      d_conv_(cfg.d_conv),
      conv_dim_(cfg.mamba_conv_dim()),
      chunk_(cfg.chunk_size),
      eps_(cfg.rms_norm_eps) {}

std::vector<Shape> Mamba2Mixer::state_shapes(int64_t) const {
  return {{d_conv_ - 1, conv_dim_}, {heads_, headdim_, d_state_}};
}

Tensor Mamba2Mixer::forward(const Tensor& x, int64_t, const MixerState& in, MixerState* out) const {
  const int64_t T = x.size(0), H = heads_, P = headdim_, N = d_state_, K = d_conv_;
  const DType dt = x.dtype();
  const Tensor zxbcdt = matmul(x, p_.in_proj);
  const Tensor z = slice(zxbcdt, 1, 0, d_inner_);
  const Tensor xbc_raw = slice(zxbcdt, 1, d_inner_, d_inner_ + conv_dim_);
  const Tensor dt_raw = slice(zxbcdt, 1, d_inner_ + conv_dim_, d_inner_ + conv_dim_ + H);

  // Causal depthwise conv over [the previous K-1 inputs; this chunk].
  const Tensor conv_prev = in.empty() ? zeros({K - 1, conv_dim_}, dt) : in.tensors[0];
  Tensor conv_tail;
  const Tensor conv = add(causal_conv(xbc_raw, conv_prev, p_.conv_weight, K, &conv_tail), p_.conv_bias);
  const Tensor xbc = silu(conv);
  const Tensor X = reshape(contiguous(slice(xbc, 1, 0, d_inner_)), {T, H, P});
  const Tensor B = contiguous(slice(xbc, 1, d_inner_, d_inner_ + N));
  const Tensor C = contiguous(slice(xbc, 1, d_inner_ + N, d_inner_ + 2 * N));

  const Tensor dtv = softplus(add(dt_raw, p_.dt_bias));  // [T, H]
  const Tensor A = neg(exp(p_.A_log));                    // [H]
  const Tensor a = mul(dtv, A);                           // log decay per token and head
  const Tensor xdt = mul(X, reshape(dtv, {T, H, 1}));     // [T, H, P]

  Tensor S = in.empty() ? zeros({H, P, N}, dt) : in.tensors[1];
  std::vector<Tensor> ys;
  ChunkConstants mats;
  int64_t mats_n = -1;
  for (int64_t s = 0; s < T; s += chunk_) {
    const int64_t e = std::min(T, s + chunk_), n = e - s;
    if (n != mats_n) {
      mats = chunk_constants(n, dt);
      mats_n = n;
    }
    const Tensor aT = contiguous(transpose(slice(a, 0, s, e), 0, 1));  // [H, n]
    const Tensor cs = matmul(aT, mats.upper);                          // cumulative log decay [H, n]
    // decay from token j to token i (j <= i) within the chunk: exp(cs_i - cs_j)
    const Tensor diff = sub(reshape(cs, {H, n, 1}), reshape(cs, {H, 1, n}));
    const Tensor L = exp(add(mul(diff, mats.lower), mats.neg_big));  // [H, n, n]
    const Tensor Bc = slice(B, 0, s, e), Cc = slice(C, 0, s, e);   // [n, N]
    const Tensor xh = contiguous(transpose(slice(xdt, 0, s, e), 0, 1));  // [H, n, P]
    // Within the chunk: y_i += sum_j (C_i . B_j) L_ij x_j dt_j.
    const Tensor y_diag = matmul(mul(L, matmul(Cc, Bc, false, true)), xh);  // [H, n, P]
    // From the state entering the chunk: y_i += exp(cs_i) h C_i.
    const Tensor cS = reshape(matmul(Cc, reshape(S, {H * P, N}), false, true), {n, H, P});
    const Tensor y_off = mul(contiguous(transpose(cS, 0, 1)), reshape(exp(cs), {H, n, 1}));
    ys.push_back(contiguous(transpose(add(y_diag, y_off), 0, 1)));  // [n, H, P]
    // The state leaving the chunk: exp(cs_last) h + sum_j exp(cs_last - cs_j) x_j dt_j B_j^T.
    const Tensor last = slice(cs, 1, n - 1, n);  // [H, 1]
    const Tensor w = mul(xh, reshape(exp(sub(last, cs)), {H, n, 1}));              // [H, n, P]
    const Tensor wf = reshape(contiguous(transpose(w, 0, 1)), {n, H * P});
    const Tensor s_chunk = reshape(matmul(wf, Bc, true, false), {H, P, N});
    S = add(mul(S, reshape(exp(last), {H, 1, 1})), s_chunk);
  }
  Tensor y = ys.size() == 1 ? ys[0] : concat(ys, 0);  // [T, H, P]
  y = add(y, mul(X, reshape(p_.D, {H, 1})));
  y = rmsnorm(mul(reshape(y, {T, d_inner_}), silu(z)), p_.norm_weight, eps_);
  if (out) out->tensors = {conv_tail, S};
  return matmul(y, p_.out_proj);
}

}  // namespace ttt::model
