// libFuzzer target: arbitrary bytes through the safetensors parser. Every input must either
// parse or throw std::exception; crashes, sanitizer reports and hangs are bugs.
#include <cstddef>
#include <cstdint>
#include <exception>

#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto file = ttt::io::parse_safetensors(data, size, "fuzz-input");
    // Touch every loaded element so ASan checks the copies.
    volatile float sink = 0;
    for (const auto& [name, t] : file.tensors) {
      const auto v = t.to_vector();
      for (double x : v) sink = sink + static_cast<float>(x);
    }
    (void)sink;
  } catch (const std::exception&) {
  }
  return 0;
}
