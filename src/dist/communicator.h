// Communication between the processes of a data-parallel job (`mpirun -np N ttt train`).
//
// One interface, several transports: a single process (no communication), MPI (Open MPI from
// Debian; compiled when CMake finds it) and NCCL for a future CUDA backend (compiled only where
// NCCL is present; its unique id travels over MPI). The trainer only sees this interface.
//
// Every collective is bounded in time: a rank that died or hangs makes the others stop with a
// message naming the operation after `timeout_s`, instead of waiting forever.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace ttt::dist {

// How gradients are summed across ranks.
enum class Reduction {
  // Binomial tree in rank order (rank r adds the partial of rank r + 2^l to its own, left + right),
  // then a broadcast from rank 0: the same additions in the same order whatever the timing, so the
  // result is reproducible and, with the trainer's pairwise order inside a rank, independent of the
  // number of ranks. 2 log2(N) message steps.
  Tree,
  // Reduce-scatter then allgather (bandwidth-optimal, 2 (N-1)/N of the data per rank): every rank
  // gets the same bits, but the order of additions depends on N.
  Ring,
};

struct CommOptions {
  Reduction reduction = Reduction::Tree;
  double timeout_s = 900;  // a collective that takes longer stops the job
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // "single process", "MPI: Open MPI v4.1.4, 4 ranks (2 on this node), tree reduction", ...
  virtual std::string describe() const = 0;

  // Elementwise sum over ranks, in place; every rank receives identical bits.
  virtual void allreduce_sum(float* data, size_t n) = 0;
  virtual void allreduce_sum(double* data, size_t n) = 0;
  // `bytes` bytes from rank `root` to every rank.
  virtual void broadcast(void* data, size_t bytes, int root) = 0;
  virtual void barrier() = 0;
  // Ends the whole job (every rank), after printing `why` with this rank's number.
  [[noreturn]] virtual void abort(const std::string& why) = 0;

  // Wall seconds spent inside collectives since the last reset (communication plus waiting).
  double seconds() const { return seconds_; }
  void reset_seconds() { seconds_ = 0; }

 protected:
  double seconds_ = 0;
};

// The single-process communicator: size 1, every collective a no-op.
std::unique_ptr<Communicator> local_communicator();

// True when this process was started by an MPI launcher (mpirun / mpiexec / srun with PMIx).
bool launched_by_mpi();

// Ranks of this launch on this node (Open MPI's or MPICH's environment); 1 outside MPI.
int local_ranks();
// This process's index among them (0 outside MPI).
int local_rank();

// MPI when launched by mpirun and the build has MPI, else the local communicator. A launch by
// mpirun of a build without MPI is an error (N independent copies would each train alone). Under
// MPI, unless TTT_NUM_THREADS is set, each rank's thread pool gets its share of this node's cores.
std::unique_ptr<Communicator> make_communicator(const CommOptions& o);

#if TTT_HAVE_NCCL
// NCCL over device memory, for a CUDA backend (nccl_communicator.cpp); needs an MPI launch.
std::unique_ptr<Communicator> nccl_communicator(const CommOptions& o);
#endif

// Whether this build can talk MPI / NCCL (`ttt info`).
bool have_mpi();
bool have_nccl();

}  // namespace ttt::dist
