// Mamba 2 (model/mamba2_mixer.h) against a naive float64 recurrence written from the reference
// (state-spaces/mamba: modules/mamba2.py's step() and ssd_minimal.py's definition), plus its
// invariants: any chunk size gives the same result, a state carried across calls equals one
// call, decode equals prefill, and the decode state does not grow with the context.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <vector>

#include "inference/session.h"
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
  c.d_state = 5;
  c.headdim = 6;  // d_inner 24: 4 heads
  c.d_conv = 4;
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
                  P = c.headdim, N = c.d_state, K = c.d_conv, width = di + cd + H;
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

double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

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
  const auto cfg = mamba_model_config(4);
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

TEST(Mamba2, DecodeEqualsPrefillAndTheStateDoesNotGrow) {
  auto cfg = mamba_model_config(8, 2);  // block 1 is SWA
  cfg.prime = true;
  cfg.suffix_len = 1;
  const auto m = model::Model::init(cfg, 7);
  std::vector<int32_t> seq;
  for (int i = 0; i < 41; ++i) seq.push_back(i % 13 == 0 ? 0 : 1 + (i * 5) % 16);
  const std::vector<int32_t> in(seq.begin(), seq.end() - 1), tg(seq.begin() + 1, seq.end());
  const auto pre = e2e::prefill(m, in, tg);
  inference::Session s(m);
  size_t bytes_at_12 = 0;
  for (size_t i = 0; i < in.size(); ++i) {
    const auto logits = s.step(in[i]);
    double mx = -1e300, z = 0;
    for (float v : logits) mx = std::max(mx, static_cast<double>(v));
    for (float v : logits) z += std::exp(v - mx);
    EXPECT_NEAR(std::log(z) + mx - logits[tg[i]], pre.nll[i], 2e-5) << "position " << i;
    if (i == 12) bytes_at_12 = s.state_bytes();
    if (i == 36) EXPECT_EQ(s.state_bytes(), bytes_at_12) << "the state grew with the context";
  }
}

TEST(Mamba2, SessionStateSavesRestoresAndForksExactly) {
  auto cfg = mamba_model_config(8, 2);
  cfg.prime = true;
  cfg.suffix_len = 2;
  const auto m = model::Model::init(cfg, 9);
  inference::Session a(m);
  a.feed({0, 3, 4, 5, 6, 7, 8, 9, 10, 11});  // mid-chunk: b = 4
  const std::string path = ::testing::TempDir() + "/mamba_state_" + std::to_string(::getpid()) + ".safetensors";
  a.save_state(path);
  auto b = inference::Session::load_state(m, path);
  auto c = a.fork();
  for (int32_t t : {12, 13, 14, 15, 16, 1}) {
    const auto la = a.step(t), lb = b.step(t), lc = c.step(t);
    EXPECT_EQ(la, lb);
    EXPECT_EQ(la, lc);
  }
  inference::Session fresh(m);
  fresh.save_state(path);  // an empty Mamba 2 state is stored as zeros and read back
  EXPECT_NO_THROW(inference::Session::load_state(m, path));
  std::remove(path.c_str());
}

TEST(Mamba2, ConfigValidation) {
  auto c = mamba_model_config(4);
  c.headdim = 7;  // 24 % 7 != 0
  EXPECT_THROW(model::validate_config(c), std::runtime_error);
  c = mamba_model_config(4);
  c.chunk_size = 0;
  EXPECT_THROW(model::validate_config(c), std::runtime_error);
  c = mamba_model_config(4);
  EXPECT_NO_THROW(model::validate_config(c));
  const auto back = model::config_from_json(model::config_to_json(c));
  EXPECT_EQ(back.d_state, c.d_state);
  EXPECT_EQ(back.headdim, c.headdim);
  EXPECT_EQ(back.chunk_size, c.chunk_size);
}

}  // namespace
}  // namespace ttt::test
