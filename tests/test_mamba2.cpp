// Mamba 2 (model/mamba2_mixer.h) against a naive float64 recurrence written from the reference
// (state-spaces/mamba: modules/mamba2.py's step() and ssd_minimal.py's definition), plus its
// invariants: any chunk size gives the same result, a state carried across calls equals one
// call, decode equals prefill, and the decode state does not grow with the context.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "mixer_checks.h"
#include "model/mamba2_mixer.h"
#include "model/model.h"
#include "ttt/inner_loop.h"

namespace ttt::test {
namespace {

model::ModelConfig mamba_model_config(int64_t chunk, int64_t swa_every = 0) {
  model::ModelConfig c;
  c.vocab_size = 17;
  c.hidden_size = 12;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 2;
  c.intermediate_size = 16;
  c.seq_modeling_block = "mamba2";
  c.swa_every = swa_every;
  c.sliding_window_size = 5;
  c.mamba2.d_state = 5;
  c.mamba2.headdim = 6;  // d_inner 24: 4 heads
  c.mamba2.d_conv = 4;
  c.chunk_size = chunk;
  c.mini_batch_size = 4;
  c.rope_theta = 10000;
  c.bos_token_id = 0;
  c.initializer_range = 0.3;
  return c;
}

// The mixer of block 0 (a Mamba 2 block) with its parameters as plain vectors.
struct Ref {
  const model::ModelConfig& c;
  std::vector<double> in_proj, conv_w, conv_b, dt_bias, A_log, D, norm_w, out_proj;

  Ref(const model::ModelConfig& cfg, const model::Model& m) : c(cfg) {
    auto get = [&](const std::string& n) {
      for (auto& [name, t] : m.named_parameters())
        if (name == "blocks.0.mamba." + n) return t.to_vector();
      ADD_FAILURE() << "no parameter " << n;
      return std::vector<double>{};
    };
    in_proj = get("in_proj");
    conv_w = get("conv1d.weight");
    conv_b = get("conv1d.bias");
    dt_bias = get("dt_bias");
    A_log = get("A_log");
    D = get("D");
    norm_w = get("norm.weight");
    out_proj = get("out_proj");
  }

  // Token by token: conv window, h = exp(dt A) h + dt x B^T, y = h C + D x, gated RMSNorm.
  std::vector<double> run(const std::vector<double>& x, int64_t T) const {
    const int64_t d = c.hidden_size, di = c.mamba_d_inner(), cd = c.mamba_conv_dim(), H = c.mamba_heads(),
                  P = c.mamba2.headdim, N = c.mamba2.d_state, K = c.mamba2.d_conv, width = di + cd + H;
    std::vector<double> hist(static_cast<size_t>(K * cd), 0.0);  // last K conv inputs, oldest first
    std::vector<double> h(static_cast<size_t>(H * P * N), 0.0), out(static_cast<size_t>(T * d), 0.0);
    for (int64_t t = 0; t < T; ++t) {
      std::vector<double> zx(static_cast<size_t>(width), 0.0);
      for (int64_t j = 0; j < width; ++j)
        for (int64_t i = 0; i < d; ++i) zx[j] += x[t * d + i] * in_proj[i * width + j];
      hist.erase(hist.begin(), hist.begin() + cd);
      hist.insert(hist.end(), zx.begin() + di, zx.begin() + di + cd);
      std::vector<double> xbc(static_cast<size_t>(cd));
      for (int64_t ch = 0; ch < cd; ++ch) {
        double a = conv_b[ch];
        for (int64_t k = 0; k < K; ++k) a += conv_w[ch * K + k] * hist[k * cd + ch];
        xbc[ch] = a / (1 + std::exp(-a));
      }
      std::vector<double> y(static_cast<size_t>(di));
      for (int64_t hd = 0; hd < H; ++hd) {
        const double raw = zx[di + cd + hd] + dt_bias[hd];
        const double dt = raw > 0 ? raw + std::log1p(std::exp(-raw)) : std::log1p(std::exp(raw));
        const double decay = std::exp(-std::exp(A_log[hd]) * dt);
        for (int64_t p = 0; p < P; ++p) {
          const double xv = xbc[hd * P + p];
          double acc = 0;
          for (int64_t n = 0; n < N; ++n) {
            double& s = h[(hd * P + p) * N + n];
            s = decay * s + dt * xv * xbc[di + n];
            acc += s * xbc[di + N + n];
          }
          y[hd * P + p] = acc + D[hd] * xv;
        }
      }
      double ms = 0;
      for (int64_t j = 0; j < di; ++j) {
        const double zz = zx[j];
        y[j] *= zz / (1 + std::exp(-zz));
        ms += y[j] * y[j];
      }
      const double r = 1 / std::sqrt(ms / static_cast<double>(di) + c.rms_norm_eps);
      for (int64_t o = 0; o < d; ++o)
        for (int64_t j = 0; j < di; ++j) out[t * d + o] += y[j] * r * norm_w[j] * out_proj[j * d + o];
    }
    return out;
  }
};

TEST(Mamba2, ChunkedScanMatchesTheNaiveRecurrence) {
  for (int64_t chunk : {1, 3, 7, 64}) {
    const auto cfg = mamba_model_config(chunk);
    const auto m = model::Model::init(cfg, 3, DType::F64);
    const int64_t T = 19;
    Rng r(5);
    const Tensor x = randn({T, cfg.hidden_size}, r, 1.0, DType::F64);
    const auto got = m.mixer(0).forward(x, 0, {}, nullptr).to_vector();
    const auto want = Ref(cfg, m).run(x.to_vector(), T);
    EXPECT_LT(max_abs_diff(got, want), 1e-11) << "chunk_size " << chunk;
  }
}

TEST(Mamba2, CarriedStateEqualsOneCall) {
  expect_carried_state_equals_one_call(model::Model::init(mamba_model_config(4), 4, DType::F64), 13, 6);
}

TEST(Mamba2, DecodeEqualsPrefillStateIsConstantAndSessionsRestoreExactly) {
  auto cfg = mamba_model_config(8, 2);  // block 1 is SWA (window 5)
  cfg.prime = true;
  cfg.suffix_len = 2;
  expect_decode_equals_prefill_and_states_restore(model::Model::init(cfg, 7), 13, 37);
}

TEST(Mamba2, ConfigValidation) {
  auto c = mamba_model_config(4);
  c.mamba2.headdim = 7;  // 24 % 7 != 0
  EXPECT_THROW(model::validate_config(c), std::runtime_error);
  c = mamba_model_config(4);
  c.chunk_size = 0;
  EXPECT_THROW(model::validate_config(c), std::runtime_error);
  c = mamba_model_config(4);
  EXPECT_NO_THROW(model::validate_config(c));
  const auto back = model::config_from_json(model::config_to_json(c));
  EXPECT_EQ(back.mamba2.d_state, c.mamba2.d_state);
  EXPECT_EQ(back.mamba2.headdim, c.mamba2.headdim);
  EXPECT_EQ(back.chunk_size, c.chunk_size);
}

}  // namespace
}  // namespace ttt::test
