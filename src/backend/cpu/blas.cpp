#include "backend/cpu/blas.h"

#include <dlfcn.h>

#include <cpuid.h>
#include <algorithm>
#include <cstdlib>
#include <stdexcept>
#include <vector>

#include "backend/cpu/tile_gemm.h"
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
  if (L.set_threads) L.set_threads(1);  // never threaded by OpenBLAS: see dispatch()
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

// Threaded products run as blocks of C on our own pool, each block a single-threaded BLAS call
// (or, for float32 where the CPU has AVX-512, a call of the engine's tiles: tile_gemm.h);
// OpenBLAS itself is always single-threaded. Its threads spin-wait for a while after every
// threaded call, and on few cores they then take turns with our pool's workers, in the kernels
// that follow as much as in the products. Measured on 2 cores (best of 5 interleaved runs, against
// OpenBLAS threading its own products): TTT-E2E prefill at 8K 2.48 -> 2.36 s, meta-gradient step
// at 4K 4.01 -> 3.60 s, decoding after 8K 3.2 -> 2.5 ms per token. A result depends only on the
// shapes and the thread count, as with OpenBLAS's own threading (blocks may take OpenBLAS's
// small-matrix kernels, so it is not bit for bit the product run whole).
constexpr int kTileMinRows = 16;  // float32 blocks of fewer rows stay on OpenBLAS
constexpr double kSplitMinMulAdds = 262144.0;  // smaller products run on the calling thread
constexpr int kMinBlockRows = 32, kMinBlockCols = 64;

// Start of block p of `parts` over [0, n), on a multiple of `align` (the last block ends at n).
int block_start(int n, int parts, int p, int align) {
  if (p >= parts) return n;
  return static_cast<int>(static_cast<long>(n) * p / parts) / align * align;
}

template <class T, class Fn>
void dispatch(Fn fn, Trans ta, Trans tb, int m, int n, int k, T alpha, const T* a,
              int lda, const T* b, int ldb, T beta, T* c, int ldc) {
  const int cta = ta == Trans::No ? kNoTrans : kTrans, ctb = tb == Trans::No ? kNoTrans : kTrans;
  const int threads = ttt::num_threads();
  if (threads <= 1 || tl_single_depth > 0 || ttt::in_parallel_region() ||
      static_cast<double>(m) * n * k <= kSplitMinMulAdds) {
    fn(kRowMajor, cta, ctb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  // Split the longer side of C first (measured on 2 cores: [256,704] as column halves 1.2x faster
  // than as row halves, [1024,704] the other way round), the other with the threads left over.
  constexpr int align = static_cast<int>(64 / sizeof(T));  // column blocks on cache lines
  const int max_rows = std::max(1, m / kMinBlockRows), max_cols = std::max(1, n / kMinBlockCols);
  int rows, cols;
  if (m > n) {
    rows = std::min(threads, max_rows);
    cols = std::min(threads / rows, max_cols);
  } else {
    cols = std::min(threads, max_cols);
    rows = std::min(threads / cols, max_rows);
  }
  if (rows * cols <= 1) {
    fn(kRowMajor, cta, ctb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  ttt::parallel_for(0, rows * cols, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t item = lo; item < hi; ++item) {
      const int pr = static_cast<int>(item) / cols, pc = static_cast<int>(item) % cols;
      const int r0 = block_start(m, rows, pr, 1), r1 = block_start(m, rows, pr + 1, 1);
      const int c0 = block_start(n, cols, pc, align), c1 = block_start(n, cols, pc + 1, align);
      if (r1 <= r0 || c1 <= c0) continue;
      const T* ap = ta == Trans::No ? a + static_cast<long>(r0) * lda : a + r0;
      const T* bp = tb == Trans::No ? b + c0 : b + static_cast<long>(c0) * ldb;
      fn(kRowMajor, cta, ctb, r1 - r0, c1 - c0, k, alpha, ap, lda, bp, ldb, beta,
         c + static_cast<long>(r0) * ldc + c0, ldc);
    }
  });
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
  // Each block (or the whole product) on the engine's AVX-512 register tiles where the CPU has
  // them (tile_gemm.h), except for products of a few rows, which OpenBLAS's kernels serve better
  // than packing the right operand for them.
  const auto sgemm = L.sgemm;
  auto block = [sgemm](int order, int cta, int ctb, int bm, int bn, int bk, float al, const float* ba, int blda,
                       const float* bb, int bldb, float be, float* bc, int bldc) {
    if (bm >= kTileMinRows && kernels::tile_gemm_usable())
      kernels::tile_gemm(cta == kNoTrans ? Trans::No : Trans::Yes, ctb == kNoTrans ? Trans::No : Trans::Yes, bm, bn,
                         bk, al, ba, blda, bb, bldb, be, bc, bldc);
    else
      sgemm(order, cta, ctb, bm, bn, bk, al, ba, blda, bb, bldb, be, bc, bldc);
  };
  dispatch(block, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
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
  dispatch(L.dgemm, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

int threads() { return ttt::num_threads(); }

SingleThreadedBlas::SingleThreadedBlas() { ++tl_single_depth; }

SingleThreadedBlas::~SingleThreadedBlas() { --tl_single_depth; }

}  // namespace ttt::blas
