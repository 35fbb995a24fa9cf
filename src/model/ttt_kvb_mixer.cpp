#include "model/ttt_kvb_mixer.h"

#include <algorithm>
#include <cmath>

namespace ttt::model {
namespace {

// x / (||x|| + 1e-5) over the last dim (LaCT's l2_norm; the tiny term under the root keeps the
// derivative finite for an all-zero row).
Tensor l2_norm(const Tensor& x) {
  return div(x, add_scalar(sqrt(add_scalar(sum(square(x), x.dim() - 1, true), 1e-30)), 1e-5));
}

Tensor row_norm(const Tensor& w) { return sqrt(add_scalar(sum(square(w), 2, true), 1e-30)); }

// [T, nh, d] -> [nh, T, d]
Tensor heads_first(const Tensor& x) { return contiguous(transpose(x, 0, 1)); }

// f(x) = W1 (silu(W0 x) * (W2 x)) for rows x [nh, n, din] -> [nh, n, dout].
Tensor swiglu_apply(const FastWeights& fw, const Tensor& x) {
  return matmul(mul(silu(matmul(x, fw.w0, false, true)), matmul(x, fw.w2, false, true)), fw.w1, false, true);
}

// One step of gradient ascent on sum_t lr_t <v_t, f(k_t)> (LaCT's manual gradients), then each
// row rescaled to the norm of the initial weight's row.
void update(FastWeights& fw, const Tensor& w0_init, const Tensor& w1_init, const Tensor& w2_init, const Tensor& k,
            const Tensor& v, const Tensor& lr0, const Tensor& lr1, const Tensor& lr2) {
  const Tensor gba = matmul(k, fw.w0, false, true);  // [nh, C, dh]
  const Tensor hbm = matmul(k, fw.w2, false, true);
  const Tensor sg = silu(gba);
  const Tensor hidden = mul(sg, hbm);
  const Tensor dhidden = matmul(v, fw.w1);  // [nh, C, dh]
  const Tensor dhbm = mul(dhidden, sg);
  const Tensor sig = sigmoid(gba);
  const Tensor dgba = mul(mul(dhidden, hbm), mul(sig, add_scalar(mul(gba, add_scalar(neg(sig), 1.0)), 1.0)));
  const Tensor w1 = add(fw.w1, matmul(v, mul(hidden, lr1), true, false));  // [nh, dout, dh]
  const Tensor w0 = add(fw.w0, matmul(dgba, mul(k, lr0), true, false));   // [nh, dh, din]
  const Tensor w2 = add(fw.w2, matmul(dhbm, mul(k, lr2), true, false));
  auto renorm = [](const Tensor& w, const Tensor& init) {
    return mul(div(w, add_scalar(row_norm(w), 1e-5)), row_norm(init));
  };
  fw.w0 = renorm(w0, w0_init);
  fw.w1 = renorm(w1, w1_init);
  fw.w2 = renorm(w2, w2_init);
}

}  // namespace

Tensor lact_swiglu_block_causal(FastWeights& fw, const Tensor& w0_init, const Tensor& w1_init, const Tensor& w2_init,
                                const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& lr, int64_t chunk) {
  const int64_t T = q.size(0), nh = q.size(1);
  const Tensor qh = heads_first(q), kh = heads_first(k), vh = heads_first(v);
  const Tensor lrh = heads_first(reshape(lr, {T, nh, 3}));  // [nh, T, 3]
  std::vector<Tensor> outs;
  int64_t s = 0;
  while (s < T) {
    const int64_t pending = fw.pk.size(1);
    const int64_t e = std::min(T, s + chunk - pending);
    outs.push_back(swiglu_apply(fw, slice(qh, 1, s, e)));  // with the weights before this chunk's step
    // Pending rows of the chunk, heads first: [nh, p, .]
    const Tensor ks = slice(kh, 1, s, e), vs = slice(vh, 1, s, e), ls = slice(lrh, 1, s, e);
    const Tensor pk = pending ? concat({fw.pk, ks}, 1) : ks;
    const Tensor pv = pending ? concat({fw.pv, vs}, 1) : vs;
    const Tensor pl = pending ? concat({fw.plr, ls}, 1) : ls;
    if (pk.size(1) == chunk) {
      update(fw, w0_init, w1_init, w2_init, pk, pv, slice(pl, 2, 0, 1), slice(pl, 2, 1, 2), slice(pl, 2, 2, 3));
      fw.pk = slice(pk, 1, 0, 0);
      fw.pv = slice(pv, 1, 0, 0);
      fw.plr = slice(pl, 1, 0, 0);
    } else {
      fw.pk = pk;
      fw.pv = pv;
      fw.plr = pl;
    }
    s = e;
  }
  const Tensor o = outs.size() == 1 ? outs[0] : concat(outs, 1);  // [nh, T, dout]
  return contiguous(transpose(o, 0, 1));
}

TttKvbMixer::TttKvbMixer(const ModelConfig& cfg, TttKvbParams p)
    : p_(std::move(p)),
      heads_(cfg.num_attention_heads),
      head_dim_(cfg.head_dim()),
      window_(cfg.sliding_window_size),
      nh_(cfg.ttt_kvb.num_lact_heads),
      din_(cfg.lact_head_dim()),
      dh_(cfg.lact_hidden()),
      chunk_(cfg.ttt_kvb.lact_chunk_size),
      eps_(cfg.rms_norm_eps),
      rope_theta_(cfg.rope_theta) {}

std::vector<Shape> TttKvbMixer::state_shapes(int64_t pos) const {
  const int64_t rows = std::min(window_, pos), p = pos % chunk_;
  return {{rows, heads_, head_dim_}, {rows, heads_, head_dim_}, {nh_, dh_, din_}, {nh_, din_, dh_}, {nh_, dh_, din_},
          {nh_, p, din_},           {nh_, p, din_},            {nh_, p, 3}};
}

std::vector<Tensor> TttKvbMixer::initial_state_tensors(DType dt) const {
  NoGrad ng;
  auto cp = [&](const Tensor& t) { return to_dtype(clone(t.detach()), dt); };
  const Device d = p_.w0.device();
  return {zeros({0, heads_, head_dim_}, dt, d), zeros({0, heads_, head_dim_}, dt, d), cp(p_.w0), cp(p_.w1), cp(p_.w2),
          zeros({nh_, 0, din_}, dt, d),         zeros({nh_, 0, din_}, dt, d),         zeros({nh_, 0, 3}, dt, d)};
}

Tensor TttKvbMixer::forward(const Tensor& x, int64_t pos0, const MixerState& in, MixerState* out) const {
  const int64_t T = x.size(0), d = x.size(1);
  const DType dt = x.dtype();
  const Tensor qkv = matmul(x, p_.qkv);
  const Tensor q = rmsnorm(slice(qkv, 1, 0, d), p_.q_norm, eps_);
  const Tensor k = rmsnorm(slice(qkv, 1, d, 2 * d), p_.k_norm, eps_);
  const Tensor v = contiguous(slice(qkv, 1, 2 * d, 3 * d));

  // Window attention.
  const Tensor qa = rope(reshape(q, {T, heads_, head_dim_}), pos0, rope_theta_);
  const Tensor ka = rope(reshape(k, {T, heads_, head_dim_}), pos0, rope_theta_);
  const Tensor va = reshape(v, {T, heads_, head_dim_});
  const int64_t cached = in.empty() ? 0 : in.tensors[0].size(0);
  const Tensor keys = cached ? append_rows(in.tensors[0], ka, 0) : ka;
  const Tensor vals = cached ? append_rows(in.tensors[1], va, 0) : va;
  AttentionOptions aopt;
  aopt.q_pos0 = pos0;
  aopt.k_pos0 = pos0 - cached;
  aopt.window = window_;
  const Tensor attn = reshape(attention(qa, keys, vals, aopt), {T, d});

  // Fast weights.
  const Tensor scale_q = reshape(contiguous(slice(p_.qk_scale, 1, 0, 1)), {d});
  const Tensor scale_k = reshape(contiguous(slice(p_.qk_scale, 1, 1, 2)), {d});
  const Tensor off_q = reshape(contiguous(slice(p_.qk_offset, 1, 0, 1)), {d});
  const Tensor off_k = reshape(contiguous(slice(p_.qk_offset, 1, 1, 2)), {d});
  auto fast = [&](const Tensor& t) { return l2_norm(reshape(silu(t), {T, nh_, din_})); };
  const Tensor fq = rope(reshape(fast(add(mul(q, scale_q), off_q)), {T, heads_, head_dim_}), pos0, rope_theta_);
  const Tensor fk = rope(reshape(fast(add(mul(k, scale_k), off_k)), {T, heads_, head_dim_}), pos0, rope_theta_);
  const Tensor fv = reshape(silu(v), {T, nh_, din_});
  const double base = std::log(std::expm1(0.001));  // softplus^-1 of LaCT's base rate 0.001
  const Tensor lr = softplus(add_scalar(add(matmul(x, p_.lr_proj), p_.lr_bias), base));  // [T, 3 nh]
  FastWeights fw;
  if (in.empty()) {
    fw = {p_.w0, p_.w1, p_.w2, zeros({nh_, 0, din_}, dt, x.device()), zeros({nh_, 0, din_}, dt, x.device()),
          zeros({nh_, 0, 3}, dt, x.device())};
  } else {
    fw = {in.tensors[2], in.tensors[3], in.tensors[4], in.tensors[5], in.tensors[6], in.tensors[7]};
  }
  const Tensor fo = lact_swiglu_block_causal(fw, p_.w0, p_.w1, p_.w2, reshape(fq, {T, nh_, din_}),
                                             reshape(fk, {T, nh_, din_}), fv, lr, chunk_);
  const Tensor ttt_out = reshape(rmsnorm(fo, p_.ttt_norm, eps_), {T, d});

  if (out) {
    const int64_t n = keys.size(0), keep = std::min(window_, n);
    out->tensors = {keep == n ? keys : slice(keys, 0, n - keep, n), keep == n ? vals : slice(vals, 0, n - keep, n),
                    fw.w0, fw.w1, fw.w2, fw.pk, fw.pv, fw.plr};
  }
  return matmul(add(attn, ttt_out), p_.o_proj);
}

}  // namespace ttt::model
