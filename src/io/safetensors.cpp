#include "io/file_read.h"
#include "io/json_read.h"
#include "io/messages.h"
#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <unordered_set>
#include <set>
#include <stdexcept>
#include <type_traits>

#include "io/atomic_file.h"
#include "tensor/bf16.h"

static_assert(std::endian::native == std::endian::little,
              "safetensors I/O assumes a little-endian host");

namespace ttt::io {
namespace {

using json = nlohmann::json;

constexpr uint64_t kMaxHeader = 100ull * 1024 * 1024;

// Error text must stay on one line: names and parser messages may hold control characters.

std::string q_name(const std::string& name) {
  std::string out(1, '\'');  // built by appends: GCC 12 warns falsely (-Wrestrict) on "'" + s
  out.append(one_line(name));
  out.push_back('\'');
  return out;
}

[[noreturn]] void fail(const std::string& what, const std::string& problem) {
  throw std::runtime_error("invalid safetensors file " + one_line(what, 400) + ": " + problem);
}

std::string shape_text(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

struct Entry {
  std::string name;
  DType load_as = DType::F32;
  bool bf16 = false;
  size_t elem_size = 4;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;
};

// A non-negative integer that fits int64, or nullopt-like failure through `ok`.
bool as_index(const json& v, uint64_t& out) {
  if (v.is_number_unsigned()) {
    out = v.get<uint64_t>();
    return out <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  }
  if (v.is_number_integer()) {
    const int64_t x = v.get<int64_t>();
    if (x < 0) return false;
    out = static_cast<uint64_t>(x);
    return true;
  }
  return false;
}

Entry parse_entry(const std::string& what, const std::string& name, const json& e,
                  uint64_t data_size) {
  Entry out;
  out.name = name;
  const std::string n = "tensor " + q_name(name);
  if (!e.is_object()) fail(what, n + ": header entry is not an object");
  for (const char* key : {"dtype", "shape", "data_offsets"})
    if (!e.contains(key)) fail(what, n + ": header entry is missing \"" + key + "\"");

  const json& dt = e["dtype"];
  if (!dt.is_string()) fail(what, n + ": dtype is not a string");
  const std::string dtype = dt.get<std::string>();
  if (dtype == "F32") {
    out.load_as = DType::F32;
    out.elem_size = 4;
  } else if (dtype == "BF16") {
    out.load_as = DType::F32;
    out.bf16 = true;
    out.elem_size = 2;
  } else if (dtype == "F64") {
    out.load_as = DType::F64;
    out.elem_size = 8;
  } else {
    fail(what, n + ": unsupported dtype " + q_name(dtype) + " (supported: F32, BF16, F64)");
  }

  const json& sh = e["shape"];
  if (!sh.is_array()) fail(what, n + ": shape is not an array");
  if (sh.size() > 64) fail(what, n + ": shape has too many dimensions (" + std::to_string(sh.size()) + ")");
  uint64_t numel = 1;
  bool overflow = false;
  for (const json& d : sh) {
    if (!d.is_number_integer()) fail(what, n + ": shape holds a non-integer dimension");
    if (d.is_number_integer() && !d.is_number_unsigned() && d.get<int64_t>() < 0)
      fail(what, n + ": shape has a negative dimension " + std::to_string(d.get<int64_t>()));
    uint64_t v = 0;
    if (!as_index(d, v)) fail(what, n + ": shape dimension too large (element count overflow)");
    out.shape.push_back(static_cast<int64_t>(v));
    if (__builtin_mul_overflow(numel, v, &numel)) overflow = true;
  }
  uint64_t nbytes = 0;
  if (overflow || numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
      __builtin_mul_overflow(numel, static_cast<uint64_t>(out.elem_size), &nbytes))
    fail(what, n + ": element count overflow for shape " + shape_text(out.shape));

  const json& off = e["data_offsets"];
  if (!off.is_array() || off.size() != 2)
    fail(what, n + ": data_offsets is not an array of two integers");
  if (!as_index(off[0], out.begin) || !as_index(off[1], out.end))
    fail(what, n + ": data_offsets must be non-negative integers");
  if (out.end < out.begin)
    fail(what, n + ": data_offsets reversed [" + std::to_string(out.begin) + ", " +
                   std::to_string(out.end) + "]");
  if (out.end > data_size)
    fail(what, n + ": data_offsets [" + std::to_string(out.begin) + ", " + std::to_string(out.end) +
                   "] past the end of the data buffer (" + std::to_string(data_size) +
                   " bytes): truncated file");
  if (out.end - out.begin != nbytes)
    fail(what, n + ": byte length " + std::to_string(out.end - out.begin) + " does not match shape " +
                   shape_text(out.shape) + " of " + dtype + " (" + std::to_string(nbytes) + " bytes)");
  return out;
}

}  // namespace

uint16_t float_to_bf16(float f) { return ttt::float_to_bf16(f); }
float bf16_to_float(uint16_t b) { return ttt::bf16_to_float(b); }

namespace {

// Bounds of a header beyond its length (issue 25): how many tensors it may list, and how many
// JSON values one of its top-level entries may hold (a tensor entry needs under 80; the
// metadata of a state file a few dozen).
constexpr size_t kMaxTensors = size_t{1} << 18;
constexpr size_t kMaxEntryValues = size_t{1} << 16;
constexpr size_t kMaxDepth = 16;

// SAX reader of a header: the top level must be an object; each of its values is built as a
// tree (at most kMaxEntryValues values, kMaxDepth deep, no duplicate keys) and handed to
// `on_entry` with its key as soon as it is complete, then dropped.
class HeaderSax {
 public:
  using OnEntry = std::function<void(const std::string&, const json&)>;
  explicit HeaderSax(OnEntry on_entry) : on_entry_(std::move(on_entry)) {}
  std::string problem;

  bool null() { return value(json(nullptr)); }
  bool boolean(bool b) { return value(json(b)); }
  bool number_integer(json::number_integer_t v) { return value(json(v)); }
  bool number_unsigned(json::number_unsigned_t v) { return value(json(v)); }
  bool number_float(json::number_float_t v, const std::string&) { return value(json(v)); }
  bool string(std::string& v) { return value(json(std::move(v))); }
  bool binary(json::binary_t&) { return err("header is not valid JSON: binary value"); }
  bool start_object(std::size_t) {
    if (!top_started_) {
      top_started_ = true;
      return true;
    }
    return open(json::object());
  }
  bool start_array(std::size_t) {
    if (!top_started_) return err("header is not a JSON object");
    return open(json::array());
  }
  bool end_object() { return close(); }
  bool end_array() { return close(); }
  bool key(std::string& k) {
    if (stack_.empty()) {  // a tensor name (or __metadata__)
      if (!names_.insert(k).second) return err("duplicate tensor name " + q_name(k) + " in header");
      top_key_ = std::move(k);
      return true;
    }
    json& obj = *stack_.back();
    if (obj.contains(k)) return err("duplicate key " + q_name(k) + " in header");
    key_ = std::move(k);
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& ex) {
    if (problem.empty()) problem = "header is not valid JSON: " + one_line(ex.what());
    return false;
  }

 private:
  bool err(const std::string& p) {
    problem = p;
    return false;
  }
  // Places v in the container on top of the stack (or as the entry itself); returns a pointer.
  json* place(json&& v) {
    if (++count_ > kMaxEntryValues) {
      err("header entry " + q_name(top_key_) + " holds more than " + std::to_string(kMaxEntryValues) + " values");
      return nullptr;
    }
    return io::place_json_value(stack_, key_, entry_, std::move(v));
  }
  bool value(json&& v) {
    if (!top_started_) return err("header is not a JSON object");
    const bool whole = stack_.empty();
    if (!place(std::move(v))) return false;
    return whole ? finish() : true;
  }
  bool open(json&& v) {
    if (stack_.size() >= kMaxDepth) return err("header is nested deeper than " + std::to_string(kMaxDepth) + " levels");
    json* p = place(std::move(v));
    if (!p) return false;
    stack_.push_back(p);
    return true;
  }
  bool close() {
    if (stack_.empty()) return true;  // the top-level object
    stack_.pop_back();
    return stack_.empty() ? finish() : true;
  }
  bool finish() {
    on_entry_(top_key_, entry_);  // throws for a bad entry
    entry_ = json();
    count_ = 0;
    return true;
  }

  OnEntry on_entry_;
  bool top_started_ = false;
  std::unordered_set<std::string> names_;
  std::string top_key_, key_;
  json entry_;
  std::vector<json*> stack_;
  size_t count_ = 0;
};

// Called with each stretch of the data buffer once its bytes have been copied out.
using Release = std::function<void(const uint8_t*, size_t)>;

TensorFile parse_impl(const uint8_t* data, size_t size, const std::string& what, const ReadOptions& opt,
                      const Release& release) {
  if (size < 8)
    fail(what, "file too short (" + std::to_string(size) +
                   " bytes) to hold the 8-byte header length: truncated or not a safetensors file");
  uint64_t n = 0;
  std::memcpy(&n, data, 8);
  if (n > kMaxHeader)
    fail(what, "header length " + std::to_string(n) +
                   " is implausible (over 100 MB): bad magic, not a safetensors file");
  if (n > size - 8)
    fail(what, "header length " + std::to_string(n) + " exceeds the file size (" +
                   std::to_string(size) + " bytes): truncated file");

  // One SAX pass (linear time, bounded memory): each top-level value is built as a small tree
  // (bounded in values and depth) and checked as soon as it ends; the tree is then dropped.
  const uint64_t data_size = size - 8 - n;
  const uint8_t* buf = data + 8 + n;
  TensorFile out;
  std::vector<Entry> entries;
  HeaderSax sax([&](const std::string& key, const json& value) {
    if (key == "__metadata__") {
      if (!value.is_object()) fail(what, "__metadata__ is not an object");
      for (auto m = value.begin(); m != value.end(); ++m) {
        if (!m.value().is_string())
          fail(what, "__metadata__ value for " + q_name(m.key()) + " is not a string");
        out.metadata[m.key()] = m.value().get<std::string>();
      }
      return;
    }
    if (entries.size() >= kMaxTensors)
      fail(what, "header lists more than " + std::to_string(kMaxTensors) + " tensors");
    entries.push_back(parse_entry(what, key, value, data_size));
  });
  const char* h = reinterpret_cast<const char*>(data + 8);
  const bool parsed = json::sax_parse(h, h + n, &sax, json::input_format_t::json, true, false);
  if (!parsed) fail(what, sax.problem.empty() ? std::string("header is not valid JSON") : sax.problem);

  // The tensors must tile the data buffer exactly: no overlaps, gaps or trailing bytes.
  std::vector<const Entry*> order;
  for (const auto& e : entries) order.push_back(&e);
  std::sort(order.begin(), order.end(), [](const Entry* a, const Entry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t expected = 0;
  const Entry* prev = nullptr;
  for (const Entry* e : order) {
    if (e->begin < expected)
      fail(what, "tensors " + q_name(prev->name) + " and " + q_name(e->name) + " overlap in the data buffer");
    if (e->begin > expected)
      fail(what, "gap in the data buffer: bytes [" + std::to_string(expected) + ", " +
                     std::to_string(e->begin) + ") before tensor " + q_name(e->name) + " belong to no tensor");
    expected = e->end;
    prev = e;
  }
  if (expected != data_size)
    fail(what, std::to_string(data_size - expected) +
                   " trailing bytes in the data buffer belong to no tensor (gap at the end)");

  // Copied in pieces of 16 MB, each released right after, so that a large tensor (a 128K
  // vocabulary's embedding) never holds its mapped pages and its copy at once.
  constexpr size_t kPiece = size_t{16} << 20;
  for (const auto& e : entries) {
    const bool keep = e.bf16 && opt.keep_bf16 && opt.keep_bf16(e.name);
    Tensor t = Tensor::empty(e.shape, keep ? DType::BF16 : e.load_as);
    const uint8_t* src = buf + e.begin;
    const size_t bytes = static_cast<size_t>(e.end - e.begin);
    auto* dst = static_cast<uint8_t*>(t.raw_data());
    for (size_t p = 0; p < bytes; p += kPiece) {
      const size_t len = std::min(kPiece, bytes - p);
      if (e.bf16 && !keep) {
        float* f = reinterpret_cast<float*>(dst) + p / 2;
        for (size_t i = 0; i < len / 2; ++i) {
          uint16_t b;
          std::memcpy(&b, src + p + 2 * i, 2);
          f[i] = bf16_to_float(b);
        }
      } else {
        std::memcpy(dst + p, src + p, len);
      }
      if (release) release(src + p, len);
    }
    out.tensors.emplace(e.name, std::move(t));
  }
  return out;
}

}  // namespace

TensorFile parse_safetensors(const uint8_t* data, size_t size, const std::string& what, const ReadOptions& opt) {
  return parse_impl(data, size, what, opt, nullptr);
}

TensorFile read_safetensors(const std::string& path, const ReadOptions& opt) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);  // a FIFO must not block the open
  if (fd < 0) throw std::runtime_error("cannot open safetensors file " + path + ": " + std::strerror(errno));
  struct FdGuard {
    int fd;
    ~FdGuard() { ::close(fd); }
  } guard{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0)
    throw std::runtime_error("cannot stat safetensors file " + path + ": " + std::strerror(errno));
  if (!S_ISREG(st.st_mode))
    throw std::runtime_error("cannot read safetensors file " + one_line(path) + ": " + not_regular_reason(path));
  const size_t size = static_cast<size_t>(st.st_size);
  if (size < 8) {
    uint8_t small[8] = {};
    return parse_safetensors(small, size, path, opt);
  }
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  if (map == MAP_FAILED)
    throw std::runtime_error("cannot map safetensors file " + path + ": " + std::strerror(errno));
  struct MapGuard {
    void* p;
    size_t n;
    ~MapGuard() { ::munmap(p, n); }
  } mguard{map, size};
  // Dropping consumed pages of a private read-only mapping only unmaps them from this process
  // (the page cache keeps the file): a later touch would fault them back in, so releasing the
  // whole pages around a piece is safe even where a neighbouring tensor shares an edge page.
  const auto base = reinterpret_cast<uintptr_t>(map);
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const Release release = [&](const uint8_t* p, size_t n) {
    const uintptr_t lo = reinterpret_cast<uintptr_t>(p) & ~(page - 1);
    const uintptr_t hi = std::min(base + size, (reinterpret_cast<uintptr_t>(p) + n + page - 1) & ~(page - 1));
    if (hi > lo) ::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
  };
  return parse_impl(static_cast<const uint8_t*>(map), size, path, opt, release);
}

namespace {

// Streams the elements of `t` (any strides) in row-major order to sink(const T*, count).
template <class T, class Sink>
void for_each_chunk(const Tensor& t, Sink&& sink) {
  const int64_t n = t.numel();
  if (n == 0) return;
  const T* base = t.data<T>();
  constexpr int64_t kChunk = 1 << 16;
  if (t.dim() == 0 || t.is_contiguous()) {
    for (int64_t i = 0; i < n; i += kChunk) sink(base + i, static_cast<size_t>(std::min(kChunk, n - i)));
    return;
  }
  const Shape& shape = t.shape();
  const Shape& strides = t.strides();
  const int64_t nd = t.dim();
  const int64_t inner = shape[nd - 1];
  const int64_t inner_stride = strides[nd - 1];
  std::vector<T> buf;
  buf.reserve(static_cast<size_t>(std::max<int64_t>(kChunk, inner)));
  std::vector<int64_t> idx(static_cast<size_t>(nd - 1), 0);
  const int64_t rows = n / inner;
  for (int64_t r = 0; r < rows; ++r) {
    int64_t off = 0;
    for (int64_t d = 0; d < nd - 1; ++d) off += idx[d] * strides[d];
    const T* row = base + off;
    for (int64_t j = 0; j < inner; ++j) buf.push_back(row[j * inner_stride]);
    if (static_cast<int64_t>(buf.size()) >= kChunk) {
      sink(buf.data(), buf.size());
      buf.clear();
    }
    for (int64_t d = nd - 2; d >= 0; --d) {  // advance the outer multi-index
      if (++idx[d] < shape[d]) break;
      idx[d] = 0;
    }
  }
  if (!buf.empty()) sink(buf.data(), buf.size());
}

// Element value of a stored tensor (uint16_t: bf16 bits).
template <class T>
double value_of(T v) {
  if constexpr (std::is_same_v<T, uint16_t>)
    return bf16_to_float(v);
  else
    return static_cast<double>(v);
}

template <class T>
void write_tensor_data(std::ostream& out, const Tensor& t, StoreAs as) {
  std::vector<char> bytes;
  for_each_chunk<T>(t, [&](const T* v, size_t count) {
    if (as == StoreAs::F32) {
      bytes.resize(count * 4);
      for (size_t i = 0; i < count; ++i) {
        const float f = static_cast<float>(value_of(v[i]));
        std::memcpy(bytes.data() + 4 * i, &f, 4);
      }
    } else if (as == StoreAs::F64) {
      bytes.resize(count * 8);
      for (size_t i = 0; i < count; ++i) {
        const double d = value_of(v[i]);
        std::memcpy(bytes.data() + 8 * i, &d, 8);
      }
    } else {
      bytes.resize(count * 2);
      for (size_t i = 0; i < count; ++i) {
        uint16_t b;
        if constexpr (std::is_same_v<T, uint16_t>)
          b = v[i];  // already bf16: the bits as they are
        else
          b = float_to_bf16(static_cast<float>(v[i]));
        std::memcpy(bytes.data() + 2 * i, &b, 2);
      }
    }
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  });
}

}  // namespace

void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, ttt::Tensor>>& tensors,
                       StoreAs dtype, const std::map<std::string, std::string>& metadata) {
  write_safetensors(path, tensors, std::vector<StoreAs>(tensors.size(), dtype), metadata);
}

void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, ttt::Tensor>>& tensors,
                       const std::vector<StoreAs>& dtypes, const std::map<std::string, std::string>& metadata) {
  auto bad = [&](const std::string& problem) {
    throw std::runtime_error("cannot write safetensors file " + path + ": " + problem);
  };
  if (dtypes.size() != tensors.size())
    bad(std::to_string(dtypes.size()) + " storage dtypes for " + std::to_string(tensors.size()) + " tensors");

  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json m = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    header["__metadata__"] = std::move(m);
  }
  std::set<std::string> seen;
  uint64_t offset = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, t] = tensors[i];
    const StoreAs dtype = dtypes[i];
    const char* dtype_str = dtype == StoreAs::F32 ? "F32" : dtype == StoreAs::BF16 ? "BF16" : "F64";
    const uint64_t elem = dtype == StoreAs::F32 ? 4 : dtype == StoreAs::BF16 ? 2 : 8;
    if (name == "__metadata__") bad("tensor name \"__metadata__\" is reserved");
    if (!seen.insert(name).second) bad("duplicate tensor name " + q_name(name));
    if (!t.defined()) bad("tensor " + q_name(name) + " is undefined");
    if (t.dtype() != DType::F32 && t.dtype() != DType::F64 && t.dtype() != DType::BF16)
      bad("tensor " + q_name(name) + " has unsupported dtype " + dtype_name(t.dtype()));
    const uint64_t nbytes = static_cast<uint64_t>(t.numel()) * elem;
    header[name] = {{"dtype", dtype_str}, {"shape", t.shape()}, {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {  // e.g. a name or metadata that is not UTF-8
    bad(std::string("cannot encode header: ") + one_line(e.what()));
  }
  while (text.size() % 8 != 0) text += ' ';

  write_file_atomic(path, [&](std::ostream& out) {
    const uint64_t n = text.size();
    char len[8];
    std::memcpy(len, &n, 8);
    out.write(len, 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (size_t i = 0; i < tensors.size(); ++i) {
      Tensor t = tensors[i].second;
      if (t.device() != Device::cpu()) {  // device memory: one explicit copy to the host first
        Tensor host = Tensor::empty(t.shape(), t.dtype());
        copy_to_host(t, host.raw_data());
        t = host;
      }
      if (t.dtype() == DType::F32)
        write_tensor_data<float>(out, t, dtypes[i]);
      else if (t.dtype() == DType::BF16)
        write_tensor_data<uint16_t>(out, t, dtypes[i]);
      else
        write_tensor_data<double>(out, t, dtypes[i]);
    }
  });
}

}  // namespace ttt::io
