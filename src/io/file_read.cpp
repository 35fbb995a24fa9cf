#include "io/file_read.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "io/messages.h"

namespace ttt::io {
namespace {

const char* kind_of(mode_t m) {
  if (S_ISDIR(m)) return "a directory";
  if (S_ISFIFO(m)) return "a FIFO";
  if (S_ISCHR(m)) return "a character device";
  if (S_ISBLK(m)) return "a block device";
  if (S_ISSOCK(m)) return "a socket";
  return "not a regular file";
}

}  // namespace

std::string not_regular_reason(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return std::strerror(errno);
  if (S_ISREG(st.st_mode)) return "";
  return std::string("it is ") + kind_of(st.st_mode) + ", not a regular file";
}

RegularFile::RegularFile(const std::string& path, const std::string& what, uint64_t max_bytes)
    : path_(path), what_(what) {
  const std::string name = what + " " + one_line(path);
  fd_ = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd_ < 0) throw std::runtime_error("cannot open " + name + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd_, &st) != 0) {
    const int err = errno;
    ::close(fd_);
    throw std::runtime_error("cannot stat " + name + ": " + std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd_);
    throw std::runtime_error("cannot read " + name + ": it is " + kind_of(st.st_mode) + ", not a regular file");
  }
  size_ = static_cast<uint64_t>(st.st_size);
  if (size_ > max_bytes) {
    ::close(fd_);
    throw std::runtime_error("cannot read " + name + ": " + std::to_string(size_) + " bytes is over the limit of " +
                             std::to_string(max_bytes) + " bytes for a " + what);
  }
  // Regular files never block; clear the flag anyway so later reads behave normally.
  const int fl = ::fcntl(fd_, F_GETFL);
  if (fl >= 0) (void)::fcntl(fd_, F_SETFL, fl & ~O_NONBLOCK);
}

RegularFile::~RegularFile() {
  if (fd_ >= 0) ::close(fd_);
}

std::string RegularFile::read_all() const {
  std::string out(static_cast<size_t>(size_), '\0');
  size_t got = 0;
  while (got < out.size()) {
    const ssize_t n = ::pread(fd_, out.data() + got, out.size() - got, static_cast<off_t>(got));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw std::runtime_error("cannot read " + what_ + " " + one_line(path_) + ": " + std::strerror(errno));
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  if (got != out.size())
    throw std::runtime_error("cannot read " + what_ + " " + one_line(path_) + ": it shrank while being read (" +
                             std::to_string(got) + " of " + std::to_string(out.size()) + " bytes)");
  return out;
}

std::string read_regular_file(const std::string& path, const std::string& what, uint64_t max_bytes) {
  return RegularFile(path, what, max_bytes).read_all();
}

}  // namespace ttt::io
