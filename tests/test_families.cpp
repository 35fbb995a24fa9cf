// The model-family registry (src/model/families): every registered family loads from its
// config.json form, round-trips it, names its parameters, builds its mixer, counts FLOPs and
// describes itself; and no code outside the registry compares the family name.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>

#include "model/config.h"
#include "model/families/family.h"
#include "model/model.h"
#include "model/sequence_memory.h"

namespace {

using namespace ttt;

model::ModelConfig small_config(const std::string& family) {
  model::ModelConfig c;
  c.vocab_size = 13;
  c.hidden_size = 16;
  c.num_hidden_layers = 4;
  c.num_attention_heads = 2;
  c.intermediate_size = 24;
  c.seq_modeling_block = family;
  c.sliding_window_size = 6;
  c.swa_every = 2;
  c.chunk_size = 4;
  c.mamba2.d_state = 8;
  c.mamba2.headdim = 8;
  c.ttt_kvb.num_lact_heads = 2;
  c.ttt_kvb.lact_chunk_size = 8;
  c.rope_theta = 10000;
  c.initializer_range = 0.2;
  return c;
}

TEST(Families, RegistryHoldsTheFiveFamiliesOnce) {
  std::set<std::string> names;
  for (const auto* f : model::families()) {
    EXPECT_TRUE(names.insert(f->name()).second) << "registered twice: " << f->name();
    EXPECT_EQ(model::find_family(f->name()), f);
  }
  EXPECT_EQ(names, (std::set<std::string>{"self_attention", "SWA", "mamba2", "gated_deltanet", "ttt_kvb"}));
  EXPECT_EQ(model::find_family("swa"), nullptr) << "names are exact, as in config.json";
  model::ModelConfig c = small_config("nonsense");
  EXPECT_THROW(c.family(), std::runtime_error);
  EXPECT_FALSE(c.recurrent_model());
}

TEST(Families, EveryFamilyBuildsRunsAndRoundTrips) {
  for (const auto* f : model::families()) {
    SCOPED_TRACE(f->name());
    const model::ModelConfig c = small_config(f->name());
    ASSERT_NO_THROW(model::validate_config(c));
    EXPECT_EQ(&c.family(), f);
    // config.json: written and read back to the same text (the family's own fields included).
    const std::string text = model::config_to_json(c);
    EXPECT_EQ(model::config_to_json(model::config_from_json(text)), text);
    // Parameters: the family's own blocks carry parameters that attention blocks do not.
    std::set<std::string> names;
    for (const auto& [name, shape] : model::parameter_shapes(c)) names.insert(name);
    bool own_block = false;
    for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
      own_block |= c.is_recurrent(l);
      const bool attention_params = names.count("blocks." + std::to_string(l) + ".attn.wq") > 0;
      EXPECT_EQ(attention_params, !c.is_recurrent(l)) << "block " << l;
    }
    EXPECT_EQ(own_block, f->recurrent());
    // The model builds its mixers through the registry and reads a few tokens.
    const model::Model m = model::Model::init(c, 3);
    std::vector<int32_t> ids = {0, 3, 5, 7, 2, 9, 11, 4, 1, 6};
    const Tensor h = m.embed_tokens(ids);
    for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
      EXPECT_GT(model::block_mixer_forward_flops(c, l, 64), 0.0) << "block " << l;
      EXPECT_NO_THROW(m.block_forward(l, h, 0, nullptr, nullptr, nullptr)) << "block " << l;
    }
    EXPECT_FALSE(f->describe(c).empty());
    EXPECT_FALSE(model::describe_model(c).empty());
  }
}

// Family names are compared in one place: src/model/families. Elsewhere code asks
// config.family() (or assigns a name, as config files and presets do).
TEST(Families, NoFamilyNameComparisonOutsideTheRegistry) {
  namespace fs = std::filesystem;
  const fs::path src = fs::path(TTT_SOURCE_DIR) / "src";
  const std::regex compare(R"(seq_modeling_block\s*(==|!=)|(==|!=)\s*\w*\.?seq_modeling_block)");
  std::vector<std::string> found;
  for (const auto& e : fs::recursive_directory_iterator(src)) {
    if (!e.is_regular_file()) continue;
    const std::string path = e.path().string();
    if (path.find("/model/families/") != std::string::npos) continue;
    if (e.path().extension() != ".cpp" && e.path().extension() != ".h") continue;
    std::ifstream in(e.path());
    std::string line;
    for (int n = 1; std::getline(in, line); ++n)
      if (std::regex_search(line, compare)) found.push_back(path + ":" + std::to_string(n) + ": " + line);
  }
  for (const auto& f : found) ADD_FAILURE() << f;
}

}  // namespace
