// TTT-KVB (model/ttt_kvb_mixer.h): the fast-weight core against a naive float64 loop written from
// LaCT's block_causal_lact_swiglu (apply, then update once per chunk; manual SwiGLU gradients of
// the dot-product key-value loss with per-token rates; rows rescaled to the initial norms), and
// the mixer's invariants: carried state equals one call, decode equals prefill, the state stays
// bounded, session files restore it exactly.
#include <gtest/gtest.h>
#include <cmath>
#include <vector>

#include "mixer_checks.h"
#include "model/model.h"
#include "model/ttt_kvb_mixer.h"
#include "ttt/inner_loop.h"

namespace ttt::test {
namespace {

using V = std::vector<double>;

// One head of LaCT's loop: W0, W2 [dh, din], W1 [dout, dh]; q, k [T, din], v [T, dout], lr [T, 3].
V naive_head(V W0, V W1, V W2, const V& q, const V& k, const V& v, const V& lr, int64_t T, int64_t din, int64_t dh,
             int64_t dout, int64_t C) {
  auto row_norms = [](const V& w, int64_t rows, int64_t cols) {
    V n(static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r) {
      double s = 0;
      for (int64_t c = 0; c < cols; ++c) s += w[r * cols + c] * w[r * cols + c];
      n[r] = std::sqrt(s);
    }
    return n;
  };
  const V n0 = row_norms(W0, dh, din), n1 = row_norms(W1, dout, dh), n2 = row_norms(W2, dh, din);
  auto silu = [](double x) { return x / (1 + std::exp(-x)); };
  V out(static_cast<size_t>(T * dout), 0.0);
  for (int64_t s = 0; s < T; s += C) {
    const int64_t e = std::min(T, s + C);
    for (int64_t t = s; t < e; ++t)  // apply with the weights before this chunk
      for (int64_t j = 0; j < dh; ++j) {
        double g = 0, h = 0;
        for (int64_t i = 0; i < din; ++i) {
          g += W0[j * din + i] * q[t * din + i];
          h += W2[j * din + i] * q[t * din + i];
        }
        for (int64_t o = 0; o < dout; ++o) out[t * dout + o] += W1[o * dh + j] * silu(g) * h;
      }
    if (e - s < C) break;  // an incomplete chunk is never trained on
    V d0(W0.size(), 0.0), d1(W1.size(), 0.0), d2(W2.size(), 0.0);
    for (int64_t t = s; t < e; ++t)
      for (int64_t j = 0; j < dh; ++j) {
        double g = 0, h = 0, dhid = 0;
        for (int64_t i = 0; i < din; ++i) {
          g += W0[j * din + i] * k[t * din + i];
          h += W2[j * din + i] * k[t * din + i];
        }
        for (int64_t o = 0; o < dout; ++o) dhid += W1[o * dh + j] * v[t * dout + o];
        const double sg = 1 / (1 + std::exp(-g));
        const double dgate = dhid * h * sg * (1 + g * (1 - sg));
        for (int64_t o = 0; o < dout; ++o) d1[o * dh + j] += v[t * dout + o] * silu(g) * h * lr[t * 3 + 1];
        for (int64_t i = 0; i < din; ++i) {
          d0[j * din + i] += dgate * k[t * din + i] * lr[t * 3 + 0];
          d2[j * din + i] += dhid * silu(g) * k[t * din + i] * lr[t * 3 + 2];
        }
      }
    auto step = [&](V& w, const V& d, const V& n0r, int64_t rows, int64_t cols) {
      for (size_t i = 0; i < w.size(); ++i) w[i] += d[i];
      const V nr = row_norms(w, rows, cols);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) w[r * cols + c] = w[r * cols + c] / (nr[r] + 1e-5) * n0r[r];
    };
    step(W0, d0, n0, dh, din);
    step(W1, d1, n1, dout, dh);
    step(W2, d2, n2, dh, din);
  }
  return out;
}

TEST(TttKvb, FastWeightCoreMatchesLaCTsLoop) {
  const int64_t T = 23, nh = 2, din = 4, dh = 6, dout = 4, C = 5;
  Rng r(3);
  const Tensor w0 = randn({nh, dh, din}, r, 0.5, DType::F64), w1 = randn({nh, dout, dh}, r, 0.5, DType::F64),
               w2 = randn({nh, dh, din}, r, 0.5, DType::F64);
  const Tensor q = randn({T, nh, din}, r, 1.0, DType::F64), k = randn({T, nh, din}, r, 1.0, DType::F64),
               v = randn({T, nh, dout}, r, 1.0, DType::F64);
  const Tensor lr = mul_scalar(add_scalar(uniform({T, 3 * nh}, r, 0.0, 1.0, DType::F64), 0.1), 0.2);
  // In pieces that cut chunks anywhere, carrying the state: must equal the reference.
  model::FastWeights fw{w0, w1, w2, zeros({nh, 0, din}, DType::F64), zeros({nh, 0, dout}, DType::F64),
                        zeros({nh, 0, 3}, DType::F64)};
  std::vector<double> got(static_cast<size_t>(T * nh * dout));
  for (auto [s, e] : {std::pair<int64_t, int64_t>{0, 3}, {3, 12}, {12, 13}, {13, 23}}) {
    const auto o = model::lact_swiglu_block_causal(fw, w0, w1, w2, slice(q, 0, s, e), slice(k, 0, s, e),
                                                   slice(v, 0, s, e), slice(lr, 0, s, e), C)
                       .to_vector();
    std::copy(o.begin(), o.end(), got.begin() + s * nh * dout);
  }
  EXPECT_EQ(fw.pk.size(1), T % C);
  for (int64_t h = 0; h < nh; ++h) {
    auto head = [&](const Tensor& t, int64_t cols) {
      const auto all = t.to_vector();
      V o(static_cast<size_t>(T * cols));
      for (int64_t t2 = 0; t2 < T; ++t2)
        for (int64_t c = 0; c < cols; ++c) o[t2 * cols + c] = all[(t2 * nh + h) * cols + c];
      return o;
    };
    const auto w = [&](const Tensor& t) {
      const auto all = t.to_vector();
      const size_t per = all.size() / nh;
      return V(all.begin() + h * per, all.begin() + (h + 1) * per);
    };
    const auto lra = lr.to_vector();
    V lrh(static_cast<size_t>(T * 3));
    for (int64_t t2 = 0; t2 < T; ++t2)
      for (int j = 0; j < 3; ++j) lrh[t2 * 3 + j] = lra[t2 * 3 * nh + 3 * h + j];
    const V want = naive_head(w(w0), w(w1), w(w2), head(q, din), head(k, din), head(v, dout), lrh, T, din, dh, dout, C);
    double err = 0;
    for (int64_t t2 = 0; t2 < T; ++t2)
      for (int64_t o = 0; o < dout; ++o)
        err = std::max(err, std::fabs(got[(t2 * nh + h) * dout + o] - want[t2 * dout + o]));
    EXPECT_LT(err, 1e-11) << "head " << h;
  }
}

model::ModelConfig kvb_config() {
  model::ModelConfig c;
  c.vocab_size = 17;
  c.hidden_size = 12;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 2;
  c.intermediate_size = 16;
  c.seq_modeling_block = "ttt_kvb";
  c.sliding_window_size = 5;
  c.ttt_kvb.num_lact_heads = 3;
  c.ttt_kvb.inter_multi = 1.5;
  c.ttt_kvb.lact_chunk_size = 6;
  c.mini_batch_size = 4;
  c.rope_theta = 10000;
  c.bos_token_id = 0;
  c.initializer_range = 0.3;
  return c;
}

TEST(TttKvb, CarriedStateEqualsOneCall) {
  expect_carried_state_equals_one_call(model::Model::init(kvb_config(), 4, DType::F64), 17, 6);
}

TEST(TttKvb, DecodeEqualsPrefillStateIsBoundedAndSessionsRestoreExactly) {
  auto cfg = kvb_config();
  cfg.prime = true;
  cfg.suffix_len = 1;
  // 12 and 36 tokens: whole chunks of 6, nothing pending; windows of 5 full.
  expect_decode_equals_prefill_and_states_restore(model::Model::init(cfg, 7), 12, 36);
}

}  // namespace
}  // namespace ttt::test
