// The CUDA backend (devices "cuda:N", built with cmake -DTTT_CUDA=ON): the Backend interface on
// NVIDIA GPUs. Matrix products through cuBLAS (strided batched, float32 without TF32 and float64;
// bf16 weights as the right operand of float32 products), every other op through the kernels of
// cuda_kernels.cu and cuda_attention.cu.
//
// One instance per GPU, each with its own stream and cuBLAS handle; every call first selects the
// instance's GPU. Work is only enqueued: the host waits for the stream only where a result
// leaves the device (copy_to_host, count_nonfinite, synchronize). Memory comes from a caching
// allocator: blocks are rounded up to size classes and kept on per-class free lists when
// released, so the steady state of a loop (the same shapes every step) makes no cudaMalloc;
// because all of an instance's work runs on its one stream in order, a block released by the
// host can be handed out again at once. trim() gives the cached blocks back.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/cuda_kernels.h"

namespace ttt {
namespace {

void ck(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string("cuda backend: ") + what + ": " + cudaGetErrorString(e));
}
void ckb(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw std::runtime_error(std::string("cuda backend: cuBLAS ") + what + " failed (status " + std::to_string(int(s)) + ")");
}

// Size classes: powers of two from 512 bytes to 1 MiB, then multiples of 2 MiB.
size_t size_class(size_t bytes) {
  if (bytes <= 512) return 512;
  if (bytes <= (size_t(1) << 20)) {
    size_t c = 1024;
    while (c < bytes) c <<= 1;
    return c;
  }
  constexpr size_t kBig = size_t(2) << 20;
  return (bytes + kBig - 1) / kBig * kBig;
}

class CachingAllocator {
 public:
  explicit CachingAllocator(int device) : device_(device) {}
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;

  void* allocate(size_t bytes) {
    if (bytes == 0) return nullptr;
    const size_t cls = size_class(bytes);
    std::lock_guard<std::mutex> g(mu_);
    ++stats_.allocations;
    void* p = nullptr;
    auto it = free_.find(cls);
    if (it != free_.end() && !it->second.empty()) {
      p = it->second.back();
      it->second.pop_back();
      stats_.bytes_cached -= cls;
    } else {
      ck(cudaSetDevice(device_), "cudaSetDevice");
      if (cudaMalloc(&p, cls) != cudaSuccess) {
        (void)cudaGetLastError();
        release_cached_locked();  // the cache may hold what is missing
        if (cudaMalloc(&p, cls) != cudaSuccess) {
          (void)cudaGetLastError();
          throw std::runtime_error("cuda backend: out of memory on cuda:" + std::to_string(device_) + " allocating " +
                                   std::to_string(bytes) + " bytes (" + std::to_string(stats_.bytes_in_use) +
                                   " in use)");
        }
      }
      ++stats_.system_allocs;
    }
    stats_.bytes_in_use += bytes;  // as asked (the class rounding shows in bytes_cached when released)
    stats_.peak_bytes_in_use = std::max(stats_.peak_bytes_in_use, stats_.bytes_in_use);
    return p;
  }

  void release(void* p, size_t bytes) {
    if (!p) return;
    const size_t cls = size_class(bytes);
    std::lock_guard<std::mutex> g(mu_);
    free_[cls].push_back(p);
    stats_.bytes_in_use -= bytes;
    stats_.bytes_cached += cls;
  }

  MemoryStats stats() const {
    std::lock_guard<std::mutex> g(mu_);
    return stats_;
  }
  void reset_peak() {
    std::lock_guard<std::mutex> g(mu_);
    stats_.peak_bytes_in_use = stats_.bytes_in_use;
  }
  void trim() {
    std::lock_guard<std::mutex> g(mu_);
    release_cached_locked();
  }

 private:
  void release_cached_locked() {
    cudaSetDevice(device_);
    for (auto& [cls, v] : free_)
      for (void* p : v) cudaFree(p);  // cudaFree waits for the work that may still use p
    free_.clear();
    stats_.bytes_cached = 0;
  }

  int device_;
  mutable std::mutex mu_;
  std::map<size_t, std::vector<void*>> free_;
  MemoryStats stats_;
};

cuda::Elem elem_of(DType d) {
  switch (d) {
    case DType::F32: return cuda::Elem::F32;
    case DType::F64: return cuda::Elem::F64;
    case DType::BF16: return cuda::Elem::BF16;
  }
  throw std::logic_error("cuda backend: unknown dtype");
}

template <class F>
void for_dtype(DType dt, F&& f) {
  for_compute_dtype(dt, "cuda backend", std::forward<F>(f));
}

cuda::Strided strided(const Tensor& like, const Shape& sa, const Shape& sb) {
  cuda::Strided o;
  if (like.dim() > cuda::kMaxRank)
    throw std::invalid_argument("cuda backend: tensors of more than " + std::to_string(cuda::kMaxRank) +
                                " dimensions with strides");
  o.rank = static_cast<int>(like.dim());
  for (int d = 0; d < o.rank; ++d) {
    o.shape[d] = like.shape()[d];
    o.sa[d] = sa[d];
    o.sb[d] = sb[d];
  }
  return o;
}

static_assert(int(UnaryOp::StepScalar) == int(cuda::Unary::StepScalar), "UnaryOp and cuda::Unary differ");
static_assert(int(BinaryOp::Div) == int(cuda::Binary::Div), "BinaryOp and cuda::Binary differ");

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int index) : index_(index), alloc_(index) {
    ck(cudaSetDevice(index_), "cudaSetDevice");
    ck(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
    ckb(cublasCreate(&blas_), "cublasCreate");
    ckb(cublasSetStream(blas_, stream_), "cublasSetStream");
    // Float32 products in float32 (the default math mode uses no TF32 unless the environment
    // forces it): results equal to the CPU's up to the order of sums.
    ckb(cublasSetMathMode(blas_, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
    name_ = "cuda";
  }
  // Never destroyed (see registry): tensors in static objects may outlive any destructor order.

  const char* name() const override { return name_.c_str(); }
  Device device() const override { return Device{DeviceKind::CUDA, index_}; }

  // ---- memory
  void* allocate(size_t bytes) override { return alloc_.allocate(bytes); }
  void release(void* p, size_t bytes) override { alloc_.release(p, bytes); }
  void copy_to_host(const void* src, void* dst, size_t bytes) override {
    on_device();
    if (bytes) ck(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_), "copy to host");
    ck(cudaStreamSynchronize(stream_), "copy to host (synchronize)");
  }
  void copy_from_host(const void* src, void* dst, size_t bytes) override {
    on_device();
    // From pageable memory the call returns once the bytes are staged: src may be freed after.
    if (bytes) ck(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_), "copy from host");
  }
  bool host_addressable() const override { return false; }
  void synchronize() override {
    on_device();
    ck(cudaStreamSynchronize(stream_), "synchronize");
  }
  MemoryStats memory_stats() const override { return alloc_.stats(); }
  void reset_peak() override { alloc_.reset_peak(); }
  void trim() override {
    on_device();
    ck(cudaStreamSynchronize(stream_), "trim (synchronize)");
    alloc_.trim();
  }

  // ---- ops
  void fill(const Tensor& out, double value) override {
    on_device();
    for_dtype(out.dtype(), [&]<class T>() { cuda::fill<T>(out.data<T>(), out.numel(), static_cast<T>(value), stream_); });
  }

  void copy(const Tensor& src, const Tensor& out) override {
    if (src.shape() != out.shape() || src.dtype() != out.dtype())
      throw std::logic_error("backend copy: shape or dtype mismatch");
    on_device();
    const size_t es = dtype_size(out.dtype());
    if ((src.is_contiguous() && out.is_contiguous()) || out.dim() == 0) {
      const size_t bytes = static_cast<size_t>(out.numel()) * es;
      if (bytes) ck(cudaMemcpyAsync(out.raw_data(), src.raw_data(), bytes, cudaMemcpyDeviceToDevice, stream_), "copy");
      return;
    }
    cuda::copy_strided(src.raw_data(), out.raw_data(), static_cast<int>(es), strided(out, src.strides(), out.strides()),
                       stream_);
  }

  void convert(const Tensor& src, const Tensor& out) override {
    if (src.shape() != out.shape() || !src.is_contiguous() || !out.is_contiguous())
      throw std::logic_error("backend convert: shapes differ or an operand is strided");
    on_device();
    cuda::convert(src.raw_data(), elem_of(src.dtype()), out.raw_data(), elem_of(out.dtype()), out.numel(), stream_);
  }

  int64_t count_nonfinite(const Tensor& x, bool negative_too) override {
    if (!x.is_contiguous()) throw std::logic_error("backend count_nonfinite: strided operand");
    on_device();
    Scratch<unsigned long long> count(*this, 1);
    ck(cudaMemsetAsync(count.p, 0, sizeof(unsigned long long), stream_), "count_nonfinite");
    cuda::count_nonfinite(x.raw_data(), elem_of(x.dtype()), x.numel(), negative_too, count.p, stream_);
    unsigned long long host = 0;
    copy_to_host(count.p, &host, sizeof host);
    return static_cast<int64_t>(host);
  }

  void adamw_step(const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v, const AdamWStep& h) override {
    on_device();
    cuda::adamw_step(p.data<float>(), g.data<float>(), m.data<float>(), v.data<float>(), p.numel(), h.beta1, h.beta2,
                     h.step, h.inv_bc2, h.eps, h.decay, stream_);
  }

  void unary(UnaryOp op, const Tensor& x, const Tensor& out, double alpha) override {
    on_device();
    for_dtype(out.dtype(), [&]<class T>() {
      cuda::unary<T>(static_cast<cuda::Unary>(op), x.data<T>(), out.data<T>(), out.numel(), static_cast<T>(alpha),
                     stream_);
    });
  }

  void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) override {
    on_device();
    const cuda::Strided o = strided(out, a.strides(), b.strides());
    for_dtype(out.dtype(), [&]<class T>() {
      cuda::binary<T>(static_cast<cuda::Binary>(op), a.data<T>(), b.data<T>(), out.data<T>(), o, stream_);
    });
  }

  void sum_to(const Tensor& x, const Tensor& out) override {
    on_device();
    if (x.numel() == out.numel()) return copy(x, out);
    if (x.dim() > cuda::kMaxRank) throw std::invalid_argument("cuda backend: sum_to of more than 8 dimensions");
    for_dtype(out.dtype(), [&]<class T>() {
      cuda::sum_to<T>(x.data<T>(), out.data<T>(), static_cast<int>(x.dim()), x.shape().data(), out.shape().data(),
                      stream_);
    });
  }

  void matmul(const Tensor& a, bool ta, const Tensor& b, bool tb, const Tensor& out, int64_t batch, int64_t m,
              int64_t n, int64_t k, int64_t stride_a, int64_t stride_b) override {
    on_device();
    if (batch <= 0 || m <= 0 || n <= 0) return;
    if (k <= 0) return fill(out, 0.0);
    if (b.dtype() == DType::BF16) return matmul_bf16(a, ta, b, tb, out, batch, m, n, k, stride_a, stride_b);
    std::lock_guard<std::mutex> g(blas_mu_);  // one handle, calls from any host thread
    const int im = checked_int(m), in = checked_int(n), ik = checked_int(k), ib = checked_int(batch);
    const cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    const int lda = ta ? im : ik, ldb = tb ? ik : in;
    // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: B first.
    if (out.dtype() == DType::F32) {
      const float one = 1, zero = 0;
      ckb(cublasSgemmStridedBatched(blas_, opb, opa, in, im, ik, &one, b.data<float>(), ldb, stride_b, a.data<float>(),
                                    lda, stride_a, &zero, out.data<float>(), in, m * n, ib),
          "sgemm");
    } else if (out.dtype() == DType::F64) {
      const double one = 1, zero = 0;
      ckb(cublasDgemmStridedBatched(blas_, opb, opa, in, im, ik, &one, b.data<double>(), ldb, stride_b,
                                    a.data<double>(), lda, stride_a, &zero, out.data<double>(), in, m * n, ib),
          "dgemm");
    } else {
      throw std::logic_error("cuda backend: matmul of dtype " + std::string(dtype_name(out.dtype())));
    }
  }

  void rmsnorm(const Tensor& x, const Tensor& w, double eps, const Tensor& out) override {
    on_device();
    const int64_t n = x.size(-1);
    for_dtype(out.dtype(), [&]<class T>() {
      cuda::rmsnorm<T>(x.data<T>(), w.data<T>(), out.data<T>(), n ? x.numel() / n : 0, n, eps, true, stream_);
    });
  }

  void rms_rstd(const Tensor& x, double eps, const Tensor& out) override {
    on_device();
    const int64_t n = x.size(-1);
    for_dtype(out.dtype(), [&]<class T>() {
      cuda::rmsnorm<T>(x.data<T>(), static_cast<const T*>(nullptr), out.data<T>(), n ? x.numel() / n : 0, n, eps,
                       false, stream_);
    });
  }

  void rope(const Tensor& x, int64_t pos0, double theta, bool inverse, const Tensor& out) override {
    on_device();
    for_dtype(out.dtype(), [&]<class T>() {
      cuda::rope<T>(x.data<T>(), out.data<T>(), x.size(0), x.size(1), x.size(2), pos0, theta, inverse, stream_);
    });
  }

  void unit_lower_inverse(const Tensor& l, const Tensor& out) override {
    on_device();
    const int64_t n = l.size(-1), batch = l.numel() / std::max<int64_t>(n * n, 1);
    Scratch<double> x(*this, static_cast<size_t>(batch * n * n));
    for_dtype(out.dtype(), [&]<class T>() {
      cuda::unit_lower_inverse<T>(l.data<T>(), out.data<T>(), batch, n, x.p, stream_);
    });
  }

  void causal_decay(const Tensor& cs, const Tensor& out) override {
    on_device();
    const int64_t n = cs.size(-1), batch = n ? cs.numel() / n : 0;
    for_dtype(out.dtype(), [&]<class T>() { cuda::causal_decay<T>(cs.data<T>(), out.data<T>(), batch, n, stream_); });
  }

  void softmax(const Tensor& x, const Tensor& out) override {
    on_device();
    const int64_t n = x.size(-1);
    for_dtype(out.dtype(), [&]<class T>() {
      cuda::softmax<T>(x.data<T>(), out.data<T>(), n ? x.numel() / n : 0, n, nullptr, stream_);
    });
  }

  void masked_softmax(const Tensor& x, const AttentionShape& s, const Tensor& out) override {
    on_device();
    const int64_t n = x.size(-1);
    for_dtype(out.dtype(), [&]<class T>() {
      cuda::softmax<T>(x.data<T>(), out.data<T>(), n ? x.numel() / n : 0, n, &s, stream_);
    });
  }

  void cross_entropy(const Tensor& logits, const std::vector<int32_t>& targets, const Tensor& nll) override {
    on_device();
    const Scratch<int32_t> t = upload(targets);
    for_dtype(nll.dtype(), [&]<class T>() {
      cuda::cross_entropy<T>(logits.data<T>(), t.p, nll.data<T>(), logits.size(0), logits.size(1), stream_);
    });
  }

  void onehot_sub(const Tensor& x, const std::vector<int32_t>& targets, const Tensor& out) override {
    copy(x, out);
    const Scratch<int32_t> t = upload(targets);
    for_dtype(out.dtype(), [&]<class T>() {
      cuda::onehot_sub<T>(out.data<T>(), t.p, static_cast<int64_t>(targets.size()), x.size(1), stream_);
    });
  }

  void gather_rows(const Tensor& table, const std::vector<int32_t>& ids, const Tensor& out) override {
    on_device();
    const Scratch<int32_t> t = upload(ids);
    const int64_t d = table.size(1), rows = static_cast<int64_t>(ids.size());
    if (table.dtype() == DType::BF16) return cuda::gather_rows_bf16(table.data<uint16_t>(), t.p, rows, d, out.data<float>(), stream_);
    for_dtype(out.dtype(), [&]<class T>() { cuda::gather_rows<T>(table.data<T>(), t.p, rows, d, out.data<T>(), stream_); });
  }

  void scatter_add_rows(const Tensor& rows, const std::vector<int32_t>& ids, const Tensor& out) override {
    on_device();
    const Scratch<int32_t> t = upload(ids);
    for_dtype(out.dtype(), [&]<class T>() {
      cuda::scatter_add_rows<T>(rows.data<T>(), t.p, static_cast<int64_t>(ids.size()), out.size(1), out.data<T>(),
                                out.size(0), stream_);
    });
  }

  void silu_mul(const Tensor& a, const Tensor& b, const Tensor& out) override {
    on_device();
    for_dtype(out.dtype(), [&]<class T>() { cuda::silu_mul<T>(a.data<T>(), b.data<T>(), out.data<T>(), out.numel(), stream_); });
  }

  void silu_mul_backward(const Tensor& a, const Tensor& b, const Tensor& g, const Tensor& da, const Tensor& db) override {
    on_device();
    for_dtype(da.dtype(), [&]<class T>() {
      cuda::silu_mul_backward<T>(a.data<T>(), b.data<T>(), g.data<T>(), da.data<T>(), db.data<T>(), da.numel(), stream_);
    });
  }

  void rmsnorm_backward(const Tensor& x, const Tensor& w, const Tensor& g, double eps, const Tensor& dx,
                        const Tensor& dw) override {
    on_device();
    const int64_t n = x.size(-1), rows = n ? x.numel() / n : 0;
    Scratch<double> rstd(*this, static_cast<size_t>(rows));
    for_dtype(dx.dtype(), [&]<class T>() {
      cuda::rmsnorm_backward<T>(x.data<T>(), w.data<T>(), g.data<T>(), rows, n, eps, dx.data<T>(), dw.data<T>(), rstd.p,
                                stream_);
    });
  }

  void cross_entropy_backward(const Tensor& logits, const std::vector<int32_t>& targets, const Tensor& g,
                              const Tensor& dlogits) override {
    on_device();
    const Scratch<int32_t> t = upload(targets);
    for_dtype(dlogits.dtype(), [&]<class T>() {
      cuda::cross_entropy_backward<T>(logits.data<T>(), t.p, g.data<T>(), logits.size(0), logits.size(1),
                                      dlogits.data<T>(), stream_);
    });
  }

  void cross_entropy_backward_backward(const Tensor& logits, const Tensor& b, const std::vector<int32_t>& targets,
                                       const Tensor& g, const Tensor& dz, const Tensor& c, const Tensor& dg) override {
    on_device();
    const Scratch<int32_t> t = upload(targets);
    for_dtype(dz.dtype(), [&]<class T>() {
      cuda::cross_entropy_backward_backward<T>(logits.data<T>(), b.data<T>(), t.p, g.data<T>(), logits.size(0),
                                               logits.size(1), dz.data<T>(), c.data<T>(), dg.data<T>(), stream_);
    });
  }

  void attention_forward(const AttentionShape& s, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& o,
                         const Tensor& lse) override {
    on_device();
    for_dtype(o.dtype(), [&]<class T>() {
      cuda::attention_forward<T>(s, q.data<T>(), k.data<T>(), v.data<T>(), o.data<T>(), lse.data<T>(), stream_);
    });
  }

  // The bf16 window cache (--kv-dtype bf16) has CPU kernels only (not written for GPUs yet).
  void attention_forward_bf16_cache(const AttentionShape&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                    const Tensor&, const Tensor&, const Tensor&) override {
    throw std::invalid_argument("cuda backend: a bf16 window cache (--kv-dtype bf16) is not implemented on GPUs; use --kv-dtype f32");
  }
  void attention_backward_bf16_cache(const AttentionShape&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                     const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                     const Tensor&, const Tensor&) override {
    throw std::invalid_argument("cuda backend: a bf16 window cache (--kv-dtype bf16) is not implemented on GPUs; use --kv-dtype f32");
  }

  void attention_backward(const AttentionShape& s, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& o,
                          const Tensor& lse, const Tensor& dout, const Tensor& dq, const Tensor& dk,
                          const Tensor& dv) override {
    on_device();
    for_dtype(o.dtype(), [&]<class T>() {
      Scratch<T> scratch(*this, static_cast<size_t>(2 * s.heads * std::max<int64_t>(s.tq, 1)));
      cuda::attention_backward<T>(s, q.data<T>(), k.data<T>(), v.data<T>(), o.data<T>(), lse.data<T>(), dout.data<T>(),
                                  dq.data<T>(), dk.data<T>(), dv.data<T>(), scratch.p, stream_);
    });
  }

  void attention_backward_backward(const AttentionShape& s, const Tensor& q, const Tensor& k, const Tensor& v,
                                   const Tensor& o, const Tensor& lse, const Tensor& dout, const Tensor& aq,
                                   const Tensor& ak, const Tensor& av, const Tensor& gq, const Tensor& gk,
                                   const Tensor& gv, const Tensor& gdout) override {
    on_device();
    for_dtype(o.dtype(), [&]<class T>() {
      Scratch<T> scratch(*this, static_cast<size_t>(3 * s.heads * std::max<int64_t>(s.tq, 1)));
      cuda::attention_backward_backward<T>(s, q.data<T>(), k.data<T>(), v.data<T>(), o.data<T>(), lse.data<T>(),
                                           dout.data<T>(), aq.data<T>(), ak.data<T>(), av.data<T>(), gq.data<T>(),
                                           gk.data<T>(), gv.data<T>(), gdout.data<T>(), scratch.p, stream_);
    });
  }

 private:
  // Device scratch from the caching allocator, released when the call returns: the stream runs
  // in order, so whatever reuses the block next runs after the work enqueued here.
  template <class T>
  struct Scratch {
    Scratch(CudaBackend& b, size_t n) : be(b), bytes(n * sizeof(T)), p(static_cast<T*>(b.allocate(bytes))) {}
    ~Scratch() { be.release(p, bytes); }
    Scratch(const Scratch&) = delete;
    Scratch& operator=(const Scratch&) = delete;
    Scratch(Scratch&& o) noexcept : be(o.be), bytes(o.bytes), p(o.p) { o.p = nullptr; }
    CudaBackend& be;
    size_t bytes;
    T* p;
  };

  Scratch<int32_t> upload(const std::vector<int32_t>& v) {
    Scratch<int32_t> s(*this, v.size());
    copy_from_host(v.data(), s.p, v.size() * sizeof(int32_t));
    return s;
  }

  void on_device() const { ck(cudaSetDevice(index_), "cudaSetDevice"); }

  static int checked_int(int64_t v) {
    if (v > INT32_MAX) throw std::invalid_argument("cuda backend: matmul dimension " + std::to_string(v) + " above 2^31");
    return static_cast<int>(v);
  }

  // float32 activations times bf16 weights: one warp per output for a few rows (decoding);
  // otherwise bf16 x bf16 with float32 accumulation when the model asked for bf16 products
  // (`--compute bf16`), else the weights widened to float32 (exact) and an sgemm.
  void matmul_bf16(const Tensor& a, bool ta, const Tensor& b, bool tb, const Tensor& out, int64_t batch, int64_t m,
                   int64_t n, int64_t k, int64_t stride_a, int64_t stride_b) {
    if (ta || a.dtype() != DType::F32 || out.dtype() != DType::F32)
      throw std::logic_error("cuda backend: bf16 matmul needs a float32, untransposed left operand");
    const uint16_t* pb = b.data<uint16_t>();
    const float* pa = a.data<float>();
    float* pc = out.data<float>();
    if (m <= 8) {
      for (int64_t i = 0; i < batch; ++i)
        cuda::matmul_f32_bf16_small(pa + i * stride_a, pb + i * stride_b, tb, pc + i * m * n, m, n, k, stream_);
      return;
    }
    const int im = checked_int(m), in = checked_int(n), ik = checked_int(k), ib = checked_int(batch);
    const cublasOperation_t opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    const int ldb = tb ? ik : in;
    const int64_t a_elems = stride_a * (batch - 1) + m * k, b_elems = stride_b * (batch - 1) + n * k;
    std::lock_guard<std::mutex> g(blas_mu_);
    if (b.impl()->storage->bf16_products) {
      Scratch<uint16_t> a16(*this, static_cast<size_t>(a_elems));
      cuda::convert(pa, cuda::Elem::F32, a16.p, cuda::Elem::BF16, a_elems, stream_);
      const float one = 1, zero = 0;
      ckb(cublasGemmStridedBatchedEx(blas_, opb, CUBLAS_OP_N, in, im, ik, &one, pb, CUDA_R_16BF, ldb, stride_b, a16.p,
                                     CUDA_R_16BF, ik, stride_a, &zero, pc, CUDA_R_32F, in, m * n, ib,
                                     CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
          "bf16 gemm");
      return;
    }
    Scratch<float> b32(*this, static_cast<size_t>(b_elems));
    cuda::convert(pb, cuda::Elem::BF16, b32.p, cuda::Elem::F32, b_elems, stream_);
    const float one = 1, zero = 0;
    ckb(cublasSgemmStridedBatched(blas_, opb, CUBLAS_OP_N, in, im, ik, &one, b32.p, ldb, stride_b, pa, ik, stride_a,
                                  &zero, pc, in, m * n, ib),
        "sgemm (bf16 weights)");
  }

  int index_;
  CachingAllocator alloc_;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  std::mutex blas_mu_;
  std::string name_;
};

}  // namespace

int cuda_device_count() {
  static const int n = [] {
    int c = 0;
    if (cudaGetDeviceCount(&c) != cudaSuccess) {  // no driver, no device: none present
      (void)cudaGetLastError();
      return 0;
    }
    return c;
  }();
  return n;
}

Backend& cuda_backend(int index) {
  static std::mutex mu;
  static std::vector<CudaBackend*> made;  // never destroyed, like the CPU backend
  std::lock_guard<std::mutex> g(mu);
  if (index < 0 || index >= cuda_device_count())
    throw std::invalid_argument("device cuda:" + std::to_string(index) + " is not present");
  if (made.empty()) made.assign(static_cast<size_t>(cuda_device_count()), nullptr);
  auto& b = made[static_cast<size_t>(index)];
  if (!b) b = new CudaBackend(index);
  return *b;
}

}  // namespace ttt
