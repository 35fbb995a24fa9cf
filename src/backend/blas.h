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
  int threads = 1;
};
const Info& info();  // loads the library on first use

// Number of threads BLAS itself may use for one call. Kernels that already run several BLAS
// calls in parallel on our own thread pool use SingleThreadedBlas to avoid oversubscription.
void set_threads(int n);
int threads();

class SingleThreadedBlas {
 public:
  SingleThreadedBlas();
  ~SingleThreadedBlas();
  SingleThreadedBlas(const SingleThreadedBlas&) = delete;
  SingleThreadedBlas& operator=(const SingleThreadedBlas&) = delete;

 private:
  int saved_;
};

}  // namespace ttt::blas
