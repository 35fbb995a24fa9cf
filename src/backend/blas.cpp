#include "backend/blas.h"

#include <dlfcn.h>

#include <cpuid.h>
#include <cstdlib>
#include <mutex>
#include <stdexcept>
#include <vector>

#include "backend/thread_pool.h"

namespace ttt::blas {
namespace {

// CBLAS enum values (fixed by the CBLAS standard).
constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;

using sgemm_fn = void (*)(int, int, int, int, int, int, float, const float*, int, const float*,
                          int, float, float*, int);
using dgemm_fn = void (*)(int, int, int, int, int, int, double, const double*, int, const double*,
                          int, double, double*, int);
using set_threads_fn = void (*)(int);
using get_str_fn = char* (*)();

struct Loaded {
  Info info;
  sgemm_fn sgemm = nullptr;
  dgemm_fn dgemm = nullptr;
  set_threads_fn set_threads = nullptr;
  int threads = 1;
};

bool cpu_has_avx512() {
  unsigned a, b, c, d;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  const bool f = b & (1u << 16), dq = b & (1u << 17), bw = b & (1u << 30), vl = b & (1u << 31);
  // The OS must also save the ZMM state (XCR0 bits 5-7) for AVX-512 to be usable.
  unsigned xlo, xhi;
  __asm__("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
  return f && dq && bw && vl && ((xlo & 0xe6) == 0xe6);
}

bool cpu_has_avx2_fma() {
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
  const bool fma = c & (1u << 12), osxsave = c & (1u << 27);
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  const bool avx2 = b & (1u << 5);
  if (!osxsave) return false;
  unsigned xlo, xhi;
  __asm__("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
  return fma && avx2 && ((xlo & 0x6) == 0x6);
}

Loaded load() {
  Loaded L;
  // Choose the OpenBLAS core before the library runs its constructor.
  if (const char* user = std::getenv("OPENBLAS_CORETYPE"); user && *user) {
    L.info.how = std::string("OPENBLAS_CORETYPE=") + user + " (set by the user)";
  } else if (cpu_has_avx512()) {
    setenv("OPENBLAS_CORETYPE", "SkylakeX", 1);
    L.info.how = "CPUID: AVX-512 -> SkylakeX kernels";
  } else if (cpu_has_avx2_fma()) {
    setenv("OPENBLAS_CORETYPE", "Haswell", 1);
    L.info.how = "CPUID: AVX2+FMA -> Haswell kernels";
  } else {
    L.info.how = "OpenBLAS auto-detection";
  }
  std::vector<std::string> candidates;
  if (const char* lib = std::getenv("TTT_BLAS_LIB"); lib && *lib) candidates.push_back(lib);
  candidates.push_back("libopenblas.so.0");
  candidates.push_back("libopenblas.so");
  for (const auto& name : candidates) {
    void* h = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!h) continue;
    auto sg = reinterpret_cast<sgemm_fn>(dlsym(h, "cblas_sgemm"));
    auto dg = reinterpret_cast<dgemm_fn>(dlsym(h, "cblas_dgemm"));
    if (!sg || !dg) {
      dlclose(h);
      continue;
    }
    L.sgemm = sg;
    L.dgemm = dg;
    L.set_threads = reinterpret_cast<set_threads_fn>(dlsym(h, "openblas_set_num_threads"));
    auto corename = reinterpret_cast<get_str_fn>(dlsym(h, "openblas_get_corename"));
    L.info.library = name;
    L.info.core = corename ? corename() : "unknown (not OpenBLAS)";
    break;
  }
  if (!L.sgemm) {
    L.info.library = "built-in";
    L.info.core = "reference (no BLAS library found: install libopenblas0-pthread)";
  }
  L.threads = ttt::num_threads();
  if (L.set_threads) L.set_threads(L.threads);
  L.info.threads = L.threads;
  return L;
}

Loaded& lib() {
  static Loaded L = load();
  return L;
}

// Portable fallback: blocked i-k-j loops, correct for any transposition.
template <class T>
void gemm_reference(Trans ta, Trans tb, int m, int n, int k, T alpha, const T* a, int lda,
                    const T* b, int ldb, T beta, T* c, int ldc) {
  for (int i = 0; i < m; ++i) {
    T* ci = c + static_cast<long>(i) * ldc;
    if (beta == T(0)) {
      for (int j = 0; j < n; ++j) ci[j] = T(0);
    } else if (beta != T(1)) {
      for (int j = 0; j < n; ++j) ci[j] *= beta;
    }
    for (int p = 0; p < k; ++p) {
      const T aip = alpha * (ta == Trans::No ? a[static_cast<long>(i) * lda + p]
                                             : a[static_cast<long>(p) * lda + i]);
      if (aip == T(0)) continue;
      if (tb == Trans::No) {
        const T* bp = b + static_cast<long>(p) * ldb;
        for (int j = 0; j < n; ++j) ci[j] += aip * bp[j];
      } else {
        for (int j = 0; j < n; ++j) ci[j] += aip * b[static_cast<long>(j) * ldb + p];
      }
    }
  }
}

thread_local int tl_single_depth = 0;
std::mutex g_threads_mu;

// Whether BLAS will run this product on its own threads (OpenBLAS goes single-threaded up to
// m*n*k = 65536 x GEMM_MULTITHREAD_THRESHOLD, 4 by default): then our pool's spinning workers
// step aside for them.
bool threaded(const Loaded& L, int m, int n, int k) {
  return L.threads > 1 && tl_single_depth == 0 && !ttt::in_parallel_region() &&
         static_cast<double>(m) * n * k > 262144.0;
}

}  // namespace

const Info& info() { return lib().info; }

void gemm(Trans ta, Trans tb, int m, int n, int k, float alpha, const float* a, int lda,
          const float* b, int ldb, float beta, float* c, int ldc) {
  if (m == 0 || n == 0) return;
  auto& L = lib();
  if (!L.sgemm || k == 0) {
    if (k == 0) {  // BLAS may not touch C when k == 0; define it: C = beta * C
      for (int i = 0; i < m; ++i)
        for (int j = 0; j < n; ++j) c[static_cast<long>(i) * ldc + j] = beta == 0.f ? 0.f : beta * c[static_cast<long>(i) * ldc + j];
      return;
    }
    gemm_reference(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  if (threaded(L, m, n, k)) ttt::yield_cores_to_other_threads();
  L.sgemm(kRowMajor, ta == Trans::No ? kNoTrans : kTrans, tb == Trans::No ? kNoTrans : kTrans, m,
          n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void gemm(Trans ta, Trans tb, int m, int n, int k, double alpha, const double* a, int lda,
          const double* b, int ldb, double beta, double* c, int ldc) {
  if (m == 0 || n == 0) return;
  auto& L = lib();
  if (!L.dgemm || k == 0) {
    if (k == 0) {
      for (int i = 0; i < m; ++i)
        for (int j = 0; j < n; ++j) c[static_cast<long>(i) * ldc + j] = beta == 0. ? 0. : beta * c[static_cast<long>(i) * ldc + j];
      return;
    }
    gemm_reference(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  if (threaded(L, m, n, k)) ttt::yield_cores_to_other_threads();
  L.dgemm(kRowMajor, ta == Trans::No ? kNoTrans : kTrans, tb == Trans::No ? kNoTrans : kTrans, m,
          n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void set_threads(int n) {
  auto& L = lib();
  std::lock_guard<std::mutex> g(g_threads_mu);
  L.threads = n < 1 ? 1 : n;
  if (L.set_threads) L.set_threads(L.threads);
}

int threads() { return lib().threads; }

SingleThreadedBlas::SingleThreadedBlas() : saved_(lib().threads) {
  if (tl_single_depth++ == 0 && saved_ != 1 && lib().set_threads) lib().set_threads(1);
}

SingleThreadedBlas::~SingleThreadedBlas() {
  if (--tl_single_depth == 0 && saved_ != 1 && lib().set_threads) lib().set_threads(saved_);
}

}  // namespace ttt::blas
