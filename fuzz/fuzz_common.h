// Helpers shared by the fuzz targets that feed a file-reading entry point: a per-process scratch
// path (under /dev/shm when it exists, else /tmp) that every iteration overwrites, and a byte
// reader for comparing files.
#pragma once
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>

namespace ttt_fuzz {

// "/dev/shm/ttt-fuzz-<pid>-<tag>" (or under /tmp): unique per fuzzing process, so parallel
// -jobs/-workers runs do not share files.
inline std::string scratch_path(const std::string& tag) {
  static const std::string dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  return dir + "/ttt-fuzz-" + std::to_string(getpid()) + "-" + tag;
}

// Overwrites `path` with the bytes; a failure here is the harness's problem, not the input's.
inline void write_bytes(const std::string& path, const uint8_t* data, size_t size) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr || (size > 0 && std::fwrite(data, 1, size, f) != size) || std::fclose(f) != 0) {
    std::fprintf(stderr, "fuzz harness: cannot write %s\n", path.c_str());
    std::abort();
  }
}

inline std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "fuzz harness: cannot read %s\n", path.c_str());
    std::abort();
  }
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Prints why a checked property failed and aborts (libFuzzer then saves the input).
[[noreturn]] inline void fail(const char* what) {
  std::fprintf(stderr, "fuzz property violated: %s\n", what);
  std::abort();
}

}  // namespace ttt_fuzz
