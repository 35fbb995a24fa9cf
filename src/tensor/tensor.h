// Tensor: a typed, strided view of reference-counted storage, plus the autodiff hooks.
//
// Storage is row-major; views (reshape, transpose, slice) share it through offset and strides.
// float32 is the compute type, float64 runs the same code for gradient checks. Every tensor
// names its device; the device picks the backend that runs its kernels (backend/backend.h).
//
// BF16 is a storage type for inference weights only (a model loaded with bfloat16 weights,
// model/model.h): halving the bytes a decode step streams matters more than anything else on a
// CPU. Only matmul (as the right operand of a float32 left one), embedding, linear_cross_entropy,
// views and copies read it; every other op rejects it, and a BF16 tensor cannot require grad.
#pragma once
#include <cstddef>
#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "tensor/device.h"

namespace ttt {

enum class DType { F32, F64, BF16 };

size_t dtype_size(DType t);
const char* dtype_name(DType t);

// Runs f.template operator()<T>() with T = float or double, the compute dtypes; a BF16 (storage
// only) tensor reaching a kernel is a bug upstream: a logic_error that names `who`.
template <class F>
void for_compute_dtype(DType dt, const char* who, F&& f) {
  if (dt == DType::F32)
    f.template operator()<float>();
  else if (dt == DType::F64)
    f.template operator()<double>();
  else
    throw std::logic_error(std::string(who) + ": no kernel for dtype " + dtype_name(dt));
}

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);
int64_t shape_numel(const Shape& s);

// Storage belongs to its device's backend (tensor/device.h), which allocates and frees it (the
// CPU backend from a size-bucketed pool, so steady-state loops reuse memory).
struct Storage {
  Storage(size_t bytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  void* data = nullptr;  // a pointer of the device's address space
  size_t bytes = 0;
  Device device = Device::cpu();
  // bf16 weights only: products with them may round the other operand to bf16 too (bf16 x bf16
  // with float32 accumulation, `--compute bf16`). Chosen per model when its weights are made
  // (model::Model::with_bf16_weights); the backend reads it per product.
  bool bf16_products = false;
  // Buffers made by append_rows (autodiff/ops.h): the end, in elements, of what has been
  // appended so far; rows beyond it are free capacity. -1 for every other storage.
  std::atomic<int64_t> append_end{-1};
};

struct Node;  // autodiff/graph.h

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  int64_t offset = 0;  // in elements
  Shape shape;
  Shape strides;  // in elements
  DType dtype = DType::F32;
  bool requires_grad = false;
  std::shared_ptr<Node> grad_fn;  // null for leaves and for tensors made without grad
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // Uninitialized contiguous tensor.
  static Tensor empty(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu());

  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl_->shape; }
  int64_t dim() const { return static_cast<int64_t>(impl_->shape.size()); }
  int64_t size(int64_t d) const;  // negative d counts from the end
  const Shape& strides() const { return impl_->strides; }
  int64_t numel() const { return shape_numel(impl_->shape); }
  DType dtype() const { return impl_->dtype; }
  Device device() const { return impl_->storage->device; }
  int64_t offset() const { return impl_->offset; }
  bool is_contiguous() const;

  // The element pointer in the device's address space. For backends (backend/) and the named
  // host boundaries only (tests/layering_test.sh checks where it is used); everything else goes
  // through ops or the host copies below.
  template <class T>
  T* data() const {
    return static_cast<T*>(impl_->storage->data) + impl_->offset;
  }
  void* raw_data() const;

  // Autodiff state.
  bool requires_grad() const { return impl_->requires_grad; }
  Tensor& set_requires_grad(bool r);  // only on leaves
  const std::shared_ptr<Node>& grad_fn() const { return impl_->grad_fn; }
  bool is_leaf() const { return impl_->grad_fn == nullptr; }
  // Same data, cut from the graph.
  Tensor detach() const;

  // Copies to the host (any device, dtype and strides): results leaving the engine, small
  // host-side work and tests.
  double item() const;  // requires numel() == 1
  double at(const std::vector<int64_t>& index) const;
  std::vector<double> to_vector() const;   // logical row-major order
  std::vector<float> to_floats() const;

  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }

 private:
  std::shared_ptr<TensorImpl> impl_;
};

Shape contiguous_strides(const Shape& shape);

// The one explicit way between tensor memory and the host, for the named boundaries (file I/O,
// collectives, sampling's read of the logits, printing). copy_to_host writes t's elements in
// logical row-major order in t's dtype (numel * dtype_size bytes); copy_from_host fills a
// contiguous t from such bytes.
void copy_to_host(const Tensor& t, void* host_dst);
void copy_from_host(const void* host_src, const Tensor& t);

// True when buffer's storage (host-addressable memory made by append_rows) holds, from element
// `at` on, elements already appended there whose bytes are exactly those of the contiguous `t`.
// False on other devices: it only lets append_rows share rows instead of copying them.
bool storage_holds(const Tensor& buffer, int64_t at, const Tensor& t);

}  // namespace ttt
