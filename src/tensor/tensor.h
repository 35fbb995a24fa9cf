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
#include <string>
#include <vector>

namespace ttt {

enum class DType { F32, F64, BF16 };
enum class Device { CPU };  // CUDA joins here; see backend/backend.h

size_t dtype_size(DType t);
const char* dtype_name(DType t);

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);
int64_t shape_numel(const Shape& s);

// Storage blocks come from a size-bucketed pool (tensor/pool.h), so steady-state loops reuse
// memory instead of calling malloc for every op.
struct Storage {
  Storage(size_t bytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  void* data = nullptr;
  size_t bytes = 0;
  Device device = Device::CPU;
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
  static Tensor empty(const Shape& shape, DType dtype = DType::F32, Device device = Device::CPU);

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

  // Element access for tests and small host-side work (any dtype, any strides).
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

}  // namespace ttt
