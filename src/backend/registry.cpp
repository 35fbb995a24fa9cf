// The one place that maps devices to backends: which backends are built in, which devices are
// present, and the lookups of tensor/device.h and backend/backend.h.
#include <array>
#include <string>
#include <stdexcept>

#include "backend/backend.h"
#include "backend/profiler.h"

#ifndef TTT_HAVE_CUDA  // set to 1 for this file by cmake -DTTT_CUDA=ON
#define TTT_HAVE_CUDA 0
#endif

namespace ttt {
namespace {

constexpr size_t kKinds = 3;  // DeviceKind values

// Tests may route a kind to a planted backend (ScopedBackendOverride).
std::array<Backend*, kKinds>& overrides() {
  static std::array<Backend*, kKinds> o{};
  return o;
}

constexpr bool kCudaBuilt = TTT_HAVE_CUDA != 0;

int gpus() {
#if TTT_HAVE_CUDA
  return cuda_device_count();
#else
  return 0;
#endif
}

// "cpu, cpu-checked" and the GPUs present.
std::string devices_here() {
  std::string s = "cpu, cpu-checked";
  for (int i = 0; i < gpus(); ++i) s += ", cuda:" + std::to_string(i);
  return s;
}

[[noreturn]] void absent(Device d) {
  if (d.kind == DeviceKind::CUDA && !kCudaBuilt)
    throw std::invalid_argument("device " + d.str() + ": the CUDA backend is not built into this ttt (cmake -DTTT_CUDA=ON; devices here: " + devices_here() + ")");
  if (d.kind == DeviceKind::CUDA && gpus() == 0)
    throw std::invalid_argument("device " + d.str() + ": no CUDA device present (the CUDA backend is built; devices here: " + devices_here() + ")");
  throw std::invalid_argument("device " + d.str() + " is not present (devices here: " + devices_here() + ")");
}

Backend& lookup(Device d) {
  const auto k = static_cast<size_t>(d.kind);
  if (k < kKinds && overrides()[k]) return *overrides()[k];
  switch (d.kind) {
    case DeviceKind::CPU:
      if (d.index == 0) return cpu_backend();
      break;
    case DeviceKind::CheckedCPU:
      if (d.index == 0) return checked_cpu_backend();
      break;
    case DeviceKind::CUDA:
#if TTT_HAVE_CUDA
      if (d.index >= 0 && d.index < gpus()) return cuda_backend(d.index);
#endif
      break;
  }
  absent(d);
}

}  // namespace

DeviceMemory& device_memory(Device d) { return lookup(d); }

Backend& backend_for(Device d) {
  Backend& b = lookup(d);
  return profile::enabled() ? profile::wrap(b) : b;
}

BackendInfo cuda_info() {
  BackendInfo b{"cuda", kCudaBuilt, {}, ""};
  for (int i = 0; i < gpus(); ++i) b.devices.push_back(Device{DeviceKind::CUDA, i});
  if (!kCudaBuilt)
    b.note = "not built (cmake -DTTT_CUDA=ON)";
  else if (b.devices.empty())
    b.note = "built, no GPU present";
  else
    b.note = "NVIDIA GPUs: cuBLAS products, the engine's CUDA kernels, a caching device allocator, one stream each";
  return b;
}

std::vector<BackendInfo> backends() {
  return {
      {"cpu", true, {Device::cpu()}, "the engine's CPU kernels, OpenBLAS products, pooled host memory"},
      {"cpu-checked", true, {Device{DeviceKind::CheckedCPU, 0}},
       "the CPU kernels over guarded, poisoned memory reached only through host copies (slow; for checks)"},
      cuda_info(),
  };
}

Device require_device(const std::string& name) {
  const Device d = parse_device(name);
  lookup(d);  // throws for a backend not built or a device not present
  return d;
}

ScopedBackendOverride::ScopedBackendOverride(DeviceKind kind, Backend& replacement)
    : kind_(kind), previous_(overrides()[static_cast<size_t>(kind)]) {
  overrides()[static_cast<size_t>(kind)] = &replacement;
}
ScopedBackendOverride::~ScopedBackendOverride() { overrides()[static_cast<size_t>(kind_)] = previous_; }

}  // namespace ttt
