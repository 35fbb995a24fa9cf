// The CUDA backend's kernels other than attention (see cuda_kernels.h). Streaming ops are
// grid-stride loops; row ops (norms, softmax, cross-entropy) take one block per row and reduce
// in double; column sums take one thread per column and add rows in order.
#include <cuda_bf16.h>

#include <stdexcept>
#include <string>

#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/cuda_kernels.h"

namespace ttt::cuda {

void check_launch(const char* what) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) throw std::runtime_error(std::string("cuda backend: ") + what + ": " + cudaGetErrorString(e));
}

namespace {

__device__ __forceinline__ float bf16_widen(uint16_t b) { return __uint_as_float(static_cast<uint32_t>(b) << 16); }
// Rounding to nearest even, NaN kept quiet: the same bits as tensor/bf16.h's float_to_bf16.
__device__ __forceinline__ uint16_t bf16_round(float f) {
  uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

// sigmoid and silu's derivatives as the CPU computes them (backend/cpu/vec_math.h): e = exp(-|x|),
// s = (x < 0 ? e : 1) / (1 + e). order -1: sigmoid; 0: silu; 1..3: derivatives.
template <class T>
__device__ __forceinline__ T silu_deriv(int order, T x) {
  const T e = exp(x < T(0) ? x : -x);
  const T s = (x < T(0) ? e : T(1)) / (T(1) + e);
  switch (order) {
    case -1: return s;
    case 0: return x * s;
    case 1: return s * (T(1) + x * (T(1) - s));
    case 2: return s * (T(1) - s) * (T(2) + x * (T(1) - T(2) * s));
    default: return s * (T(1) - s) * (T(3) * (T(1) - T(2) * s) + x * (T(1) - T(6) * s + T(6) * s * s));
  }
}

template <class T>
__global__ void fill_k(T* y, int64_t n, T v) {
  TTT_GRID_STRIDE(i, n) y[i] = v;
}

template <class E>
__global__ void copy_strided_k(const E* x, E* y, Strided o, int64_t n) {
  TTT_GRID_STRIDE(i, n) {
    int64_t rem = i, xo = 0, yo = 0;
    for (int d = o.rank - 1; d >= 0; --d) {
      const int64_t c = rem % o.shape[d];
      rem /= o.shape[d];
      xo += c * o.sa[d];
      yo += c * o.sb[d];
    }
    y[yo] = x[xo];
  }
}

__device__ __forceinline__ double read_elem(const void* x, Elem e, int64_t i) {
  switch (e) {
    case Elem::F32: return static_cast<const float*>(x)[i];
    case Elem::F64: return static_cast<const double*>(x)[i];
    default: return bf16_widen(static_cast<const uint16_t*>(x)[i]);
  }
}

__global__ void convert_k(const void* x, Elem from, void* y, Elem to, int64_t n) {
  TTT_GRID_STRIDE(i, n) {
    const double v = read_elem(x, from, i);
    switch (to) {
      case Elem::F32: static_cast<float*>(y)[i] = static_cast<float>(v); break;
      case Elem::F64: static_cast<double*>(y)[i] = v; break;
      default: static_cast<uint16_t*>(y)[i] = bf16_round(static_cast<float>(v)); break;
    }
  }
}

__global__ void count_nonfinite_k(const void* x, Elem e, int64_t n, bool neg, unsigned long long* count) {
  unsigned long long bad = 0;
  TTT_GRID_STRIDE(i, n) {
    if (e == Elem::BF16) {
      const uint16_t b = static_cast<const uint16_t*>(x)[i];
      bad += (b & 0x7f80u) == 0x7f80u || (neg && (b & 0x8000u) && (b & 0x7fffu));
    } else {
      const double v = read_elem(x, e, i);
      bad += !isfinite(v) || (neg && v < 0);
    }
  }
  bad = warp_sum(bad);
  if ((threadIdx.x & 31) == 0 && bad) atomicAdd(count, bad);
}

__global__ void adamw_k(float* p, const float* g, float* m, float* v, int64_t n, float b1, float b2, float step,
                        float inv_bc2, float eps, float decay) {
  TTT_GRID_STRIDE(j, n) {
    const float gj = g[j];
    const float mj = b1 * m[j] + (1.0f - b1) * gj;
    const float vj = b2 * v[j] + (1.0f - b2) * gj * gj;
    m[j] = mj;
    v[j] = vj;
    p[j] = p[j] * decay - step * mj / (sqrtf(vj * inv_bc2) + eps);
  }
}

template <class T>
__global__ void unary_k(Unary op, const T* x, T* y, int64_t n, T a) {
  TTT_GRID_STRIDE(i, n) {
    const T v = x[i];
    T r;
    switch (op) {
      case Unary::Neg: r = -v; break;
      case Unary::Exp: r = exp(v); break;
      case Unary::Log: r = log(v); break;
      case Unary::Sqrt: r = sqrt(v); break;
      case Unary::Rsqrt: r = T(1) / sqrt(v); break;
      case Unary::Reciprocal: r = T(1) / v; break;
      case Unary::Square: r = v * v; break;
      case Unary::Sigmoid: r = silu_deriv<T>(-1, v); break;
      case Unary::Softplus: r = v > T(0) ? v + log1p(exp(-v)) : log1p(exp(v)); break;
      case Unary::Silu: r = silu_deriv<T>(0, v); break;
      case Unary::SiluGrad: r = silu_deriv<T>(1, v); break;
      case Unary::SiluGrad2: r = silu_deriv<T>(2, v); break;
      case Unary::SiluGrad3: r = silu_deriv<T>(3, v); break;
      case Unary::AddScalar: r = v + a; break;
      case Unary::MulScalar: r = v * a; break;
      case Unary::MaxScalar: r = v > a ? v : a; break;
      default: r = v > a ? T(1) : T(0); break;  // StepScalar
    }
    y[i] = r;
  }
}

template <class T>
__global__ void binary_k(Binary op, const T* a, const T* b, T* y, Strided o, int64_t n) {
  TTT_GRID_STRIDE(i, n) {
    int64_t rem = i, ao = 0, bo = 0;
    for (int d = o.rank - 1; d >= 0; --d) {
      const int64_t c = rem % o.shape[d];
      rem /= o.shape[d];
      ao += c * o.sa[d];
      bo += c * o.sb[d];
    }
    const T u = a[ao], w = b[bo];
    T r;
    switch (op) {
      case Binary::Add: r = u + w; break;
      case Binary::Sub: r = u - w; break;
      case Binary::Mul: r = u * w; break;
      default: r = u / w; break;
    }
    y[i] = r;
  }
}

// Sum over the dimensions where ys is 1 and xs is not.
struct SumDesc {
  int rank = 0;
  int64_t xs[kMaxRank] = {}, ys[kMaxRank] = {}, xstride[kMaxRank] = {};
};

__device__ __forceinline__ int64_t out_base(const SumDesc& d, int64_t j) {
  int64_t off = 0;
  for (int k = d.rank - 1; k >= 0; --k) {
    const int64_t c = j % d.ys[k];
    j /= d.ys[k];
    off += c * d.xstride[k];
  }
  return off;
}
__device__ __forceinline__ int64_t reduced_offset(const SumDesc& d, int64_t t) {
  int64_t off = 0;
  for (int k = d.rank - 1; k >= 0; --k) {
    if (d.ys[k] != 1 || d.xs[k] == 1) continue;
    const int64_t c = t % d.xs[k];
    t /= d.xs[k];
    off += c * d.xstride[k];
  }
  return off;
}

// One thread per output (many outputs: neighbours read neighbouring columns).
template <class T>
__global__ void sum_to_thread_k(const T* x, T* y, SumDesc d, int64_t m, int64_t q) {
  TTT_GRID_STRIDE(j, m) {
    const int64_t base = out_base(d, j);
    double acc = 0;
    for (int64_t t = 0; t < q; ++t) acc += static_cast<double>(x[base + reduced_offset(d, t)]);
    y[j] = static_cast<T>(acc);
  }
}
// One block per output (few outputs, long sums).
template <class T>
__global__ void sum_to_block_k(const T* x, T* y, SumDesc d, int64_t q) {
  __shared__ double sh[32];
  const int64_t j = blockIdx.x;
  const int64_t base = out_base(d, j);
  double acc = 0;
  for (int64_t t = threadIdx.x; t < q; t += blockDim.x) acc += static_cast<double>(x[base + reduced_offset(d, t)]);
  acc = block_sum(acc, sh);
  if (threadIdx.x == 0) y[j] = static_cast<T>(acc);
}

template <class T>
__global__ void rmsnorm_k(const T* x, const T* w, T* y, int64_t n, double eps, bool with_y) {
  __shared__ double sh[32];
  const int64_t r = blockIdx.x;
  const T* xr = x + r * n;
  double ss = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) ss += static_cast<double>(xr[i]) * xr[i];
  ss = block_sum(ss, sh);
  const T rstd = static_cast<T>(1.0 / sqrt(ss / static_cast<double>(n) + eps));
  if (!with_y) {
    if (threadIdx.x == 0) y[r] = rstd;
    return;
  }
  T* yr = y + r * n;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) yr[i] = xr[i] * rstd * w[i];
}

__device__ __forceinline__ int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

// One thread per (position, frequency), applied to every head. Angles by the CPU's addition
// formula over blocks of 64 positions (backend/cpu/cpu_backend.cpp, rope_kernel), in double.
template <class T>
__global__ void rope_k(const T* x, T* y, int64_t t, int64_t h, int64_t d, int64_t pos0, double theta, double sign) {
  constexpr int64_t kBlock = 64;
  const int64_t half = d / 2;
  TTT_GRID_STRIDE(idx, t * half) {
    const int64_t p = idx / half, i = idx % half;
    const int64_t P = pos0 + p, a = floor_div(P, kBlock), b = P - a * kBlock;
    const double f = pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(d));
    const double pa = static_cast<double>(a * kBlock) * f, pb = static_cast<double>(b) * f;
    const double ca = cos(pa), sa = sin(pa), cb = cos(pb), sb = sin(pb);
    const T c = static_cast<T>(ca * cb - sa * sb);
    const T s = static_cast<T>(sign * (sa * cb + ca * sb));
    for (int64_t hh = 0; hh < h; ++hh) {
      const int64_t o = (p * h + hh) * d + 2 * i;
      const T u = x[o], v = x[o + 1];
      y[o] = u * c - v * s;
      y[o + 1] = u * s + v * c;
    }
  }
}

// One thread per (matrix, column c): column c of (I + L)^-1 by forward substitution in double,
// the CPU's order of terms.
template <class T>
__global__ void unit_lower_inverse_k(const T* l, T* y, int64_t batch, int64_t n, double* scratch) {
  TTT_GRID_STRIDE(idx, batch * n) {
    const int64_t bt = idx / n, c = idx % n;
    const T* L = l + bt * n * n;
    T* Y = y + bt * n * n;
    double* X = scratch + (bt * n + c) * n;  // column c, rows 0..n-1
    for (int64_t i = 0; i < c; ++i) Y[i * n + c] = T(0);
    for (int64_t i = c; i < n; ++i) {
      double acc = i == c ? 1.0 : 0.0;
      for (int64_t j = c; j < i; ++j) {
        const double lij = static_cast<double>(L[i * n + j]);
        if (lij != 0.0) acc -= lij * X[j];
      }
      X[i] = acc;
      Y[i * n + c] = static_cast<T>(acc);
    }
  }
}

template <class T>
__global__ void causal_decay_k(const T* cs, T* y, int64_t batch, int64_t n) {
  TTT_GRID_STRIDE(idx, batch * n * n) {
    const int64_t j = idx % n, i = (idx / n) % n, b = idx / (n * n);
    y[idx] = j <= i ? exp(-cs[b * n + j] - (-cs[b * n + i])) : T(0);
  }
}

template <class T>
__global__ void softmax_k(const T* x, T* y, int64_t n, bool masked, AttentionShape s) {
  __shared__ double shd[32];
  __shared__ T sht[32];
  const int64_t r = blockIdx.x;
  const T* xr = x + r * n;
  T* yr = y + r * n;
  int64_t a = 0, b = n;
  if (masked) {
    const int64_t p = s.q_pos0 + r % s.tq;
    b = min(max(p - s.k_pos0 + 1, int64_t{0}), n);
    a = s.window == 0 ? 0 : min(max(p - s.window - s.k_pos0 + 1, int64_t{0}), n);
  }
  T mx = ninf<T>();
  for (int64_t i = a + threadIdx.x; i < b; i += blockDim.x) mx = xr[i] > mx ? xr[i] : mx;
  mx = block_max(mx, sht, ninf<T>());
  if (mx == ninf<T>()) {
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) yr[i] = T(0);
    return;
  }
  double sum = 0;
  for (int64_t i = a + threadIdx.x; i < b; i += blockDim.x) sum += static_cast<double>(exp(xr[i] - mx));
  sum = block_sum(sum, shd);
  const T inv = static_cast<T>(1.0 / sum);
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) yr[i] = i >= a && i < b ? exp(xr[i] - mx) * inv : T(0);
}

// Row max and sum of exp(x - max) (terms in T, the sum in double) of one row, for every thread.
template <class T>
__device__ void row_max_sumexp(const T* xr, int64_t v, T& mx, double& sum, double* shd, T* sht) {
  T m = ninf<T>();
  for (int64_t i = threadIdx.x; i < v; i += blockDim.x) m = xr[i] > m ? xr[i] : m;
  mx = block_max(m, sht, ninf<T>());
  double s = 0;
  for (int64_t i = threadIdx.x; i < v; i += blockDim.x) s += static_cast<double>(exp(xr[i] - mx));
  sum = block_sum(s, shd);
}

template <class T>
__global__ void cross_entropy_k(const T* logits, const int32_t* tg, T* nll, int64_t v) {
  __shared__ double shd[32];
  __shared__ T sht[32];
  const int64_t r = blockIdx.x;
  const T* xr = logits + r * v;
  T mx;
  double sum;
  row_max_sumexp(xr, v, mx, sum, shd, sht);
  if (threadIdx.x == 0) nll[r] = static_cast<T>(log(sum) + (static_cast<double>(mx) - static_cast<double>(xr[tg[r]])));
}

template <class T>
__global__ void cross_entropy_backward_k(const T* logits, const int32_t* tg, const T* g, T* dl, int64_t v) {
  __shared__ double shd[32];
  __shared__ T sht[32];
  const int64_t r = blockIdx.x;
  const T* xr = logits + r * v;
  T* yr = dl + r * v;
  T mx;
  double sum;
  row_max_sumexp(xr, v, mx, sum, shd, sht);
  const T f = g[r] / static_cast<T>(sum);
  const int64_t t = tg[r];
  for (int64_t i = threadIdx.x; i < v; i += blockDim.x) {
    const T y = exp(xr[i] - mx) * f;
    yr[i] = i == t ? y - g[r] : y;
  }
}

template <class T>
__global__ void cross_entropy_backward_backward_k(const T* logits, const T* b, const int32_t* tg, const T* g,
                                                  int64_t v, T* dz, T* c, T* dg) {
  __shared__ double shd[32];
  __shared__ T sht[32];
  const int64_t r = blockIdx.x;
  const T* xr = logits + r * v;
  const T* br = b + r * v;
  T* zr = dz + r * v;
  T* cr = c + r * v;
  T mx;
  double sum;
  row_max_sumexp(xr, v, mx, sum, shd, sht);
  const T inv = T(1) / static_cast<T>(sum);
  double dot = 0;
  for (int64_t i = threadIdx.x; i < v; i += blockDim.x) dot += static_cast<double>(exp(xr[i] - mx)) * br[i];
  dot = block_sum(dot, shd);
  const T pb = static_cast<T>(dot) * inv;
  const int64_t t = tg[r];
  if (threadIdx.x == 0) dg[r] = pb - br[t];
  __syncthreads();  // b[t] is read before c (which may alias b) is written
  const T gi = g[r] * inv;
  for (int64_t j = threadIdx.x; j < v; j += blockDim.x) {
    const T gp = gi * exp(xr[j] - mx);
    cr[j] = gp * (br[j] - pb);
    zr[j] = j == t ? gp - g[r] : gp;
  }
}

template <class T>
__global__ void onehot_sub_k(T* y, const int32_t* tg, int64_t rows, int64_t v) {
  TTT_GRID_STRIDE(r, rows) y[r * v + tg[r]] -= T(1);
}

template <class T>
__global__ void gather_rows_k(const T* table, const int32_t* ids, int64_t rows, int64_t d, T* y) {
  TTT_GRID_STRIDE(i, rows * d) y[i] = table[static_cast<int64_t>(ids[i / d]) * d + i % d];
}
__global__ void gather_rows_bf16_k(const uint16_t* table, const int32_t* ids, int64_t rows, int64_t d, float* y) {
  TTT_GRID_STRIDE(i, rows * d) y[i] = bf16_widen(table[static_cast<int64_t>(ids[i / d]) * d + i % d]);
}

template <class T>
__global__ void scatter_add_rows_k(const T* rows, const int32_t* ids, int64_t nrows, int64_t d, T* y) {
  TTT_GRID_STRIDE(j, d) {
    for (int64_t r = 0; r < nrows; ++r) y[static_cast<int64_t>(ids[r]) * d + j] += rows[r * d + j];
  }
}

template <class T>
__global__ void silu_mul_k(const T* a, const T* b, T* y, int64_t n) {
  TTT_GRID_STRIDE(i, n) y[i] = silu_deriv<T>(0, a[i]) * b[i];
}
template <class T>
__global__ void silu_mul_backward_k(const T* a, const T* b, const T* g, T* da, T* db, int64_t n) {
  TTT_GRID_STRIDE(i, n) {
    const T x = a[i];
    da[i] = g[i] * b[i] * silu_deriv<T>(1, x);
    db[i] = g[i] * silu_deriv<T>(0, x);
  }
}

template <class T>
__global__ void rmsnorm_backward_rows_k(const T* x, const T* w, const T* g, int64_t n, double eps, T* dx,
                                        double* rstd_out) {
  __shared__ double sh[32];
  const int64_t r = blockIdx.x;
  const T* xr = x + r * n;
  const T* gr = g + r * n;
  T* dxr = dx + r * n;
  double ss = 0, pr = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    ss += static_cast<double>(xr[i]) * xr[i];
    pr += static_cast<double>(gr[i] * w[i]) * xr[i];
  }
  ss = block_sum(ss, sh);
  pr = block_sum(pr, sh);
  const double rstd = 1.0 / sqrt(ss / static_cast<double>(n) + eps);
  const double proj = pr / static_cast<double>(n);
  const T a = static_cast<T>(rstd), c = static_cast<T>(rstd * rstd * rstd * proj);
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) dxr[i] = a * (gr[i] * w[i]) - c * xr[i];
  if (threadIdx.x == 0) rstd_out[r] = rstd;
}
template <class T>
__global__ void rmsnorm_backward_dw_k(const T* x, const T* g, const double* rstd, int64_t rows, int64_t n, T* dw) {
  TTT_GRID_STRIDE(i, n) {
    double acc = 0;
    for (int64_t r = 0; r < rows; ++r) acc += static_cast<double>(g[r * n + i]) * x[r * n + i] * rstd[r];
    dw[i] = static_cast<T>(acc);
  }
}

// out[r, c] = sum_k a[r, k] b(k, c): one warp per output, lanes over k (float accumulation).
__global__ void matmul_f32_bf16_small_k(const float* a, const uint16_t* b, bool tb, float* out, int64_t m, int64_t n,
                                        int64_t k) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x >> 5);
  for (int64_t o = blockIdx.x * int64_t(blockDim.x >> 5) + (threadIdx.x >> 5); o < m * n; o += warps) {
    const int64_t r = o / n, c = o % n;
    float acc = 0;
    for (int64_t kk = lane; kk < k; kk += 32)
      acc += a[r * k + kk] * bf16_widen(tb ? b[c * k + kk] : b[kk * n + c]);
    acc = warp_sum(acc);
    if (lane == 0) out[o] = acc;
  }
}

}  // namespace

template <class T>
void fill(T* y, int64_t n, T value, cudaStream_t st) {
  if (n <= 0) return;
  fill_k<<<grid_for(n), kThreads, 0, st>>>(y, n, value);
  check_launch("fill");
}

void copy_strided(const void* x, void* y, int elem_bytes, const Strided& o, cudaStream_t st) {
  int64_t n = 1;
  for (int d = 0; d < o.rank; ++d) n *= o.shape[d];
  if (n <= 0) return;
  switch (elem_bytes) {
    case 2: copy_strided_k<<<grid_for(n), kThreads, 0, st>>>(static_cast<const uint16_t*>(x), static_cast<uint16_t*>(y), o, n); break;
    case 4: copy_strided_k<<<grid_for(n), kThreads, 0, st>>>(static_cast<const uint32_t*>(x), static_cast<uint32_t*>(y), o, n); break;
    case 8: copy_strided_k<<<grid_for(n), kThreads, 0, st>>>(static_cast<const uint64_t*>(x), static_cast<uint64_t*>(y), o, n); break;
    default: throw std::logic_error("cuda backend: copy of elements of " + std::to_string(elem_bytes) + " bytes");
  }
  check_launch("copy");
}

void convert(const void* x, Elem from, void* y, Elem to, int64_t n, cudaStream_t st) {
  if (n <= 0) return;
  convert_k<<<grid_for(n), kThreads, 0, st>>>(x, from, y, to, n);
  check_launch("convert");
}

void count_nonfinite(const void* x, Elem e, int64_t n, bool negative_too, unsigned long long* count, cudaStream_t st) {
  if (n <= 0) return;
  count_nonfinite_k<<<grid_for(n), kThreads, 0, st>>>(x, e, n, negative_too, count);
  check_launch("count_nonfinite");
}

void adamw_step(float* p, const float* g, float* m, float* v, int64_t n, float b1, float b2, float step, float inv_bc2,
                float eps, float decay, cudaStream_t st) {
  if (n <= 0) return;
  adamw_k<<<grid_for(n), kThreads, 0, st>>>(p, g, m, v, n, b1, b2, step, inv_bc2, eps, decay);
  check_launch("adamw_step");
}

template <class T>
void unary(Unary op, const T* x, T* y, int64_t n, T alpha, cudaStream_t st) {
  if (n <= 0) return;
  unary_k<<<grid_for(n), kThreads, 0, st>>>(op, x, y, n, alpha);
  check_launch("unary");
}

template <class T>
void binary(Binary op, const T* a, const T* b, T* y, const Strided& o, cudaStream_t st) {
  int64_t n = 1;
  for (int d = 0; d < o.rank; ++d) n *= o.shape[d];
  if (n <= 0) return;
  binary_k<<<grid_for(n), kThreads, 0, st>>>(op, a, b, y, o, n);
  check_launch("binary");
}

template <class T>
void sum_to(const T* x, T* y, int rank, const int64_t* xs, const int64_t* ys, cudaStream_t st) {
  SumDesc d;
  d.rank = rank;
  int64_t m = 1, n = 1, stride = 1;
  for (int k = rank - 1; k >= 0; --k) {
    d.xs[k] = xs[k];
    d.ys[k] = ys[k];
    d.xstride[k] = stride;
    stride *= xs[k];
  }
  for (int k = 0; k < rank; ++k) {
    m *= ys[k];
    n *= xs[k];
  }
  if (m <= 0) return;
  const int64_t q = n / m;
  if (m >= 2048 || q <= 64)
    sum_to_thread_k<<<grid_for(m), kThreads, 0, st>>>(x, y, d, m, q);
  else
    sum_to_block_k<<<static_cast<unsigned>(m), kThreads, 0, st>>>(x, y, d, q);
  check_launch("sum_to");
}

template <class T>
void rmsnorm(const T* x, const T* w, T* y, int64_t rows, int64_t n, double eps, bool with_y, cudaStream_t st) {
  if (rows <= 0) return;
  rmsnorm_k<<<static_cast<unsigned>(rows), kThreads, 0, st>>>(x, w, y, n, eps, with_y);
  check_launch("rmsnorm");
}

template <class T>
void rope(const T* x, T* y, int64_t t, int64_t h, int64_t d, int64_t pos0, double theta, bool inverse,
          cudaStream_t st) {
  if (t <= 0 || d / 2 <= 0) return;
  rope_k<<<grid_for(t * (d / 2)), kThreads, 0, st>>>(x, y, t, h, d, pos0, theta, inverse ? -1.0 : 1.0);
  check_launch("rope");
}

template <class T>
void unit_lower_inverse(const T* l, T* y, int64_t batch, int64_t n, double* scratch, cudaStream_t st) {
  if (batch * n <= 0) return;
  unit_lower_inverse_k<<<grid_for(batch * n, 64), 64, 0, st>>>(l, y, batch, n, scratch);
  check_launch("unit_lower_inverse");
}

template <class T>
void causal_decay(const T* cs, T* y, int64_t batch, int64_t n, cudaStream_t st) {
  if (batch * n <= 0) return;
  causal_decay_k<<<grid_for(batch * n * n), kThreads, 0, st>>>(cs, y, batch, n);
  check_launch("causal_decay");
}

template <class T>
void softmax(const T* x, T* y, int64_t rows, int64_t n, const AttentionShape* mask, cudaStream_t st) {
  if (rows <= 0 || n <= 0) return;
  softmax_k<<<static_cast<unsigned>(rows), kThreads, 0, st>>>(x, y, n, mask != nullptr, mask ? *mask : AttentionShape{});
  check_launch("softmax");
}

template <class T>
void cross_entropy(const T* logits, const int32_t* targets, T* nll, int64_t rows, int64_t v, cudaStream_t st) {
  if (rows <= 0) return;
  cross_entropy_k<<<static_cast<unsigned>(rows), kThreads, 0, st>>>(logits, targets, nll, v);
  check_launch("cross_entropy");
}

template <class T>
void cross_entropy_backward(const T* logits, const int32_t* targets, const T* g, int64_t rows, int64_t v, T* dl,
                            cudaStream_t st) {
  if (rows <= 0) return;
  cross_entropy_backward_k<<<static_cast<unsigned>(rows), kThreads, 0, st>>>(logits, targets, g, dl, v);
  check_launch("cross_entropy_backward");
}

template <class T>
void cross_entropy_backward_backward(const T* logits, const T* b, const int32_t* targets, const T* g, int64_t rows,
                                     int64_t v, T* dz, T* c, T* dg, cudaStream_t st) {
  if (rows <= 0) return;
  cross_entropy_backward_backward_k<<<static_cast<unsigned>(rows), kThreads, 0, st>>>(logits, b, targets, g, v, dz, c,
                                                                                      dg);
  check_launch("cross_entropy_backward_backward");
}

template <class T>
void onehot_sub(T* y, const int32_t* targets, int64_t rows, int64_t v, cudaStream_t st) {
  if (rows <= 0) return;
  onehot_sub_k<<<grid_for(rows), kThreads, 0, st>>>(y, targets, rows, v);
  check_launch("onehot_sub");
}

template <class T>
void gather_rows(const T* table, const int32_t* ids, int64_t rows, int64_t d, T* y, cudaStream_t st) {
  if (rows * d <= 0) return;
  gather_rows_k<<<grid_for(rows * d), kThreads, 0, st>>>(table, ids, rows, d, y);
  check_launch("gather_rows");
}
void gather_rows_bf16(const uint16_t* table, const int32_t* ids, int64_t rows, int64_t d, float* y, cudaStream_t st) {
  if (rows * d <= 0) return;
  gather_rows_bf16_k<<<grid_for(rows * d), kThreads, 0, st>>>(table, ids, rows, d, y);
  check_launch("gather_rows");
}

template <class T>
void scatter_add_rows(const T* rows, const int32_t* ids, int64_t nrows, int64_t d, T* y, int64_t yrows,
                      cudaStream_t st) {
  if (yrows * d > 0 && cudaMemsetAsync(y, 0, static_cast<size_t>(yrows * d) * sizeof(T), st) != cudaSuccess)
    check_launch("scatter_add_rows (zero)");
  if (nrows <= 0 || d <= 0) return;
  scatter_add_rows_k<<<grid_for(d, 128), 128, 0, st>>>(rows, ids, nrows, d, y);
  check_launch("scatter_add_rows");
}

template <class T>
void silu_mul(const T* a, const T* b, T* y, int64_t n, cudaStream_t st) {
  if (n <= 0) return;
  silu_mul_k<<<grid_for(n), kThreads, 0, st>>>(a, b, y, n);
  check_launch("silu_mul");
}
template <class T>
void silu_mul_backward(const T* a, const T* b, const T* g, T* da, T* db, int64_t n, cudaStream_t st) {
  if (n <= 0) return;
  silu_mul_backward_k<<<grid_for(n), kThreads, 0, st>>>(a, b, g, da, db, n);
  check_launch("silu_mul_backward");
}

template <class T>
void rmsnorm_backward(const T* x, const T* w, const T* g, int64_t rows, int64_t n, double eps, T* dx, T* dw,
                      double* scratch, cudaStream_t st) {
  if (rows > 0) {
    rmsnorm_backward_rows_k<<<static_cast<unsigned>(rows), kThreads, 0, st>>>(x, w, g, n, eps, dx, scratch);
    check_launch("rmsnorm_backward");
  }
  if (n > 0) {
    rmsnorm_backward_dw_k<<<grid_for(n, 128), 128, 0, st>>>(x, g, scratch, rows, n, dw);
    check_launch("rmsnorm_backward (dw)");
  }
}

void matmul_f32_bf16_small(const float* a, const uint16_t* b, bool tb, float* out, int64_t m, int64_t n, int64_t k,
                           cudaStream_t st) {
  if (m * n <= 0) return;
  matmul_f32_bf16_small_k<<<grid_for(m * n * 32), kThreads, 0, st>>>(a, b, tb, out, m, n, k);
  check_launch("matmul (bf16 weights)");
}

#define TTT_CUDA_INSTANTIATE(T)                                                                                     \
  template void fill<T>(T*, int64_t, T, cudaStream_t);                                                              \
  template void unary<T>(Unary, const T*, T*, int64_t, T, cudaStream_t);                                           \
  template void binary<T>(Binary, const T*, const T*, T*, const Strided&, cudaStream_t);                            \
  template void sum_to<T>(const T*, T*, int, const int64_t*, const int64_t*, cudaStream_t);                         \
  template void rmsnorm<T>(const T*, const T*, T*, int64_t, int64_t, double, bool, cudaStream_t);                   \
  template void rope<T>(const T*, T*, int64_t, int64_t, int64_t, int64_t, double, bool, cudaStream_t);              \
  template void unit_lower_inverse<T>(const T*, T*, int64_t, int64_t, double*, cudaStream_t);                       \
  template void causal_decay<T>(const T*, T*, int64_t, int64_t, cudaStream_t);                                      \
  template void softmax<T>(const T*, T*, int64_t, int64_t, const AttentionShape*, cudaStream_t);                    \
  template void cross_entropy<T>(const T*, const int32_t*, T*, int64_t, int64_t, cudaStream_t);                     \
  template void cross_entropy_backward<T>(const T*, const int32_t*, const T*, int64_t, int64_t, T*, cudaStream_t);  \
  template void cross_entropy_backward_backward<T>(const T*, const T*, const int32_t*, const T*, int64_t, int64_t,  \
                                                   T*, T*, T*, cudaStream_t);                                       \
  template void onehot_sub<T>(T*, const int32_t*, int64_t, int64_t, cudaStream_t);                                  \
  template void gather_rows<T>(const T*, const int32_t*, int64_t, int64_t, T*, cudaStream_t);                       \
  template void scatter_add_rows<T>(const T*, const int32_t*, int64_t, int64_t, T*, int64_t, cudaStream_t);         \
  template void silu_mul<T>(const T*, const T*, T*, int64_t, cudaStream_t);                                         \
  template void silu_mul_backward<T>(const T*, const T*, const T*, T*, T*, int64_t, cudaStream_t);                  \
  template void rmsnorm_backward<T>(const T*, const T*, const T*, int64_t, int64_t, double, T*, T*, double*,        \
                                    cudaStream_t);

TTT_CUDA_INSTANTIATE(float)
TTT_CUDA_INSTANTIATE(double)

}  // namespace ttt::cuda
