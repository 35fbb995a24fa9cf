// Token files: raw little-endian int32 (SPEC section 6). A file of T+1 tokens gives inputs
// [0, T) and targets [1, T+1).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace ttt::io {

std::vector<int32_t> read_tokens(const std::string& path);  // throws std::runtime_error naming the problem
void write_tokens(const std::string& path, const std::vector<int32_t>& tokens);  // atomic

struct TokenPairs {
  std::vector<int32_t> inputs, targets;
};
// Splits T+1 tokens into inputs and targets; checks ids against the vocabulary.
TokenPairs split_tokens(const std::vector<int32_t>& tokens, int64_t vocab_size, const std::string& what);

}  // namespace ttt::io
