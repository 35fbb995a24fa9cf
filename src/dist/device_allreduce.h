// Gradient sums across ranks on device memory: the named boundary where a communicator whose
// collectives take device pointers (NCCL, one GPU per rank) reads and writes tensors in place,
// without the copy to host that the MPI path makes.
#pragma once
#include <vector>

#include "dist/communicator.h"
#include "tensor/tensor.h"

namespace ttt::dist {

// Sums contiguous float32 tensors of one device over the ranks of `comm` in place, and the
// scalar `loss` with them (carried through device memory). Waits for the device's pending work
// first (the collectives run on the communicator's own stream).
void allreduce_on_device(Communicator& comm, std::vector<Tensor>& ts, double& loss);

}  // namespace ttt::dist
