// Fused kernels for the CPU backend: SwiGLU's gate, and first-order backwards that the ops layer
// uses when no graph of the gradient is needed (create_graph off); otherwise it builds the same
// gradient from differentiable ops so that it can be differentiated again.
#pragma once
#include <cstdint>

namespace ttt::kernels {

// y = x * rstd(x) * w over rows of n. Writes dx [rows, n] and dw [n] (overwritten).
// Deterministic: dw is reduced over a fixed split of the rows, whatever the thread count.
template <class T>
void rmsnorm_backward(const T* x, const T* w, const T* g, int64_t rows, int64_t n, double eps, T* dx, T* dw);

// nll[r] = logsumexp(logits[r]) - logits[r, t_r]. Writes dlogits = (softmax - onehot) * g[r].
template <class T>
void cross_entropy_backward(const T* logits, const int32_t* targets, const T* g, int64_t rows, int64_t v,
                            T* dlogits);

// Its backward (second order): with b [rows, v] the adjoint of dlogits and P = softmax(logits),
// writes dz = dlogits as above, c = g[r] P (b - rowsum(P b)) (the adjoint of the logits) and
// dg[r] = rowsum(b (P - onehot)) (the adjoint of g). c may alias b; dz must not alias logits.
template <class T>
void cross_entropy_backward_backward(const T* logits, const T* b, const int32_t* targets, const T* g, int64_t rows,
                                     int64_t v, T* dz, T* c, T* dg);

// SwiGLU's gate over n elements: y = silu(a) * b.
template <class T>
void silu_mul(const T* a, const T* b, int64_t n, T* y);

// Its backward: da = (g * b) * silu'(a), db = g * silu(a), rounded exactly as the composite
// mul(silu(a), b) backward rounds them.
template <class T>
void silu_mul_backward(const T* a, const T* b, const T* g, int64_t n, T* da, T* db);

}  // namespace ttt::kernels
