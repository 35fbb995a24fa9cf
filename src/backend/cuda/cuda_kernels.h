// The CUDA backend's kernels (cuda_kernels.cu, cuda_attention.cu), as host functions over raw
// device pointers that enqueue work on a stream and return at once. The Tensor-level backend
// (cuda_backend.cpp) validates, picks the dtype and calls these; nothing here synchronizes.
//
// Each templated launcher exists for T = float and T = double. Numerics follow the CPU backend
// (backend/cpu): the same formulas in the same precision, row sums and dot products of the
// reductions accumulated in double, so float64 results agree with the CPU to rounding.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "backend/attention_shape.h"

namespace ttt::cuda {

constexpr int kMaxRank = 8;  // strided copies and broadcasts: dimensions handled

// Shape of an output and the element strides of up to two operands over it.
struct Strided {
  int rank = 0;
  int64_t shape[kMaxRank] = {};
  int64_t sa[kMaxRank] = {};
  int64_t sb[kMaxRank] = {};
};

// Same numbering as ttt::UnaryOp / ttt::BinaryOp (backend/backend.h), checked there.
enum class Unary : int {
  Neg, Exp, Log, Sqrt, Rsqrt, Reciprocal, Square, Sigmoid, Softplus,
  Silu, SiluGrad, SiluGrad2, SiluGrad3, AddScalar, MulScalar, MaxScalar, StepScalar,
};
enum class Binary : int { Add, Sub, Mul, Div };
enum class Elem : int { F32, F64, BF16 };  // element types of convert

template <class T> void fill(T* y, int64_t n, T value, cudaStream_t st);
// y (contiguous or strided by o.sb) = x (strided by o.sa), elements of `bytes` bytes (2, 4, 8).
void copy_strided(const void* x, void* y, int elem_bytes, const Strided& o, cudaStream_t st);
void convert(const void* x, Elem from, void* y, Elem to, int64_t n, cudaStream_t st);
// Adds to *count (device) the elements that are not finite (or, with negative_too, below 0).
void count_nonfinite(const void* x, Elem e, int64_t n, bool negative_too, unsigned long long* count,
                     cudaStream_t st);
void adamw_step(float* p, const float* g, float* m, float* v, int64_t n, float b1, float b2, float step,
                float inv_bc2, float eps, float decay, cudaStream_t st);
template <class T> void unary(Unary op, const T* x, T* y, int64_t n, T alpha, cudaStream_t st);
// y contiguous with o.shape; a, b strided by o.sa, o.sb (0 on broadcast dimensions).
template <class T> void binary(Binary op, const T* a, const T* b, T* y, const Strided& o, cudaStream_t st);
// x contiguous of shape xs (rank dims); y contiguous of shape ys (1 where reduced).
template <class T> void sum_to(const T* x, T* y, int rank, const int64_t* xs, const int64_t* ys, cudaStream_t st);
template <class T> void rmsnorm(const T* x, const T* w, T* y, int64_t rows, int64_t n, double eps, bool with_y,
                                cudaStream_t st);
template <class T> void rope(const T* x, T* y, int64_t t, int64_t h, int64_t d, int64_t pos0, double theta,
                             bool inverse, cudaStream_t st);
// scratch: batch * n * n doubles of device memory.
template <class T> void unit_lower_inverse(const T* l, T* y, int64_t batch, int64_t n, double* scratch,
                                           cudaStream_t st);
template <class T> void causal_decay(const T* cs, T* y, int64_t batch, int64_t n, cudaStream_t st);
// mask: null for a plain softmax, else the attention rule over rows [H, Tq] of Tk entries.
template <class T> void softmax(const T* x, T* y, int64_t rows, int64_t n, const AttentionShape* mask,
                                cudaStream_t st);
// targets: device int32 [rows].
template <class T> void cross_entropy(const T* logits, const int32_t* targets, T* nll, int64_t rows, int64_t v,
                                      cudaStream_t st);
template <class T> void cross_entropy_backward(const T* logits, const int32_t* targets, const T* g, int64_t rows,
                                               int64_t v, T* dlogits, cudaStream_t st);
template <class T> void cross_entropy_backward_backward(const T* logits, const T* b, const int32_t* targets,
                                                        const T* g, int64_t rows, int64_t v, T* dz, T* c, T* dg,
                                                        cudaStream_t st);
// y[r, targets[r]] -= 1 (y already holds x).
template <class T> void onehot_sub(T* y, const int32_t* targets, int64_t rows, int64_t v, cudaStream_t st);
template <class T> void gather_rows(const T* table, const int32_t* ids, int64_t rows, int64_t d, T* y,
                                    cudaStream_t st);
void gather_rows_bf16(const uint16_t* table, const int32_t* ids, int64_t rows, int64_t d, float* y,
                      cudaStream_t st);
// y (zeroed here) [*, d]: y[ids[r]] += rows[r], in row order per column (deterministic).
template <class T> void scatter_add_rows(const T* rows, const int32_t* ids, int64_t nrows, int64_t d, T* y,
                                         int64_t yrows, cudaStream_t st);
template <class T> void silu_mul(const T* a, const T* b, T* y, int64_t n, cudaStream_t st);
template <class T> void silu_mul_backward(const T* a, const T* b, const T* g, T* da, T* db, int64_t n,
                                          cudaStream_t st);
// scratch: rows doubles.
template <class T> void rmsnorm_backward(const T* x, const T* w, const T* g, int64_t rows, int64_t n, double eps,
                                         T* dx, T* dw, double* scratch, cudaStream_t st);
// out[m, n] (row major) = a[m, k] (float32) x b (bf16, [k, n] or [n, k] if tb), float32
// accumulation: the small-m path of bf16 products (decoding), one batch.
void matmul_f32_bf16_small(const float* a, const uint16_t* b, bool tb, float* out, int64_t m, int64_t n, int64_t k,
                           cudaStream_t st);

// ---- attention (cuda_attention.cu); layouts as in backend/attention_shape.h.
// Head dimensions the kernels take (a warp's lanes hold a row in registers).
constexpr int64_t kMaxHeadDim = 256;
template <class T> void attention_forward(const AttentionShape& s, const T* q, const T* k, const T* v, T* o, T* lse,
                                          cudaStream_t st);
// scratch: 2 * heads * tq elements of T.
template <class T> void attention_backward(const AttentionShape& s, const T* q, const T* k, const T* v, const T* o,
                                           const T* lse, const T* dout, T* dq, T* dk, T* dv, T* scratch,
                                           cudaStream_t st);
// scratch: 3 * heads * tq elements of T.
template <class T> void attention_backward_backward(const AttentionShape& s, const T* q, const T* k, const T* v,
                                                    const T* o, const T* lse, const T* dout, const T* aq,
                                                    const T* ak, const T* av, T* gq, T* gk, T* gv, T* gdout,
                                                    T* scratch, cudaStream_t st);

// The last launch error as a one-line exception (std::runtime_error), naming `what`.
void check_launch(const char* what);

}  // namespace ttt::cuda
