// Training: a tiny run learns, resume continues exactly, conversion keeps the function.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <unistd.h>
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/tokens.h"
#include "model/model.h"
#include "train/convert.h"
#include "train/trainer.h"
#include "ttt/inner_loop.h"

namespace ttt::test {
namespace fs = std::filesystem;

namespace {

model::ModelConfig train_config(bool prime) {
  model::ModelConfig c;
  c.vocab_size = 24;
  c.hidden_size = 32;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 2;
  c.intermediate_size = 48;
  c.seq_modeling_block = "SWA";
  c.sliding_window_size = 16;
  c.mini_batch_size = 8;
  c.prime = prime;
  c.suffix_len = prime ? 1 : 0;
  c.rope_theta = 10000;
  c.bos_token_id = 0;
  return c;
}

// Learnable synthetic data: documents of a noisy deterministic chain (a bigram model learns it).
std::string synthetic_tokens(const fs::path& dir) {
  Rng r(17);
  std::vector<int32_t> t;
  while (t.size() < 20000) {
    t.push_back(0);  // BOS
    int32_t x = static_cast<int32_t>(1 + r.next_u64() % 23);
    for (int i = 0; i < 60; ++i) {
      t.push_back(x);
      x = r.uniform() < 0.1 ? static_cast<int32_t>(1 + r.next_u64() % 23) : (3 * x + 1) % 23 + 1;
    }
  }
  const auto path = (dir / "tokens.bin").string();
  io::write_tokens(path, t);
  return path;
}

fs::path temp_dir(const std::string& name) {
  // Unique per process: ctest runs tests in parallel processes.
  const fs::path p = fs::path(::testing::TempDir()) / ("ttt_train_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

train::TrainOptions small_options(const fs::path& out, int64_t steps) {
  train::TrainOptions o;
  o.steps = steps;
  o.seq_len = 32;
  o.batch = 2;
  o.lr = 1e-2;
  o.val_every = steps;
  o.val_seqs = 4;
  o.ckpt_every = 0;
  o.out_dir = out.string();
  o.plot = false;
  return o;
}

std::vector<double> losses(const fs::path& metrics) {
  std::vector<double> out;
  std::ifstream f(metrics);
  std::string line;
  while (std::getline(f, line)) out.push_back(nlohmann::json::parse(line).at("loss").get<double>());
  return out;
}

}  // namespace

TEST(Train, TinyRunLowersValidationLoss) {
  const auto dir = temp_dir("learn");
  const auto tokens = synthetic_tokens(dir);
  for (bool prime : {false, true}) {
    auto m = model::Model::init(train_config(prime), 1);
    auto data = train::token_file_source(tokens, 0.1, 3);
    const auto val = data->validation(33, 4);
    const double before = train::validation_loss(m, val);
    const auto s = train::train(m, *data, small_options(dir / (prime ? "meta" : "pre"), 40), nullptr);
    EXPECT_LT(s.last_val, before - 0.5) << (prime ? "meta" : "pretrain") << ": " << before << " -> " << s.last_val;
    EXPECT_TRUE(fs::exists(dir / (prime ? "meta" : "pre") / "checkpoint" / "trainer.json"));
  }
}

TEST(Train, ResumeContinuesExactly) {
  const auto dir = temp_dir("resume");
  const auto tokens = synthetic_tokens(dir);
  for (bool prime : {false, true}) {
    const auto tag = std::string(prime ? "meta" : "pre");
    auto straight = model::Model::init(train_config(prime), 2);
    auto d1 = train::token_file_source(tokens, 0.1, 5);
    train::train(straight, *d1, small_options(dir / (tag + "_a"), 8), nullptr);

    auto first = model::Model::init(train_config(prime), 2);
    auto d2 = train::token_file_source(tokens, 0.1, 5);
    auto o = small_options(dir / (tag + "_b"), 8);
    o.stop_after = 3;
    train::train(first, *d2, o, nullptr);
    auto resumed = model::Model::init(train_config(prime), 99);  // weights come from the checkpoint
    auto d3 = train::token_file_source(tokens, 0.1, 1234);       // so does the sampler state
    o.stop_after = 0;
    o.resume = true;
    train::train(resumed, *d3, o, nullptr);

    EXPECT_EQ(losses(dir / (tag + "_a") / "metrics.jsonl"), losses(dir / (tag + "_b") / "metrics.jsonl")) << tag;
    for (size_t i = 0; i < straight.named_parameters().size(); ++i)
      EXPECT_EQ(straight.named_parameters()[i].second.to_vector(), resumed.named_parameters()[i].second.to_vector())
          << tag << " " << straight.named_parameters()[i].first;
  }
}

TEST(Train, BadInputIsRejectedWithoutOverwriting) {
  const auto dir = temp_dir("bad");
  const auto tokens = synthetic_tokens(dir);
  auto meta = model::Model::init(train_config(true), 1);
  auto data = train::token_file_source(tokens, 0.1, 1);
  auto o = small_options(dir / "x", 2);
  o.seq_len = 30;  // not a multiple of b = 8
  EXPECT_THROW(train::train(meta, *data, o, nullptr), std::invalid_argument);
  auto small_vocab = train_config(false);
  small_vocab.vocab_size = 10;
  auto m2 = model::Model::init(small_vocab, 1);
  EXPECT_THROW(train::train(m2, *data, small_options(dir / "y", 2), nullptr), std::invalid_argument);
  // A finished run is not overwritten without --resume; a resume with other options is refused.
  auto m3 = model::Model::init(train_config(false), 1);
  train::train(m3, *data, small_options(dir / "z", 2), nullptr);
  EXPECT_THROW(train::train(m3, *data, small_options(dir / "z", 2), nullptr), std::runtime_error);
  auto changed = small_options(dir / "z", 2);
  changed.resume = true;
  changed.lr = 5e-3;
  EXPECT_THROW(train::train(m3, *data, changed, nullptr), std::runtime_error);
  io::write_tokens((dir / "empty.bin").string(), {});
  EXPECT_THROW(train::token_file_source((dir / "empty.bin").string(), 0.1, 1), std::runtime_error);
}

TEST(Train, LossPlotSkipsNullValuesInsteadOfStoppingTheRun) {
  // A model whose validation loss is not finite writes "val_loss": null; the plot of such a
  // run once threw (x had a point that y lacked) and ended the training.
  const fs::path dir = fs::path(::testing::TempDir()) / ("ttt_loss_plot_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "metrics.jsonl") << "{\"step\":1,\"loss\":7.5}\n{\"step\":2,\"loss\":7.2,\"val_loss\":null}\n"
                                       << "{\"step\":3,\"loss\":null,\"skipped\":true}\n{\"step\":4,\"loss\":6.9,\"val_loss\":7.0}\n";
  EXPECT_NO_THROW(train::write_loss_plot(dir));
  EXPECT_TRUE(fs::exists(dir / "loss.png"));
  fs::remove_all(dir);
}

TEST(Train, SchedulesEqualOptaxAndTheOfficialMultiplier) {
  // Values printed by optax 0.2.4 (the official code's pin), computed in float32:
  //   optax.warmup_cosine_decay_schedule(init_value=0.0, peak_value=3e-3, warmup_steps=10,
  //                                      decay_steps=100, end_value=1e-5)(step)
  const std::pair<int64_t, double> optax_small[] = {
      {0, 0.0}, {1, 0.00030000018887221813}, {5, 0.001500000013038516}, {9, 0.0027000000700354576},
      {10, 0.003000000026077032}, {11, 0.002999089425429702}, {37, 0.0023837389890104532},
      {55, 0.001505000051110983}, {99, 1.0910694072663318e-05}, {100, 1.0000000656873453e-05},
      {120, 1.0000000656873453e-05}};
  for (auto [step, want] : optax_small)
    EXPECT_NEAR(train::cosine_lr(step, 100, 10, 3e-3, 1e-5), want, 1e-6 * 3e-3 + 1e-12) << "step " << step;
  // The 125M recipe's shape: peak 1e-3 (scaled), warmup 480 of 4800.
  const std::pair<int64_t, double> optax_125m[] = {{0, 0.0},
                                                  {1, 2.0833685994148254e-06},
                                                  {479, 0.0009979166788980365},
                                                  {480, 0.0010000000474974513},
                                                  {481, 0.0009999999310821295},
                                                  {2400, 0.000590955896768719},
                                                  {4799, 1.0000118891184684e-05}};
  for (auto [step, want] : optax_125m)
    EXPECT_NEAR(train::cosine_lr(step, 4800, 480, 1e-3, 1e-5), want, 1e-6 * 1e-3) << "step " << step;
  // ttt/model/transformer.py: ilr_init + (1 - ilr_init) * min(1, (step + 1) / ilr_warmup_steps).
  EXPECT_NEAR(train::inner_lr_warmup(0, 10, 0.1), 0.19, 1e-12);
  EXPECT_NEAR(train::inner_lr_warmup(4, 10, 0.1), 0.55, 1e-12);
  EXPECT_EQ(train::inner_lr_warmup(9, 10, 0.1), 1.0);
  EXPECT_EQ(train::inner_lr_warmup(50, 10, 0.1), 1.0);
  EXPECT_EQ(train::inner_lr_warmup(0, 0, 0.1), 1.0);
}

TEST(Train, WeightDecayReachesEveryParameterUnlessMatricesOnly) {
  // A zero gradient isolates the decay: p (1 - lr wd) for decayed parameters.
  for (bool matrices_only : {false, true}) {
    Tensor w = full({2, 2}, 1.0, DType::F32), n = full({3}, 1.0, DType::F32);
    train::AdamWOptions o;
    o.weight_decay = 0.5;
    o.decay_matrices_only = matrices_only;
    train::AdamW opt({{"w", w}, {"norm", n}}, o);
    opt.step({zeros({2, 2}, DType::F32), zeros({3}, DType::F32)}, 0.1);
    EXPECT_FLOAT_EQ(w.to_floats()[0], 0.95f);
    EXPECT_FLOAT_EQ(n.to_floats()[0], matrices_only ? 1.0f : 0.95f);
  }
}

TEST(Convert, TTTModelStartsAsTheSameFunction) {
  auto swa = model::Model::init(train_config(false), 4);
  train::ConvertOptions co;
  co.suffix_len = 1;
  const auto ttt_model = train::convert_to_ttt(swa, co);
  EXPECT_TRUE(ttt_model.config().prime);
  Rng r(2);
  std::vector<int32_t> seq(41);
  for (auto& t : seq) t = static_cast<int32_t>(r.next_u64() % 24);
  std::vector<int32_t> in(seq.begin(), seq.end() - 1), tg(seq.begin() + 1, seq.end());
  const auto a = e2e::prefill(swa, in, tg), b = e2e::prefill(ttt_model, in, tg);
  for (size_t i = 0; i < a.nll.size(); ++i) EXPECT_NEAR(a.nll[i], b.nll[i], 1e-5) << i;
  auto full = train_config(false);
  full.seq_modeling_block = "self_attention";
  EXPECT_THROW(train::convert_to_ttt(model::Model::init(full, 1), co), std::invalid_argument);
  EXPECT_THROW(train::convert_to_ttt(ttt_model, co), std::invalid_argument);
}

}  // namespace ttt::test

namespace ttt::test {
TEST(Convert, MetaGradientOfAConvertedModelIsFinite) {
  // The prime post-norm weight starts at 0, so the first inner gradients are exactly zero; the
  // clip must not differentiate sqrt at 0 (that gave NaN and a diverged warm start).
  auto swa = model::Model::init(train_config(false), 6);
  train::ConvertOptions co;
  co.suffix_len = 1;
  auto m = train::convert_to_ttt(swa, co);
  m.set_requires_grad(true);
  Rng r(3);
  std::vector<int32_t> seq(33);
  for (auto& t : seq) t = static_cast<int32_t>(1 + r.next_u64() % 23);
  std::vector<int32_t> in(seq.begin(), seq.end() - 1), tg(seq.begin() + 1, seq.end());
  auto g = grad({e2e::training_loss(m, in, tg)}, m.parameters());
  for (size_t i = 0; i < g.size(); ++i)
    for (double v : g[i].to_vector()) ASSERT_TRUE(std::isfinite(v)) << m.named_parameters()[i].first;
}
}  // namespace ttt::test
