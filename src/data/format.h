// On-disk corpus format shared by the builder (corpus.cpp) and the reader (dataset.cpp).
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

namespace ttt::data::format {

inline constexpr const char* kIndexFile = "index.json";
inline constexpr const char* kTokenizerFile = "tokenizer.model";
inline constexpr const char* kFormatName = "ttt-corpus";
inline constexpr int kFormatVersion = 1;
inline constexpr const char* kSplits[3] = {"train", "val", "val-long"};

inline std::string shard_name(const std::string& split, int64_t i) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%s-%05lld.bin", split.c_str(), static_cast<long long>(i));
  return buf;
}

// Checksum of a shard's bytes: 64-bit multiply-xor over little-endian 8-byte words, then the tail.
inline uint64_t checksum(const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  uint64_t h = 0x243F6A8885A308D3ull ^ (n * 0x9E3779B97F4A7C15ull);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    h = (h ^ w) * 0x100000001B3ull;
    h ^= h >> 29;
  }
  for (; i < n; ++i) h = (h ^ p[i]) * 0x100000001B3ull;
  h ^= h >> 32;
  return h;
}

inline std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace ttt::data::format
