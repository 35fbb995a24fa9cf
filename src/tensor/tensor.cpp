#include "tensor/tensor.h"

#include <sstream>
#include <stdexcept>

#include "autodiff/graph.h"
#include "tensor/bf16.h"
#include "tensor/pool.h"

namespace ttt {

size_t dtype_size(DType t) { return t == DType::F32 ? 4 : t == DType::BF16 ? 2 : 8; }
const char* dtype_name(DType t) { return t == DType::F32 ? "F32" : t == DType::BF16 ? "BF16" : "F64"; }

std::string shape_str(const Shape& s) {
  std::ostringstream o;
  o << "[";
  for (size_t i = 0; i < s.size(); ++i) o << (i ? ", " : "") << s[i];
  o << "]";
  return o.str();
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (auto d : s) n *= d;
  return n;
}

Shape contiguous_strides(const Shape& shape) {
  Shape st(shape.size());
  int64_t acc = 1;
  for (int64_t i = static_cast<int64_t>(shape.size()) - 1; i >= 0; --i) {
    st[i] = acc;
    acc *= shape[i];
  }
  return st;
}

Storage::Storage(size_t b, Device d) : bytes(b), device(d) { data = pool::allocate(b); }
Storage::~Storage() { pool::release(data, bytes); }

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  for (auto d : shape)
    if (d < 0) throw std::invalid_argument("negative dimension in shape " + shape_str(shape));
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(shape_numel(shape) * dtype_size(dtype), device);
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

int64_t Tensor::size(int64_t d) const {
  const int64_t n = dim();
  if (d < 0) d += n;
  if (d < 0 || d >= n)
    throw std::out_of_range("dimension " + std::to_string(d) + " out of range for shape " +
                            shape_str(shape()));
  return impl_->shape[d];
}

bool Tensor::is_contiguous() const {
  int64_t acc = 1;
  for (int64_t i = dim() - 1; i >= 0; --i) {
    if (impl_->shape[i] != 1 && impl_->strides[i] != acc) return false;
    acc *= impl_->shape[i];
  }
  return true;
}

void* Tensor::raw_data() const {
  return static_cast<char*>(impl_->storage->data) + impl_->offset * dtype_size(dtype());
}

Tensor& Tensor::set_requires_grad(bool r) {
  if (!is_leaf()) throw std::logic_error("set_requires_grad on a non-leaf tensor");
  if (r && dtype() == DType::BF16)
    throw std::invalid_argument("bfloat16 weights are inference-only and cannot require grad (load the model with float32 weights)");
  impl_->requires_grad = r;
  return *this;
}

Tensor Tensor::detach() const {
  auto impl = std::make_shared<TensorImpl>(*impl_);
  impl->requires_grad = false;
  impl->grad_fn = nullptr;
  return Tensor(std::move(impl));
}

namespace {
double element(const TensorImpl& t, int64_t off) {
  switch (t.dtype) {
    case DType::F32: return static_cast<const float*>(t.storage->data)[off];
    case DType::F64: return static_cast<const double*>(t.storage->data)[off];
    case DType::BF16: return bf16_to_float(static_cast<const uint16_t*>(t.storage->data)[off]);
  }
  return 0;
}

int64_t linear_offset(const TensorImpl& t, int64_t logical) {
  int64_t off = t.offset;
  for (int64_t i = static_cast<int64_t>(t.shape.size()) - 1; i >= 0; --i) {
    const int64_t d = t.shape[i];
    off += (logical % d) * t.strides[i];
    logical /= d;
  }
  return off;
}
}  // namespace

double Tensor::item() const {
  if (numel() != 1)
    throw std::invalid_argument("item() needs a one-element tensor, got shape " + shape_str(shape()));
  return to_vector()[0];
}

double Tensor::at(const std::vector<int64_t>& index) const {
  if (static_cast<int64_t>(index.size()) != dim()) throw std::invalid_argument("at(): wrong rank");
  int64_t off = impl_->offset;
  for (int64_t i = 0; i < dim(); ++i) {
    if (index[i] < 0 || index[i] >= impl_->shape[i]) throw std::out_of_range("at(): index out of range");
    off += index[i] * impl_->strides[i];
  }
  return element(*impl_, off);
}

std::vector<double> Tensor::to_vector() const {
  const int64_t n = numel();
  std::vector<double> out(n);
  const bool contig = is_contiguous();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t off = contig ? impl_->offset + i : linear_offset(*impl_, i);
    out[i] = element(*impl_, off);
  }
  return out;
}

std::vector<float> Tensor::to_floats() const {
  auto v = to_vector();
  return std::vector<float>(v.begin(), v.end());
}

}  // namespace ttt
