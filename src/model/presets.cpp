#include "model/presets.h"

#include <stdexcept>

namespace ttt::model {
namespace {

struct Shape {
  const char* size;
  int64_t hidden, layers, heads, intermediate, suffix;
};

// configs/model/*.yaml (hidden, layers, heads) and the E2E experiments' intermediate size and
// suffix length (S = a quarter of the layers).
constexpr Shape kShapes[] = {
    {"125m", 768, 12, 12, 1664, 3},  {"350m", 1024, 24, 16, 2304, 6}, {"760m", 1536, 24, 16, 3328, 6},
    {"1b", 2048, 24, 32, 4352, 6},   {"3b", 2560, 32, 32, 5632, 8},
};

}  // namespace

std::vector<std::string> official_sizes() {
  std::vector<std::string> out;
  for (const auto& s : kShapes) out.push_back(s.size);
  return out;
}

ModelConfig official_config(const std::string& size) {
  for (const auto& s : kShapes) {
    if (size != s.size) continue;
    ModelConfig c;
    c.vocab_size = 128256;  // Llama 3
    c.hidden_size = s.hidden;
    c.num_hidden_layers = s.layers;
    c.num_attention_heads = s.heads;
    c.intermediate_size = s.intermediate;
    c.seq_modeling_block = "SWA";
    c.sliding_window_size = 8192;
    c.mini_batch_size = 1024;
    c.prime = true;
    c.suffix_len = s.suffix;
    c.rope_theta = 500000;  // E2E keeps it in context extension too
    c.rms_norm_eps = 1e-6;
    c.qk_norm = true;
    c.pre_norm = true;
    c.post_norm = true;
    c.tie_word_embeddings = true;
    c.bos_token_id = 128000;  // <|begin_of_text|>
    c.initializer_range = 0.02;
    return c;
  }
  std::string known;
  for (const auto& s : kShapes) known += std::string(known.empty() ? "" : ", ") + s.size;
  throw std::invalid_argument("unknown model size '" + size + "' (official sizes: " + known + ")");
}

}  // namespace ttt::model
