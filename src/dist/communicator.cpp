#include "dist/communicator.h"

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <thread>

#include "backend/thread_pool.h"

namespace ttt::dist {

#if TTT_HAVE_MPI
std::unique_ptr<Communicator> mpi_communicator(const CommOptions& o);  // mpi_communicator.cpp
#endif

namespace {

class LocalCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string describe() const override { return "single process"; }
  void allreduce_sum(float*, size_t) override {}
  void allreduce_sum(double*, size_t) override {}
  void broadcast(void*, size_t, int) override {}
  void barrier() override {}
  [[noreturn]] void abort(const std::string& why) override {
    std::fprintf(stderr, "ttt: error: %s\n", why.c_str());
    std::exit(1);
  }
};

int env_int(const char* name) {
  const char* s = std::getenv(name);
  return s && *s ? std::atoi(s) : 0;
}

}  // namespace

std::unique_ptr<Communicator> local_communicator() { return std::make_unique<LocalCommunicator>(); }

bool launched_by_mpi() {
  // Open MPI's mpirun, PMIx launchers (Open MPI 5, Slurm), MPICH's Hydra.
  return env_int("OMPI_COMM_WORLD_SIZE") > 0 || std::getenv("PMIX_RANK") != nullptr || env_int("PMI_SIZE") > 0;
}

int local_ranks() {
  if (!launched_by_mpi()) return 1;
  int local = env_int("OMPI_COMM_WORLD_LOCAL_SIZE");
  if (local <= 0) local = env_int("MPI_LOCALNRANKS");
  return std::max(1, local);
}

int local_rank() {
  if (!launched_by_mpi()) return 0;
  const char* s = std::getenv("OMPI_COMM_WORLD_LOCAL_RANK");
  if (!s) s = std::getenv("MPI_LOCALRANKID");
  return s && *s ? std::atoi(s) : 0;
}

bool have_mpi() { return TTT_HAVE_MPI != 0; }
bool have_nccl() { return TTT_HAVE_NCCL != 0; }

std::unique_ptr<Communicator> make_communicator(const CommOptions& o) {
  if (!launched_by_mpi()) return local_communicator();
#if TTT_HAVE_MPI
  auto c = mpi_communicator(o);
  if (!std::getenv("TTT_NUM_THREADS")) {
    // N ranks on one node each with every core would oversubscribe it N times.
    const int local = local_ranks();
    if (local > 1) {
      const unsigned hc = std::thread::hardware_concurrency();
      const int share = std::max(1, static_cast<int>(hc == 0 ? 1 : hc) / local);
      set_num_threads(share);  // BLAS products run on the same pool
    }
  }
  return c;
#else
  (void)o;
  throw std::runtime_error(
      "started by an MPI launcher, but this ttt was built without MPI (install libopenmpi-dev and rebuild: "
      "scripts/install-deps.sh, scripts/build.sh release)");
#endif
}

}  // namespace ttt::dist
