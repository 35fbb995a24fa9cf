// Device helpers shared by the CUDA backend's kernel files.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace ttt::cuda {

constexpr int kThreads = 256;  // threads per block of the streaming kernels

// Blocks for a grid-stride loop over n items.
inline unsigned grid_for(int64_t n, int threads = kThreads) {
  const int64_t b = (n + threads - 1) / threads;
  return static_cast<unsigned>(b < 1 ? 1 : (b > (int64_t{1} << 20) ? (int64_t{1} << 20) : b));
}

#define TTT_GRID_STRIDE(i, n) \
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < (n); i += int64_t(blockDim.x) * gridDim.x)

template <class T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
template <class T>
__device__ __forceinline__ T warp_max(T v) {
  for (int o = 16; o > 0; o >>= 1) {
    const T w = __shfl_xor_sync(0xffffffffu, v, o);
    v = w > v ? w : v;
  }
  return v;
}

// Sum over the block (every thread gets it); sh: 32 slots of shared memory. blockDim.x must be
// a multiple of 32.
template <class T>
__device__ T block_sum(T v, T* sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_sum(v);
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  v = lane < nw ? sh[lane] : T(0);
  if (warp == 0) v = warp_sum(v);
  if (threadIdx.x == 0) sh[0] = v;
  __syncthreads();
  const T r = sh[0];
  __syncthreads();
  return r;
}
template <class T>
__device__ T block_max(T v, T* sh, T lowest) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_max(v);
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  v = lane < nw ? sh[lane] : lowest;
  if (warp == 0) v = warp_max(v);
  if (threadIdx.x == 0) sh[0] = v;
  __syncthreads();
  const T r = sh[0];
  __syncthreads();
  return r;
}

template <class T>
__device__ __forceinline__ T ninf() {
  return -__builtin_huge_val();
}
template <>
__device__ __forceinline__ float ninf<float>() {
  return -__builtin_huge_valf();
}

}  // namespace ttt::cuda
