// The one dispatch point between differentiable ops and devices.
//
// A backend owns its device's memory (DeviceMemory, tensor/device.h: allocation, release,
// copies to and from the host, memory statistics) and computes every op on it. Ops
// (autodiff/ops.h) validate shapes, allocate outputs and record the graph; they then call the
// Backend of the tensors' device, which only computes. A new backend is a new folder under
// backend/ implementing this interface, one line in backend/registry.cpp, and a run of the
// cross-backend op harness (tests/test_backend_ops.cpp); nothing above backend/ changes for it.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backend/attention_shape.h"
#include "tensor/tensor.h"

namespace ttt {

enum class UnaryOp {
  Neg, Exp, Log, Sqrt, Rsqrt, Reciprocal, Square, Sigmoid, Softplus,
  Silu, SiluGrad, SiluGrad2, SiluGrad3,  // silu and its first three derivatives
  AddScalar, MulScalar, MaxScalar,       // x + a, x * a, max(x, a)
  StepScalar,                            // 1 where x > a else 0
};
enum class BinaryOp { Add, Sub, Mul, Div };

// One AdamW update (train/optimizer.h): m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
// p = p * decay - step * m / (sqrt(v * inv_bc2) + eps), in float32 in this order.
struct AdamWStep {
  float beta1 = 0, beta2 = 0;
  float step = 0;     // lr / (1 - beta1^t)
  float inv_bc2 = 0;  // 1 / (1 - beta2^t)
  float eps = 0;
  float decay = 1;    // 1 - lr * weight_decay, or 1 for parameters that do not decay
};

class Backend : public DeviceMemory {
 public:
  ~Backend() override = default;
  virtual const char* name() const = 0;
  virtual Device device() const = 0;

  // Every `out` is contiguous and already allocated with the right shape and dtype. Inputs are
  // contiguous unless a comment says otherwise.
  virtual void fill(const Tensor& out, double value) = 0;
  // Same shape and dtype; both may have any strides (out must not overlap itself).
  virtual void copy(const Tensor& src, const Tensor& out) = 0;
  // Same shape, contiguous, any two dtypes: each element through double (bf16 via float), to
  // float32 by rounding, to bf16 through float32 rounded to nearest even.
  virtual void convert(const Tensor& src, const Tensor& out) = 0;
  // Elements of a contiguous x that are not finite (and, with negative_too, those below zero).
  virtual int64_t count_nonfinite(const Tensor& x, bool negative_too) = 0;
  // In place on contiguous float32 p, m, v of one shape, from g of that shape (AdamWStep).
  virtual void adamw_step(const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v,
                          const AdamWStep& h) = 0;
  virtual void unary(UnaryOp op, const Tensor& x, const Tensor& out, double alpha) = 0;
  // a and b may have any strides (stride 0 on broadcast dimensions) and out's shape.
  virtual void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) = 0;
  // out[j] = sum of x over the dimensions where out (same rank as x) has extent 1.
  virtual void sum_to(const Tensor& x, const Tensor& out) = 0;
  // Batched: a [B,m,k] (or [B,k,m] if ta), b [B,k,n] (or [B,n,k]), out [B,m,n]; B may be 1.
  // A batch stride of 0 on a or b broadcasts it.
  virtual void matmul(const Tensor& a, bool ta, const Tensor& b, bool tb, const Tensor& out,
                      int64_t batch, int64_t m, int64_t n, int64_t k, int64_t stride_a,
                      int64_t stride_b) = 0;
  // Rows are the last dimension.
  virtual void rmsnorm(const Tensor& x, const Tensor& w, double eps, const Tensor& out) = 0;
  virtual void rms_rstd(const Tensor& x, double eps, const Tensor& out) = 0;
  virtual void rope(const Tensor& x, int64_t pos0, double theta, bool inverse, const Tensor& out) = 0;
  // l [B, n, n]: only its strictly lower triangle is read. out [B, n, n] = (I + l)^-1 (unit
  // lower triangular) by forward substitution.
  virtual void unit_lower_inverse(const Tensor& l, const Tensor& out) = 0;
  // cs [B, n], out [B, n, n]: exp(cs_i - cs_j) for j <= i, else 0.
  virtual void causal_decay(const Tensor& cs, const Tensor& out) = 0;
  virtual void softmax(const Tensor& x, const Tensor& out) = 0;
  // x [H, Tq, Tk] scores; entries a query may not see (kernels/attention.h rule) get 0.
  virtual void masked_softmax(const Tensor& x, const AttentionShape& s, const Tensor& out) = 0;
  virtual void cross_entropy(const Tensor& logits, const std::vector<int32_t>& targets,
                             const Tensor& nll) = 0;
  virtual void onehot_sub(const Tensor& x, const std::vector<int32_t>& targets, const Tensor& out) = 0;
  virtual void gather_rows(const Tensor& table, const std::vector<int32_t>& ids, const Tensor& out) = 0;
  virtual void scatter_add_rows(const Tensor& rows, const std::vector<int32_t>& ids, const Tensor& out) = 0;
  // SwiGLU's gate, out = silu(a) * b (a, b, out of one shape).
  virtual void silu_mul(const Tensor& a, const Tensor& b, const Tensor& out) = 0;
  // Fused first-order backwards (kernels/fused_cpu.h): used when no graph of the gradient is needed.
  virtual void silu_mul_backward(const Tensor& a, const Tensor& b, const Tensor& g, const Tensor& da,
                                 const Tensor& db) = 0;
  virtual void rmsnorm_backward(const Tensor& x, const Tensor& w, const Tensor& g, double eps, const Tensor& dx,
                                const Tensor& dw) = 0;
  // dlogits may be logits itself (in place: linear_cross_entropy with a frozen bf16 head).
  virtual void cross_entropy_backward(const Tensor& logits, const std::vector<int32_t>& targets, const Tensor& g,
                                      const Tensor& dlogits) = 0;
  // Second order of cross_entropy_backward (kernels/fused_cpu.h): dz, c (may alias b), dg.
  virtual void cross_entropy_backward_backward(const Tensor& logits, const Tensor& b,
                                               const std::vector<int32_t>& targets, const Tensor& g,
                                               const Tensor& dz, const Tensor& c, const Tensor& dg) = 0;
  virtual void attention_forward(const AttentionShape& s, const Tensor& q, const Tensor& k,
                                 const Tensor& v, const Tensor& o, const Tensor& lse) = 0;
  virtual void attention_backward(const AttentionShape& s, const Tensor& q, const Tensor& k,
                                  const Tensor& v, const Tensor& o, const Tensor& lse,
                                  const Tensor& dout, const Tensor& dq, const Tensor& dk,
                                  const Tensor& dv) = 0;
  // Keys and values [cache; chunk] with the window cache in bfloat16 (kc, vc [Tc, H, D] BF16, a
  // constant) and the chunk's rows in float32 (k, v [s.tk - Tc, H, D]); q, o, lse float32.
  // The backward writes dq, and dk, dv for the chunk's rows only (shapes of k, v).
  virtual void attention_forward_bf16_cache(const AttentionShape& s, const Tensor& q, const Tensor& kc,
                                            const Tensor& vc, const Tensor& k, const Tensor& v, const Tensor& o,
                                            const Tensor& lse) = 0;
  virtual void attention_backward_bf16_cache(const AttentionShape& s, const Tensor& q, const Tensor& kc,
                                             const Tensor& vc, const Tensor& k, const Tensor& v, const Tensor& o,
                                             const Tensor& lse, const Tensor& dout, const Tensor& dq,
                                             const Tensor& dk, const Tensor& dv) = 0;
  // Second order: gradients with respect to q, k, v and dout of <aq, dq> + <ak, dk> + <av, dv>.
  virtual void attention_backward_backward(const AttentionShape& s, const Tensor& q, const Tensor& k,
                                           const Tensor& v, const Tensor& o, const Tensor& lse,
                                           const Tensor& dout, const Tensor& aq, const Tensor& ak,
                                           const Tensor& av, const Tensor& gq, const Tensor& gk,
                                           const Tensor& gv, const Tensor& gdout) = 0;
};

// ---- the registry (backend/registry.cpp) ----

// The backend of a device that is built in and present; std::invalid_argument otherwise.
Backend& backend_for(Device device);

struct BackendInfo {
  std::string name;                  // "cpu", "cpu-checked", "cuda"
  bool built = false;                // compiled into this binary
  std::vector<Device> devices;       // present on this machine
  std::string note;                  // one line: what it is, or why it is absent
};
std::vector<BackendInfo> backends();

// Parses a --device value and checks that the device is built in and present: a one-line
// std::invalid_argument otherwise (an unknown name, a backend not built, a GPU not present).
Device require_device(const std::string& name);

// Tests only: routes a device kind to another backend (a planted wrong kernel) while alive.
class ScopedBackendOverride {
 public:
  ScopedBackendOverride(DeviceKind kind, Backend& replacement);
  ~ScopedBackendOverride();
  ScopedBackendOverride(const ScopedBackendOverride&) = delete;
  ScopedBackendOverride& operator=(const ScopedBackendOverride&) = delete;

 private:
  DeviceKind kind_;
  Backend* previous_;
};

// The built-in backends, each defined in its folder (backend/cpu, backend/checked).
Backend& cpu_backend();
Backend& checked_cpu_backend();
// backend/cuda, only in a build with -DTTT_CUDA=ON (TTT_HAVE_CUDA): the GPUs the CUDA runtime
// reports (0 without a driver or a GPU), and the backend of GPU `index` (made on first use).
int cuda_device_count();
Backend& cuda_backend(int index);

}  // namespace ttt
