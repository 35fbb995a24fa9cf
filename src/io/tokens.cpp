#include "io/tokens.h"

#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "io/atomic_file.h"
#include "io/file_read.h"
#include "io/messages.h"

namespace ttt::io {

std::vector<int32_t> read_tokens(const std::string& path) {
  const std::string bytes = read_regular_file(path, "token file");
  if (bytes.size() % 4 != 0)
    throw std::runtime_error("token file " + one_line(path) + " has " + std::to_string(bytes.size()) +
                             " bytes, not a whole number of int32 tokens");
  std::vector<int32_t> tokens(bytes.size() / 4);
  for (size_t i = 0; i < tokens.size(); ++i) {
    const auto* p = reinterpret_cast<const unsigned char*>(bytes.data() + 4 * i);
    tokens[i] = static_cast<int32_t>(static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
                                     (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24));
  }
  return tokens;
}

void write_tokens(const std::string& path, const std::vector<int32_t>& tokens) {
  std::string bytes(tokens.size() * 4, '\0');
  for (size_t i = 0; i < tokens.size(); ++i) {
    const auto u = static_cast<uint32_t>(tokens[i]);
    for (int b = 0; b < 4; ++b) bytes[4 * i + b] = static_cast<char>((u >> (8 * b)) & 0xff);
  }
  write_file_atomic(path, bytes.data(), bytes.size());
}

TokenPairs split_tokens(const std::vector<int32_t>& tokens, int64_t vocab_size, const std::string& what) {
  if (tokens.size() < 2)
    throw std::runtime_error(what + " holds " + std::to_string(tokens.size()) + " tokens; at least 2 are needed");
  for (size_t i = 0; i < tokens.size(); ++i)
    if (tokens[i] < 0 || tokens[i] >= vocab_size)
      throw std::runtime_error(what + ": token id " + std::to_string(tokens[i]) + " at index " + std::to_string(i) +
                               " is out of range [0, " + std::to_string(vocab_size) + ")");
  TokenPairs p;
  p.inputs.assign(tokens.begin(), tokens.end() - 1);
  p.targets.assign(tokens.begin() + 1, tokens.end());
  return p;
}

}  // namespace ttt::io
