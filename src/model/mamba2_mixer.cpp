#include "model/mamba2_mixer.h"

#include "model/mixer_ops.h"

#include <algorithm>
#include <vector>

namespace ttt::model {
namespace {
// Tokens scanned per batched call (a few MB of decay blocks at the bench shapes).
constexpr int64_t kScanGroupTokens = 4096;
}  // namespace

Mamba2Mixer::Mamba2Mixer(const ModelConfig& cfg, Mamba2Params p)
    : p_(std::move(p)),
      d_inner_(cfg.mamba_d_inner()),
      heads_(cfg.mamba_heads()),
      headdim_(cfg.mamba2.headdim),
      d_state_(cfg.mamba2.d_state),
      d_conv_(cfg.mamba2.d_conv),
      conv_dim_(cfg.mamba_conv_dim()),
      chunk_(cfg.chunk_size),
      eps_(cfg.rms_norm_eps) {}

std::vector<Shape> Mamba2Mixer::state_shapes(int64_t) const {
  return {{d_conv_ - 1, conv_dim_}, {heads_, headdim_, d_state_}};
}

// nc chunks of n tokens: xdt [nc n, H, P], a (log decays) [nc n, H], B and C [nc n, N]. *S is the
// state entering the first chunk; it receives the state leaving the last. Returns y [nc n, H, P].
Tensor Mamba2Mixer::ssd_chunks(const Tensor& xdt, const Tensor& a, const Tensor& B, const Tensor& C, int64_t nc,
                               int64_t n, Tensor* S) const {
  const int64_t H = heads_, P = headdim_, N = d_state_, NH = nc * H;
  const DType dt = xdt.dtype();
  const ChunkConstants in_chunk = chunk_constants(n, dt, xdt.device()),
                       across = chunk_constants(nc + 1, dt, xdt.device());
  // Cumulative log decay within each chunk, [nc H, n], and the decays exp(cs_i - cs_j), j <= i.
  const Tensor cs = matmul(reshape(contiguous(transpose(reshape(contiguous(a), {nc, n, H}), 1, 2)), {NH, n}),
                           in_chunk.upper);
  const Tensor B3 = reshape(contiguous(B), {nc, n, N}), C3 = reshape(contiguous(C), {nc, n, N});
  const Tensor xh = reshape(contiguous(transpose(reshape(contiguous(xdt), {nc, n, H, P}), 1, 2)), {NH, n, P});
  // Within each chunk: y_i += sum_j (C_i . B_j) exp(cs_i - cs_j) x_j dt_j.
  const Tensor CB = reshape(matmul(C3, B3, false, true), {nc, 1, n, n});
  const Tensor M = reshape(mul(reshape(causal_decay(cs), {nc, H, n, n}), CB), {NH, n, n});
  const Tensor y_diag = transpose(reshape(matmul(M, xh), {nc, H, n, P}), 1, 2);  // [nc, n, H, P] view
  // Each chunk's own contribution to the state leaving it: sum_j exp(cs_last - cs_j) x_j dt_j B_j^T.
  const Tensor last = slice(cs, 1, n - 1, n);  // [nc H, 1]
  const Tensor w = mul(xh, reshape(exp(sub(last, cs)), {NH, n, 1}));
  const Tensor wf = reshape(contiguous(transpose(reshape(w, {nc, H, n, P}), 1, 2)), {nc, n, H * P});
  const Tensor s_chunk = matmul(wf, B3, true, false);  // [nc, H P, N]
  // Across chunks, as one matrix per head over [S entering; each chunk's contribution]:
  // entry (z, c) = exp(sum of the chunk decays c+1..z) (1-based: row 0 is the entering state). The
  // sums are taken directly (masked, then cumulated down the rows), not as differences of a long
  // cumulative sum, which would lose float32 digits after many chunks (ssd_minimal's segsum).
  const Tensor lastp = concat({zeros({H, 1}, dt, xdt.device()), contiguous(transpose(reshape(last, {nc, H}), 0, 1))}, 1);  // [H, nc+1]
  const Tensor seg = matmul(reshape(across.lower, {1, nc + 1, nc + 1}), mul(reshape(lastp, {H, nc + 1, 1}), across.strict));
  const Tensor decay = exp(add(seg, across.neg_big));  // [H, nc+1, nc+1]
  const Tensor states = concat({reshape(*S, {1, H, P * N}), reshape(s_chunk, {nc, H, P * N})}, 0);  // [nc+1, H, P N]
  const Tensor scanned = matmul(decay, contiguous(transpose(states, 0, 1)));                       // [H, nc+1, P N]
  *S = reshape(contiguous(slice(scanned, 1, nc, nc + 1)), {H, P, N});
  const Tensor entering = reshape(contiguous(transpose(slice(scanned, 1, 0, nc), 0, 1)), {nc, H * P, N});
  // From the state entering each chunk: y_i += exp(cs_i) h C_i.
  const Tensor cS = reshape(matmul(C3, entering, false, true), {nc, n, H, P});
  const Tensor ecs = reshape(contiguous(transpose(reshape(exp(cs), {nc, H, n}), 1, 2)), {nc, n, H, 1});
  return reshape(add(y_diag, mul(cS, ecs)), {nc * n, H, P});
}

Tensor Mamba2Mixer::forward(const Tensor& x, int64_t, const MixerState& in, MixerState* out) const {
  const int64_t T = x.size(0), H = heads_, P = headdim_, N = d_state_, K = d_conv_;
  const DType dt = x.dtype();
  const Tensor zxbcdt = matmul(x, p_.in_proj);
  const Tensor z = slice(zxbcdt, 1, 0, d_inner_);
  const Tensor xbc_raw = slice(zxbcdt, 1, d_inner_, d_inner_ + conv_dim_);
  const Tensor dt_raw = slice(zxbcdt, 1, d_inner_ + conv_dim_, d_inner_ + conv_dim_ + H);

  // Causal depthwise conv over [the previous K-1 inputs; this chunk].
  const Tensor conv_prev = in.empty() ? zeros({K - 1, conv_dim_}, dt, x.device()) : in.tensors[0];
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

  // The chunked SSD scan, many chunks of one length per call (ssd_minimal's batched form).
  Tensor S = in.empty() ? zeros({H, P, N}, dt, x.device()) : in.tensors[1];
  // Up to kScanGroupTokens at a time, so that the [chunks, n, n] blocks stay bounded at any length.
  const int64_t group = chunk_ * std::max<int64_t>(1, kScanGroupTokens / chunk_);
  std::vector<Tensor> ys;
  for (int64_t s = 0; s < T;) {
    const int64_t nc = std::max<int64_t>(1, std::min(T - s, group) / chunk_), n = std::min(chunk_, T - s),
                  e = s + nc * n;
    ys.push_back(ssd_chunks(slice(xdt, 0, s, e), slice(a, 0, s, e), slice(B, 0, s, e), slice(C, 0, s, e), nc, n, &S));
    s = e;
  }
  Tensor y = ys.size() == 1 ? ys[0] : concat(ys, 0);  // [T, H, P]
  y = add(y, mul(X, reshape(p_.D, {H, 1})));
  y = rmsnorm(mul(reshape(y, {T, d_inner_}), silu(z)), p_.norm_weight, eps_);
  if (out) out->tensors = {conv_tail, S};
  return matmul(y, p_.out_proj);
}

}  // namespace ttt::model
