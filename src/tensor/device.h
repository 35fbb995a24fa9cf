// Devices, and the memory that each device's backend owns.
//
// A tensor's storage lives on one device. Its bytes are allocated, freed and moved to and from
// the host by that device's backend (backend/backend.h), never by the tensor code itself:
// DeviceMemory is the part of the backend interface that tensor/ needs, and device_memory()
// (defined by the backend layer, backend/registry.cpp) is the one place that picks it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace ttt {

enum class DeviceKind : uint8_t {
  CPU,         // the CPU backend (backend/cpu): pooled host memory, the engine's kernels
  CheckedCPU,  // the CPU's kernels over guarded memory (backend/checked): every allocation
               // between inaccessible pages, poisoned when made and when freed; a second backend
               // that proves the interface and catches stray reads and writes
  CUDA,        // NVIDIA GPUs (backend/cuda, built with cmake -DTTT_CUDA=ON)
};

struct Device {
  DeviceKind kind = DeviceKind::CPU;
  int index = 0;  // which device of its kind (GPUs); 0 for the CPU kinds

  static constexpr Device cpu() { return {DeviceKind::CPU, 0}; }
  friend constexpr bool operator==(Device a, Device b) { return a.kind == b.kind && a.index == b.index; }
  std::string str() const;  // "cpu", "cpu-checked", "cuda:1"
};

// "cpu", "cpu-checked", "cuda" or "cuda:N". Throws std::invalid_argument naming the known forms.
// Says nothing about whether the device exists here (backend/backend.h: require_device).
Device parse_device(const std::string& s);

struct MemoryStats {
  uint64_t allocations = 0;    // calls to allocate
  uint64_t system_allocs = 0;  // of those, served by the system (a cache miss)
  size_t bytes_in_use = 0;
  size_t bytes_cached = 0;
  size_t peak_bytes_in_use = 0;
};

class DeviceMemory {
 public:
  virtual ~DeviceMemory() = default;
  virtual void* allocate(size_t bytes) = 0;  // may return nullptr for 0 bytes
  virtual void release(void* p, size_t bytes) = 0;
  // Plain byte copies between this device's memory and the host.
  virtual void copy_to_host(const void* device_src, void* host_dst, size_t bytes) = 0;
  virtual void copy_from_host(const void* host_src, void* device_dst, size_t bytes) = 0;
  // True when device pointers may be read by the host directly (the CPU): host views then skip
  // the staging copy. A backend that says true must also mean it.
  virtual bool host_addressable() const = 0;
  virtual MemoryStats memory_stats() const = 0;
  virtual void reset_peak() = 0;
  virtual void trim() = 0;  // give cached blocks back to the system
  // Waits until all work enqueued on this device so far is done (a GPU's stream); for the CPU
  // kinds, whose ops finish before they return, nothing. Needed before another agent (NCCL on
  // its own stream) reads device memory that ops wrote.
  virtual void synchronize() {}
};

// The memory of a device whose backend is built in and present; throws std::invalid_argument
// otherwise. Defined in backend/registry.cpp.
DeviceMemory& device_memory(Device d);

}  // namespace ttt
