#include "io/atomic_file.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <set>
#include <stdexcept>
#include <streambuf>

#include "io/messages.h"

namespace ttt::io {
namespace {

std::string errno_str(int e = errno) { return std::strerror(e); }

// Temp names this process is writing right now: a file with our pid that is not among them
// is a leftover of an earlier process that had the same pid (common in containers).
std::mutex g_active_mu;
std::set<std::string> g_active;

std::string random_suffix() {
  unsigned char b[8];
  size_t got = 0;
  while (got < sizeof b) {
    const ssize_t n = ::getrandom(b + got, sizeof b - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw std::runtime_error("getrandom failed: " + errno_str());
    }
    got += static_cast<size_t>(n);
  }
  static const char* hex = "0123456789abcdef";
  std::string s;
  for (unsigned char c : b) {
    s += hex[c >> 4];
    s += hex[c & 15];
  }
  return s;
}

void split_path(const std::string& path, std::string& dir, std::string& base) {
  const auto slash = path.find_last_of('/');
  dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  base = slash == std::string::npos ? path : path.substr(slash + 1);
}

// An ostream buffer over a file descriptor (std::ofstream cannot open with O_EXCL | O_NOFOLLOW).
class FdBuf : public std::streambuf {
 public:
  explicit FdBuf(int fd) : fd_(fd) { setp(buf_, buf_ + sizeof buf_); }
  int error() const { return err_; }
  bool flush_all() { return drain() && err_ == 0; }

 protected:
  int_type overflow(int_type c) override {
    if (!drain()) return traits_type::eof();
    if (!traits_type::eq_int_type(c, traits_type::eof())) {
      *pptr() = traits_type::to_char_type(c);
      pbump(1);
    }
    return traits_type::not_eof(c);
  }
  int sync() override { return drain() ? 0 : -1; }
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    if (n >= static_cast<std::streamsize>(sizeof buf_)) {  // large writes bypass the buffer
      if (!drain() || !write_all(s, static_cast<size_t>(n))) return 0;
      return n;
    }
    return std::streambuf::xsputn(s, n);
  }

 private:
  bool drain() {
    const size_t n = static_cast<size_t>(pptr() - pbase());
    if (n == 0) return err_ == 0;
    const bool ok = write_all(pbase(), n);
    setp(buf_, buf_ + sizeof buf_);
    return ok;
  }
  bool write_all(const char* p, size_t n) {
    if (err_) return false;
    while (n > 0) {
      const ssize_t w = ::write(fd_, p, n);
      if (w < 0) {
        if (errno == EINTR) continue;
        err_ = errno;
        return false;
      }
      p += w;
      n -= static_cast<size_t>(w);
    }
    return true;
  }
  int fd_;
  int err_ = 0;
  char buf_[1 << 16];
};

// Runs the writer into fd; throws on any write error.
void write_through(int fd, const std::function<void(std::ostream&)>& writer) {
  FdBuf buf(fd);
  std::ostream out(&buf);
  writer(out);
  out.flush();
  if (!buf.flush_all() || !out) throw std::runtime_error(buf.error() ? errno_str(buf.error()) : "write error");
}

void fsync_dir_best_effort(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  (void)::fsync(fd);
  ::close(fd);
}

// Writes a FIFO or character device in place (it cannot be replaced, and must not be).
void write_special(const std::string& path, const std::function<void(std::ostream&)>& writer) {
  // O_NONBLOCK: a FIFO without a reader fails (ENXIO) instead of hanging the open.
  const int fd = ::open(path.c_str(), O_WRONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    const int e = errno;
    throw std::runtime_error(e == ENXIO ? std::string("it is a FIFO with no reader") : errno_str(e));
  }
  const int fl = ::fcntl(fd, F_GETFL);
  if (fl >= 0) (void)::fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
  try {
    write_through(fd, writer);
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
}

}  // namespace

bool is_stale_temp_name(const std::string& name, const std::string& base) {
  // Parsed from the end: <base>.tmp.<pid>.<16 hex digits>
  constexpr size_t kHex = 16;
  if (name.size() < kHex + 1) return false;
  const size_t hex_at = name.size() - kHex;
  for (size_t i = hex_at; i < name.size(); ++i)
    if (!std::isxdigit(static_cast<unsigned char>(name[i]))) return false;
  if (name[hex_at - 1] != '.') return false;
  size_t p = hex_at - 1;  // the dot before the hex digits
  long pid = 0, scale = 1;
  size_t digits = 0;
  while (p > 0 && name[p - 1] >= '0' && name[p - 1] <= '9' && digits < 10) {
    pid += (name[p - 1] - '0') * scale;
    scale *= 10;
    --p;
    ++digits;
  }
  const std::string marker = ".tmp.";
  if (digits == 0 || p < marker.size() + 1 || name.compare(p - marker.size(), marker.size(), marker) != 0) return false;
  const size_t base_len = p - marker.size();
  if (!base.empty() && (base_len != base.size() || name.compare(0, base_len, base) != 0)) return false;
  if (pid == static_cast<long>(::getpid())) {
    std::lock_guard<std::mutex> lk(g_active_mu);
    return g_active.count(name) == 0;
  }
  return pid > 0 && ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;
}

size_t remove_stale_temp_files(const std::string& dir, const std::string& base) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) return 0;
  size_t removed = 0;
  const int dfd = ::dirfd(d);
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (!is_stale_temp_name(name, base)) continue;
    struct stat st {};
    if (::fstatat(dfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode)) continue;
    if (::unlinkat(dfd, name.c_str(), 0) == 0) ++removed;
  }
  ::closedir(d);
  return removed;
}

void write_file_atomic(const std::string& path, const std::function<void(std::ostream&)>& writer) {
  if (path.empty()) throw std::runtime_error("cannot write file: empty path");
  const std::string shown = one_line(path);
  auto fail = [&](const std::string& why) -> std::runtime_error {
    return std::runtime_error("cannot write file " + shown + ": " + why);
  };
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (S_ISLNK(st.st_mode)) throw fail("it is a symbolic link (refusing to replace it; give the path it points to)");
    if (S_ISDIR(st.st_mode)) throw fail("it is a directory");
    if (S_ISBLK(st.st_mode) || S_ISSOCK(st.st_mode)) throw fail("it is a device or socket, not a regular file");
    if (S_ISCHR(st.st_mode) || S_ISFIFO(st.st_mode)) {
      try {
        write_special(path, writer);
      } catch (const std::exception& e) {
        throw fail(one_line(e.what()));
      }
      return;
    }
  }
  std::string dir, base;
  split_path(path, dir, base);
  remove_stale_temp_files(dir, base);

  std::string tmp, tmp_name;
  auto forget = [&] {
    std::lock_guard<std::mutex> lk(g_active_mu);
    g_active.erase(tmp_name);
  };
  int fd = -1;
  for (int attempt = 0; attempt < 16 && fd < 0; ++attempt) {
    tmp_name = base + ".tmp." + std::to_string(static_cast<long>(::getpid())) + "." + random_suffix();
    tmp = dir + "/" + tmp_name;
    {  // registered before it exists, so a concurrent sweep in this process never takes it
      std::lock_guard<std::mutex> lk(g_active_mu);
      g_active.insert(tmp_name);
    }
    fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
    if (fd < 0) {
      const int e = errno;
      forget();
      if (e != EEXIST) throw fail("cannot create a temporary file beside it: " + errno_str(e));
    }
  }
  if (fd < 0) throw fail("cannot create a temporary file beside it (name collisions)");
  try {
    write_through(fd, writer);
    if (::fsync(fd) != 0) throw std::runtime_error("fsync failed: " + errno_str());
    const int rc = ::close(fd);
    fd = -1;
    if (rc != 0) throw std::runtime_error("close failed: " + errno_str());
    if (::rename(tmp.c_str(), path.c_str()) != 0)
      throw std::runtime_error("rename over the target failed: " + errno_str());
  } catch (const std::exception& e) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    forget();
    throw fail(one_line(e.what()));
  } catch (...) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    forget();
    throw fail("unknown error");
  }
  forget();
  fsync_dir_best_effort(dir);
}

void write_file_atomic(const std::string& path, const void* data, size_t size) {
  write_file_atomic(path, [&](std::ostream& out) {
    const char* p = static_cast<const char*>(data);
    size_t left = size;
    while (left > 0) {  // chunked: std::streamsize is signed
      const size_t n = left < (size_t(1) << 30) ? left : (size_t(1) << 30);
      out.write(p, static_cast<std::streamsize>(n));
      p += n;
      left -= n;
    }
  });
}

}  // namespace ttt::io
