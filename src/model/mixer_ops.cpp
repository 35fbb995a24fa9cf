#include "model/mixer_ops.h"

#include <vector>

namespace ttt::model {

Tensor causal_conv(const Tensor& x, const Tensor& prev, const Tensor& weight, int64_t K, Tensor* tail) {
  const int64_t T = x.size(0);
  const Tensor xs = K > 1 ? concat({prev, x}, 0) : x;
  const Tensor wt = contiguous(transpose(weight, 0, 1));  // [K, C]
  Tensor y = mul(slice(xs, 0, 0, T), slice(wt, 0, 0, 1));
  for (int64_t k = 1; k < K; ++k) y = add(y, mul(slice(xs, 0, k, k + T), slice(wt, 0, k, k + 1)));
  if (tail) *tail = K > 1 ? slice(xs, 0, T, T + K - 1) : zeros({0, x.size(1)}, x.dtype(), x.device());
  return y;
}

ChunkConstants chunk_constants(int64_t n, DType dt, Device dev) {
  const size_t nn = static_cast<size_t>(n * n);
  std::vector<double> up(nn), lo(nn), big(nn), st(nn), eye(nn);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) {
      const size_t ij = static_cast<size_t>(i * n + j);
      up[static_cast<size_t>(j * n + i)] = j <= i ? 1.0 : 0.0;
      lo[ij] = j <= i ? 1.0 : 0.0;
      big[ij] = j <= i ? 0.0 : -1e30;
      st[ij] = j < i ? 1.0 : 0.0;
      eye[ij] = i == j ? 1.0 : 0.0;
    }
  return {from_vector(up, {n, n}, dt, dev), from_vector(lo, {n, n}, dt, dev), from_vector(big, {n, n}, dt, dev),
          from_vector(st, {n, n}, dt, dev), from_vector(eye, {n, n}, dt, dev)};
}

}  // namespace ttt::model
