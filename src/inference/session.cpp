#include "inference/session.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

#include "io/messages.h"
#include "io/safetensors.h"
#include "model/config.h"

namespace ttt::inference {

Session::Session(const model::Model& m, const e2e::TTTOptions& opt) : m_(m) {
  e2e::validate(opt);
  s_.opt = opt;
  reset();
}

void Session::reset() {
  const auto& cfg = m_.config();
  s_.use_ttt = s_.opt.ttt && cfg.prime;
  s_.pos = 0;
  s_.steps = 0;
  s_.caches.clear();
  for (int64_t l = 0; l < cfg.num_hidden_layers; ++l) s_.caches.push_back(m_.mixer(l).start_state(s_.opt.kv_dtype));
  s_.chunk = e2e::SuffixMemory::start(m_, false, s_.opt.kv_dtype);
  s_.pending_h.clear();
  s_.pending_tokens.clear();
  s_.chunk_pos0 = 0;
  s_.last_logits.clear();
}

void Session::stop_learning() {
  s_.use_ttt = false;
  s_.pending_h.clear();
  s_.pending_tokens.clear();
}

void Session::learn_now(const std::vector<int32_t>& tokens, int32_t next, bool keep_in_window) {
  if (!s_.use_ttt) {
    if (keep_in_window) feed(tokens);
    return;
  }
  const auto& cfg = m_.config();
  if (next < 0 || next >= cfg.vocab_size) throw std::invalid_argument("learn_now: next token id out of range");
  // A copy of the state's handles is enough to go back: fed rows are appended after the
  // views it holds (append_rows), never over them.
  const State before = s_;
  // Read and learned but not kept: the observers (the exact store) see nothing of it.
  NllObserver nll_saved;
  ReadObserver read_saved;
  if (!keep_in_window) {
    nll_saved = std::move(nll_observer_);
    read_saved = std::move(read_observer_);
    nll_observer_ = {};
    read_observer_ = {};
  }
  struct Restore {
    Session& s;
    NllObserver& n;
    ReadObserver& r;
    bool on;
    ~Restore() {
      if (!on) return;
      s.nll_observer_ = std::move(n);
      s.read_observer_ = std::move(r);
    }
  } restore{*this, nll_saved, read_saved, !keep_in_window};
  feed(tokens);
  if (!s_.pending_tokens.empty()) {
    ttt_step(next);
    s_.pending_h.clear();
    s_.pending_tokens.clear();
  }
  if (!keep_in_window) {
    model::Phi phi = std::move(s_.chunk.phi);
    const int64_t steps = s_.steps;
    s_ = before;
    s_.chunk.phi = std::move(phi);
    s_.steps = steps;
  }
}

double Session::ttt_step(int32_t last_target) {
  std::vector<int32_t> targets(s_.pending_tokens.begin() + 1, s_.pending_tokens.end());
  targets.push_back(last_target);
  GradMode on(true);
  for (auto& p : s_.chunk.phi) p = p.detach().set_requires_grad(true);
  // The mixer states after the chunk are already in caches (the feed advanced them).
  auto r = e2e::suffix_chunk(m_, concat(s_.pending_h, 0), s_.chunk_pos0, targets, s_.chunk, /*step=*/true, s_.opt,
                             /*create_graph=*/false, /*keep_mixers=*/false);
  s_.chunk.phi = std::move(r.next.phi);
  ++s_.steps;
  if (nll_observer_) nll_observer_(s_.chunk_pos0 + 1, r.nll.to_floats());
  return r.loss.item();
}

std::vector<float> Session::step(int32_t token) { return feed({token}); }

std::vector<float> Session::feed(const std::vector<int32_t>& tokens) { return feed(tokens, StepObserver()); }

std::vector<float> Session::feed(const std::vector<int32_t>& tokens, const StepObserver& on_step) {
  const auto& cfg = m_.config();
  for (size_t i = 0; i < tokens.size(); ++i)
    if (tokens[i] < 0 || tokens[i] >= cfg.vocab_size)
      throw std::invalid_argument("token " + std::to_string(i) + " has id " + std::to_string(tokens[i]) +
                                  ", out of range [0, " + std::to_string(cfg.vocab_size) + ")");
  if (read_observer_ && !tokens.empty()) read_observer_(s_.pos, tokens);
  const int64_t first = cfg.first_prime_layer(), L = cfg.num_hidden_layers, b = cfg.mini_batch_size;
  // Segments end where a TTT step is due (b tokens pending), or after kSegment tokens without
  // TTT (bounding the attention scores held at once); one token is the decode step.
  constexpr int64_t kSegment = 1024;
  const int64_t total = static_cast<int64_t>(tokens.size());
  int64_t i = 0;
  while (i < total) {
    if (s_.use_ttt && static_cast<int64_t>(s_.pending_tokens.size()) == b) {
      const double loss = ttt_step(tokens[i]);
      if (on_step) on_step(s_.steps - 1, loss);
      s_.pending_h.clear();
      s_.pending_tokens.clear();
    }
    if (s_.use_ttt && s_.pending_tokens.empty()) {
      s_.chunk_pos0 = s_.pos;
      for (int64_t l = first; l < L; ++l) s_.chunk.mixers[l - first] = s_.caches[l];
    }
    const int64_t n = std::min(total - i, s_.use_ttt ? b - static_cast<int64_t>(s_.pending_tokens.size()) : kSegment);
    const std::vector<int32_t> seg(tokens.begin() + i, tokens.begin() + i + n);
    NoGrad ng;
    Tensor h = m_.embed_tokens(seg);
    for (int64_t l = 0; l < L; ++l) {
      if (s_.use_ttt && l == first) {
        s_.pending_h.push_back(h);
        s_.pending_tokens.insert(s_.pending_tokens.end(), seg.begin(), seg.end());
      }
      model::MixerState next;
      const Tensor* phi = l >= first && cfg.prime ? &s_.chunk.phi[3 * (l - first)] : nullptr;
      h = m_.block_forward(l, h, s_.pos, &s_.caches[l], &next, phi);
      s_.caches[l] = next.detached();  // owns its rows: a slice would keep the whole buffer alive
      if (s_.use_ttt && l >= first) rebase_chunk_state(l - first, s_.caches[l], s_.pos + n - s_.chunk_pos0);
    }
    s_.pos += n;
    i += n;
    if (i == total) s_.last_logits = m_.logits(slice(h, 0, n - 1, n)).to_floats();
  }
  return s_.last_logits;
}

// The pending chunk's start state of a suffix block, found again in the buffer the chunk's
// appends moved its window cache to (same bits): the old buffer is released instead of being
// held until the inner step, which then also finds the chunk's keys right after it (append_rows
// shares them instead of copying the window).
void Session::rebase_chunk_state(int64_t i, const model::MixerState& now, int64_t gap) {
  auto& st = s_.chunk.mixers[static_cast<size_t>(i)];
  if (st.tensors.size() != now.tensors.size()) return;
  for (size_t j = 0; j < st.tensors.size(); ++j) st.tensors[j] = same_rows_in(st.tensors[j], now.tensors[j], gap);
}

size_t Session::state_bytes() const {
  size_t n = 0;
  auto add = [&](const Tensor& t) {
    if (t.defined()) n += t.numel() * dtype_size(t.dtype());
  };
  for (auto& c : s_.caches) n += c.bytes();
  n += s_.chunk.bytes();
  for (auto& h : s_.pending_h) add(h);
  return n + s_.pending_tokens.size() * sizeof(int32_t);
}

// ---- fork ----

namespace {

Tensor deep_copy(const Tensor& t) {
  if (!t.defined()) return t;
  NoGrad ng;
  return clone(t.detach());
}

}  // namespace

Session Session::fork() const {
  Session out(*this);
  out.nll_observer_ = {};
  out.read_observer_ = {};
  for (auto& c : out.s_.caches) c = c.deep_copy();
  out.s_.chunk = out.s_.chunk.deep_copy();
  for (auto& h : out.s_.pending_h) h = deep_copy(h);
  return out;
}

// ---- save / restore ----

namespace {

std::string fmt_double(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

// A 64-bit hash of a byte range, 8 bytes at a time (not cryptographic: it tells models apart).
uint64_t mix_bytes(uint64_t h, const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  auto round = [&](uint64_t w) {
    h ^= w * 0x9E3779B97F4A7C15ull;
    h = (h << 31 | h >> 33) * 0xBF58476D1CE4E5B9ull;
  };
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    round(w);
  }
  uint64_t tail = 0;
  std::memcpy(&tail, p + i, n - i);
  round(tail ^ (static_cast<uint64_t>(n) << 56));
  return h;
}

std::string join_tokens(const std::vector<int32_t>& t) {
  std::string s;
  for (size_t i = 0; i < t.size(); ++i) {
    if (i) s += ' ';
    s += std::to_string(t[i]);
  }
  return s;
}

Tensor empty_rows(const Shape& row_shape, DType dt) {
  Shape s{0};
  s.insert(s.end(), row_shape.begin(), row_shape.end());
  return Tensor::empty(s, dt);  // zero rows: nothing to place on a device
}

// Everything read_state checks, with the file named once at the front.
class StateReader {
 public:
  // Tensors are placed on `device` (the model's) as they are taken.
  StateReader(const std::string& path, io::TensorFile file, Device device)
      : path_(path), f_(std::move(file)), device_(device) {}

  [[noreturn]] void fail(const std::string& msg) const {
    throw std::runtime_error("session state " + io::one_line(path_) + ": " + io::one_line(msg, 400));
  }

  const std::string& meta(const std::string& key) const {
    auto it = f_.metadata.find(key);
    if (it == f_.metadata.end()) fail("missing metadata field '" + key + "'");
    return it->second;
  }

  int64_t meta_int(const std::string& key, int64_t lo, int64_t hi) const {
    const std::string& s = meta(key);
    int64_t v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || p != s.data() + s.size() || s.empty())
      fail("metadata field '" + key + "' is not an integer: '" + s + "'");
    if (v < lo || v > hi)
      fail("metadata field '" + key + "' = " + s + " is out of range [" + std::to_string(lo) + ", " +
           std::to_string(hi) + "]");
    return v;
  }

  double meta_double(const std::string& key) const {
    const std::string& s = meta(key);
    char* end = nullptr;
    errno = 0;
    const double v = s.empty() ? 0.0 : std::strtod(s.c_str(), &end);
    if (s.empty() || end != s.c_str() + s.size() || !std::isfinite(v))
      fail("metadata field '" + key + "' is not a finite number: '" + s + "'");
    return v;
  }

  bool meta_bool(const std::string& key) const {
    const std::string& s = meta(key);
    if (s == "true") return true;
    if (s == "false") return false;
    fail("metadata field '" + key + "' must be 'true' or 'false', got '" + s + "'");
  }

  std::vector<int32_t> meta_tokens(const std::string& key, int64_t vocab) const {
    const std::string& s = meta(key);
    std::vector<int32_t> out;
    size_t i = 0;
    while (i < s.size()) {
      if (s[i] == ' ') {
        ++i;
        continue;
      }
      int64_t v = 0;
      auto [p, ec] = std::from_chars(s.data() + i, s.data() + s.size(), v);
      if (ec != std::errc() || (p != s.data() + s.size() && *p != ' '))
        fail("metadata field '" + key + "' is not a list of token ids");
      if (v < 0 || v >= vocab)
        fail("pending token id " + std::to_string(v) + " is out of range [0, " + std::to_string(vocab) + ")");
      out.push_back(static_cast<int32_t>(v));
      i = static_cast<size_t>(p - s.data());
    }
    return out;
  }

  // Takes the tensor out of the file, checking its shape.
  Tensor take(const std::string& name, const Shape& shape, DType dt) {
    auto it = f_.tensors.find(name);
    if (it == f_.tensors.end()) fail("missing tensor '" + name + "'");
    Tensor t = std::move(it->second);
    f_.tensors.erase(it);
    if (t.shape() != shape)
      fail("tensor '" + name + "' has shape " + shape_str(t.shape()) + ", expected " + shape_str(shape));
    // A NaN or an infinity in a state would poison every step after it (issue 25).
    if (const int64_t bad = count_nonfinite(t); bad > 0)
      fail("tensor '" + name + "' holds a non-finite value (" + std::to_string(bad) + " of " +
           std::to_string(t.numel()) + " elements)");
    NoGrad ng;
    if (t.dtype() != dt) t = to_dtype(t, dt);
    return to_device(t, device_);
  }
  // A mixer state tensor: a row count that differs is named as such (e.g. a window cache cut
  // at the wrong position).
  Tensor take_state(const std::string& name, const Shape& shape, DType dt, const std::string& why) {
    if (shape.empty()) return take(name, shape, dt);
    return take_rows(name, shape[0], Shape(shape.begin() + 1, shape.end()), dt, why);
  }
  // [rows, ...row_shape] with exactly `rows` rows.
  Tensor take_rows(const std::string& name, int64_t rows, const Shape& row_shape, DType dt, const std::string& why) {
    auto it = f_.tensors.find(name);
    if (it != f_.tensors.end() && it->second.dim() >= 1 && it->second.size(0) != rows &&
        Shape(it->second.shape().begin() + 1, it->second.shape().end()) == row_shape)
      fail("tensor '" + name + "' holds " + std::to_string(it->second.size(0)) + " rows, expected " +
           std::to_string(rows) + " (" + why + ")");
    Shape s{rows};
    s.insert(s.end(), row_shape.begin(), row_shape.end());
    return take(name, s, dt);
  }

  bool has_meta(const std::string& key) const { return f_.metadata.count(key) > 0; }

  // A mixer state tensor is bf16 in the file exactly when the state's kv_dtype says so.
  void check_stored_dtype(const std::string& name, bool want_bf16, const char* kv) const {
    auto it = f_.tensors.find(name);
    if (it == f_.tensors.end()) return;  // take() names the missing tensor
    const bool is_bf16 = it->second.dtype() == DType::BF16;
    if (is_bf16 != want_bf16)
      fail("tensor '" + name + "' is stored as " + (is_bf16 ? "bf16" : "float") + ", but the state's kv_dtype is " +
           kv);
  }

  void check_no_leftovers() const {
    if (!f_.tensors.empty()) fail("unexpected tensor '" + f_.tensors.begin()->first + "'");
  }

 private:
  std::string path_;
  io::TensorFile f_;
  Device device_;
};

std::string first_config_difference(const std::string& a, const std::string& b) {
  std::istringstream sa(a), sb(b);
  std::string la, lb;
  auto trim = [](std::string s) {
    while (!s.empty() && (s.back() == ',' || s.back() == ' ')) s.pop_back();
    size_t i = s.find_first_not_of(' ');
    return i == std::string::npos ? std::string() : s.substr(i);
  };
  while (true) {
    const bool ga = static_cast<bool>(std::getline(sa, la)), gb = static_cast<bool>(std::getline(sb, lb));
    if (!ga && !gb) return "";
    if (!ga || !gb || la != lb) return "state has " + trim(ga ? la : "") + ", model has " + trim(gb ? lb : "");
  }
}

}  // namespace

uint64_t Session::param_checksum() const {
  if (have_checksum_) return checksum_;
  NoGrad ng;
  uint64_t h = 0x243F6A8885A308D3ull;
  for (const auto& [name, t] : m_.named_parameters()) {
    h = mix_bytes(h, name.data(), name.size());
    h = mix_bytes(h, t.shape().data(), t.shape().size() * sizeof(int64_t));
    std::vector<unsigned char> bytes(static_cast<size_t>(t.numel()) * dtype_size(t.dtype()));
    copy_to_host(t, bytes.data());  // once per session: the checksum is cached
    h = mix_bytes(h, bytes.data(), bytes.size());
  }
  checksum_ = h;
  have_checksum_ = true;
  return h;
}

void Session::save_state(const std::string& path) const {
  const auto& cfg = m_.config();
  const DType dt = m_.dtype();  // the compute dtype (the embedding may be bf16)
  const int64_t first = cfg.first_prime_layer(), L = cfg.num_hidden_layers;
  std::map<std::string, std::string> meta;
  meta["format"] = kStateFormat;
  meta["version"] = kStateVersion;
  meta["model_config"] = model::config_to_json(cfg);
  meta["param_checksum"] = hex64(param_checksum());
  meta["model_dtype"] = dtype_name(dt);
  meta["position"] = std::to_string(s_.pos);
  meta["ttt_steps"] = std::to_string(s_.steps);
  meta["chunk_start_position"] = std::to_string(s_.chunk_pos0);
  meta["pending_tokens"] = join_tokens(s_.pending_tokens);
  meta["ttt"] = s_.opt.ttt ? "true" : "false";
  meta["inner_lr"] = fmt_double(s_.opt.inner_lr);
  meta["clip_norm"] = fmt_double(s_.opt.clip_norm);
  // Written only for a bf16 cache: float32 sessions' files stay as they were (absent = f32).
  if (s_.opt.kv_dtype != model::KvDtype::F32) meta["kv_dtype"] = model::kv_dtype_name(s_.opt.kv_dtype);

  NoGrad ng;
  std::vector<std::pair<std::string, Tensor>> ts;
  // Each block's mixer state under its own names; an empty state as the tensors it stands for.
  auto add_state = [&](const std::string& prefix, int64_t l, const model::MixerState& st) {
    const auto& mx = m_.mixer(l);
    const auto names = mx.state_names();
    const auto tensors = st.empty() ? mx.initial_state_tensors(dt) : st.tensors;
    for (size_t j = 0; j < names.size(); ++j) ts.emplace_back(prefix + std::to_string(l) + "." + names[j], tensors[j]);
  };
  for (int64_t l = 0; l < L; ++l) add_state("cache.", l, s_.caches[l]);
  for (int64_t l = first; l < L; ++l) add_state("chunk_start.", l, s_.chunk.mixers[l - first]);
  if (cfg.prime) {
    static const char* kNames[3] = {"w1", "w3", "w2"};
    for (int64_t l = first; l < L; ++l)
      for (int j = 0; j < 3; ++j)
        ts.emplace_back("phi." + std::to_string(l) + "." + kNames[j], s_.chunk.phi[3 * (l - first) + j].detach());
  }
  ts.emplace_back("pending_h", s_.pending_h.empty() ? empty_rows({cfg.hidden_size}, dt) : concat(s_.pending_h, 0));
  Tensor logits = Tensor::empty({static_cast<int64_t>(s_.last_logits.size())}, DType::F32);
  copy_from_host(s_.last_logits.data(), logits);  // host floats into a (CPU) tensor for the file
  ts.emplace_back("last_logits", logits);
  // A bf16 window cache keeps its bits; everything else is stored in the compute dtype.
  std::vector<io::StoreAs> as;
  for (const auto& [name, t] : ts)
    as.push_back(t.dtype() == DType::BF16 ? io::StoreAs::BF16 : dt == DType::F64 ? io::StoreAs::F64 : io::StoreAs::F32);
  io::write_safetensors(path, ts, as, meta);
}

Session::State Session::read_state(const std::string& path) const {
  const auto& cfg = m_.config();
  const DType dt = m_.dtype();  // the compute dtype (the embedding may be bf16)
  const int64_t first = cfg.first_prime_layer(), L = cfg.num_hidden_layers, b = cfg.mini_batch_size;
  io::ReadOptions ro;  // mixer states stored as bf16 (a bf16 window cache) stay bf16
  ro.keep_bf16 = [](const std::string& name) { return name.rfind("cache.", 0) == 0 || name.rfind("chunk_start.", 0) == 0; };
  StateReader r(path, io::read_safetensors(path, ro), m_.device());

  // Identity first: nothing else is meaningful for a different format or model.
  const std::string& format = r.meta("format");
  if (format != kStateFormat) r.fail("not a session state (format '" + format + "', expected '" + kStateFormat + "')");
  const std::string& version = r.meta("version");
  if (version != kStateVersion)
    r.fail("unsupported session state version '" + version + "' (this build reads version " + kStateVersion + ")");
  const std::string& cfg_text = r.meta("model_config");
  const std::string own_cfg = model::config_to_json(cfg);
  if (cfg_text != own_cfg) {
    model::ModelConfig saved;
    try {
      saved = model::config_from_json(cfg_text);
    } catch (const std::exception& e) {
      r.fail(std::string("metadata field 'model_config' is not a valid config (") + e.what() + ")");
    }
    const std::string diff = first_config_difference(model::config_to_json(saved), own_cfg);
    if (!diff.empty()) r.fail("saved for a different model config: " + diff);
  }
  const std::string& dtype = r.meta("model_dtype");
  if (dtype != dtype_name(dt))
    r.fail("saved for a " + dtype + " model, this model is " + dtype_name(dt));
  const std::string& sum = r.meta("param_checksum");
  if (sum != hex64(param_checksum()))
    r.fail("saved for a model with different parameters (checksum " + sum + ", this model " +
           hex64(param_checksum()) + ")");

  State s;
  s.opt.ttt = r.meta_bool("ttt");
  s.opt.inner_lr = r.meta_double("inner_lr");
  s.opt.clip_norm = r.meta_double("clip_norm");
  // Files from before the bf16 cache have no kv_dtype: theirs is f32.
  if (r.has_meta("kv_dtype")) {
    try {
      s.opt.kv_dtype = model::parse_kv_dtype(r.meta("kv_dtype"));
    } catch (const std::invalid_argument& e) {
      r.fail(std::string("metadata field 'kv_dtype': ") + e.what());
    }
  }
  if (!(s.opt.clip_norm > 0)) r.fail("metadata field 'clip_norm' must be positive");
  s.use_ttt = s.opt.ttt && cfg.prime;
  constexpr int64_t kMax = int64_t{1} << 62;
  s.pos = r.meta_int("position", 0, kMax);
  s.steps = r.meta_int("ttt_steps", 0, kMax);
  s.chunk_pos0 = r.meta_int("chunk_start_position", 0, kMax);
  s.pending_tokens = r.meta_tokens("pending_tokens", cfg.vocab_size);
  const int64_t pending = static_cast<int64_t>(s.pending_tokens.size());

  // The counts must describe a state that stepping could have produced.
  if (s.use_ttt) {
    if (s.steps > kMax / b || s.chunk_pos0 != s.steps * b)
      r.fail("chunk_start_position " + std::to_string(s.chunk_pos0) + " does not equal ttt_steps * b = " +
             std::to_string(s.steps) + " * " + std::to_string(b));
    if (s.chunk_pos0 > s.pos || pending != s.pos - s.chunk_pos0)
      r.fail(std::to_string(pending) + " pending tokens, but position " + std::to_string(s.pos) +
             " - chunk_start_position " + std::to_string(s.chunk_pos0) + " = " +
             std::to_string(s.pos - s.chunk_pos0));
    if (pending > b) r.fail(std::to_string(pending) + " pending tokens exceed the chunk size b = " + std::to_string(b));
    if (s.pos > 0 && pending == 0) r.fail("no pending tokens at position " + std::to_string(s.pos));
  } else {
    if (s.steps != 0) r.fail("ttt_steps is " + std::to_string(s.steps) + " but test-time training is off");
    if (pending != 0) r.fail(std::to_string(pending) + " pending tokens but test-time training is off");
    if (s.chunk_pos0 != 0) r.fail("chunk_start_position is nonzero but test-time training is off");
  }

  // Each block's mixer state, with the shapes its mixer gives for the position.
  // A bf16 window cache must be stored as bf16 and an f32 one as f32 (no silent conversion).
  auto state_at = [&](const std::string& prefix, int64_t l, int64_t pos, const std::string& why) {
    const auto& mx = m_.mixer(l);
    const auto names = mx.state_names();
    const auto shapes = mx.state_shapes(pos);
    const model::MixerState start = mx.start_state(s.opt.kv_dtype);
    model::MixerState st;
    bool any = false;
    for (size_t j = 0; j < names.size(); ++j) {
      const std::string name = prefix + std::to_string(l) + "." + names[j];
      const DType want = start.empty() ? dt : start.tensors[j].dtype();
      r.check_stored_dtype(name, want == DType::BF16, model::kv_dtype_name(s.opt.kv_dtype));
      st.tensors.push_back(r.take_state(name, shapes[j], want, why));
      any |= st.tensors.back().numel() > 0;
    }
    if (!any) st = start;  // an empty state stays empty (or zero-row bf16), as after reset()
    return st;
  };
  for (int64_t l = 0; l < L; ++l)
    s.caches.push_back(state_at("cache.", l, s.pos, m_.mixer(l).describe() + " at position " + std::to_string(s.pos)));
  for (int64_t l = first; l < L; ++l)
    s.chunk.mixers.push_back(state_at("chunk_start.", l, s.use_ttt ? s.chunk_pos0 : 0,
                                      "the state at chunk_start_position " + std::to_string(s.chunk_pos0)));
  const model::Phi phi0 = m_.phi0();
  if (cfg.prime) {
    static const char* kNames[3] = {"w1", "w3", "w2"};
    for (int64_t l = first; l < L; ++l)
      for (int j = 0; j < 3; ++j)
        s.chunk.phi.push_back(r.take("phi." + std::to_string(l) + "." + kNames[j], phi0[3 * (l - first) + j].shape(), dt));
  }
  {
    Tensor h = r.take_rows("pending_h", pending, {cfg.hidden_size}, dt,
                           std::to_string(pending) + " pending tokens");
    NoGrad ng;
    for (int64_t i = 0; i < pending; ++i) s.pending_h.push_back(contiguous(slice(h, 0, i, i + 1)));
  }
  {
    Tensor lg = r.take("last_logits", {s.pos > 0 ? cfg.vocab_size : 0}, DType::F32);
    s.last_logits = lg.to_floats();
  }
  r.check_no_leftovers();
  return s;
}

void Session::restore_state(const std::string& path) {
  State s = read_state(path);  // throws before anything changes
  if (s.opt.kv_dtype != s_.opt.kv_dtype)
    throw std::runtime_error("session state " + io::one_line(path) + ": holds a " +
                             model::kv_dtype_name(s.opt.kv_dtype) + " window cache, this session keeps " +
                             model::kv_dtype_name(s_.opt.kv_dtype) + " (--kv-dtype is fixed when a session is made)");
  s_ = std::move(s);
}

Session Session::load_state(const model::Model& m, const std::string& path) {
  Session out(m);
  out.s_ = out.read_state(path);  // a session made from a file keeps the file's kv dtype
  return out;
}

}  // namespace ttt::inference
