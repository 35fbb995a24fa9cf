#include "autodiff/ops.h"

#include "autodiff/add_into.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "backend/backend.h"
#include "tensor/bf16.h"

namespace ttt {
namespace {

Backend& be(const Tensor& t) { return backend_for(t.device()); }

[[noreturn]] void fail(const std::string& msg) { throw std::invalid_argument(msg); }

void check_defined(const Tensor& t, const char* op) {
  if (!t.defined()) fail(std::string(op) + ": undefined tensor argument");
}

int64_t norm_dim(int64_t d, int64_t rank, const char* op) {
  const int64_t r = d < 0 ? d + rank : d;
  if (r < 0 || r >= rank)
    fail(std::string(op) + ": dimension " + std::to_string(d) + " out of range for rank " + std::to_string(rank));
  return r;
}

// A view sharing x's storage.
Tensor make_view(const Tensor& x, Shape shape, Shape strides, int64_t offset) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = x.impl()->storage;
  impl->offset = offset;
  impl->shape = std::move(shape);
  impl->strides = std::move(strides);
  impl->dtype = x.dtype();
  return Tensor(std::move(impl));
}

// Contiguous data for a kernel, never recorded.
Tensor dense(const Tensor& x) {
  if (x.is_contiguous()) return x;
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  be(x).copy(x, y);
  return y;
}

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  const size_t r = std::max(a.size(), b.size());
  Shape out(r);
  for (size_t i = 0; i < r; ++i) {
    const int64_t da = i < r - a.size() ? 1 : a[i - (r - a.size())];
    const int64_t db = i < r - b.size() ? 1 : b[i - (r - b.size())];
    if (da != db && da != 1 && db != 1)
      fail(std::string(op) + ": shapes " + shape_str(a) + " and " + shape_str(b) + " do not broadcast");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

// Stride-0 view of x with the broadcast `shape` (x's rank <= shape's rank).
Tensor expand_view(const Tensor& x, const Shape& shape) {
  const size_t r = shape.size(), xr = x.shape().size();
  Shape st(r, 0);
  for (size_t i = 0; i < xr; ++i) {
    const size_t o = i + (r - xr);
    st[o] = x.shape()[i] == 1 && shape[o] != 1 ? 0 : x.strides()[i];
  }
  return make_view(x, shape, st, x.offset());
}

Tensor unary_raw(UnaryOp op, const Tensor& x, double a = 0) {
  Tensor xc = dense(x);
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  be(x).unary(op, xc, y, a);
  return y;
}

Tensor binary_raw(BinaryOp op, const Tensor& a, const Tensor& b, const char* name) {
  check_defined(a, name);
  check_defined(b, name);
  check_same_dtype(a, b, name);
  const Shape shape = broadcast_shapes(a.shape(), b.shape(), name);
  Tensor y = Tensor::empty(shape, a.dtype(), a.device());
  be(a).binary(op, expand_view(a, shape), expand_view(b, shape), y);
  return y;
}

Tensor silu_derivative(const Tensor& x, int order);

Tensor matmul_core(const Tensor& a, const Tensor& b, bool ta, bool tb);

// Same dtypes, or float32 activations times bf16 weights (tensor/tensor.h): the weight is the
// right operand, the left one is not transposed and the result is float32.
void check_weight_dtypes(const Tensor& a, const Tensor& b, bool ta, const char* what) {
  if (b.dtype() == DType::BF16 && a.dtype() == DType::F32) {
    if (ta) fail(std::string(what) + ": a bf16 right operand needs an untransposed left operand");
    if (a.device() != b.device()) fail(std::string(what) + ": tensors on different devices");
    return;
  }
  if (a.dtype() == DType::BF16)
    fail(std::string(what) + ": bf16 is a storage type for weights: only a right operand may be bf16");
  check_same_dtype(a, b, what);
}

}  // namespace

void check_same_dtype(const Tensor& a, const Tensor& b, const char* what) {
  if (a.dtype() != b.dtype())
    fail(std::string(what) + ": dtype mismatch (" + dtype_name(a.dtype()) + " vs " + dtype_name(b.dtype()) + ")");
  if (a.device() != b.device()) fail(std::string(what) + ": tensors on different devices");
}

// ---------------------------------------------------------------- creation

Tensor full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = Tensor::empty(shape, dtype, device);
  be(t).fill(t, value);
  return t;
}
Tensor zeros(const Shape& shape, DType dtype, Device device) { return full(shape, 0.0, dtype, device); }
Tensor ones(const Shape& shape, DType dtype, Device device) { return full(shape, 1.0, dtype, device); }
Tensor zeros_like(const Tensor& x) { return zeros(x.shape(), x.dtype(), x.device()); }
Tensor ones_like(const Tensor& x) { return ones(x.shape(), x.dtype(), x.device()); }

namespace {
// Host values rounded to `dtype` in a host buffer, then one copy into device memory.
template <class T, class Round>
Tensor upload(const std::vector<double>& values, const Shape& shape, DType dtype, Device device, Round round) {
  std::vector<T> host(values.size());
  for (size_t i = 0; i < values.size(); ++i) host[i] = round(values[i]);
  Tensor t = Tensor::empty(shape, dtype, device);
  copy_from_host(host.data(), t);
  return t;
}
}  // namespace

Tensor from_vector(const std::vector<double>& values, const Shape& shape, DType dtype, Device device) {
  if (static_cast<int64_t>(values.size()) != shape_numel(shape))
    fail("from_vector: " + std::to_string(values.size()) + " values for shape " + shape_str(shape));
  switch (dtype) {
    case DType::F32: return upload<float>(values, shape, dtype, device, [](double v) { return static_cast<float>(v); });
    case DType::BF16:  // through float32, rounded to nearest even
      return upload<uint16_t>(values, shape, dtype, device, [](double v) { return float_to_bf16(static_cast<float>(v)); });
    case DType::F64: break;
  }
  return upload<double>(values, shape, dtype, device, [](double v) { return v; });
}

Tensor randn(const Shape& shape, Rng& rng, double stddev, DType dtype, Device device) {
  std::vector<double> v(shape_numel(shape));
  for (auto& x : v) x = rng.normal() * stddev;
  return from_vector(v, shape, dtype, device);
}

Tensor uniform(const Shape& shape, Rng& rng, double lo, double hi, DType dtype, Device device) {
  std::vector<double> v(shape_numel(shape));
  for (auto& x : v) x = lo + (hi - lo) * rng.uniform();
  return from_vector(v, shape, dtype, device);
}

Tensor to_dtype(const Tensor& x, DType dtype) {
  check_defined(x, "to_dtype");
  if (x.dtype() == dtype) return x;
  Tensor y = Tensor::empty(x.shape(), dtype, x.device());
  be(x).convert(dense(x), y);
  if (needs_graph({&x})) {
    const DType from = x.dtype();
    record(y, "to_dtype", {x}, [from](const Tensor& g, const Tensor&, const std::vector<bool>&) {
      return std::vector<Tensor>{to_dtype(g, from)};
    });
  }
  return y;
}

Tensor to_device(const Tensor& x, Device device) {
  check_defined(x, "to_device");
  if (x.device() == device) return x;
  const Tensor c = contiguous(x.detach());
  std::vector<unsigned char> host(static_cast<size_t>(c.numel()) * dtype_size(c.dtype()));
  copy_to_host(c, host.data());
  Tensor y = Tensor::empty(c.shape(), c.dtype(), device);
  copy_from_host(host.data(), y);
  y.impl()->storage->bf16_products = c.impl()->storage->bf16_products;
  return y;
}

void assign(const Tensor& dst, const Tensor& src) {
  check_defined(dst, "assign");
  check_defined(src, "assign");
  if (dst.shape() != src.shape())
    fail("assign: shape " + shape_str(src.shape()) + " into " + shape_str(dst.shape()));
  check_same_dtype(dst, src, "assign");
  be(dst).copy(src, dst);
}

int64_t count_nonfinite(const Tensor& x, bool negative_too) {
  check_defined(x, "count_nonfinite");
  return be(x).count_nonfinite(dense(x), negative_too);
}

Tensor clone(const Tensor& x) {
  check_defined(x, "clone");
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  be(x).copy(x, y);
  if (needs_graph({&x}))
    record(y, "clone", {x}, [](const Tensor& g, const Tensor&, const std::vector<bool>&) {
      return std::vector<Tensor>{g};
    });
  return y;
}

// ---------------------------------------------------------------- views and layout

Tensor contiguous(const Tensor& x) {
  check_defined(x, "contiguous");
  if (x.is_contiguous()) return x;
  return clone(x);
}

Tensor reshape(const Tensor& x, Shape shape) {
  check_defined(x, "reshape");
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      if (infer >= 0) fail("reshape: more than one -1 in " + shape_str(shape));
      infer = static_cast<int64_t>(i);
    } else {
      if (shape[i] < 0) fail("reshape: negative extent in " + shape_str(shape));
      known *= shape[i];
    }
  }
  if (infer >= 0) {
    if (known == 0 || x.numel() % known != 0)
      fail("reshape: cannot reshape " + shape_str(x.shape()) + " to " + shape_str(shape));
    shape[infer] = x.numel() / known;
  }
  if (shape_numel(shape) != x.numel())
    fail("reshape: cannot reshape " + shape_str(x.shape()) + " (" + std::to_string(x.numel()) +
         " elements) to " + shape_str(shape));
  Tensor base = dense(x);
  Tensor y = make_view(base, shape, contiguous_strides(shape), base.offset());
  if (needs_graph({&x})) {
    const Shape in_shape = x.shape();
    record(y, "reshape", {x}, [in_shape](const Tensor& g, const Tensor&, const std::vector<bool>&) {
      return std::vector<Tensor>{reshape(g, in_shape)};
    });
  }
  return y;
}

Tensor transpose(const Tensor& x, int64_t d0, int64_t d1) {
  check_defined(x, "transpose");
  d0 = norm_dim(d0, x.dim(), "transpose");
  d1 = norm_dim(d1, x.dim(), "transpose");
  Shape sh = x.shape(), st = x.strides();
  std::swap(sh[d0], sh[d1]);
  std::swap(st[d0], st[d1]);
  Tensor y = make_view(x, sh, st, x.offset());
  if (needs_graph({&x}))
    record(y, "transpose", {x}, [d0, d1](const Tensor& g, const Tensor&, const std::vector<bool>&) {
      return std::vector<Tensor>{transpose(g, d0, d1)};
    });
  return y;
}

namespace {
// Zeros of `shape` with g written at [start, start + g.size(dim)) along dim.
Tensor pad_slice(const Tensor& g, const Shape& shape, int64_t dim, int64_t start) {
  Tensor y = zeros(shape, g.dtype(), g.device());
  Shape sh = shape;
  sh[dim] = g.size(dim);
  Tensor dst = make_view(y, sh, y.strides(), y.offset() + start * y.strides()[dim]);
  be(g).copy(g, dst);
  if (needs_graph({&g})) {
    const int64_t len = g.size(dim);
    record(y, "pad_slice", {g}, [dim, start, len](const Tensor& gg, const Tensor&, const std::vector<bool>&) {
      return std::vector<Tensor>{slice(gg, dim, start, start + len)};
    });
  }
  return y;
}
}  // namespace

Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end) {
  check_defined(x, "slice");
  dim = norm_dim(dim, x.dim(), "slice");
  if (start < 0 || end < start || end > x.size(dim))
    fail("slice: range [" + std::to_string(start) + ", " + std::to_string(end) + ") out of bounds for dimension " +
         std::to_string(dim) + " of shape " + shape_str(x.shape()));
  Shape sh = x.shape();
  sh[dim] = end - start;
  Tensor y = make_view(x, sh, x.strides(), x.offset() + start * x.strides()[dim]);
  if (needs_graph({&x})) {
    const Shape in_shape = x.shape();
    record(y, "slice", {x}, [in_shape, dim, start](const Tensor& g, const Tensor&, const std::vector<bool>&) {
      return std::vector<Tensor>{pad_slice(g, in_shape, dim, start)};
    });
  }
  return y;
}

Tensor concat(const std::vector<Tensor>& xs, int64_t dim) {
  if (xs.empty()) fail("concat: no tensors");
  for (auto& x : xs) check_defined(x, "concat");
  dim = norm_dim(dim, xs[0].dim(), "concat");
  Shape sh = xs[0].shape();
  int64_t total = 0;
  for (auto& x : xs) {
    check_same_dtype(xs[0], x, "concat");
    if (x.dim() != xs[0].dim()) fail("concat: ranks differ");
    for (int64_t d = 0; d < x.dim(); ++d)
      if (d != dim && x.size(d) != sh[d])
        fail("concat: shapes " + shape_str(xs[0].shape()) + " and " + shape_str(x.shape()) + " differ outside dimension " + std::to_string(dim));
    total += x.size(dim);
  }
  sh[dim] = total;
  Tensor y = Tensor::empty(sh, xs[0].dtype(), xs[0].device());
  int64_t at = 0;
  std::vector<int64_t> starts;
  for (auto& x : xs) {
    Shape part = sh;
    part[dim] = x.size(dim);
    be(x).copy(x, make_view(y, part, y.strides(), y.offset() + at * y.strides()[dim]));
    starts.push_back(at);
    at += x.size(dim);
  }
  if (needs_graph(xs)) {
    std::vector<int64_t> lens;
    for (auto& x : xs) lens.push_back(x.size(dim));
    record(y, "concat", xs, [dim, starts, lens](const Tensor& g, const Tensor&, const std::vector<bool>& needs) {
      std::vector<Tensor> out(starts.size());
      for (size_t i = 0; i < starts.size(); ++i)
        if (needs[i]) out[i] = slice(g, dim, starts[i], starts[i] + lens[i]);
      return out;
    });
  }
  return y;
}

namespace {
// append_rows with a graph where the cache is a constant and its buffer already holds the very
// rows after it (a session's inner step recomputes, with a graph, the keys its feed appended):
// a view over them, whose gradient goes to `rows`, instead of a copy of the whole cache.
// Undefined when that is not the case.
Tensor shared_append(const Tensor& cache, const Tensor& rows) {
  if (cache.requires_grad() || !cache.is_contiguous() || !storage_holds(cache, cache.offset() + cache.numel(), rows))
    return Tensor();
  Shape sh = cache.shape();
  sh[0] += rows.size(0);
  Tensor all = make_view(cache, sh, contiguous_strides(sh), cache.offset());
  const int64_t n = cache.size(0), total = sh[0];
  record(all, "append_rows", {rows}, [n, total](const Tensor& g, const Tensor&, const std::vector<bool>&) {
    return std::vector<Tensor>{slice(g, 0, n, total)};
  });
  return all;
}
}  // namespace

Tensor same_rows_in(const Tensor& old, const Tensor& now, int64_t gap) {
  if (!old.defined() || !now.defined() || old.requires_grad() || old.dim() < 1 || old.dim() != now.dim() ||
      old.size(0) == 0 || old.impl()->storage == now.impl()->storage || !now.is_contiguous() || !old.is_contiguous())
    return old;
  for (int64_t d = 1; d < old.dim(); ++d)
    if (old.size(d) != now.size(d)) return old;
  const int64_t row = old.numel() / old.size(0);
  const int64_t at = now.offset() + (now.size(0) - gap - old.size(0)) * row;  // where old's rows would be
  if (!storage_holds(now, at, old)) return old;
  return make_view(now, old.shape(), contiguous_strides(old.shape()), at);
}

Tensor append_rows(const Tensor& cache, const Tensor& rows, int64_t keep) {
  check_defined(cache, "append_rows");
  check_defined(rows, "append_rows");
  check_same_dtype(cache, rows, "append_rows");
  if (cache.dim() < 1 || rows.dim() != cache.dim())
    fail("append_rows: shapes " + shape_str(cache.shape()) + " and " + shape_str(rows.shape()) + " differ in rank");
  for (int64_t d = 1; d < cache.dim(); ++d)
    if (cache.size(d) != rows.size(d))
      fail("append_rows: rows of " + shape_str(rows.shape()) + " do not fit a cache of " + shape_str(cache.shape()));
  const int64_t n = cache.size(0), m = rows.size(0), total = n + m;
  const int64_t kept = keep > 0 ? std::min(keep, total) : total;
  if (needs_graph({&cache, &rows})) {
    Tensor all = n > 0 ? shared_append(cache, rows) : rows;
    if (!all.defined()) all = concat({cache, rows}, 0);
    return kept == total ? all : slice(all, 0, total - kept, total);
  }
  Shape sh = cache.shape();
  int64_t row = 1;  // elements per row
  for (int64_t d = 1; d < rows.dim(); ++d) row *= rows.size(d);
  sh[0] = kept;
  if (n > 0 && m > 0 && cache.is_contiguous()) {
    Storage& st = *cache.impl()->storage;
    const int64_t end = cache.offset() + n * row, cap = static_cast<int64_t>(st.bytes / dtype_size(cache.dtype()));
    int64_t expected = end;
    // Claim [end, end + m rows) only if the last append ended exactly at this view's end.
    if (end + m * row <= cap && st.append_end.compare_exchange_strong(expected, end + m * row)) {
      Shape part = rows.shape();
      be(rows).copy(rows, make_view(cache, part, contiguous_strides(part), end));
      return make_view(cache, sh, contiguous_strides(sh), end + m * row - kept * row);
    }
  }
  // Room for what comes next: one-row appends (decoding) get a quarter of the cache (a copy every
  // kept/4 tokens); bulk appends (prefill chunks) room for one more of the same size.
  Shape cap_shape = sh;
  cap_shape[0] = kept + (m > 64 ? m : std::max<int64_t>(kept / 4, 64));
  Tensor buf = Tensor::empty(cap_shape, cache.dtype(), cache.device());
  const int64_t from_cache = std::max<int64_t>(0, kept - m);  // the newest rows of the cache kept
  if (from_cache > 0) {
    Shape part = sh;
    part[0] = from_cache;
    be(cache).copy(slice(cache, 0, n - from_cache, n), make_view(buf, part, contiguous_strides(part), 0));
  }
  {
    const int64_t from_rows = kept - from_cache;
    Shape part = sh;
    part[0] = from_rows;
    be(rows).copy(slice(rows, 0, m - from_rows, m), make_view(buf, part, contiguous_strides(part), from_cache * row));
  }
  buf.impl()->storage->append_end.store(kept * row);
  return make_view(buf, sh, contiguous_strides(sh), 0);
}

Tensor broadcast_to(const Tensor& x, const Shape& shape) {
  check_defined(x, "broadcast_to");
  if (x.shape() == shape) return x;
  if (broadcast_shapes(x.shape(), shape, "broadcast_to") != shape)
    fail("broadcast_to: cannot broadcast " + shape_str(x.shape()) + " to " + shape_str(shape));
  Tensor y = Tensor::empty(shape, x.dtype(), x.device());
  be(x).copy(expand_view(x, shape), y);
  if (needs_graph({&x})) {
    const Shape in_shape = x.shape();
    record(y, "broadcast_to", {x}, [in_shape](const Tensor& g, const Tensor&, const std::vector<bool>&) {
      return std::vector<Tensor>{sum_to(g, in_shape)};
    });
  }
  return y;
}

Tensor sum_to(const Tensor& x, const Shape& shape) {
  check_defined(x, "sum_to");
  if (x.shape() == shape) return x;
  if (shape.size() > x.shape().size() || broadcast_shapes(shape, x.shape(), "sum_to") != x.shape())
    fail("sum_to: cannot sum " + shape_str(x.shape()) + " down to " + shape_str(shape));
  Shape full_rank(x.dim() - shape.size(), 1);
  full_rank.insert(full_rank.end(), shape.begin(), shape.end());
  Tensor yk = Tensor::empty(full_rank, x.dtype(), x.device());
  be(x).sum_to(dense(x), yk);
  Tensor y = make_view(yk, shape, contiguous_strides(shape), 0);
  if (needs_graph({&x})) {
    const Shape in_shape = x.shape();
    record(y, "sum_to", {x}, [in_shape](const Tensor& g, const Tensor&, const std::vector<bool>&) {
      return std::vector<Tensor>{broadcast_to(g, in_shape)};
    });
  }
  return y;
}

// ---------------------------------------------------------------- elementwise

Tensor add(const Tensor& a, const Tensor& b) {
  Tensor y = binary_raw(BinaryOp::Add, a, b, "add");
  if (needs_graph({&a, &b})) {
    const Shape sa = a.shape(), sb = b.shape();
    record(y, "add", {a, b}, [sa, sb](const Tensor& g, const Tensor&, const std::vector<bool>& n) {
      return std::vector<Tensor>{n[0] ? sum_to(g, sa) : Tensor(), n[1] ? sum_to(g, sb) : Tensor()};
    });
  }
  return y;
}

bool add_into(Tensor& acc, const Tensor& g) {
  if (!acc.defined() || !g.defined() || acc.requires_grad() || acc.impl_ptr().use_count() != 1 ||
      acc.impl()->storage.use_count() != 1 || !acc.is_contiguous() || acc.shape() != g.shape() ||
      acc.dtype() != g.dtype() || acc.device() != g.device())
    return false;
  be(acc).binary(BinaryOp::Add, acc, g, acc);  // elementwise: y may alias a
  return true;
}

Tensor sub(const Tensor& a, const Tensor& b) {
  Tensor y = binary_raw(BinaryOp::Sub, a, b, "sub");
  if (needs_graph({&a, &b})) {
    const Shape sa = a.shape(), sb = b.shape();
    record(y, "sub", {a, b}, [sa, sb](const Tensor& g, const Tensor&, const std::vector<bool>& n) {
      return std::vector<Tensor>{n[0] ? sum_to(g, sa) : Tensor(), n[1] ? neg(sum_to(g, sb)) : Tensor()};
    });
  }
  return y;
}

Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor y = binary_raw(BinaryOp::Mul, a, b, "mul");
  if (needs_graph({&a, &b})) {
    record(y, "mul", {a, b}, [a, b](const Tensor& g, const Tensor&, const std::vector<bool>& n) {
      return std::vector<Tensor>{n[0] ? sum_to(mul(g, b), a.shape()) : Tensor(),
                                 n[1] ? sum_to(mul(g, a), b.shape()) : Tensor()};
    });
  }
  return y;
}

Tensor div(const Tensor& a, const Tensor& b) {
  Tensor y = binary_raw(BinaryOp::Div, a, b, "div");
  if (needs_graph({&a, &b})) {
    record(y, "div", {a, b}, [a, b](const Tensor& g, const Tensor& out, const std::vector<bool>& n) {
      Tensor ga, gb;
      if (n[0]) ga = sum_to(div(g, b), a.shape());
      if (n[1]) gb = sum_to(neg(div(mul(g, out), b)), b.shape());  // d(a/b)/db = -(a/b)/b
      return std::vector<Tensor>{ga, gb};
    });
  }
  return y;
}

Tensor add_scalar(const Tensor& x, double s) {
  check_defined(x, "add_scalar");
  Tensor y = unary_raw(UnaryOp::AddScalar, x, s);
  if (needs_graph({&x}))
    record(y, "add_scalar", {x}, [](const Tensor& g, const Tensor&, const std::vector<bool>&) {
      return std::vector<Tensor>{g};
    });
  return y;
}

Tensor mul_scalar(const Tensor& x, double s) {
  check_defined(x, "mul_scalar");
  Tensor y = unary_raw(UnaryOp::MulScalar, x, s);
  if (needs_graph({&x}))
    record(y, "mul_scalar", {x}, [s](const Tensor& g, const Tensor&, const std::vector<bool>&) {
      return std::vector<Tensor>{mul_scalar(g, s)};
    });
  return y;
}

Tensor maximum_scalar(const Tensor& x, double s) {
  check_defined(x, "maximum_scalar");
  Tensor y = unary_raw(UnaryOp::MaxScalar, x, s);
  if (needs_graph({&x}))
    record(y, "maximum_scalar", {x}, [x, s](const Tensor& g, const Tensor&, const std::vector<bool>&) {
      // The step is piecewise constant: its own derivative is zero, so it is not recorded.
      return std::vector<Tensor>{mul(g, unary_raw(UnaryOp::StepScalar, x.detach(), s))};
    });
  return y;
}

#define TTT_UNARY(fn, OPC, BODY)                                                                   \
  Tensor fn(const Tensor& x) {                                                                   \
    check_defined(x, #fn);                                                                         \
    Tensor y = unary_raw(UnaryOp::OPC, x);                                                       \
    if (needs_graph({&x}))                                                                         \
      record(y, #fn, {x}, [x](const Tensor& g, const Tensor& out, const std::vector<bool>&) {     \
        (void)out;                                                                                 \
        return std::vector<Tensor>{BODY};                                                          \
      });                                                                                          \
    return y;                                                                                      \
  }

TTT_UNARY(neg, Neg, neg(g))
TTT_UNARY(exp, Exp, mul(g, out))
TTT_UNARY(log, Log, div(g, x))
TTT_UNARY(sqrt, Sqrt, mul_scalar(div(g, out), 0.5))
TTT_UNARY(rsqrt, Rsqrt, mul_scalar(mul(g, mul(out, mul(out, out))), -0.5))
TTT_UNARY(reciprocal, Reciprocal, neg(mul(g, mul(out, out))))
TTT_UNARY(square, Square, mul_scalar(mul(g, x), 2.0))
TTT_UNARY(sigmoid, Sigmoid, mul(g, mul(out, add_scalar(neg(out), 1.0))))
TTT_UNARY(silu, Silu, mul(g, silu_derivative(x, 1)))
TTT_UNARY(softplus, Softplus, mul(g, sigmoid(x)))
#undef TTT_UNARY

namespace {
// The backward of silu_mul, itself differentiable (a gradient differentiated again: the inner
// step): da = (g b) silu'(a) and db = g silu(a) from the one-pass kernel, each a node whose
// backward forms the terms the generic backward of that composite would, product by product
// (so each rounds alike), without holding g b, silu'(a) and silu(a) in the graph.
std::vector<Tensor> silu_mul_input_grads(const Tensor& a, const Tensor& b, const Tensor& g, const std::vector<bool>& n) {
  Tensor da = Tensor::empty(a.shape(), a.dtype(), a.device());
  Tensor db = Tensor::empty(b.shape(), b.dtype(), b.device());
  be(a).silu_mul_backward(dense(a), dense(b), dense(g), da, db);
  if (n[0] && needs_graph({&a, &b, &g}))
    record(da, "silu_mul_backward_a", {a, b, g}, [a, b, g](const Tensor& A, const Tensor&, const std::vector<bool>& m) {
      const Tensor as1 = m[1] || m[2] ? mul(A, silu_derivative(a, 1)) : Tensor();
      return std::vector<Tensor>{m[0] ? mul(mul(A, mul(g, b)), silu_derivative(a, 2)) : Tensor(),
                                 m[1] ? mul(as1, g) : Tensor(), m[2] ? mul(as1, b) : Tensor()};
    });
  if (n[1] && needs_graph({&a, &g}))
    record(db, "silu_mul_backward_b", {a, g}, [a, g](const Tensor& A, const Tensor&, const std::vector<bool>& m) {
      return std::vector<Tensor>{m[0] ? mul(mul(A, g), silu_derivative(a, 1)) : Tensor(),
                                 m[1] ? mul(A, silu(a)) : Tensor()};
    });
  return {n[0] ? da : Tensor(), n[1] ? db : Tensor()};
}
}  // namespace

Tensor silu_mul(const Tensor& a, const Tensor& b) {
  check_defined(a, "silu_mul");
  check_defined(b, "silu_mul");
  check_same_dtype(a, b, "silu_mul");
  if (a.shape() != b.shape())
    fail("silu_mul: shapes " + shape_str(a.shape()) + " and " + shape_str(b.shape()) + " differ");
  Tensor y = Tensor::empty(a.shape(), a.dtype(), a.device());
  be(a).silu_mul(dense(a), dense(b), y);
  if (needs_graph({&a, &b})) {
    // a and b themselves, not dense copies: the backward below is differentiated through them.
    record(y, "silu_mul", {a, b}, [a, b](const Tensor& g, const Tensor&, const std::vector<bool>& n) {
      if (!grad_enabled()) {  // first order only: one fused pass, rounded as the composite below
        Tensor da = Tensor::empty(a.shape(), a.dtype(), a.device());
        Tensor db = Tensor::empty(b.shape(), b.dtype(), b.device());
        be(a).silu_mul_backward(dense(a), dense(b), dense(g), da, db);
        return std::vector<Tensor>{n[0] ? da : Tensor(), n[1] ? db : Tensor()};
      }
      return silu_mul_input_grads(a, b, g, n);
    });
  }
  return y;
}

namespace {
// silu', silu'', silu''' as ops, each differentiable through the next; a fourth derivative is
// refused rather than silently wrong.
Tensor silu_derivative(const Tensor& x, int order) {
  static constexpr UnaryOp kOps[] = {UnaryOp::Silu, UnaryOp::SiluGrad, UnaryOp::SiluGrad2, UnaryOp::SiluGrad3};
  Tensor y = unary_raw(kOps[order], x);
  if (needs_graph({&x})) {
    if (order >= 3) throw std::logic_error("silu: derivatives beyond the third are not implemented");
    record(y, "silu_derivative", {x}, [x, order](const Tensor& g, const Tensor&, const std::vector<bool>&) {
      return std::vector<Tensor>{mul(g, silu_derivative(x, order + 1))};
    });
  }
  return y;
}
}  // namespace

// ---------------------------------------------------------------- reductions

Tensor sum(const Tensor& x) {
  check_defined(x, "sum");
  Tensor s = sum_to(x, Shape(x.dim(), 1));
  return reshape(s, {});
}

Tensor sum(const Tensor& x, int64_t dim, bool keepdim) {
  check_defined(x, "sum");
  dim = norm_dim(dim, x.dim(), "sum");
  Shape sh = x.shape();
  sh[dim] = 1;
  Tensor s = sum_to(x, sh);
  if (keepdim) return s;
  sh.erase(sh.begin() + dim);
  return reshape(s, sh);
}

Tensor mean(const Tensor& x) {
  if (x.numel() == 0) fail("mean: empty tensor");
  return mul_scalar(sum(x), 1.0 / static_cast<double>(x.numel()));
}

Tensor mean(const Tensor& x, int64_t dim, bool keepdim) {
  check_defined(x, "mean");
  const int64_t n = x.size(norm_dim(dim, x.dim(), "mean"));
  if (n == 0) fail("mean: empty dimension");
  return mul_scalar(sum(x, dim, keepdim), 1.0 / static_cast<double>(n));
}

// ---------------------------------------------------------------- linear algebra

namespace {
Tensor matmul_core(const Tensor& a, const Tensor& b, bool ta, bool tb) {
  // Both 2-D, or both 3-D with equal batch (or batch 1 on one side, broadcast).
  const bool batched = a.dim() == 3;
  const int64_t B = batched ? std::max(a.size(0), b.size(0)) : 1;
  const int64_t ar = batched ? 1 : 0;
  const int64_t m = ta ? a.size(ar + 1) : a.size(ar), ka = ta ? a.size(ar) : a.size(ar + 1);
  const int64_t kb = tb ? b.size(ar + 1) : b.size(ar), n = tb ? b.size(ar) : b.size(ar + 1);
  if (ka != kb)
    fail(std::string("matmul: inner dimensions differ: ") + shape_str(a.shape()) + (ta ? "^T" : "") + " @ " +
         shape_str(b.shape()) + (tb ? "^T" : ""));
  if (batched && a.size(0) != b.size(0) && a.size(0) != 1 && b.size(0) != 1)
    fail("matmul: batch sizes differ: " + shape_str(a.shape()) + " @ " + shape_str(b.shape()));
  Tensor ac = dense(a), bc = dense(b);
  Tensor y = Tensor::empty(batched ? Shape{B, m, n} : Shape{m, n}, a.dtype(), a.device());
  const int64_t sa = batched && a.size(0) == B ? m * ka : 0;
  const int64_t sb = batched && b.size(0) == B ? kb * n : 0;
  be(a).matmul(ac, ta, bc, tb, y, B, m, n, ka, sa, sb);
  if (needs_graph({&a, &b})) {
    record(y, "matmul", {a, b}, [a, b, ta, tb](const Tensor& g, const Tensor&, const std::vector<bool>& nd) {
      Tensor ga, gb;
      if (nd[0]) ga = !ta ? matmul_core(g, b, false, !tb) : matmul_core(b, g, tb, true);
      if (nd[1]) gb = !tb ? matmul_core(a, g, !ta, false) : matmul_core(g, a, true, ta);
      // A side broadcast over the batch sums its gradient over the batch.
      if (ga.defined() && ga.shape() != a.shape()) ga = sum_to(ga, a.shape());
      if (gb.defined() && gb.shape() != b.shape()) gb = sum_to(gb, b.shape());
      return std::vector<Tensor>{ga, gb};
    });
  }
  return y;
}
}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b) {
  check_defined(a, "matmul");
  check_defined(b, "matmul");
  check_weight_dtypes(a, b, trans_a, "matmul");
  if (a.dim() == 3 && b.dim() == 3) return matmul_core(a, b, trans_a, trans_b);
  if (b.dim() != 2) fail("matmul: right operand must be 2-D (or both 3-D), got " + shape_str(b.shape()));
  if (a.dim() == 2) return matmul_core(a, b, trans_a, trans_b);
  if (a.dim() < 2 || trans_a)
    fail("matmul: left operand " + shape_str(a.shape()) + " must be 2-D, or N-D without transpose");
  Shape out = a.shape();
  const int64_t k = out.back();
  out.back() = trans_b ? b.size(0) : b.size(1);
  Tensor y = matmul_core(reshape(a, {-1, k}), b, false, trans_b);
  return reshape(y, out);
}

// ---------------------------------------------------------------- model ops

Tensor rms_rstd(const Tensor& x, double eps) {
  check_defined(x, "rms_rstd");
  if (x.dim() < 1 || x.size(-1) == 0) fail("rms_rstd: empty last dimension");
  Shape sh = x.shape();
  sh.back() = 1;
  Tensor y = Tensor::empty(sh, x.dtype(), x.device());
  be(x).rms_rstd(dense(x), eps, y);
  if (needs_graph({&x})) {
    const double n = static_cast<double>(x.size(-1));
    record(y, "rms_rstd", {x}, [x, n](const Tensor& g, const Tensor& r, const std::vector<bool>&) {
      // d r / d x_j = -r^3 x_j / n
      return std::vector<Tensor>{mul(mul_scalar(mul(g, mul(r, mul(r, r))), -1.0 / n), x)};
    });
  }
  return y;
}

namespace {
// d/dx <rmsnorm(x, w), g> as one differentiable op (a gradient that is differentiated again:
// the inner step, where the norm weights are constants). The value is the fused first-order
// kernel's; the backward is the closed form of its derivatives in x, w and g, written with
// differentiable ops (third and higher orders stay exact) instead of the generic backward of a
// composite of ten ops, which held five activation-sized temporaries per norm in the graph.
// With u = g w, r = rms_rstd(x), p = mean(u x), and A the adjoint of gx = r u - r^3 p x:
//   a = mean(A x), b = mean(A u), du = r A - r^3 a x (so gg = du w, gw = sum over rows du g),
//   gx = -r^3 (x (b - 3 r^2 p a) + a u + p A).
Tensor rmsnorm_input_grad(const Tensor& x, const Tensor& w, const Tensor& g, double eps) {
  Tensor dx = Tensor::empty(x.shape(), x.dtype(), x.device());
  {
    Tensor dw = Tensor::empty(w.shape(), w.dtype(), w.device());  // not needed: the kernel's by-product
    be(x).rmsnorm_backward(dense(x), dense(w), dense(g), eps, dx, dw);
  }
  if (needs_graph({&x, &w, &g})) {
    record(dx, "rmsnorm_input_grad", {x, w, g}, [x, w, g, eps](const Tensor& A, const Tensor&, const std::vector<bool>& n) {
      const Tensor r = rms_rstd(x, eps), r3 = mul(r, mul(r, r));
      const Tensor u = mul(g, w);
      const Tensor a = mean(mul(A, x), -1, true);
      Tensor gx, gw, gg;
      if (n[1] || n[2]) {
        const Tensor du = sub(mul(A, r), mul(x, mul(r3, a)));
        if (n[2]) gg = mul(du, w);
        if (n[1]) gw = sum_to(mul(du, g), w.shape());
      }
      if (n[0]) {
        const Tensor p = mean(mul(u, x), -1, true), b = mean(mul(A, u), -1, true);
        const Tensor c = sub(b, mul_scalar(mul(mul(r, r), mul(p, a)), 3.0));
        gx = neg(mul(r3, add(add(mul(x, c), mul(u, a)), mul(A, p))));
      }
      return std::vector<Tensor>{gx, gw, gg};
    });
  }
  return dx;
}
}  // namespace

Tensor rmsnorm(const Tensor& x, const Tensor& w, double eps) {
  check_defined(x, "rmsnorm");
  check_defined(w, "rmsnorm");
  check_same_dtype(x, w, "rmsnorm");
  if (w.dim() != 1 || x.dim() < 1 || x.size(-1) != w.size(0))
    fail("rmsnorm: weight " + shape_str(w.shape()) + " does not match the last dimension of " + shape_str(x.shape()));
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  be(x).rmsnorm(dense(x), dense(w), eps, y);
  if (needs_graph({&x, &w})) {
    record(y, "rmsnorm", {x, w}, [x, w, eps](const Tensor& g, const Tensor&, const std::vector<bool>& n) {
      if (!grad_enabled()) {  // first order only: one fused pass
        Tensor dx = Tensor::empty(x.shape(), x.dtype(), x.device());
        Tensor dw = Tensor::empty(w.shape(), w.dtype(), w.device());
        be(x).rmsnorm_backward(dense(x), dense(w), dense(g), eps, dx, dw);
        return std::vector<Tensor>{n[0] ? dx : Tensor(), n[1] ? dw : Tensor()};
      }
      if (!n[1]) return std::vector<Tensor>{rmsnorm_input_grad(x, w, g, eps), Tensor()};  // the inner step
      Tensor r = rms_rstd(x, eps);
      Tensor gx, gw;
      if (n[0]) {
        Tensor gwt = mul(g, w);
        Tensor proj = mean(mul(gwt, x), -1, true);
        gx = sub(mul(gwt, r), mul(x, mul(mul(r, mul(r, r)), proj)));
      }
      if (n[1]) gw = sum_to(mul(g, mul(x, r)), w.shape());
      return std::vector<Tensor>{gx, gw};
    });
  }
  return y;
}

Tensor unit_lower_inverse(const Tensor& l) {
  check_defined(l, "unit_lower_inverse");
  if (l.dim() < 2 || l.size(-1) != l.size(-2))
    fail("unit_lower_inverse: expected [..., n, n], got " + shape_str(l.shape()));
  Tensor y = Tensor::empty(l.shape(), l.dtype(), l.device());
  be(l).unit_lower_inverse(dense(l), y);
  if (needs_graph({&l})) {
    const int64_t n = l.size(-1);
    record(y, "unit_lower_inverse", {l}, [n](const Tensor& g, const Tensor& t, const std::vector<bool>&) {
      // d(T) = -T dL T, and only the strictly lower entries of L are inputs:
      // dL = strict_lower(-T^T g T^T). In differentiable ops, so it has derivatives of its own.
      std::vector<double> mask(static_cast<size_t>(n * n), 0.0);
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < i; ++j) mask[static_cast<size_t>(i * n + j)] = 1.0;
      const Tensor m = from_vector(mask, {n, n}, g.dtype(), g.device());
      return std::vector<Tensor>{mul(neg(matmul(matmul(t, g, true, false), t, false, true)), m)};
    });
  }
  return y;
}

Tensor causal_decay(const Tensor& cs) {
  check_defined(cs, "causal_decay");
  if (cs.dim() < 1) fail("causal_decay: expected [..., n], got a scalar");
  Shape sh = cs.shape();
  sh.push_back(cs.size(-1));
  Tensor y = Tensor::empty(sh, cs.dtype(), cs.device());
  be(cs).causal_decay(dense(cs), y);
  if (needs_graph({&cs}))
    record(y, "causal_decay", {cs}, [](const Tensor& g, const Tensor& y, const std::vector<bool>&) {
      // dy_ij/dcs_i = y_ij, dy_ij/dcs_j = -y_ij: row sums minus column sums of g * y.
      const Tensor gy = mul(g, y);
      return std::vector<Tensor>{sub(sum(gy, -1), sum(gy, -2))};
    });
  return y;
}

Tensor rope(const Tensor& x, int64_t pos0, double theta, bool inverse) {
  check_defined(x, "rope");
  if (x.dim() != 3 || x.size(2) % 2 != 0)
    fail("rope: expected [T, H, D] with even D, got " + shape_str(x.shape()));
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  be(x).rope(dense(x), pos0, theta, inverse, y);
  if (needs_graph({&x}))
    record(y, "rope", {x}, [pos0, theta, inverse](const Tensor& g, const Tensor&, const std::vector<bool>&) {
      return std::vector<Tensor>{rope(g, pos0, theta, !inverse)};  // rotations: inverse = transpose
    });
  return y;
}

namespace {
Tensor softmax_backward(const Tensor& g, const Tensor& y) {
  return mul(y, sub(g, sum(mul(g, y), -1, true)));
}
}  // namespace

Tensor softmax(const Tensor& x) {
  check_defined(x, "softmax");
  if (x.dim() < 1 || x.size(-1) == 0) fail("softmax: empty last dimension");
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  be(x).softmax(dense(x), y);
  if (needs_graph({&x}))
    record(y, "softmax", {x}, [](const Tensor& g, const Tensor& out, const std::vector<bool>&) {
      return std::vector<Tensor>{softmax_backward(g, out)};
    });
  return y;
}

Tensor masked_softmax(const Tensor& x, const AttentionShape& s) {
  check_defined(x, "masked_softmax");
  if (x.dim() != 3 || x.size(1) != s.tq || x.size(2) != s.tk)
    fail("masked_softmax: scores " + shape_str(x.shape()) + " do not match Tq=" + std::to_string(s.tq) +
         ", Tk=" + std::to_string(s.tk));
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  be(x).masked_softmax(dense(x), s, y);
  if (needs_graph({&x}))
    record(y, "masked_softmax", {x}, [](const Tensor& g, const Tensor& out, const std::vector<bool>&) {
      return std::vector<Tensor>{softmax_backward(g, out)};  // masked entries have y = 0
    });
  return y;
}

namespace {
void check_ids(const std::vector<int32_t>& ids, int64_t limit, const char* op) {
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] < 0 || ids[i] >= limit)
      fail(std::string(op) + ": id " + std::to_string(ids[i]) + " at position " + std::to_string(i) +
           " is out of range [0, " + std::to_string(limit) + ")");
}
}  // namespace

Tensor onehot_sub(const Tensor& x, const std::vector<int32_t>& targets) {
  check_defined(x, "onehot_sub");
  if (x.dim() != 2 || x.size(0) != static_cast<int64_t>(targets.size()))
    fail("onehot_sub: expected [R, V] with R = number of targets, got " + shape_str(x.shape()));
  check_ids(targets, x.size(1), "onehot_sub");
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  be(x).onehot_sub(dense(x), targets, y);
  if (needs_graph({&x}))
    record(y, "onehot_sub", {x}, [](const Tensor& g, const Tensor&, const std::vector<bool>&) {
      return std::vector<Tensor>{g};
    });
  return y;
}

Tensor cross_entropy(const Tensor& logits, const std::vector<int32_t>& targets) {
  check_defined(logits, "cross_entropy");
  if (logits.dim() != 2 || logits.size(0) != static_cast<int64_t>(targets.size()))
    fail("cross_entropy: logits " + shape_str(logits.shape()) + " do not match " + std::to_string(targets.size()) + " targets");
  if (logits.size(1) == 0) fail("cross_entropy: empty vocabulary");
  check_ids(targets, logits.size(1), "cross_entropy");
  Tensor y = Tensor::empty({logits.size(0)}, logits.dtype(), logits.device());
  be(logits).cross_entropy(dense(logits), targets, y);
  if (needs_graph({&logits}))
    record(y, "cross_entropy", {logits}, [logits, targets](const Tensor& g, const Tensor&, const std::vector<bool>&) {
      if (!grad_enabled()) {  // first order only: one fused pass over the logits
        Tensor d = Tensor::empty(logits.shape(), logits.dtype(), logits.device());
        be(logits).cross_entropy_backward(dense(logits), targets, dense(g), d);
        return std::vector<Tensor>{d};
      }
      return std::vector<Tensor>{mul(onehot_sub(softmax(logits), targets), reshape(g, {-1, 1}))};
    });
  return y;
}

namespace {
// Logits linear_cross_entropy keeps from its forward for a first-order backward of several
// blocks: 32M (128 MB in float32).
constexpr int64_t kLceKeptLogits = int64_t{32} << 20;

// Rows per block of linear_cross_entropy: about 8M logits (32 MB in float32) at a time.
int64_t lce_rows(int64_t vocab) { return std::max<int64_t>(16, (int64_t{8} << 20) / std::max<int64_t>(vocab, 1)); }

// The head of linear_cross_entropy: logits of rows x with w [V, d] (or [d, V] when wt).
struct LceHead {
  Tensor w;
  bool wt;
  int64_t rows;  // per block
  Tensor logits(const Tensor& x) const { return wt ? matmul(x, w) : matmul(x, w, false, true); }
  Tensor times_w(const Tensor& d) const { return wt ? matmul(d, w, false, true) : matmul(d, w); }  // [R, V] -> [R, d]
  // d(loss)/dw of logits = x w^T given their adjoint d: [V, d] (or [d, V]).
  Tensor weight_grad(const Tensor& d, const Tensor& x) const {
    return wt ? matmul(x, d, true, false) : matmul(d, x, true, false);
  }
};

// The gradient with respect to x of linear_cross_entropy, as a differentiable op (create_graph:
// the inner step's gradient through the frozen head, differentiated again by the meta-gradient).
// Row blocks of at most head.rows, never [T, V] at once; `saved` holds the forward's logits when
// the whole input was one block (the scored chunk's activations, reused). Its backward is fused
// per block as well: B = A w^T, then cross_entropy_backward_backward gives dlogits, the logits'
// adjoint C and dg; gx = C w, gw = dlogits^T A + C^T x.
Tensor lce_input_grad(const Tensor& x, const LceHead& head, const std::vector<int32_t>& targets, const Tensor& g,
                      const Tensor& saved) {
  const int64_t T = x.size(0), R = head.rows;
  Tensor dx = Tensor::empty(x.shape(), x.dtype(), x.device());
  {
    NoGrad ng;
    for (int64_t s = 0; s < T; s += R) {
      const int64_t e = std::min(T, s + R);
      const std::vector<int32_t> tg(targets.begin() + s, targets.begin() + e);
      const Tensor lg = saved.defined() ? saved : head.logits(slice(x, 0, s, e));
      Tensor d = Tensor::empty(lg.shape(), lg.dtype(), lg.device());
      be(x).cross_entropy_backward(dense(lg), tg, dense(slice(g, 0, s, e)), d);
      be(x).copy(head.times_w(d), slice(dx, 0, s, e));
    }
  }
  const Tensor w = head.w;
  if (needs_graph({&x, &w, &g})) {
    record(dx, "linear_cross_entropy_backward", {x, w, g},
           [x, head, targets, g, saved](const Tensor& a, const Tensor&, const std::vector<bool>& n) {
             if (grad_enabled()) {  // third order: the same formulas from differentiable ops, [T, V] at once
               const Tensor gcol = reshape(g, {-1, 1});
               const Tensor p = softmax(head.logits(x)), p_y = onehot_sub(p, targets);
               const Tensor b = head.logits(a);
               const Tensor c = mul(mul(p, sub(b, sum(mul(p, b), -1, true))), gcol);
               return std::vector<Tensor>{
                   n[0] ? head.times_w(c) : Tensor(),
                   n[1] ? add(head.weight_grad(mul(p_y, gcol), a), head.weight_grad(c, x)) : Tensor(),
                   n[2] ? sum(mul(b, p_y), -1) : Tensor()};
             }
             const int64_t T = x.size(0), R = head.rows;
             Tensor gx = n[0] ? Tensor::empty(x.shape(), x.dtype(), x.device()) : Tensor();
             Tensor gg = n[2] ? Tensor::empty(g.shape(), g.dtype(), g.device()) : Tensor();
             Tensor gw;
             for (int64_t s = 0; s < T; s += R) {
               const int64_t e = std::min(T, s + R);
               const std::vector<int32_t> tg(targets.begin() + s, targets.begin() + e);
               const Tensor xb = slice(x, 0, s, e), ab = slice(a, 0, s, e);
               const Tensor lg = saved.defined() ? saved : head.logits(xb);
               Tensor c = head.logits(ab);  // B = A w^T, then C in place
               Tensor dz = Tensor::empty(lg.shape(), lg.dtype(), lg.device());
               Tensor dg = Tensor::empty({e - s}, g.dtype(), g.device());
               be(x).cross_entropy_backward_backward(dense(lg), c, tg, dense(slice(g, 0, s, e)), dz, c, dg);
               if (n[0]) be(x).copy(head.times_w(c), slice(gx, 0, s, e));
               if (n[1]) {
                 const Tensor part = add(head.weight_grad(dz, ab), head.weight_grad(c, xb));
                 gw = gw.defined() ? add(gw, part) : part;
               }
               if (n[2]) be(x).copy(dg, slice(gg, 0, s, e));
             }
             return std::vector<Tensor>{gx, gw, gg};
           });
  }
  return dx;
}

// linear_cross_entropy with a frozen bf16 head (inference weights, never trained: the inner TTT
// step of prefill and sessions). Only x's gradient can be asked for, and at first order it is
// g[r] * u[r] with u = (softmax(logits) - onehot) w per row: u is computed block by block right
// after the loss, in the block's own logits buffer, and kept ([T, d], small). The backward then
// needs no logits at all: two products with the head per chunk instead of three (the forward, a
// recomputation and the input gradient), and one block of logits alive instead of two. The loss
// is the same as the unfused op's bit for bit; the gradient differs in rounding only (g scales
// the row after the product instead of before it). A backward that is itself differentiated
// falls back to lce_input_grad.
Tensor lce_folded(const Tensor& x, const LceHead& head, const std::vector<int32_t>& targets) {
  const int64_t T = x.size(0), R = head.rows;
  Tensor y = Tensor::empty({T}, x.dtype(), x.device());
  Tensor u = Tensor::empty(x.shape(), x.dtype(), x.device());
  {
    NoGrad ng;
    for (int64_t s = 0; s < T; s += R) {
      const int64_t e = std::min(T, s + R);
      const std::vector<int32_t> tg(targets.begin() + s, targets.begin() + e);
      Tensor lg = head.logits(slice(x, 0, s, e));
      be(x).copy(cross_entropy(lg, tg), slice(y, 0, s, e));
      // softmax - onehot over the logits in place (the kernels read a row before writing it).
      be(x).cross_entropy_backward(lg, tg, full({e - s}, 1.0, x.dtype(), x.device()), lg);
      be(x).copy(head.times_w(lg), slice(u, 0, s, e));
    }
  }
  record(y, "linear_cross_entropy", {x, head.w},
         [x, head, targets, u](const Tensor& g, const Tensor&, const std::vector<bool>&) mutable {
           // Differentiated again, or a second backward over the graph: recomputed from the logits.
           if (grad_enabled() || !u.defined())
             return std::vector<Tensor>{lce_input_grad(x, head, targets, g, Tensor()), Tensor()};
           Tensor dx = mul(u, reshape(g, {-1, 1}));
           u = Tensor();  // first order: used once (a second backward recomputes through lce_input_grad)
           return std::vector<Tensor>{dx, Tensor()};
         });
  return y;
}
}  // namespace

Tensor linear_cross_entropy(const Tensor& x, const Tensor& w, const std::vector<int32_t>& targets, bool wt,
                            int64_t block_rows) {
  check_defined(x, "linear_cross_entropy");
  check_defined(w, "linear_cross_entropy");
  check_weight_dtypes(x, w, false, "linear_cross_entropy");
  if (x.dim() != 2 || w.dim() != 2 || x.size(1) != (wt ? w.size(0) : w.size(1)) ||
      x.size(0) != static_cast<int64_t>(targets.size()))
    fail("linear_cross_entropy: x " + shape_str(x.shape()) + ", w " + shape_str(w.shape()) + " and " +
         std::to_string(targets.size()) + " targets do not match");
  // bf16 weights are widened panel by panel for every block of rows (backend/bf16_gemm.h): four
  // times the rows (about 128 MB of logits) make that widening a small share of the block's work.
  const int64_t T = x.size(0), V = wt ? w.size(1) : w.size(0);
  const int64_t R = block_rows > 0 ? block_rows : lce_rows(V) * (w.dtype() == DType::BF16 ? 4 : 1);
  if (V == 0) fail("linear_cross_entropy: empty vocabulary");
  check_ids(targets, V, "linear_cross_entropy");
  const LceHead head{w, wt, R};
  const bool graph = needs_graph({&x, &w});
  if (graph && w.dtype() == DType::BF16 && !w.requires_grad()) return lce_folded(x, head, targets);
  Tensor y, saved;  // saved: the logits, kept for the backward when they are one block
  // Several blocks: each block's logits kept for the first-order backward while all of them stay
  // within kLceKeptLogits (a small vocabulary: the bench model's 4096 at 8K tokens), so the
  // backward does not redo the head's product; beyond that they are recomputed per block.
  std::vector<Tensor> blocks;
  {
    NoGrad ng;
    if (T <= R) {
      Tensor lg = head.logits(x);
      y = cross_entropy(lg, targets);
      if (graph) saved = lg;
    } else {
      const bool keep = graph && T * V <= kLceKeptLogits;
      y = Tensor::empty({T}, x.dtype(), x.device());
      for (int64_t s = 0; s < T; s += R) {
        const int64_t e = std::min(T, s + R);
        const std::vector<int32_t> tg(targets.begin() + s, targets.begin() + e);
        Tensor lg = head.logits(slice(x, 0, s, e));
        be(x).copy(cross_entropy(lg, tg), slice(y, 0, s, e));
        if (keep) blocks.push_back(std::move(lg));
      }
    }
  }
  if (graph) {
    record(y, "linear_cross_entropy", {x, w}, [x, head, targets, saved, blocks](const Tensor& g, const Tensor&,
                                                                               const std::vector<bool>& n) mutable {
      if (grad_enabled()) {  // differentiated again (meta-learning)
        // Only x's gradient (the inner step: the head is frozen): the fused differentiable op.
        if (!n[1]) return std::vector<Tensor>{lce_input_grad(x, head, targets, g, saved), Tensor()};
        // Both: the plain composition (tests of the op itself).
        const Tensor d = mul(onehot_sub(softmax(head.logits(x)), targets), reshape(g, {-1, 1}));
        return std::vector<Tensor>{n[0] ? head.times_w(d) : Tensor(), head.weight_grad(d, x)};
      }
      // First order: per block, the logits (kept or recomputed), d = g (softmax - onehot), then
      // dx = d w and dw += d^T x (w [V, d]; transposed for [d, V]).
      const int64_t T = x.size(0), R = head.rows;
      Tensor dx = n[0] ? Tensor::empty(x.shape(), x.dtype(), x.device()) : Tensor();
      Tensor dw;
      for (int64_t s = 0; s < T; s += R) {
        const int64_t e = std::min(T, s + R);
        const std::vector<int32_t> tg(targets.begin() + s, targets.begin() + e);
        const Tensor xb = slice(x, 0, s, e);
        const size_t blk = static_cast<size_t>(s / R);
        const bool kept = blk < blocks.size() && blocks[blk].defined();
        const Tensor lg = saved.defined() ? saved : kept ? blocks[blk] : head.logits(xb);
        if (kept) blocks[blk] = Tensor();  // released as used, as `saved` below
        Tensor d = Tensor::empty(lg.shape(), lg.dtype(), lg.device());
        be(lg).cross_entropy_backward(dense(lg), tg, dense(slice(g, 0, s, e)), d);
        if (n[0]) be(x).copy(head.times_w(d), slice(dx, 0, s, e));
        if (n[1]) {
          const Tensor part = head.weight_grad(d, xb);
          dw = dw.defined() ? add(dw, part) : part;
        }
      }
      // Released once used at first order: from the head's forward to here nothing else was
      // allocated, so keeping them costs no peak memory (a TTT session's inner step); a second
      // backward over the same graph recomputes them. The fused op above holds its own reference.
      saved = Tensor();
      blocks.clear();
      return std::vector<Tensor>{dx, dw};
    });
  }
  return y;
}

Tensor embedding(const Tensor& table, const std::vector<int32_t>& ids) {
  check_defined(table, "embedding");
  if (table.dim() != 2) fail("embedding: table must be [V, d], got " + shape_str(table.shape()));
  check_ids(ids, table.size(0), "embedding");
  // A bf16 table (inference weights) gives float32 rows.
  const DType out_dtype = table.dtype() == DType::BF16 ? DType::F32 : table.dtype();
  Tensor y = Tensor::empty({static_cast<int64_t>(ids.size()), table.size(1)}, out_dtype, table.device());
  be(table).gather_rows(dense(table), ids, y);
  if (needs_graph({&table})) {
    const int64_t v = table.size(0);
    record(y, "embedding", {table}, [ids, v](const Tensor& g, const Tensor&, const std::vector<bool>&) {
      return std::vector<Tensor>{scatter_add_rows(g, ids, v)};
    });
  }
  return y;
}

Tensor scatter_add_rows(const Tensor& rows, const std::vector<int32_t>& ids, int64_t num_rows) {
  check_defined(rows, "scatter_add_rows");
  if (rows.dim() != 2 || rows.size(0) != static_cast<int64_t>(ids.size()))
    fail("scatter_add_rows: rows " + shape_str(rows.shape()) + " do not match " + std::to_string(ids.size()) + " ids");
  check_ids(ids, num_rows, "scatter_add_rows");
  Tensor y = Tensor::empty({num_rows, rows.size(1)}, rows.dtype(), rows.device());
  be(rows).scatter_add_rows(dense(rows), ids, y);
  if (needs_graph({&rows}))
    record(y, "scatter_add_rows", {rows}, [ids](const Tensor& g, const Tensor&, const std::vector<bool>&) {
      return std::vector<Tensor>{embedding(g, ids)};
    });
  return y;
}

// ---------------------------------------------------------------- attention

namespace {
AttentionShape attention_shape(const Tensor& q, const Tensor& k, const Tensor& v,
                                        const AttentionOptions& opt, const char* op) {
  for (auto* t : {&q, &k, &v}) check_defined(*t, op);
  check_same_dtype(q, k, op);
  check_same_dtype(q, v, op);
  if (q.dim() != 3 || k.dim() != 3 || v.dim() != 3 || k.shape() != v.shape() || q.size(1) != k.size(1) ||
      q.size(2) != k.size(2))
    fail(std::string(op) + ": expected q [Tq, H, D] and k, v [Tk, H, D], got q " + shape_str(q.shape()) + ", k " +
         shape_str(k.shape()) + ", v " + shape_str(v.shape()));
  if (opt.window < 0) fail(std::string(op) + ": negative window");
  AttentionShape s;
  s.tq = q.size(0);
  s.tk = k.size(0);
  s.heads = q.size(1);
  s.head_dim = q.size(2);
  s.q_pos0 = opt.q_pos0;
  s.k_pos0 = opt.k_pos0;
  s.window = opt.window;
  s.scale = 1.0 / std::sqrt(static_cast<double>(s.head_dim));
  return s;
}

// [T, H, D] -> [H, T, D] contiguous (differentiable).
Tensor heads_first(const Tensor& x) { return contiguous(transpose(x, 0, 1)); }

// The backward of attention's backward from differentiable ops (kernels/attention.h gives the
// formulas): used for third and higher derivatives, where the fused kernel's result must itself
// carry a graph. Materializes [H, Tq, Tk] matrices.
std::vector<Tensor> attention_backward_backward_composite(const Tensor& q, const Tensor& k, const Tensor& v,
                                                          const Tensor& g, const Tensor& aq, const Tensor& ak,
                                                          const Tensor& av, const AttentionShape& s) {
  const Tensor qh = heads_first(q), kh = heads_first(k), vh = heads_first(v), gh = heads_first(g);
  const Tensor aqh = heads_first(aq), akh = heads_first(ak), avh = heads_first(av);
  const Tensor p = masked_softmax(mul_scalar(matmul(qh, kh, false, true), s.scale), s);
  const Tensor dp = matmul(gh, vh, false, true);
  const Tensor d = sum(mul(p, dp), -1, true);
  const Tensor b = mul_scalar(add(matmul(aqh, kh, false, true), matmul(qh, akh, false, true)), s.scale);
  const Tensor x = matmul(gh, avh, false, true);
  const Tensor e = sum(mul(p, b), -1, true);
  const Tensor dp_d = sub(dp, d);
  const Tensor ds = mul(p, dp_d);
  const Tensor c = mul(p, sub(b, e));
  const Tensor y = sub(add(x, mul(b, dp_d)), mul(e, dp));
  const Tensor z = mul(p, sub(y, sum(mul(p, y), -1, true)));
  const Tensor gq = mul_scalar(add(matmul(ds, akh), matmul(z, kh)), s.scale);
  const Tensor gk = mul_scalar(add(matmul(ds, aqh, true, false), matmul(z, qh, true, false)), s.scale);
  const Tensor gv = matmul(c, gh, true, false);
  const Tensor gg = add(matmul(c, vh), matmul(p, avh));
  return {heads_first(gq), heads_first(gk), heads_first(gv), heads_first(gg)};
}

// dq, dk and dv of attention as one differentiable op, for gradients that are differentiated
// again (the meta-gradient through the inner step): one tensor [Tq + 2 Tk, H, D] filled by the
// fused backward kernel, whose own backward is the fused attention_backward_backward kernel.
// The caller takes the three row ranges as slices. `o` and `lse` are the forward's results
// (values only: the second-order formulas recompute everything they depend on).
Tensor attention_backward_packed(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& o,
                                 const Tensor& lse, const Tensor& g, const AttentionShape& s) {
  const int64_t tq = s.tq, tk = s.tk;
  Tensor packed = Tensor::empty({tq + 2 * tk, s.heads, s.head_dim}, q.dtype(), q.device());
  be(q).attention_backward(s, dense(q), dense(k), dense(v), o, lse, dense(g), slice(packed, 0, 0, tq),
                           slice(packed, 0, tq, tq + tk), slice(packed, 0, tq + tk, tq + 2 * tk));
  if (needs_graph({&q, &k, &v, &g})) {
    record(packed, "attention_backward", {q, k, v, g},
           [q, k, v, o, lse, g, s](const Tensor& gp, const Tensor&, const std::vector<bool>& n) {
             const int64_t tq = s.tq, tk = s.tk;
             const Tensor aq = dense(slice(gp, 0, 0, tq)), ak = dense(slice(gp, 0, tq, tq + tk)),
                          av = dense(slice(gp, 0, tq + tk, tq + 2 * tk));
             std::vector<Tensor> out;
             if (grad_enabled()) {
               out = attention_backward_backward_composite(q, k, v, g, aq, ak, av, s);
             } else {
               out = {Tensor::empty(q.shape(), q.dtype(), q.device()), Tensor::empty(k.shape(), k.dtype(), k.device()),
                      Tensor::empty(v.shape(), v.dtype(), v.device()), Tensor::empty(g.shape(), g.dtype(), g.device())};
               be(q).attention_backward_backward(s, dense(q), dense(k), dense(v), o, lse, dense(g), aq, ak, av,
                                                 out[0], out[1], out[2], out[3]);
             }
             for (size_t i = 0; i < out.size(); ++i)
               if (!n[i]) out[i] = Tensor();
             return out;
           });
  }
  return packed;
}
}  // namespace

Tensor attention_composite(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& opt) {
  const auto s = attention_shape(q, k, v, opt, "attention_composite");
  Tensor qh = heads_first(q), kh = heads_first(k), vh = heads_first(v);
  Tensor p = masked_softmax(mul_scalar(matmul(qh, kh, false, true), s.scale), s);
  return heads_first(matmul(p, vh));  // [H, Tq, D] -> [Tq, H, D]
}

Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& opt) {
  const auto s = attention_shape(q, k, v, opt, "attention");
  Tensor qc = dense(q), kc = dense(k), vc = dense(v);
  Tensor o = Tensor::empty(q.shape(), q.dtype(), q.device());
  Tensor lse = Tensor::empty({s.heads, s.tq}, q.dtype(), q.device());
  const bool graph = needs_graph({&q, &k, &v});
  {
    AttentionShape sf = s;  // bf16 products only where no backward will recompute from lse
    sf.bf16_products = opt.bf16_products && !graph;
    be(q).attention_forward(sf, qc, kc, vc, o, lse);
  }
  if (graph) {
    AttentionShape s1 = s;  // first order: no dk, dv for constant keys
    s1.k_grad_from = std::clamp<int64_t>(opt.k_grad_from, 0, s.tk);
    record(o, "attention", {q, k, v}, [q, k, v, lse, s, s1](const Tensor& g, const Tensor& out, const std::vector<bool>& n) {
      if (grad_enabled()) {  // the gradient will be differentiated: the fused op with a fused backward
        const Tensor p = attention_backward_packed(q, k, v, dense(out.detach()), lse, g, s);
        const int64_t tq = s.tq, tk = s.tk;
        return std::vector<Tensor>{n[0] ? slice(p, 0, 0, tq) : Tensor(), n[1] ? slice(p, 0, tq, tq + tk) : Tensor(),
                                   n[2] ? slice(p, 0, tq + tk, tq + 2 * tk) : Tensor()};
      }
      Tensor dq = Tensor::empty(q.shape(), q.dtype(), q.device());
      Tensor dk = Tensor::empty(k.shape(), k.dtype(), k.device());
      Tensor dv = Tensor::empty(v.shape(), v.dtype(), v.device());
      be(q).attention_backward(s1, dense(q), dense(k), dense(v), dense(out), lse, dense(g), dq, dk, dv);
      return std::vector<Tensor>{dq, dk, dv};
    });
  }
  return o;
}

Tensor attention_bf16_cache(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const Tensor& k,
                            const Tensor& v, const AttentionOptions& opt) {
  const char* op = "attention_bf16_cache";
  for (auto* t : {&k_cache, &v_cache}) check_defined(*t, op);
  if (k_cache.dtype() != DType::BF16 || v_cache.dtype() != DType::BF16 || q.dtype() != DType::F32)
    fail(std::string(op) + ": expected a bf16 cache and float32 queries, got " + dtype_name(k_cache.dtype()) + ", " +
         dtype_name(v_cache.dtype()) + " and " + dtype_name(q.dtype()));
  if (k_cache.requires_grad() || v_cache.requires_grad()) fail(std::string(op) + ": the cache must be a constant");
  auto s = attention_shape(q, k, v, opt, op);
  if (k_cache.dim() != 3 || k_cache.shape() != v_cache.shape() || k_cache.size(1) != s.heads ||
      k_cache.size(2) != s.head_dim)
    fail(std::string(op) + ": cache " + shape_str(k_cache.shape()) + " and " + shape_str(v_cache.shape()) +
         " do not fit keys " + shape_str(k.shape()));
  const int64_t tc = k_cache.size(0);
  s.tk += tc;
  const Tensor kc = dense(k_cache), vc = dense(v_cache), kn = dense(k), vn = dense(v);
  Tensor o = Tensor::empty(q.shape(), q.dtype(), q.device());
  Tensor lse = Tensor::empty({s.heads, s.tq}, q.dtype(), q.device());
  const bool graph = needs_graph({&q, &k, &v});
  {
    AttentionShape sf = s;  // bf16 products only where no backward will recompute from lse
    sf.bf16_products = opt.bf16_products && !graph;
    be(q).attention_forward_bf16_cache(sf, dense(q), kc, vc, kn, vn, o, lse);
  }
  if (graph) {
    record(o, op, {q, k, v}, [q, kc, vc, k, v, lse, s, tc](const Tensor& g, const Tensor& out, const std::vector<bool>& n) {
      if (grad_enabled()) {  // differentiated again: the plain fused op over the widened keys
        const Tensor kf = concat({to_dtype(kc, DType::F32), k}, 0), vf = concat({to_dtype(vc, DType::F32), v}, 0);
        const Tensor p = attention_backward_packed(q, kf, vf, dense(out.detach()), lse, g, s);
        const int64_t tq = s.tq, tk = s.tk;
        return std::vector<Tensor>{n[0] ? slice(p, 0, 0, tq) : Tensor(), n[1] ? slice(p, 0, tq + tc, tq + tk) : Tensor(),
                                   n[2] ? slice(p, 0, tq + tk + tc, tq + 2 * tk) : Tensor()};
      }
      Tensor dq = Tensor::empty(q.shape(), q.dtype(), q.device());
      Tensor dk = Tensor::empty(k.shape(), k.dtype(), k.device());
      Tensor dv = Tensor::empty(v.shape(), v.dtype(), v.device());
      AttentionShape s1 = s;
      s1.k_grad_from = tc;
      be(q).attention_backward_bf16_cache(s1, dense(q), kc, vc, dense(k), dense(v), dense(out), lse, dense(g), dq, dk, dv);
      return std::vector<Tensor>{dq, dk, dv};
    });
  }
  return o;
}

// ---------------------------------------------------------------- optimization helpers

Tensor global_norm(const std::vector<Tensor>& xs) {
  if (xs.empty()) fail("global_norm: no tensors");
  Tensor total;
  for (auto& x : xs) {
    Tensor s = sum(square(x));
    total = total.defined() ? add(total, s) : s;
  }
  return sqrt(total);
}

std::vector<Tensor> clip_by_global_norm(const std::vector<Tensor>& gs, double max_norm) {
  if (!(max_norm > 0)) fail("clip_by_global_norm: max_norm must be positive");
  // scale = max_norm / max(norm, max_norm) = 1 / sqrt(max(sum of squares / max_norm^2, 1)).
  // Written without sqrt(sum of squares): its derivative is infinite at a zero gradient (a
  // converted model's first inner steps), and 0 * inf would poison the meta-gradient.
  Tensor sumsq;
  for (auto& g : gs) {
    Tensor s = sum(square(g));
    sumsq = sumsq.defined() ? add(sumsq, s) : s;
  }
  Tensor scale = rsqrt(maximum_scalar(mul_scalar(sumsq, 1.0 / (max_norm * max_norm)), 1.0));
  std::vector<Tensor> out;
  out.reserve(gs.size());
  for (auto& g : gs) out.push_back(mul(g, scale));
  return out;
}

}  // namespace ttt
