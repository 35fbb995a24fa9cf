// The MPI transport (compiled when CMake finds MPI, e.g. Debian's libopenmpi-dev).
//
// Only the main thread calls MPI (MPI_THREAD_FUNNELED). Every collective is non-blocking and
// polled with a deadline, so a rank that died or hangs stops the job with a message instead of a
// silent wait; mpirun itself also ends the job when a rank exits abnormally.
// The C API only: Open MPI's deprecated C++ bindings would come with mpi.h otherwise.
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "dist/communicator.h"

namespace ttt::dist {
namespace {

using Clock = std::chrono::steady_clock;
// MPI counts are int: larger messages go in pieces of this many elements.
constexpr size_t kMaxCount = size_t{1} << 30;

template <class T>
MPI_Datatype mpi_type();
template <>
MPI_Datatype mpi_type<float>() { return MPI_FLOAT; }
template <>
MPI_Datatype mpi_type<double>() { return MPI_DOUBLE; }

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(const CommOptions& o) : o_(o) {
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited) {
      int provided = 0;
      MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
      owns_ = true;
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    char version[MPI_MAX_LIBRARY_VERSION_STRING] = {0};
    int len = 0;
    MPI_Get_library_version(version, &len);
    library_ = std::string(version, static_cast<size_t>(std::max(0, len)));
    if (auto nl = library_.find_first_of("\r\n,"); nl != std::string::npos) library_.resize(nl);
  }

  ~MpiCommunicator() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (owns_ && !finalized) MPI_Finalize();
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string describe() const override {
    return "MPI (" + library_ + "), " + std::to_string(size_) + " ranks, " +
           (o_.reduction == Reduction::Tree ? "tree" : "ring") + " reduction";
  }

  void allreduce_sum(float* data, size_t n) override { reduce(data, n); }
  void allreduce_sum(double* data, size_t n) override { reduce(data, n); }

  void broadcast(void* data, size_t bytes, int root) override {
    const auto t0 = Clock::now();
    bcast_bytes(static_cast<char*>(data), bytes, root, "broadcast");
    seconds_ += std::chrono::duration<double>(Clock::now() - t0).count();
  }

  void barrier() override {
    const auto t0 = Clock::now();
    MPI_Request r;
    MPI_Ibarrier(MPI_COMM_WORLD, &r);
    wait(&r, 1, "barrier");
    seconds_ += std::chrono::duration<double>(Clock::now() - t0).count();
  }

  [[noreturn]] void abort(const std::string& why) override {
    std::fprintf(stderr, "ttt: error: rank %d of %d: %s\n", rank_, size_, why.c_str());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
    std::_Exit(1);  // MPI_Abort does not return; should it, still stop
  }

 private:
  // Polls until every request completed or the deadline passed (then the job is aborted).
  void wait(MPI_Request* reqs, int n, const char* what) {
    const auto t0 = Clock::now();
    for (long spins = 0;; ++spins) {
      int done = 0;
      MPI_Testall(n, reqs, &done, MPI_STATUSES_IGNORE);
      if (done) return;
      if (spins > 2000) std::this_thread::sleep_for(std::chrono::microseconds(spins > 20000 ? 1000 : 20));
      if ((spins & 63) == 0 && std::chrono::duration<double>(Clock::now() - t0).count() > o_.timeout_s)
        abort(std::string(what) + " did not complete within " + std::to_string(static_cast<long>(o_.timeout_s)) +
              " s (another rank died or hangs); stopping the job (--comm-timeout sets the limit)");
    }
  }

  void bcast_bytes(char* p, size_t bytes, int root, const char* what) {
    for (size_t at = 0; at < bytes; at += kMaxCount) {
      const int count = static_cast<int>(std::min(kMaxCount, bytes - at));
      MPI_Request r;
      MPI_Ibcast(p + at, count, MPI_BYTE, root, MPI_COMM_WORLD, &r);
      wait(&r, 1, what);
    }
  }

  template <class T>
  void reduce(T* data, size_t n) {
    if (size_ == 1 || n == 0) return;
    const auto t0 = Clock::now();
    if (o_.reduction == Reduction::Tree)
      tree(data, n);
    else
      ring(data, n);
    seconds_ += std::chrono::duration<double>(Clock::now() - t0).count();
  }

  template <class T>
  void tree(T* data, size_t n) {
    std::vector<T> buf(std::min(n, kMaxCount));
    for (int step = 1; step < size_; step <<= 1) {
      if (rank_ % (2 * step) == step) {  // hand the partial to the left neighbour at this level
        for (size_t at = 0; at < n; at += kMaxCount) {
          MPI_Request r;
          MPI_Isend(data + at, static_cast<int>(std::min(kMaxCount, n - at)), mpi_type<T>(), rank_ - step, 7,
                    MPI_COMM_WORLD, &r);
          wait(&r, 1, "gradient reduction (send)");
        }
        break;
      }
      if (rank_ % (2 * step) == 0 && rank_ + step < size_) {
        for (size_t at = 0; at < n; at += kMaxCount) {
          const size_t len = std::min(kMaxCount, n - at);
          MPI_Request r;
          MPI_Irecv(buf.data(), static_cast<int>(len), mpi_type<T>(), rank_ + step, 7, MPI_COMM_WORLD, &r);
          wait(&r, 1, "gradient reduction (receive)");
          T* d = data + at;
          for (size_t i = 0; i < len; ++i) d[i] = d[i] + buf[i];  // lower ranks' half on the left
        }
      }
    }
    bcast_bytes(reinterpret_cast<char*>(data), n * sizeof(T), 0, "gradient broadcast");
  }

  template <class T>
  void ring(T* data, size_t n) {
    // Reduce-scatter (each rank sums one block), then allgather; padded to equal blocks.
    const size_t block = (n + static_cast<size_t>(size_) - 1) / static_cast<size_t>(size_);
    if (block > kMaxCount) {  // pieces small enough for int counts
      const size_t piece = kMaxCount * static_cast<size_t>(size_) / 2;
      for (size_t at = 0; at < n; at += piece) ring(data + at, std::min(piece, n - at));
      return;
    }
    std::vector<T> padded(block * static_cast<size_t>(size_), T(0)), mine(block);
    std::copy(data, data + n, padded.begin());
    MPI_Request r;
    MPI_Ireduce_scatter_block(padded.data(), mine.data(), static_cast<int>(block), mpi_type<T>(), MPI_SUM,
                              MPI_COMM_WORLD, &r);
    wait(&r, 1, "gradient reduce-scatter");
    MPI_Iallgather(mine.data(), static_cast<int>(block), mpi_type<T>(), padded.data(), static_cast<int>(block),
                   mpi_type<T>(), MPI_COMM_WORLD, &r);
    wait(&r, 1, "gradient allgather");
    std::copy(padded.begin(), padded.begin() + static_cast<std::ptrdiff_t>(n), data);
  }

  CommOptions o_;
  int rank_ = 0, size_ = 1;
  bool owns_ = false;
  std::string library_;
};

}  // namespace

std::unique_ptr<Communicator> mpi_communicator(const CommOptions& o) { return std::make_unique<MpiCommunicator>(o); }

}  // namespace ttt::dist
