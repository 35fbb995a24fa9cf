// Size-bucketed memory pool for tensor storage.
//
// Blocks are rounded up to a bucket (powers of two split in quarters) and kept on a free list
// when released, so a training or inference loop reaches a steady state with no malloc calls.
#pragma once
#include <cstddef>
#include <cstdint>

namespace ttt::pool {

void* allocate(size_t bytes);
void release(void* p, size_t bytes);

struct Stats {
  uint64_t allocations = 0;    // calls to allocate
  uint64_t system_allocs = 0;  // of those, served by the system allocator
  size_t bytes_in_use = 0;
  size_t bytes_cached = 0;
  size_t peak_bytes_in_use = 0;
};
Stats stats();
void reset_peak();
void trim();  // return cached blocks to the system; the cache limit restarts from the bytes in use

}  // namespace ttt::pool
