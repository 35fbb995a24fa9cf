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

}  // namespace ttt::pool
