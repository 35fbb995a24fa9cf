#include "backend/cpu/pool.h"

#include <algorithm>
#include <cstring>
#include <cstdlib>
#include <deque>
#include <map>
#include <mutex>
#include <new>
#include <vector>

#include <sys/mman.h>

namespace ttt::pool {
namespace {

constexpr size_t kAlign = 64;  // cache line; also enough for AVX-512 loads
// Big blocks are 2 MiB aligned and marked for transparent huge pages: first touches of fresh
// memory then fault once per 2 MiB instead of once per 4 KiB, which matters a lot in VMs.
constexpr size_t kHuge = size_t(2) << 20;

size_t bucket(size_t bytes) {
  if (bytes >= kHuge) return (bytes + kHuge - 1) / kHuge * kHuge;  // whole huge pages
  if (bytes <= 256) return 256;
  size_t p = 256;
  while (p < bytes) p <<= 1;
  // Split the top power of two in quarters to limit waste to 25%.
  const size_t q = p / 4 / 2;
  size_t b = p / 2;
  while (b < bytes) b += q;
  return b;
}

// Cached blocks may bring the pool's footprint (in use + cached) up to the highest in-use mark
// ever reached plus this slack; a block released beyond that goes back to the system. Steady
// loops reuse their blocks and never reach the limit; a cache that grows by appends (every
// buffer a new size, none reused) no longer keeps each old buffer alive in a free list.
constexpr size_t kCacheSlack = size_t(64) << 20;

struct Cached {
  void* p;
  uint64_t seq;  // release order: the oldest are evicted first
};

struct State {
  std::mutex mu;
  std::map<size_t, std::deque<Cached>> free_lists;  // allocation takes the newest (back)
  Stats stats;
  size_t high_water = 0;  // like peak_bytes_in_use, but never reset
  uint64_t seq = 0;
};

State& state() {
  static State* s = new State;  // never destroyed: tensors may outlive static destruction
  return *s;
}

// A pooled block is never freed, so ASan cannot flag a use after release; sanitizer runs set
// TTT_NO_POOL=1 to send every block straight back to the system allocator.
bool pool_enabled() {
  static const bool on = std::getenv("TTT_NO_POOL") == nullptr;
  return on;
}

}  // namespace

void* allocate(size_t bytes) {
  const size_t b = bucket(std::max<size_t>(bytes, 1));
  auto& s = state();
  {
    std::lock_guard<std::mutex> g(s.mu);
    ++s.stats.allocations;
    s.stats.bytes_in_use += b;
    s.stats.peak_bytes_in_use = std::max(s.stats.peak_bytes_in_use, s.stats.bytes_in_use);
    s.high_water = std::max(s.high_water, s.stats.bytes_in_use);
    if (pool_enabled()) {
      auto it = s.free_lists.find(b);
      if (it != s.free_lists.end() && !it->second.empty()) {
        void* p = it->second.back().p;
        it->second.pop_back();
        s.stats.bytes_cached -= b;
        return p;
      }
    }
    ++s.stats.system_allocs;
  }
  void* p = std::aligned_alloc(b >= kHuge ? kHuge : kAlign, b);
  if (!p) throw std::bad_alloc();
  if (b >= kHuge) madvise(p, b, MADV_HUGEPAGE);  // a hint: failure is harmless
  return p;
}

void release(void* p, size_t bytes) {
  if (!p) return;
  const size_t b = bucket(std::max<size_t>(bytes, 1));
  auto& s = state();
  std::vector<void*> to_free;
  {
    std::lock_guard<std::mutex> g(s.mu);
    s.stats.bytes_in_use -= b;
    if (!pool_enabled()) {
      to_free.push_back(p);
    } else {
      // Over the limit, the blocks released longest ago go back to the system first: they are
      // the sizes nothing asks for any more (a grown cache's old buffers), while the block in
      // hand is likely to be asked for again by the next iteration. Giving back the block in
      // hand instead made every later activation a fresh, page-faulting allocation once stale
      // sizes had filled the slack (full-attention prefill ran at half speed).
      const size_t limit = s.high_water + kCacheSlack;
      while (s.stats.bytes_in_use + s.stats.bytes_cached + b > limit && s.stats.bytes_cached > 0) {
        auto oldest = s.free_lists.end();
        for (auto it = s.free_lists.begin(); it != s.free_lists.end(); ++it)
          if (!it->second.empty() && (oldest == s.free_lists.end() || it->second.front().seq < oldest->second.front().seq))
            oldest = it;
        to_free.push_back(oldest->second.front().p);
        oldest->second.pop_front();
        s.stats.bytes_cached -= oldest->first;
      }
      if (s.stats.bytes_in_use + s.stats.bytes_cached + b > limit) {
        to_free.push_back(p);
      } else {
        s.free_lists[b].push_back({p, ++s.seq});
        s.stats.bytes_cached += b;
      }
    }
  }
  for (void* q : to_free) std::free(q);
}

Stats stats() {
  auto& s = state();
  std::lock_guard<std::mutex> g(s.mu);
  return s.stats;
}

void reset_peak() {
  auto& s = state();
  std::lock_guard<std::mutex> g(s.mu);
  s.stats.peak_bytes_in_use = s.stats.bytes_in_use;
}

void trim() {
  auto& s = state();
  std::lock_guard<std::mutex> g(s.mu);
  for (auto& [b, list] : s.free_lists) {
    for (const Cached& c : list) std::free(c.p);
    s.stats.bytes_cached -= b * list.size();
    list.clear();
  }
  s.high_water = s.stats.bytes_in_use;  // the cache limit starts over from what is in use now
}

namespace {
class HostMemory final : public DeviceMemory {
 public:
  void* allocate(size_t bytes) override { return pool::allocate(bytes); }
  void release(void* p, size_t bytes) override { pool::release(p, bytes); }
  void copy_to_host(const void* src, void* dst, size_t bytes) override {
    if (bytes) std::memcpy(dst, src, bytes);
  }
  void copy_from_host(const void* src, void* dst, size_t bytes) override {
    if (bytes) std::memcpy(dst, src, bytes);
  }
  bool host_addressable() const override { return true; }
  MemoryStats memory_stats() const override { return pool::stats(); }
  void reset_peak() override { pool::reset_peak(); }
  void trim() override { pool::trim(); }
};
}  // namespace

DeviceMemory& host_memory() {
  static HostMemory* const m = new HostMemory;  // never destroyed (see cpu_backend())
  return *m;
}

}  // namespace ttt::pool
