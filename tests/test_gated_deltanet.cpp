// Gated DeltaNet (model/gated_deltanet_mixer.h) against a naive float64 recurrence written from
// fla's reference (ops/gated_delta_rule naive recurrent form and layers/gated_deltanet.py), plus
// its invariants: any chunk size gives the same result, a carried state equals one call, decode
// equals prefill, the state does not grow, and session files restore it exactly.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <vector>

#include "inference/session.h"
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
  c.expand_v = 2;
  c.conv_size = 4;
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
  const int64_t d = c.hidden_size, H = c.num_attention_heads, dk = c.head_dim(), dv = c.expand_v * dk, kd = H * dk,
                vd = H * dv, C = 2 * kd + vd, K = c.conv_size;
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

double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
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

TEST(GatedDeltaNet, CarriedStateEqualsOneCall) {
  const auto cfg = gdn_config(4);
  const auto m = model::Model::init(cfg, 4, DType::F64);
  Rng r(6);
  const Tensor x = randn({13, cfg.hidden_size}, r, 1.0, DType::F64);
  const auto whole = m.mixer(0).forward(x, 0, {}, nullptr).to_vector();
  std::vector<double> parts;
  model::MixerState st;
  for (auto [s, e] : {std::pair<int64_t, int64_t>{0, 5}, {5, 6}, {6, 13}}) {
    model::MixerState next;
    const auto y = m.mixer(0).forward(slice(x, 0, s, e), s, st, &next).to_vector();
    parts.insert(parts.end(), y.begin(), y.end());
    st = next.detached();
  }
  EXPECT_LT(max_abs_diff(parts, whole), 1e-12);
  const auto shapes = m.mixer(0).state_shapes(13);
  ASSERT_EQ(st.tensors.size(), 2u);
  EXPECT_EQ(st.tensors[0].shape(), shapes[0]);
  EXPECT_EQ(st.tensors[1].shape(), shapes[1]);
}

TEST(GatedDeltaNet, DecodeEqualsPrefillStateIsConstantAndSessionsRestoreExactly) {
  auto cfg = gdn_config(8, 2);  // block 1 is SWA
  cfg.prime = true;
  cfg.suffix_len = 1;
  const auto m = model::Model::init(cfg, 7);
  std::vector<int32_t> seq;
  for (int i = 0; i < 41; ++i) seq.push_back(i % 13 == 0 ? 0 : 1 + (i * 5) % 16);
  const std::vector<int32_t> in(seq.begin(), seq.end() - 1), tg(seq.begin() + 1, seq.end());
  const auto pre = e2e::prefill(m, in, tg);
  inference::Session s(m);
  size_t bytes_at_12 = 0;
  const std::string path = ::testing::TempDir() + "/gdn_state_" + std::to_string(::getpid()) + ".safetensors";
  for (size_t i = 0; i < in.size(); ++i) {
    const auto logits = s.step(in[i]);
    double mx = -1e300, z = 0;
    for (float v : logits) mx = std::max(mx, static_cast<double>(v));
    for (float v : logits) z += std::exp(v - mx);
    EXPECT_NEAR(std::log(z) + mx - logits[tg[i]], pre.nll[i], 2e-5) << "position " << i;
    if (i == 12) bytes_at_12 = s.state_bytes();
    if (i == 36) EXPECT_EQ(s.state_bytes(), bytes_at_12) << "the state grew with the context";
    if (i == 18) s.save_state(path);
  }
  auto r = inference::Session::load_state(m, path);
  inference::Session again(m);
  for (size_t i = 0; i < 19; ++i) again.step(in[i]);  // the same path as the saved session
  for (int32_t t : {3, 4, 5, 6, 7}) EXPECT_EQ(r.step(t), again.step(t));
  std::remove(path.c_str());
}

}  // namespace
}  // namespace ttt::test
