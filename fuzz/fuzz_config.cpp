// libFuzzer target: arbitrary text through the strict config parser; on success the config must
// survive a JSON round trip and its parameter list must be computable.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <string>

#include "model/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  ttt::model::ModelConfig c;
  try {
    c = ttt::model::config_from_json(text);
  } catch (const std::exception&) {
    return 0;
  }
  // A valid config must round-trip and must not throw afterwards.
  const auto again = ttt::model::config_from_json(ttt::model::config_to_json(c));
  if (again.vocab_size != c.vocab_size || again.num_hidden_layers != c.num_hidden_layers ||
      again.suffix_len != c.suffix_len || again.rope_theta != c.rope_theta)
    std::abort();
  if (c.num_hidden_layers <= 64) (void)ttt::model::parameter_shapes(c);
  for (int64_t l = 0; l < c.num_hidden_layers && l < 64; ++l) (void)c.window_of(l);
  return 0;
}
