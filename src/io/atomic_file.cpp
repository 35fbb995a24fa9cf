#include "io/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <stdexcept>

namespace ttt::io {
namespace {

std::string errno_str() { return std::strerror(errno); }

std::string temp_name(const std::string& path) {
  static std::atomic<unsigned long> counter{0};
  return path + ".tmp." + std::to_string(static_cast<long>(::getpid())) + "." +
         std::to_string(counter.fetch_add(1));
}

// fsync a file by name (std::ofstream gives no access to its descriptor).
void fsync_path(const std::string& p, const std::string& target) {
  const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error("cannot reopen temporary file for " + target + ": " + errno_str());
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) throw std::runtime_error("fsync failed for " + target + ": " + std::strerror(err));
}

void fsync_dir_best_effort(const std::string& path) {
  const auto slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  (void)::fsync(fd);
  ::close(fd);
}

}  // namespace

void write_file_atomic(const std::string& path, const std::function<void(std::ostream&)>& writer) {
  if (path.empty()) throw std::runtime_error("cannot write file: empty path");
  const std::string tmp = temp_name(path);
  try {
    {
      std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
      if (!out) throw std::runtime_error("cannot create " + tmp + ": " + errno_str());
      writer(out);
      out.flush();
      if (!out) throw std::runtime_error("write error");
      out.close();
      if (out.fail()) throw std::runtime_error("close error");
    }
    fsync_path(tmp, path);
    if (::rename(tmp.c_str(), path.c_str()) != 0)
      throw std::runtime_error("rename over the target failed: " + errno_str());
  } catch (const std::exception& e) {
    std::remove(tmp.c_str());
    throw std::runtime_error("cannot write file " + path + ": " + e.what());
  } catch (...) {
    std::remove(tmp.c_str());
    throw std::runtime_error("cannot write file " + path + ": unknown error");
  }
  fsync_dir_best_effort(path);
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
