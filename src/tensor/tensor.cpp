#include "tensor/tensor.h"

#include <cstring>
#include <sstream>
#include <stdexcept>
#include <utility>
#include <vector>

#include "tensor/bf16.h"

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

bool storage_holds(const Tensor& buffer, int64_t at, const Tensor& t) {
  const Storage& st = *buffer.impl()->storage;
  if (at < 0 || !t.is_contiguous() || buffer.dtype() != t.dtype() || buffer.device() != t.device() ||
      !device_memory(buffer.device()).host_addressable() || at + t.numel() > st.append_end.load())
    return false;
  const size_t es = dtype_size(t.dtype());
  const auto* a = static_cast<const char*>(st.data) + static_cast<size_t>(at) * es;
  const auto* b = static_cast<const char*>(t.impl()->storage->data) + static_cast<size_t>(t.offset()) * es;
  return std::memcmp(a, b, static_cast<size_t>(t.numel()) * es) == 0;
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

Storage::Storage(size_t b, Device d) : bytes(b), device(d) { data = device_memory(d).allocate(b); }
Storage::~Storage() { device_memory(device).release(data, bytes); }

std::string Device::str() const {
  switch (kind) {
    case DeviceKind::CPU: return "cpu";
    case DeviceKind::CheckedCPU: return "cpu-checked";
    case DeviceKind::CUDA: return "cuda:" + std::to_string(index);
  }
  return "?";
}

Device parse_device(const std::string& s) {
  if (s == "cpu") return Device::cpu();
  if (s == "cpu-checked") return {DeviceKind::CheckedCPU, 0};
  if (s == "cuda") return {DeviceKind::CUDA, 0};
  if (s.rfind("cuda:", 0) == 0 && s.size() > 5 && s.size() <= 8 &&
      s.find_first_not_of("0123456789", 5) == std::string::npos)
    return {DeviceKind::CUDA, std::stoi(s.substr(5))};
  std::string shown = s.size() > 40 ? s.substr(0, 40) + "..." : s;
  for (char& c : shown)
    if (static_cast<unsigned char>(c) < 0x20) c = '?';
  throw std::invalid_argument("unknown device '" + shown + "' (known: cpu, cpu-checked, cuda, cuda:N)");
}

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
double element(const void* base, DType dt, int64_t off) {
  switch (dt) {
    case DType::F32: return static_cast<const float*>(base)[off];
    case DType::F64: return static_cast<const double*>(base)[off];
    case DType::BF16: return bf16_to_float(static_cast<const uint16_t*>(base)[off]);
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

// The elements [lo, hi] of t's storage readable by the host: the storage itself where the device
// is host-addressable, else a staged copy. Returns the base that element offsets index.
const void* host_span(const TensorImpl& t, int64_t lo, int64_t hi, std::vector<unsigned char>& staging) {
  DeviceMemory& mem = device_memory(t.storage->device);
  if (mem.host_addressable()) return t.storage->data;
  const size_t es = dtype_size(t.dtype);
  staging.resize(static_cast<size_t>(hi - lo + 1) * es);
  mem.copy_to_host(static_cast<const unsigned char*>(t.storage->data) + static_cast<size_t>(lo) * es, staging.data(),
                   staging.size());
  return staging.data() - static_cast<ptrdiff_t>(static_cast<size_t>(lo) * es);
}

// The lowest and highest storage element that t's view touches (numel > 0).
std::pair<int64_t, int64_t> view_extent(const TensorImpl& t) {
  int64_t lo = t.offset, hi = t.offset;
  for (size_t i = 0; i < t.shape.size(); ++i) {
    const int64_t reach = (t.shape[i] - 1) * t.strides[i];
    (reach < 0 ? lo : hi) += reach;
  }
  return {lo, hi};
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
  std::vector<unsigned char> staging;
  return element(host_span(*impl_, off, off, staging), dtype(), off);
}

std::vector<double> Tensor::to_vector() const {
  const int64_t n = numel();
  std::vector<double> out(n);
  if (n == 0) return out;
  const auto [lo, hi] = view_extent(*impl_);
  std::vector<unsigned char> staging;
  const void* base = host_span(*impl_, lo, hi, staging);
  const bool contig = is_contiguous();
  for (int64_t i = 0; i < n; ++i) out[i] = element(base, dtype(), contig ? impl_->offset + i : linear_offset(*impl_, i));
  return out;
}

std::vector<float> Tensor::to_floats() const {
  auto v = to_vector();
  return std::vector<float>(v.begin(), v.end());
}

void copy_to_host(const Tensor& t, void* host_dst) {
  const int64_t n = t.numel();
  if (n == 0) return;
  const size_t es = dtype_size(t.dtype());
  const TensorImpl& impl = *t.impl();
  if (t.is_contiguous()) {
    device_memory(t.device()).copy_to_host(static_cast<const unsigned char*>(impl.storage->data) + static_cast<size_t>(impl.offset) * es,
                                           host_dst, static_cast<size_t>(n) * es);
    return;
  }
  const auto [lo, hi] = view_extent(impl);
  std::vector<unsigned char> staging;
  const auto* base = static_cast<const unsigned char*>(host_span(impl, lo, hi, staging));
  auto* dst = static_cast<unsigned char*>(host_dst);
  for (int64_t i = 0; i < n; ++i)
    std::memcpy(dst + static_cast<size_t>(i) * es, base + static_cast<size_t>(linear_offset(impl, i)) * es, es);
}

void copy_from_host(const void* host_src, const Tensor& t) {
  if (!t.is_contiguous()) throw std::invalid_argument("copy_from_host needs a contiguous tensor");
  const size_t es = dtype_size(t.dtype());
  if (t.numel() == 0) return;
  device_memory(t.device()).copy_from_host(host_src, static_cast<unsigned char*>(t.impl()->storage->data) + static_cast<size_t>(t.offset()) * es,
                                           static_cast<size_t>(t.numel()) * es);
}

}  // namespace ttt
