// A small persistent thread pool for the CPU kernels and the BLAS products (backend/blas.h:
// OpenBLAS runs single-threaded, large products are split over this pool).
//
// Why one pool: two sets of threads that each spin-wait after their work (OpenMP's or
// OpenBLAS's, and ours) take turns on the same cores; one pool we control never competes with
// itself, sleeps when idle and never nests.
#pragma once
#include <cstdint>
#include <functional>

namespace ttt {

// Threads used by the CPU kernels: TTT_NUM_THREADS if set, else the number of online cores.
int num_threads();
void set_num_threads(int n);  // call before heavy work; resizes the pool

// Runs fn(lo, hi) over [begin, end) split into contiguous pieces of at least `grain` items,
// on the pool (the calling thread takes part). Nested calls run serially in the caller.
void parallel_for(int64_t begin, int64_t end, int64_t grain,
                  const std::function<void(int64_t, int64_t)>& fn);

// True inside a parallel_for body (where nested parallel calls run serially).
bool in_parallel_region();

// Index of the executing pool thread in [0, num_threads()), for per-thread scratch buffers.
int thread_index();

}  // namespace ttt
