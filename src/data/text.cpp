#include "data/text.h"

#include "io/file_read.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <system_error>

namespace ttt::data {

namespace fs = std::filesystem;

size_t utf8_sequence_length(const unsigned char* p, size_t n) {
  if (n == 0) return 0;
  const unsigned c = p[0];
  if (c < 0x80) return 1;
  size_t len;
  uint32_t cp;
  if (c >= 0xC2 && c <= 0xDF) {
    len = 2;
    cp = c & 0x1F;
  } else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    cp = c & 0x0F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    cp = c & 0x07;
  } else {
    return 0;
  }
  if (n < len) return 0;
  for (size_t i = 1; i < len; ++i) {
    if ((p[i] & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (p[i] & 0x3F);
  }
  if (len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) return 0;
  if (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) return 0;
  return len;
}

size_t count_invalid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t i = 0, bad = 0;
  while (i < s.size()) {
    const size_t l = utf8_sequence_length(p + i, s.size() - i);
    if (l == 0) {
      ++bad;
      ++i;
    } else {
      i += l;
    }
  }
  return bad;
}

std::string read_file(const std::string& path) { return io::read_regular_file(path, "file"); }

std::string binary_reason(std::string_view bytes, double max_invalid_fraction) {
  if (bytes.find('\0') != std::string_view::npos) return "contains NUL bytes";
  const size_t bad = count_invalid_utf8(bytes);
  if (bad > 0 && static_cast<double>(bad) > max_invalid_fraction * static_cast<double>(bytes.size()))
    return std::to_string(bad) + " of " + std::to_string(bytes.size()) + " bytes are not valid UTF-8";
  return "";
}

std::vector<FileEntry> list_files(const std::string& root) {
  std::error_code ec;
  const auto st = fs::symlink_status(root, ec);
  if (ec || !fs::exists(st)) throw std::runtime_error(root + " does not exist");
  std::vector<FileEntry> out;
  if (fs::is_regular_file(st)) {
    out.push_back({root, fs::path(root).filename().string(), static_cast<uint64_t>(fs::file_size(root))});
    return out;
  }
  if (!fs::is_directory(st)) throw std::runtime_error(root + " is neither a regular file nor a directory");
  // Iterative walk; every directory's entries are collected, then the whole list is sorted.
  std::vector<std::pair<fs::path, std::string>> stack{{fs::path(root), ""}};
  while (!stack.empty()) {
    auto [dir, rel] = stack.back();
    stack.pop_back();
    fs::directory_iterator it(dir, ec);
    if (ec) throw std::runtime_error("cannot list " + dir.string() + ": " + ec.message());
    for (const auto& e : it) {
      const std::string name = e.path().filename().string();
      if (name.empty() || name[0] == '.') continue;
      const auto s = e.symlink_status(ec);
      if (ec) continue;
      const std::string r = rel.empty() ? name : rel + "/" + name;
      if (fs::is_symlink(s)) continue;
      if (fs::is_directory(s)) {
        stack.push_back({e.path(), r});
      } else if (fs::is_regular_file(s)) {
        const auto size = e.file_size(ec);
        if (ec) continue;
        out.push_back({e.path().string(), r, static_cast<uint64_t>(size)});
      }
    }
  }
  std::sort(out.begin(), out.end(), [](const FileEntry& a, const FileEntry& b) { return a.relative < b.relative; });
  return out;
}

uint64_t fnv1a64(std::string_view s, uint64_t h) {
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

uint64_t seeded_hash(std::string_view s, uint64_t seed) { return splitmix64(fnv1a64(s) ^ splitmix64(seed)); }

}  // namespace ttt::data
