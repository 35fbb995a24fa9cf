// Size-bucketed memory pool for tensor storage.
//
// Blocks are rounded up to a bucket (powers of two split in quarters) and kept on a free list
// when released, so a training or inference loop reaches a steady state with no malloc calls.
#pragma once
#include <cstddef>
#include <cstdint>

#include "tensor/device.h"

namespace ttt::pool {

void* allocate(size_t bytes);
void release(void* p, size_t bytes);

using Stats = MemoryStats;
Stats stats();
void reset_peak();
void trim();  // return cached blocks to the system; the cache limit restarts from the bytes in use

// The pool as the CPU device's memory (the CPU backend's allocator).
DeviceMemory& host_memory();

// A kernel's scratch buffer of n T from the pool: large per-call buffers are then reused from call
// to call instead of being fresh, page-faulting allocations each time, and they count in the
// backend's memory statistics (a session's peak).
template <class T>
class Buffer {
 public:
  explicit Buffer(size_t n) : bytes_((n > 0 ? n : 1) * sizeof(T)), p_(static_cast<T*>(allocate(bytes_))) {}
  ~Buffer() { release(p_, bytes_); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  T* data() { return p_; }

 private:
  size_t bytes_;
  T* p_;
};

}  // namespace ttt::pool
