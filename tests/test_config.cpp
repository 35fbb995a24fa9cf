// Model config: strict JSON parsing, validation, parameter list, checkpoint checks.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <map>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "autodiff/ops.h"
#include "io/safetensors.h"
#include "model/config.h"

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using ttt::model::ModelConfig;

fs::path test_dir() {
  static int counter = 0;
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  fs::path p = fs::path(::testing::TempDir()) /
               ("ttt_cfg_" + std::to_string(::getpid()) + "_" + info->name() + "_" + std::to_string(counter++));
  fs::create_directories(p);
  return p;
}

json base_json() {
  return json{{"vocab_size", 50},       {"hidden_size", 16},   {"num_hidden_layers", 4},
              {"num_attention_heads", 2}, {"intermediate_size", 24}, {"seq_modeling_block", "SWA"},
              {"sliding_window_size", 8}, {"mini_batch_size", 4},  {"prime", true},
              {"suffix_len", 1},          {"bos_token_id", 1},   {"tie_word_embeddings", false}};
}

void expect_same(const ModelConfig& a, const ModelConfig& b) {
  EXPECT_EQ(a.vocab_size, b.vocab_size);
  EXPECT_EQ(a.hidden_size, b.hidden_size);
  EXPECT_EQ(a.num_hidden_layers, b.num_hidden_layers);
  EXPECT_EQ(a.num_attention_heads, b.num_attention_heads);
  EXPECT_EQ(a.intermediate_size, b.intermediate_size);
  EXPECT_EQ(a.seq_modeling_block, b.seq_modeling_block);
  EXPECT_EQ(a.full_attention_every, b.full_attention_every);
  EXPECT_EQ(a.sliding_window_size, b.sliding_window_size);
  EXPECT_EQ(a.mini_batch_size, b.mini_batch_size);
  EXPECT_EQ(a.prime, b.prime);
  EXPECT_EQ(a.suffix_len, b.suffix_len);
  EXPECT_EQ(a.rope_theta, b.rope_theta);
  EXPECT_EQ(a.rms_norm_eps, b.rms_norm_eps);
  EXPECT_EQ(a.qk_norm, b.qk_norm);
  EXPECT_EQ(a.pre_norm, b.pre_norm);
  EXPECT_EQ(a.post_norm, b.post_norm);
  EXPECT_EQ(a.tie_word_embeddings, b.tie_word_embeddings);
  EXPECT_EQ(a.bos_token_id, b.bos_token_id);
  EXPECT_EQ(a.initializer_range, b.initializer_range);
}

TEST(Config, ParsesAndRoundTrips) {
  json j = base_json();
  j["full_attention_every"] = 2;
  j["rope_theta"] = 10000.5;
  j["rms_norm_eps"] = 1e-5;
  j["initializer_range"] = 0.01;
  const ModelConfig c = ttt::model::config_from_json(j.dump());
  EXPECT_EQ(c.vocab_size, 50);
  EXPECT_EQ(c.full_attention_every, 2);
  EXPECT_EQ(c.rope_theta, 10000.5);
  EXPECT_TRUE(c.prime);
  EXPECT_FALSE(c.tie_word_embeddings);

  const std::string text = ttt::model::config_to_json(c);
  const json back = json::parse(text);
  EXPECT_EQ(back.size(), 19u);  // every field written
  EXPECT_NE(text.find('\n'), std::string::npos);  // pretty
  expect_same(ttt::model::config_from_json(text), c);

  const fs::path p = test_dir() / "config.json";
  ttt::model::save_config(c, p.string());
  expect_same(ttt::model::load_config(p.string()), c);
}

TEST(Config, DefaultsAndUnknownFields) {
  const ModelConfig c = ttt::model::config_from_json(
      R"({"vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 2, "num_attention_heads": 2,
          "intermediate_size": 12, "sliding_window_size": 4, "model_type": "ttt", "remat": [1, 2],
          "rope_theta": 500000})");
  EXPECT_EQ(c.seq_modeling_block, "SWA");
  EXPECT_EQ(c.mini_batch_size, 1024);
  EXPECT_FALSE(c.prime);
  EXPECT_EQ(c.suffix_len, 0);
  EXPECT_EQ(c.rope_theta, 500000.0);
  EXPECT_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_TRUE(c.qk_norm && c.pre_norm && c.post_norm && c.tie_word_embeddings);
  EXPECT_EQ(c.bos_token_id, 0);
  EXPECT_EQ(c.initializer_range, 0.02);
  EXPECT_EQ(c.full_attention_every, 0);
}

TEST(Config, HelperRules) {
  ModelConfig c = ttt::model::config_from_json(base_json().dump());
  EXPECT_EQ(c.head_dim(), 8);
  EXPECT_EQ(c.first_prime_layer(), 3);
  EXPECT_FALSE(c.has_prime(2));
  EXPECT_TRUE(c.has_prime(3));
  EXPECT_EQ(c.window_of(0), 8);
  c.full_attention_every = 2;  // hybrid: blocks 1 and 3 are full attention
  EXPECT_EQ(c.window_of(0), 8);
  EXPECT_EQ(c.window_of(1), 0);
  EXPECT_EQ(c.window_of(2), 8);
  EXPECT_EQ(c.window_of(3), 0);
  c.seq_modeling_block = "self_attention";
  EXPECT_EQ(c.window_of(0), 0);
  c.prime = false;
  EXPECT_EQ(c.first_prime_layer(), 4);
  EXPECT_FALSE(c.has_prime(3));
}

struct BadCase {
  std::string key;   // field to set; erased when value is null and erase is true
  json value;
  bool erase;
  std::string expect;  // substring of the message
};

TEST(ConfigInvalid, EachBadFieldIsNamed) {
  const std::vector<BadCase> cases = {
      {"vocab_size", nullptr, true, "missing required field vocab_size"},
      {"hidden_size", nullptr, true, "missing required field hidden_size"},
      {"num_hidden_layers", nullptr, true, "missing required field num_hidden_layers"},
      {"num_attention_heads", nullptr, true, "missing required field num_attention_heads"},
      {"intermediate_size", nullptr, true, "missing required field intermediate_size"},
      {"vocab_size", "50", false, "vocab_size must be an integer"},
      {"vocab_size", 1.5, false, "vocab_size must be an integer"},
      {"hidden_size", nullptr, false, "hidden_size must be an integer"},
      {"vocab_size", 0, false, "vocab_size must be positive"},
      {"hidden_size", -16, false, "hidden_size must be positive"},
      {"num_hidden_layers", 0, false, "num_hidden_layers must be positive"},
      {"num_attention_heads", 0, false, "num_attention_heads must be positive"},
      {"intermediate_size", 0, false, "intermediate_size must be positive"},
      {"vocab_size", 1ll << 40, false, "vocab_size is too large"},
      {"num_attention_heads", 3, false, "divisible by num_attention_heads"},
      {"num_attention_heads", 16, false, "head_dim"},  // 16 / 16 = 1: odd
      {"seq_modeling_block", "mamba", false, "seq_modeling_block"},
      {"seq_modeling_block", 1, false, "seq_modeling_block must be a string"},
      {"sliding_window_size", 0, false, "sliding_window_size"},
      {"sliding_window_size", nullptr, true, "sliding_window_size"},
      {"full_attention_every", -1, false, "full_attention_every"},
      {"mini_batch_size", 0, false, "mini_batch_size"},
      {"suffix_len", 5, false, "suffix_len"},
      {"suffix_len", -1, false, "suffix_len"},
      {"suffix_len", 0, false, "suffix_len"},  // prime with S = 0
      {"prime", "yes", false, "prime must be a boolean"},
      {"bos_token_id", 50, false, "bos_token_id"},
      {"bos_token_id", -1, false, "bos_token_id"},
      {"rope_theta", 0, false, "rope_theta"},
      {"rope_theta", "big", false, "rope_theta must be a number"},
      {"rms_norm_eps", -1e-6, false, "rms_norm_eps"},
      {"initializer_range", 0.0, false, "initializer_range"},
      {"qk_norm", false, false, "qk_norm = false is not supported: this engine only supports"},
      {"pre_norm", false, false, "pre_norm"},
      {"post_norm", false, false, "post_norm"},
      {"post_norm", 1, false, "post_norm must be a boolean"},
      {"tie_word_embeddings", "true", false, "tie_word_embeddings"},
  };
  for (const auto& bc : cases) {
    json j = base_json();
    if (bc.erase)
      j.erase(bc.key);
    else
      j[bc.key] = bc.value;
    try {
      ttt::model::config_from_json(j.dump());
      ADD_FAILURE() << "no exception for " << bc.key << " = " << bc.value.dump();
    } catch (const std::runtime_error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(bc.expect), std::string::npos) << "message: " << msg << "\nexpected: " << bc.expect;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    }
  }
}

TEST(ConfigInvalid, BadJsonAndFiles) {
  auto expect_msg = [](const std::function<void()>& f, const std::string& word) {
    try {
      f();
      ADD_FAILURE() << "no exception; expected " << word;
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find(word), std::string::npos) << e.what();
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
    }
  };
  expect_msg([] { ttt::model::config_from_json("{\"vocab_size\": "); }, "invalid JSON");
  expect_msg([] { ttt::model::config_from_json(""); }, "invalid JSON");
  expect_msg([] { ttt::model::config_from_json("[1, 2]"); }, "not a JSON object");
  expect_msg(
      [] {
        std::string s = base_json().dump();
        s.insert(1, "\"vocab_size\": 7, ");
        ttt::model::config_from_json(s);
      },
      "duplicate field vocab_size");
  const fs::path dir = test_dir();
  const std::string missing = (dir / "none.json").string();
  expect_msg([&] { ttt::model::load_config(missing); }, "cannot open config file " + missing);
  const fs::path bad = dir / "bad.json";
  {
    std::ofstream out(bad);
    json j = base_json();
    j["hidden_size"] = 0;
    out << j.dump();
  }
  expect_msg([&] { ttt::model::load_config(bad.string()); }, "config file " + bad.string() + ": hidden_size");
  ModelConfig c;  // all-zero sizes: save refuses and leaves nothing behind
  expect_msg([&] { ttt::model::save_config(c, (dir / "out.json").string()); }, "vocab_size");
  EXPECT_FALSE(fs::exists(dir / "out.json"));
}

TEST(Config, ParameterShapesPrimeUntied) {
  const ModelConfig c = ttt::model::config_from_json(base_json().dump());  // L=4, S=1, untied
  const auto ps = ttt::model::parameter_shapes(c);
  ASSERT_EQ(ps.size(), 1u + 4 * 13 + 5 + 1 + 1);
  EXPECT_EQ(ps.front().first, "embed.weight");
  EXPECT_EQ(ps.front().second, (std::vector<int64_t>{50, 16}));
  EXPECT_EQ(ps.back().first, "lm_head");
  EXPECT_EQ(ps.back().second, (std::vector<int64_t>{16, 50}));
  EXPECT_EQ(ps[ps.size() - 2].first, "final_norm.weight");
  std::map<std::string, std::vector<int64_t>> m(ps.begin(), ps.end());
  EXPECT_EQ(m.size(), ps.size());  // names unique
  EXPECT_EQ(m.at("blocks.0.attn.wq"), (std::vector<int64_t>{16, 16}));
  EXPECT_EQ(m.at("blocks.2.attn.q_norm.weight"), (std::vector<int64_t>{8}));
  EXPECT_EQ(m.at("blocks.1.mlp.w1"), (std::vector<int64_t>{16, 24}));
  EXPECT_EQ(m.at("blocks.1.mlp.w2"), (std::vector<int64_t>{24, 16}));
  EXPECT_EQ(m.at("blocks.3.prime.w2"), (std::vector<int64_t>{24, 16}));
  EXPECT_EQ(m.at("blocks.3.prime_post_norm.weight"), (std::vector<int64_t>{16}));
  EXPECT_EQ(m.count("blocks.2.prime.w1"), 0u);
  EXPECT_EQ(m.count("blocks.4.attn.wq"), 0u);

  json j = base_json();
  j["tie_word_embeddings"] = true;
  j["prime"] = false;
  j["suffix_len"] = 0;
  const auto tied = ttt::model::parameter_shapes(ttt::model::config_from_json(j.dump()));
  EXPECT_EQ(tied.size(), 1u + 4 * 13 + 1);
  EXPECT_EQ(tied.back().first, "final_norm.weight");
}

ttt::io::TensorFile full_checkpoint(const ModelConfig& c) {
  ttt::io::TensorFile f;
  for (const auto& [name, shape] : ttt::model::parameter_shapes(c)) f.tensors.emplace(name, ttt::zeros(shape));
  return f;
}

void expect_check_error(const ModelConfig& c, const ttt::io::TensorFile& f, const std::string& word) {
  try {
    ttt::model::check_checkpoint(c, f, "ckpt/model.safetensors");
    ADD_FAILURE() << "no exception; expected " << word;
  } catch (const std::runtime_error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(word), std::string::npos) << msg;
    EXPECT_NE(msg.find("ckpt/model.safetensors"), std::string::npos) << msg;
  }
}

TEST(ConfigCheckpoint, CatchesMissingExtraAndWrongShape) {
  const ModelConfig c = ttt::model::config_from_json(base_json().dump());
  EXPECT_NO_THROW(ttt::model::check_checkpoint(c, full_checkpoint(c), "x"));

  auto missing = full_checkpoint(c);
  missing.tensors.erase("blocks.3.prime.w3");
  expect_check_error(c, missing, "missing tensor blocks.3.prime.w3");

  auto extra = full_checkpoint(c);
  extra.tensors.emplace("blocks.2.prime.w1", ttt::zeros({16, 24}));
  expect_check_error(c, extra, "unexpected tensor blocks.2.prime.w1");

  auto wrong = full_checkpoint(c);
  wrong.tensors.at("blocks.1.mlp.w1") = ttt::zeros({16, 23});
  expect_check_error(c, wrong, "blocks.1.mlp.w1 has shape [16, 23], config says [16, 24]");

  auto tied_file = full_checkpoint(c);
  tied_file.tensors.erase("lm_head");
  expect_check_error(c, tied_file, "missing tensor lm_head");
}

TEST(ConfigCheckpoint, SafetensorsFileRoundTripPassesCheck) {
  const ModelConfig c = ttt::model::config_from_json(base_json().dump());
  std::vector<std::pair<std::string, ttt::Tensor>> tensors;
  for (const auto& [name, shape] : ttt::model::parameter_shapes(c)) tensors.emplace_back(name, ttt::ones(shape));
  const fs::path dir = test_dir();
  ttt::io::write_safetensors((dir / "model.safetensors").string(), tensors);
  ttt::model::save_config(c, (dir / "config.json").string());
  const ModelConfig c2 = ttt::model::load_config((dir / "config.json").string());
  const auto file = ttt::io::read_safetensors((dir / "model.safetensors").string());
  EXPECT_NO_THROW(ttt::model::check_checkpoint(c2, file, (dir / "model.safetensors").string()));
}

}  // namespace
