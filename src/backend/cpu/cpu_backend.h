// The CPU backend's constructor, for the backends that reuse its kernels over other memory
// (backend/checked). Everything else reaches it through backend_for (backend/backend.h).
#pragma once
#include <memory>

#include "backend/backend.h"

namespace ttt {

// The CPU's kernels over `memory` (which must be host memory: the kernels dereference it), as
// the backend of `device`.
std::unique_ptr<Backend> make_cpu_backend(DeviceMemory& memory, Device device, const char* name);

}  // namespace ttt
