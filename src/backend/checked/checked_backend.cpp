// The checked CPU backend (device "cpu-checked"): the CPU's kernels over guarded memory.
//
// Every allocation gets its own mapping that ends at an inaccessible page, so a kernel that
// writes or reads past the end of a tensor faults at once; new memory is filled with NaN bytes,
// so an op that leaves part of its output unwritten shows up as NaN; freed memory is poisoned and
// made inaccessible for a while (a quarantine), so a use after free faults. The memory says it
// is not host-addressable, so everything above the backend must reach it through the explicit
// host copies, as it would a GPU's. It is the second backend the cross-backend op harness runs
// (tests/test_backend_ops.cpp) and can run whole commands (`--device cpu-checked`).
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <mutex>
#include <new>

#include "backend/cpu/cpu_backend.h"

namespace ttt {
namespace {

constexpr unsigned char kPoison = 0xff;              // all-ones: NaN in f32, f64 and bf16
constexpr size_t kQuarantineBytes = size_t(256) << 20;  // freed mappings kept inaccessible

size_t page_size() {
  static const size_t p = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return p;
}

class GuardedMemory final : public DeviceMemory {
 public:
  void* allocate(size_t bytes) override {
    const size_t page = page_size();
    const size_t body = (bytes + 63) / 64 * 64;           // kernels may assume 64-byte alignment
    const size_t span = (body + page - 1) / page * page;  // whole pages before the guard
    void* base = mmap(nullptr, span + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) throw std::bad_alloc();
    auto* guard = static_cast<unsigned char*>(base) + span;
    if (mprotect(guard, page, PROT_NONE) != 0) {
      munmap(base, span + page);
      throw std::bad_alloc();
    }
    unsigned char* p = guard - body;
    std::memset(p, kPoison, body);
    std::lock_guard<std::mutex> g(mu_);
    ++stats_.allocations;
    ++stats_.system_allocs;
    stats_.bytes_in_use += bytes;
    stats_.peak_bytes_in_use = std::max(stats_.peak_bytes_in_use, stats_.bytes_in_use);
    return p;
  }

  void release(void* ptr, size_t bytes) override {
    if (!ptr) return;
    const size_t page = page_size();
    const size_t body = (bytes + 63) / 64 * 64;
    const size_t span = (body + page - 1) / page * page;
    auto* p = static_cast<unsigned char*>(ptr);
    unsigned char* base = p + body - span;
    std::memset(p, kPoison, body);
    mprotect(base, span, PROT_NONE);  // a later read or write faults
    std::lock_guard<std::mutex> g(mu_);
    stats_.bytes_in_use -= bytes;
    quarantine_.push_back({base, span + page});
    quarantined_ += span + page;
    while (quarantined_ > kQuarantineBytes && !quarantine_.empty()) {
      munmap(quarantine_.front().first, quarantine_.front().second);
      quarantined_ -= quarantine_.front().second;
      quarantine_.pop_front();
    }
  }

  void copy_to_host(const void* src, void* dst, size_t bytes) override {
    if (bytes) std::memcpy(dst, src, bytes);
  }
  void copy_from_host(const void* src, void* dst, size_t bytes) override {
    if (bytes) std::memcpy(dst, src, bytes);
  }
  bool host_addressable() const override { return false; }
  MemoryStats memory_stats() const override {
    std::lock_guard<std::mutex> g(mu_);
    return stats_;
  }
  void reset_peak() override {
    std::lock_guard<std::mutex> g(mu_);
    stats_.peak_bytes_in_use = stats_.bytes_in_use;
  }
  void trim() override {
    std::lock_guard<std::mutex> g(mu_);
    for (auto& [b, n] : quarantine_) munmap(b, n);
    quarantine_.clear();
    quarantined_ = 0;
  }

 private:
  mutable std::mutex mu_;
  MemoryStats stats_;
  std::deque<std::pair<void*, size_t>> quarantine_;
  size_t quarantined_ = 0;
};

}  // namespace

Backend& checked_cpu_backend() {
  // Never destroyed: tensors in static objects may outlive any static destructor order.
  static Backend* const b =
      make_cpu_backend(*new GuardedMemory, Device{DeviceKind::CheckedCPU, 0}, "cpu-checked").release();
  return *b;
}

}  // namespace ttt
