// libFuzzer target: arbitrary bytes written to a scratch file, read with ttt::io::read_tokens and
// split with ttt::io::split_tokens(tokens, vocab 40). Properties: read_tokens succeeds iff the file
// size is a multiple of 4 (and then returns size / 4 little-endian ids); split_tokens succeeds iff
// there are >= 2 tokens all in [0, 40), and then inputs/targets are the n-1 tokens shifted by one.
#include <cstddef>
#include <cstdint>
#include <exception>
#include <string>
#include <vector>

#include "fuzz_common.h"
#include "io/tokens.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  constexpr int64_t kVocab = 40;
  static const std::string path = ttt_fuzz::scratch_path("tokens");
  ttt_fuzz::write_bytes(path, data, size);
  std::vector<int32_t> tokens;
  bool read_ok = true;
  try {
    tokens = ttt::io::read_tokens(path);
  } catch (const std::exception&) {
    read_ok = false;
  }
  if (read_ok != (size % 4 == 0)) ttt_fuzz::fail("read_tokens accepted a size that is not a multiple of 4, or rejected one that is");
  if (!read_ok) return 0;
  if (tokens.size() != size / 4) ttt_fuzz::fail("read_tokens returned the wrong number of tokens");
  bool all_in_range = tokens.size() >= 2;
  for (size_t i = 0; i < tokens.size(); ++i) {
    const uint32_t u = static_cast<uint32_t>(data[4 * i]) | (static_cast<uint32_t>(data[4 * i + 1]) << 8) |
                       (static_cast<uint32_t>(data[4 * i + 2]) << 16) | (static_cast<uint32_t>(data[4 * i + 3]) << 24);
    if (tokens[i] != static_cast<int32_t>(u)) ttt_fuzz::fail("read_tokens is not little-endian int32");
    if (tokens[i] < 0 || tokens[i] >= kVocab) all_in_range = false;
  }
  ttt::io::TokenPairs p;
  try {
    p = ttt::io::split_tokens(tokens, kVocab, "fuzz");
  } catch (const std::exception&) {
    if (all_in_range) ttt_fuzz::fail("split_tokens rejected >= 2 in-range tokens");
    return 0;
  }
  if (!all_in_range) ttt_fuzz::fail("split_tokens accepted too few tokens or an id out of range");
  const size_t n = tokens.size();
  if (p.inputs.size() != n - 1 || p.targets.size() != n - 1) ttt_fuzz::fail("inputs/targets do not hold n-1 tokens");
  for (size_t i = 0; i + 1 < n; ++i) {
    if (p.inputs[i] < 0 || p.inputs[i] >= kVocab || p.targets[i] < 0 || p.targets[i] >= kVocab)
      ttt_fuzz::fail("split_tokens returned an id out of range");
    if (p.inputs[i] != tokens[i] || p.targets[i] != tokens[i + 1]) ttt_fuzz::fail("inputs/targets are not the shifted tokens");
  }
  return 0;
}
