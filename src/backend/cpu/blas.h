// GEMM through a system BLAS loaded at run time.
//
// Why dlopen instead of linking: Debian's OpenBLAS 0.3.21 does not recognise recent Xeons and
// silently falls back to a slow SSE3 kernel. OpenBLAS reads OPENBLAS_CORETYPE only once, when
// the library is loaded, so we pick the core type from CPUID first and load the library after.
// If no BLAS can be loaded, a portable built-in GEMM keeps the engine working (slowly) and
// blas_info() says so.
#pragma once
#include <string>

namespace ttt::blas {

enum class Trans { No, Yes };

// C[m,n] = alpha * op(A)[m,k] @ op(B)[k,n] + beta * C, row-major, leading dimensions in elements.
void gemm(Trans ta, Trans tb, int m, int n, int k, float alpha, const float* a, int lda,
          const float* b, int ldb, float beta, float* c, int ldc);
void gemm(Trans ta, Trans tb, int m, int n, int k, double alpha, const double* a, int lda,
          const double* b, int ldb, double beta, double* c, int ldc);

struct Info {
  std::string library;  // path of the loaded library, or "built-in"
  std::string core;     // kernel family OpenBLAS runs (e.g. "SkylakeX"), or "reference"
  std::string how;      // how the core was chosen (CPUID, user's OPENBLAS_CORETYPE, ...)
};
const Info& info();  // loads the library on first use

// Threads one product may use. The BLAS library itself always runs single-threaded; a large
// product is split into blocks of C that run on our thread pool (ttt::num_threads()), so one
// set of threads serves BLAS and the kernels alike.
int threads();

// While one is alive on this thread, products run whole on the calling thread (kernels that
// already spread many products over the pool).
class SingleThreadedBlas {
 public:
  SingleThreadedBlas();
  ~SingleThreadedBlas();
  SingleThreadedBlas(const SingleThreadedBlas&) = delete;
  SingleThreadedBlas& operator=(const SingleThreadedBlas&) = delete;
};

}  // namespace ttt::blas
