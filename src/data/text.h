// Text helpers shared by the tokenizer and the corpus builder: strict UTF-8 decoding, reading
// files, telling text from binary, and listing a tree of files in a deterministic order.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ttt::data {

// Length of the valid UTF-8 sequence that starts at p (n bytes available), or 0 if the bytes
// there are not valid UTF-8. Strict: no overlong forms, no surrogates (U+D800..U+DFFF), nothing
// above U+10FFFF.
size_t utf8_sequence_length(const unsigned char* p, size_t n);

// Number of bytes that are not part of a valid UTF-8 sequence.
size_t count_invalid_utf8(std::string_view s);

// Whole file as bytes; throws std::runtime_error naming the file.
std::string read_file(const std::string& path);

// Why a file is not used as text ("" if it is): a NUL byte, or more than max_invalid_fraction of
// its bytes outside valid UTF-8.
std::string binary_reason(std::string_view bytes, double max_invalid_fraction = 0.01);

struct FileEntry {
  std::string path;      // full path
  std::string relative;  // relative to the root, '/'-separated
  uint64_t size = 0;
};

// Regular files under `root` (or `root` itself if it is a file), sorted by relative path
// (bytewise). Names starting with '.' (files and directories) and symbolic links are skipped.
// Throws std::runtime_error if root does not exist.
std::vector<FileEntry> list_files(const std::string& root);

// 64-bit FNV-1a of a byte string, and a seeded 64-bit mix of a string (used for the
// train/validation split and the document order).
uint64_t fnv1a64(std::string_view s, uint64_t h = 1469598103934665603ull);
uint64_t seeded_hash(std::string_view s, uint64_t seed);
uint64_t splitmix64(uint64_t x);

}  // namespace ttt::data
