// Bounded reads of files that may be hostile: only regular files are read (a FIFO would block
// forever, /dev/zero never ends), their size is checked against a limit before anything is
// read, and every error is one line naming the file.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace ttt::io {

// Default limits per kind of file (bytes).
inline constexpr uint64_t kMaxJsonFileBytes = uint64_t{1} << 30;  // configs, indexes, trainer state
inline constexpr uint64_t kMaxDataFileBytes = uint64_t{1} << 40;  // token files, tokenizer models, text

// An open, read-only descriptor of a regular file and its size; closes on destruction.
class RegularFile {
 public:
  // Opens `path` without blocking (O_NONBLOCK, so a FIFO cannot hang the open), then refuses
  // anything that is not a regular file, and files over max_bytes. `what` names the file's role
  // in messages ("token file", "config file", ...).
  RegularFile(const std::string& path, const std::string& what, uint64_t max_bytes = kMaxDataFileBytes);
  ~RegularFile();
  RegularFile(const RegularFile&) = delete;
  RegularFile& operator=(const RegularFile&) = delete;

  int fd() const { return fd_; }
  uint64_t size() const { return size_; }

  // The whole file; throws if it changed size while being read.
  std::string read_all() const;

 private:
  std::string path_, what_;
  int fd_ = -1;
  uint64_t size_ = 0;
};

// Convenience: RegularFile(path, what, max_bytes).read_all().
std::string read_regular_file(const std::string& path, const std::string& what,
                              uint64_t max_bytes = kMaxDataFileBytes);

// Why `path` cannot be read as a regular file ("" if it can): it is missing, a directory, a
// FIFO, a device, a socket. Follows symbolic links, as reading does.
std::string not_regular_reason(const std::string& path);

}  // namespace ttt::io
