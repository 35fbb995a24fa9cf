// Pieces the recurrent mixers share: the causal depthwise short convolution with its carried
// tail, and the constant matrices of a chunked scan.
#pragma once
#include <cstdint>

#include "autodiff/ops.h"

namespace ttt::model {

// x [T, C] through a causal depthwise convolution of width K (weight [C, K], no bias) that sees
// the K-1 rows of `prev` first; *tail receives the last K-1 rows of [prev; x] (the next state).
Tensor causal_conv(const Tensor& x, const Tensor& prev, const Tensor& weight, int64_t K, Tensor* tail);

// Constants of a chunk of n tokens: upper[j][i] = 1 for j <= i (a cumulative sum as a product,
// cs = a @ upper); lower: 1 on and below the diagonal; neg_big: -1e30 above it (exp gives 0,
// and masked entries carry no gradient); strict: 1 below the diagonal; eye: the identity.
struct ChunkConstants {
  Tensor upper, lower, neg_big, strict, eye;
};
ChunkConstants chunk_constants(int64_t n, DType dt, Device dev);

}  // namespace ttt::model
