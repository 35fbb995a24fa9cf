// libFuzzer target: ttt::train::metrics_through_step (what a resumed training run keeps of
// metrics.jsonl). The first 8 bytes (little-endian int64, zero-padded) are the step; the rest is
// the text. Properties: the output is a sequence of whole newline-terminated lines of the input
// (every output line is one of the input's lines, in input order), so it is empty or ends with a
// newline; and applying the function again with the same step gives the same output (idempotent).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <string>
#include <string_view>

#include "fuzz_common.h"
#include "train/trainer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  int64_t step = 0;
  std::memcpy(&step, data, size < 8 ? size : 8);
  const std::string_view text =
      size > 8 ? std::string_view(reinterpret_cast<const char*>(data) + 8, size - 8) : std::string_view();
  std::string out;
  try {
    out = ttt::train::metrics_through_step(text, step);
  } catch (const std::exception&) {
    ttt_fuzz::fail("metrics_through_step threw (it must drop bad lines, not fail)");
  }
  if (!out.empty() && out.back() != '\n') ttt_fuzz::fail("output does not end with a newline");
  // Every output line must be a whole input line, in order (a subsequence of the input's lines).
  size_t in_at = 0, out_at = 0;
  while (out_at < out.size()) {
    const size_t onl = out.find('\n', out_at);
    const std::string_view line = std::string_view(out).substr(out_at, onl - out_at);
    out_at = onl + 1;
    bool found = false;
    while (in_at < text.size()) {
      const size_t inl = text.find('\n', in_at);
      if (inl == std::string_view::npos) break;  // the torn last line can never be kept
      const std::string_view cand = text.substr(in_at, inl - in_at);
      in_at = inl + 1;
      if (cand == line) {
        found = true;
        break;
      }
    }
    if (!found) ttt_fuzz::fail("an output line is not a whole line of the input (in order)");
  }
  if (ttt::train::metrics_through_step(out, step) != out) ttt_fuzz::fail("metrics_through_step is not idempotent");
  return 0;
}
