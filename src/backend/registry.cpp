// The one place that maps devices to backends: which backends are built in, which devices are
// present, and the lookups of tensor/device.h and backend/backend.h.
#include <array>
#include <stdexcept>

#include "backend/backend.h"
#include "backend/profiler.h"

namespace ttt {
namespace {

constexpr size_t kKinds = 3;  // DeviceKind values

// Tests may route a kind to a planted backend (ScopedBackendOverride).
std::array<Backend*, kKinds>& overrides() {
  static std::array<Backend*, kKinds> o{};
  return o;
}

Backend* built_in(DeviceKind kind) {
  switch (kind) {
    case DeviceKind::CPU: return &cpu_backend();
    case DeviceKind::CheckedCPU: return &checked_cpu_backend();
    case DeviceKind::CUDA: return nullptr;  // not built into this engine yet
  }
  return nullptr;
}

[[noreturn]] void absent(Device d) {
  if (d.kind == DeviceKind::CUDA)
    throw std::invalid_argument("device " + d.str() + ": the CUDA backend is not built into this ttt (devices here: cpu, cpu-checked)");
  throw std::invalid_argument("device " + d.str() + " is not present (devices here: cpu, cpu-checked)");
}

Backend& lookup(Device d) {
  const auto k = static_cast<size_t>(d.kind);
  if (k < kKinds && overrides()[k]) return *overrides()[k];
  Backend* b = built_in(d.kind);
  if (!b || d.index != 0) absent(d);
  return *b;
}

}  // namespace

DeviceMemory& device_memory(Device d) { return lookup(d); }

Backend& backend_for(Device d) {
  Backend& b = lookup(d);
  return profile::enabled() ? profile::wrap(b) : b;
}

std::vector<BackendInfo> backends() {
  return {
      {"cpu", true, {Device::cpu()}, "the engine's CPU kernels, OpenBLAS products, pooled host memory"},
      {"cpu-checked", true, {Device{DeviceKind::CheckedCPU, 0}},
       "the CPU kernels over guarded, poisoned memory reached only through host copies (slow; for checks)"},
      {"cuda", false, {}, "not built into this engine yet"},
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
