// Gated DeltaNet (model/gated_deltanet_mixer.h) against a naive float64 recurrence written from
// fla's reference (ops/gated_delta_rule naive recurrent form and layers/gated_deltanet.py), plus
// its invariants: any chunk size gives the same result, a carried state equals one call, decode
// equals prefill, the state does not grow, and session files restore it exactly.
#include <gtest/gtest.h>
#include <cmath>
#include <map>
#include <vector>

#include "mixer_checks.h"
#include "model/model.h"
#include "ttt/inner_loop.h"

namespace ttt::test {
namespace {

model::ModelConfig gdn_config(int64_t chunk, int64_t swa_every = 0) {
  model::ModelConfig c;
  c.vocab_size = 17;
  c.hidden_size = 12;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 3;  // d_k 4, d_v 8
  c.intermediate_size = 16;
  c.seq_modeling_block = "gated_deltanet";
  c.swa_every = swa_every;
  c.sliding_window_size = 5;
  c.gated_deltanet.expand_v = 2;
  c.gated_deltanet.conv_size = 4;
  c.chunk_size = chunk;
  c.mini_batch_size = 4;
  c.rope_theta = 10000;
  c.bos_token_id = 0;
  c.initializer_range = 0.3;
  return c;
}

std::vector<double> param(const model::Model& m, const std::string& n) {
  for (auto& [name, t] : m.named_parameters())
    if (name == "blocks.0.gdn." + n) return t.to_vector();
  ADD_FAILURE() << "no parameter " << n;
  return {};
}

// Token by token, as fla's recurrent reference: h *= exp(g); v' = beta (v - h^T k); h += k v'^T;
// o = h^T q; then RMSNorm per head gated by silu and o_proj.
std::vector<double> naive(const model::ModelConfig& c, const model::Model& m, const std::vector<double>& x, int64_t T) {
  const int64_t d = c.hidden_size, H = c.num_attention_heads, dk = c.head_dim(), dv = c.gated_deltanet.expand_v * dk, kd = H * dk,
                vd = H * dv, C = 2 * kd + vd, K = c.gated_deltanet.conv_size;
  const auto qp = param(m, "q_proj"), kp = param(m, "k_proj"), vp = param(m, "v_proj"), ap = param(m, "a_proj"),
             bp = param(m, "b_proj"), gp = param(m, "g_proj"), cw = param(m, "conv1d.weight"), A_log = param(m, "A_log"),
             dtb = param(m, "dt_bias"), onw = param(m, "o_norm.weight"), op = param(m, "o_proj");
  auto proj = [&](const std::vector<double>& w, int64_t t, int64_t cols) {
    std::vector<double> r(static_cast<size_t>(cols), 0.0);
    for (int64_t j = 0; j < cols; ++j)
      for (int64_t i = 0; i < d; ++i) r[j] += x[t * d + i] * w[i * cols + j];
    return r;
  };
  std::vector<double> hist(static_cast<size_t>(K * C), 0.0), h(static_cast<size_t>(H * dk * dv), 0.0),
      out(static_cast<size_t>(T * d), 0.0);
  for (int64_t t = 0; t < T; ++t) {
    auto q = proj(qp, t, kd), k = proj(kp, t, kd), v = proj(vp, t, vd), a = proj(ap, t, H), b = proj(bp, t, H),
         gate = proj(gp, t, vd);
    std::vector<double> raw(q);
    raw.insert(raw.end(), k.begin(), k.end());
    raw.insert(raw.end(), v.begin(), v.end());
    hist.erase(hist.begin(), hist.begin() + C);
    hist.insert(hist.end(), raw.begin(), raw.end());
    std::vector<double> act(static_cast<size_t>(C));
    for (int64_t ch = 0; ch < C; ++ch) {
      double s = 0;
      for (int64_t j = 0; j < K; ++j) s += cw[ch * K + j] * hist[j * C + ch];
      act[ch] = s / (1 + std::exp(-s));
    }
    std::vector<double> o(static_cast<size_t>(vd));
    for (int64_t hd = 0; hd < H; ++hd) {
      double nq = 0, nk = 0;
      for (int64_t i = 0; i < dk; ++i) {
        nq += act[hd * dk + i] * act[hd * dk + i];
        nk += act[kd + hd * dk + i] * act[kd + hd * dk + i];
      }
      std::vector<double> qq(dk), kk(dk), vv(dv);
      for (int64_t i = 0; i < dk; ++i) {
        qq[i] = act[hd * dk + i] / std::sqrt(nq + 1e-6) / std::sqrt(static_cast<double>(dk));
        kk[i] = act[kd + hd * dk + i] / std::sqrt(nk + 1e-6);
      }
      for (int64_t j = 0; j < dv; ++j) vv[j] = act[2 * kd + hd * dv + j];
      const double sp = a[hd] + dtb[hd] > 0 ? a[hd] + dtb[hd] + std::log1p(std::exp(-(a[hd] + dtb[hd])))
                                           : std::log1p(std::exp(a[hd] + dtb[hd]));
      const double decay = std::exp(-std::exp(A_log[hd]) * sp), beta = 1 / (1 + std::exp(-b[hd]));
      double* S = &h[static_cast<size_t>(hd * dk * dv)];
      for (int64_t i = 0; i < dk * dv; ++i) S[i] *= decay;
      for (int64_t j = 0; j < dv; ++j) {
        double pred = 0;
        for (int64_t i = 0; i < dk; ++i) pred += S[i * dv + j] * kk[i];
        const double upd = beta * (vv[j] - pred);
        for (int64_t i = 0; i < dk; ++i) S[i * dv + j] += kk[i] * upd;
      }
      double ms = 0;
      for (int64_t j = 0; j < dv; ++j) {
        double s = 0;
        for (int64_t i = 0; i < dk; ++i) s += S[i * dv + j] * qq[i];
        o[hd * dv + j] = s;
        ms += s * s;
      }
      const double r = 1 / std::sqrt(ms / static_cast<double>(dv) + c.rms_norm_eps);
      for (int64_t j = 0; j < dv; ++j) {
        const double z = gate[hd * dv + j];
        o[hd * dv + j] *= r * onw[j] * z / (1 + std::exp(-z));
      }
    }
    for (int64_t oo = 0; oo < d; ++oo)
      for (int64_t j = 0; j < vd; ++j) out[t * d + oo] += o[j] * op[j * d + oo];
  }
  return out;
}

TEST(GatedDeltaNet, ChunkedWYFormMatchesTheNaiveRecurrence) {
  for (int64_t chunk : {1, 2, 5, 8, 64}) {
    const auto cfg = gdn_config(chunk);
    const auto m = model::Model::init(cfg, 3, DType::F64);
    const int64_t T = 21;
    Rng r(5);
    const Tensor x = randn({T, cfg.hidden_size}, r, 1.0, DType::F64);
    const auto got = m.mixer(0).forward(x, 0, {}, nullptr).to_vector();
    EXPECT_LT(max_abs_diff(got, naive(cfg, m, x.to_vector(), T)), 1e-11) << "chunk_size " << chunk;
  }
}

// Trained keys align and gates open; then (I + L)^-1 has entries of order one while the powers of
// L in a Neumann product grow like binomial coefficients, and float32 loses every digit (the
// first version of this mixer gave NaN). Same keys at every position, slow decay, beta 1/2,
// chunks of 64: float32 must still match the float64 recurrence.
TEST(GatedDeltaNet, AlignedKeysAndSlowDecayStayAccurateInFloat32) {
  auto cfg = gdn_config(64);
  const auto ref = model::Model::init(cfg, 3, DType::F64);
  std::map<std::string, Tensor> ts;
  for (auto& [name, t] : ref.named_parameters()) {
    Tensor c = clone(t.detach());
    if (name == "blocks.0.gdn.A_log") c = full(c.shape(), -8.0, DType::F64);  // decay exp(-3e-4 softplus(.))
    if (name == "blocks.0.gdn.b_proj") c = zeros(c.shape(), DType::F64);      // beta = 1/2
    ts[name] = c;
  }
  const auto m64 = model::Model::from_tensors(cfg, ts, DType::F64);
  const auto m32 = model::Model::from_tensors(cfg, ts, DType::F32);
  const int64_t T = 192;
  Rng r(9);
  const Tensor row = randn({1, cfg.hidden_size}, r, 1.0, DType::F64);
  const Tensor x = contiguous(broadcast_to(row, {T, cfg.hidden_size}));
  const auto want = naive(cfg, m64, x.to_vector(), T);
  const auto got64 = m64.mixer(0).forward(x, 0, {}, nullptr).to_vector();
  const auto got32 = m32.mixer(0).forward(to_dtype(x, DType::F32), 0, {}, nullptr).to_vector();
  double scale = 0;
  for (double v : want) scale = std::max(scale, std::fabs(v));
  EXPECT_LT(max_abs_diff(got64, want), 1e-9 * scale);
  EXPECT_LT(max_abs_diff(got32, want), 1e-4 * scale) << "scale " << scale;
}

TEST(GatedDeltaNet, CarriedStateEqualsOneCall) {
  expect_carried_state_equals_one_call(model::Model::init(gdn_config(4), 4, DType::F64), 13, 6);
}

TEST(GatedDeltaNet, DecodeEqualsPrefillStateIsConstantAndSessionsRestoreExactly) {
  auto cfg = gdn_config(8, 2);  // block 1 is SWA (window 5)
  cfg.prime = true;
  cfg.suffix_len = 1;
  expect_decode_equals_prefill_and_states_restore(model::Model::init(cfg, 7), 13, 37);
}

}  // namespace
}  // namespace ttt::test
