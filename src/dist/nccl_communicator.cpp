// The NCCL transport for a CUDA backend (compiled only with -DTTT_NCCL=ON where the CUDA toolkit
// and NCCL are present; it needs MPI to start). The data pointers of its collectives are device
// memory, as the CUDA backend's tensors will be; MPI carries the NCCL unique id from rank 0 to the
// others and provides the barrier. Each rank drives the GPU `local rank mod device count`.
//
// Collectives run on one stream and are polled against the deadline; on a timeout the NCCL
// communicator is aborted (ncclCommAbort), then the job (MPI_Abort).
#include <cuda_runtime.h>
// The C API only: Open MPI's deprecated C++ bindings would come with mpi.h otherwise.
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#include <nccl.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <thread>

#include "dist/communicator.h"

namespace ttt::dist {
namespace {

using Clock = std::chrono::steady_clock;

void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string("NCCL communicator: ") + what + ": " + cudaGetErrorString(e));
}
void check_nccl(ncclResult_t r, const char* what) {
  if (r != ncclSuccess) throw std::runtime_error(std::string("NCCL communicator: ") + what + ": " + ncclGetErrorString(r));
}

class NcclCommunicator final : public Communicator {
 public:
  explicit NcclCommunicator(const CommOptions& o) : o_(o) {
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited) {
      int provided = 0;
      MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
      owns_mpi_ = true;
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    int devices = 0;
    check_cuda(cudaGetDeviceCount(&devices), "cudaGetDeviceCount");
    if (devices < 1) throw std::runtime_error("NCCL communicator: no CUDA device");
    const char* lr = std::getenv("OMPI_COMM_WORLD_LOCAL_RANK");
    device_ = (lr ? std::atoi(lr) : rank_) % devices;
    check_cuda(cudaSetDevice(device_), "cudaSetDevice");
    check_cuda(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
    ncclUniqueId id;
    if (rank_ == 0) check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
    MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD);
    check_nccl(ncclCommInitRank(&comm_, size_, id, rank_), "ncclCommInitRank");
  }

  ~NcclCommunicator() override {
    if (comm_) ncclCommDestroy(comm_);
    if (stream_) cudaStreamDestroy(stream_);
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (owns_mpi_ && !finalized) MPI_Finalize();
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string describe() const override {
    return "NCCL " + std::to_string(NCCL_MAJOR) + "." + std::to_string(NCCL_MINOR) + " over MPI, " +
           std::to_string(size_) + " ranks, device " + std::to_string(device_);
  }

  void allreduce_sum(float* data, size_t n) override { run(ncclAllReduce(data, data, n, ncclFloat32, ncclSum, comm_, stream_), "allreduce"); }
  void allreduce_sum(double* data, size_t n) override { run(ncclAllReduce(data, data, n, ncclFloat64, ncclSum, comm_, stream_), "allreduce"); }
  void broadcast(void* data, size_t bytes, int root) override {
    run(ncclBroadcast(data, data, bytes, ncclUint8, root, comm_, stream_), "broadcast");
  }
  void barrier() override { MPI_Barrier(MPI_COMM_WORLD); }

  [[noreturn]] void abort(const std::string& why) override {
    std::fprintf(stderr, "ttt: error: rank %d of %d: %s\n", rank_, size_, why.c_str());
    std::fflush(stderr);
    if (comm_) ncclCommAbort(comm_);
    comm_ = nullptr;
    MPI_Abort(MPI_COMM_WORLD, 1);
    std::_Exit(1);
  }

 private:
  // Waits for the stream with the deadline; NCCL's asynchronous errors end the job.
  void run(ncclResult_t launched, const char* what) {
    check_nccl(launched, what);
    const auto t0 = Clock::now();
    for (;;) {
      const cudaError_t q = cudaStreamQuery(stream_);
      if (q == cudaSuccess) break;
      if (q != cudaErrorNotReady) abort(std::string(what) + ": " + cudaGetErrorString(q));
      ncclResult_t async = ncclSuccess;
      ncclCommGetAsyncError(comm_, &async);
      if (async != ncclSuccess) abort(std::string(what) + ": " + ncclGetErrorString(async));
      if (std::chrono::duration<double>(Clock::now() - t0).count() > o_.timeout_s)
        abort(std::string(what) + " did not complete within " + std::to_string(static_cast<long>(o_.timeout_s)) +
              " s (another rank died or hangs)");
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
    seconds_ += std::chrono::duration<double>(Clock::now() - t0).count();
  }

  CommOptions o_;
  int rank_ = 0, size_ = 1, device_ = 0;
  bool owns_mpi_ = false;
  cudaStream_t stream_ = nullptr;
  ncclComm_t comm_ = nullptr;
};

}  // namespace

// For a CUDA backend: make_communicator keeps MPI (host memory) until such a backend exists.
std::unique_ptr<Communicator> nccl_communicator(const CommOptions& o) { return std::make_unique<NcclCommunicator>(o); }

}  // namespace ttt::dist
