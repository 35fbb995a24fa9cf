// ttt._ttt: the engine as a Python extension (nanobind). SPEC section 10; python/ttt/__init__.py
// adds the keyword front ends (train, import_checkpoint) and re-exports these classes.
//
// Every call reaches the same engine functions as the CLI command it mirrors, so results are
// bit-identical on the same thread count:
//   Model.eval          inference::evaluate_tokens          (`ttt eval --nll-out`)
//   Model.grad          inference::checked_gradient         (`ttt grad`)
//   Session.feed        inference::Session::feed            (`ttt generate`'s prompt)
//   Session.generate    inference::generate                 (`ttt generate`)
//   Tokenizer.encode    data::Tokenizer::encode_append      (`ttt tokenize`)
//   _train              train::run_training                 (`ttt train`)
//
// Threads: long calls release the GIL and hold one engine lock (the engine's thread pool serves
// one caller at a time), so other Python threads keep running. Ctrl-C: the engine loops poll
// io::check_cancelled between chunks and steps (a KeyboardInterrupt comes back); Session.feed
// feeds in pieces that end where the engine's own segments end, checking between them.
// Errors: std::invalid_argument -> ValueError, other std::exception -> RuntimeError, both with
// the CLI's one-line message.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/filesystem.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <exception>
#include <filesystem>
#include <limits>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "autodiff/ops.h"
#include "backend/cpu/bf16_gemm.h"
#include "backend/thread_pool.h"
#include "data/tokenizer.h"
#include "eval/long_context.h"
#include "inference/evaluate.h"
#include "inference/generation.h"
#include "inference/sampling.h"
#include "inference/session.h"
#include "io/cancel.h"
#include "io/messages.h"
#include "io/safetensors.h"
#include "io/tokens.h"
#include "model/config.h"
#include "model/model.h"
#include "model/orbax_import.h"
#include "model/presets.h"
#include "train/run.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace {

using ttt::Tensor;
using FloatArray = nb::ndarray<nb::numpy, float>;
using IntArray = nb::ndarray<nb::numpy, int32_t>;

// ---------------------------------------------------------------------------------------------
// Engine calls: GIL released, one caller at a time, Ctrl-C polled.

std::mutex& engine_lock() {
  static std::mutex m;
  return m;
}

// A callback (on_step) that calls back into the engine would wait for the lock its own thread
// holds: refused with an error instead.
thread_local bool t_in_engine = false;

struct EngineLock {
  std::unique_lock<std::mutex> lock;
  EngineLock() {
    if (t_in_engine) throw std::runtime_error("ttt: an on_step callback cannot call the engine (collect, then call after)");
    lock = std::unique_lock<std::mutex>(engine_lock());
    t_in_engine = true;
  }
  ~EngineLock() { t_in_engine = false; }
};

// Called by the engine loops (GIL released): true when a signal handler raised, which leaves the
// exception (KeyboardInterrupt) set for this thread; the translator below then reports it.
bool signals_pending() {
  nb::gil_scoped_acquire gil;
  return PyErr_CheckSignals() != 0;
}

// Seconds the last engine call spent inside the engine (GIL released, lock held): what the Python
// overhead is measured against (scripts/bench_python.py).
double g_engine_seconds = 0;

struct EngineTimer {
  std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
  ~EngineTimer() { g_engine_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); }
};

template <class F>
auto engine_call(F&& f) {
  nb::gil_scoped_release release;
  EngineLock lock;
  ttt::io::CancelScope cancel(signals_pending);
  EngineTimer timer;
  return f();
}

// ---------------------------------------------------------------------------------------------
// Arrays in: any 1-D integer array-like (list, tuple, numpy, __array__, __dlpack__).

[[noreturn]] void bad_tokens(const std::string& what, const std::string& why) {
  throw std::invalid_argument(what + ": " + why);
}

int32_t checked_id(long long v, size_t i, const std::string& what) {
  if (v < std::numeric_limits<int32_t>::min() || v > std::numeric_limits<int32_t>::max())
    bad_tokens(what, "element " + std::to_string(i) + " (" + std::to_string(v) + ") does not fit a token id");
  return static_cast<int32_t>(v);
}

template <class T>
void copy_ids(const nb::ndarray<nb::ro>& a, std::vector<int32_t>& out, const std::string& what) {
  const T* p = static_cast<const T*>(a.data());
  const int64_t stride = a.ndim() == 1 ? a.stride(0) : 1;
  const size_t n = a.ndim() == 1 ? a.shape(0) : 0;
  out.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const T v = p[static_cast<int64_t>(i) * stride];
    if constexpr (std::is_unsigned_v<T>) {
      if (static_cast<unsigned long long>(v) > static_cast<unsigned long long>(std::numeric_limits<int32_t>::max()))
        bad_tokens(what, "element " + std::to_string(i) + " (" + std::to_string(v) + ") does not fit a token id");
      out[i] = static_cast<int32_t>(v);
    } else {
      out[i] = checked_id(static_cast<long long>(v), i, what);
    }
  }
}

std::vector<int32_t> from_ndarray(const nb::ndarray<nb::ro>& a, const std::string& what) {
  if (a.device_type() != nb::device::cpu::value)
    bad_tokens(what, "the array is not in CPU memory (move it to the CPU first, e.g. tensor.cpu())");
  if (a.ndim() != 1) bad_tokens(what, "expected a 1-D array of token ids, got " + std::to_string(a.ndim()) + " dimensions");
  const auto dt = a.dtype();
  std::vector<int32_t> out;
  if (a.shape(0) == 0) return out;
  if (dt.code == static_cast<uint8_t>(nb::dlpack::dtype_code::Int)) {
    switch (dt.bits) {
      case 8: copy_ids<int8_t>(a, out, what); return out;
      case 16: copy_ids<int16_t>(a, out, what); return out;
      case 32: copy_ids<int32_t>(a, out, what); return out;
      case 64: copy_ids<int64_t>(a, out, what); return out;
    }
  } else if (dt.code == static_cast<uint8_t>(nb::dlpack::dtype_code::UInt)) {
    switch (dt.bits) {
      case 8: copy_ids<uint8_t>(a, out, what); return out;
      case 16: copy_ids<uint16_t>(a, out, what); return out;
      case 32: copy_ids<uint32_t>(a, out, what); return out;
      case 64: copy_ids<uint64_t>(a, out, what); return out;
    }
  }
  const char* kind = dt.code == static_cast<uint8_t>(nb::dlpack::dtype_code::Float) ? "float"
                     : dt.code == static_cast<uint8_t>(nb::dlpack::dtype_code::Bool) ? "bool"
                                                                                       : "non-integer";
  bad_tokens(what, std::string("token ids must be integers, got a ") + kind + std::to_string(dt.bits) + " array");
}

std::vector<int32_t> to_tokens(nb::handle h, const std::string& what = "tokens") {
  PyObject* o = h.ptr();
  if (PyList_Check(o) || PyTuple_Check(o)) {
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(o);
    PyObject** items = PySequence_Fast_ITEMS(o);
    std::vector<int32_t> out(static_cast<size_t>(n));
    for (Py_ssize_t i = 0; i < n; ++i) {
      PyObject* it = items[i];
      if (!PyLong_Check(it) || PyBool_Check(it)) {
        if (PyIndex_Check(it) && !PyBool_Check(it)) {  // numpy integer scalars
          nb::object idx = nb::steal(PyNumber_Index(it));
          if (!idx.is_valid()) throw nb::python_error();
          it = idx.ptr();
          int overflow = 0;
          const long long v = PyLong_AsLongLongAndOverflow(it, &overflow);
          if (overflow) bad_tokens(what, "element " + std::to_string(i) + " does not fit a token id");
          out[static_cast<size_t>(i)] = checked_id(v, static_cast<size_t>(i), what);
          continue;
        }
        bad_tokens(what, "element " + std::to_string(i) + " is a " + Py_TYPE(it)->tp_name + ", not an integer token id");
      }
      int overflow = 0;
      const long long v = PyLong_AsLongLongAndOverflow(it, &overflow);
      if (overflow) bad_tokens(what, "element " + std::to_string(i) + " does not fit a token id");
      out[static_cast<size_t>(i)] = checked_id(v, static_cast<size_t>(i), what);
    }
    return out;
  }
  if (PyLong_Check(o) || PyUnicode_Check(o) || PyBytes_Check(o) || o == Py_None)
    bad_tokens(what, std::string("expected a 1-D array-like of token ids, got ") + Py_TYPE(o)->tp_name);
  nb::ndarray<nb::ro> a;
  if (nb::try_cast(h, a, false)) return from_ndarray(a, what);
  if (nb::hasattr(h, "__array__") || nb::hasattr(h, "__array_interface__")) {
    nb::object arr = nb::module_::import_("numpy").attr("asarray")(h);
    if (nb::try_cast(arr, a, false)) return from_ndarray(a, what);
  }
  if (PySequence_Check(o)) {  // other sequences of ints (range, array.array, ...)
    nb::object lst = nb::steal(PySequence_List(o));
    if (!lst.is_valid()) throw nb::python_error();
    return to_tokens(lst, what);
  }
  bad_tokens(what, std::string("expected a 1-D array-like of token ids, got ") + Py_TYPE(o)->tp_name);
}

// ---------------------------------------------------------------------------------------------
// Arrays out: numpy arrays over the engine's own buffers (no copy), kept alive by a capsule.

template <class T>
nb::ndarray<nb::numpy, T> numpy_from(std::vector<T>&& v) {
  auto* p = new std::vector<T>(std::move(v));
  nb::capsule owner(p, [](void* q) noexcept { delete static_cast<std::vector<T>*>(q); });
  const size_t shape[1] = {p->size()};
  return nb::ndarray<nb::numpy, T>(p->data(), 1, shape, owner);
}

// A host-addressable (CPU) tensor is shared without a copy; device memory is copied to the host
// once (ttt::to_device), the named boundary of README "Backends and devices".
FloatArray numpy_from(const Tensor& t) {
  const Tensor host = ttt::to_device(t, ttt::Device::cpu());
  auto* p = new Tensor(host.is_contiguous() ? host : ttt::contiguous(host));
  nb::capsule owner(p, [](void* q) noexcept { delete static_cast<Tensor*>(q); });
  std::vector<size_t> shape(p->shape().begin(), p->shape().end());
  return FloatArray(p->data<float>(), shape.size(), shape.data(), owner);
}

nb::object json_loads(const std::string& text) { return nb::module_::import_("json").attr("loads")(text); }
std::string json_dumps(nb::handle obj) { return nb::cast<std::string>(nb::module_::import_("json").attr("dumps")(obj)); }

// ---------------------------------------------------------------------------------------------
// Objects.

struct Model {
  std::shared_ptr<ttt::model::Model> m;
};

struct Session {
  std::shared_ptr<ttt::model::Model> m;  // the session reads it: kept alive
  std::unique_ptr<ttt::inference::Session> s;
};

Model model_load(const std::filesystem::path& dir, const std::string& weights, const std::string& compute) {
  auto w = ttt::model::parse_weights(weights);
  if (compute != "f32" && compute != "bf16") throw std::invalid_argument("compute must be \"f32\" or \"bf16\", got '" + compute + "'");
  const bool bf16 = compute == "bf16";
  if (bf16 && !ttt::kernels::cpu_has_avx512_bf16())
    throw std::invalid_argument("compute=\"bf16\" needs a CPU with AVX512_BF16 (this one has none); use weights=\"bf16\" instead");
  if (bf16) w = ttt::model::Weights::BF16;  // as `--compute bf16`: the large matrices held bf16
  return Model{engine_call([&] {
    auto m = std::make_shared<ttt::model::Model>(ttt::model::Model::load(dir.string(), w));
    m->set_bf16_products(bf16);
    return m;
  })};
}

Model model_init(nb::handle config, uint64_t seed) {
  std::string text;
  if (nb::isinstance<nb::str>(config)) text = nb::cast<std::string>(config);
  else if (nb::isinstance<nb::dict>(config)) text = json_dumps(config);
  else throw std::invalid_argument(std::string("config: expected a dict (the fields of config.json), got ") + Py_TYPE(config.ptr())->tp_name);
  ttt::model::ModelConfig cfg;
  try {
    cfg = ttt::model::config_from_json(text);
  } catch (const std::exception& e) {
    throw std::invalid_argument(e.what());  // a bad argument: ValueError
  }
  return Model{engine_call([&] { return std::make_shared<ttt::model::Model>(ttt::model::Model::init(cfg, seed)); })};
}

ttt::io::TokenPairs split(const Model& m, nb::handle tokens) {
  const auto ids = to_tokens(tokens);
  try {
    return ttt::io::split_tokens(ids, m.m->config().vocab_size, "tokens");
  } catch (const std::exception& e) {
    throw std::invalid_argument(e.what());  // a bad argument: ValueError
  }
}

nb::tuple model_eval(const Model& m, nb::handle tokens, bool ttt_on, bool stream, const std::string& kv_dtype) {
  const auto tok = split(m, tokens);
  ttt::e2e::TTTOptions opt;
  opt.ttt = ttt_on;
  opt.kv_dtype = ttt::model::parse_kv_dtype(kv_dtype);  // invalid_argument: ValueError
  auto res = engine_call([&] { return ttt::inference::evaluate_tokens(*m.m, tok.inputs, tok.targets, opt, stream); });
  return nb::make_tuple(res.loss, numpy_from(std::move(res.nll)));
}

nb::tuple model_grad(const Model& m, nb::handle tokens, bool ttt_on, double inner_lr, int64_t graph_budget_mb) {
  const auto tok = split(m, tokens);
  if (m.m->has_bf16_weights())
    throw std::invalid_argument("grad needs float32 weights; this model holds bf16 ones (load it with weights=\"f32\")");
  if (graph_budget_mb < -1) throw std::invalid_argument("graph_budget_mb must be >= -1");
  ttt::e2e::TTTOptions opt;
  opt.ttt = ttt_on;
  opt.inner_lr = inner_lr;
  ttt::e2e::validate(opt);
  auto res = engine_call([&] {
    struct Restore {
      ttt::model::Model& m;
      ~Restore() { m.set_requires_grad(false); }
    } restore{*m.m};
    m.m->set_requires_grad(true);
    return ttt::inference::checked_gradient(*m.m, tok.inputs, tok.targets, opt,
                                            ttt::e2e::GraphBudget::megabytes(graph_budget_mb));
  });
  nb::dict grads;
  const auto& params = m.m->named_parameters();
  for (size_t i = 0; i < res.grads.size(); ++i) grads[nb::str(params[i].first.c_str())] = numpy_from(res.grads[i]);
  return nb::make_tuple(res.loss, grads);
}

nb::tuple model_eval_long(const Model& m, nb::list docs, int64_t length, bool ttt_on) {
  std::vector<std::vector<int32_t>> ds;
  for (size_t i = 0; i < docs.size(); ++i) {
    ds.push_back(to_tokens(docs[i], "docs[" + std::to_string(i) + "]"));
    if (static_cast<int64_t>(ds.back().size()) < length + 1)
      throw std::invalid_argument("docs[" + std::to_string(i) + "] holds " + std::to_string(ds.back().size()) +
                                  " tokens; length " + std::to_string(length) + " needs at least " +
                                  std::to_string(length + 1));
    try {
      ttt::io::split_tokens(ds.back(), m.m->config().vocab_size, "docs[" + std::to_string(i) + "]");
    } catch (const std::exception& e) {
      throw std::invalid_argument(e.what());
    }
  }
  if (ds.empty()) throw std::invalid_argument("docs: give at least one document");
  if (length < 1) throw std::invalid_argument("length must be >= 1");
  auto curve = engine_call([&] { return ttt::eval::position_nll(*m.m, ds, length, ttt_on); });
  std::vector<float> per_doc;
  per_doc.reserve(curve.doc_nll.size() * static_cast<size_t>(length));
  for (const auto& d : curve.doc_nll) per_doc.insert(per_doc.end(), d.begin(), d.end());
  std::vector<float> mean(curve.mean_nll.begin(), curve.mean_nll.end());
  auto* p = new std::vector<float>(std::move(per_doc));
  nb::capsule owner(p, [](void* q) noexcept { delete static_cast<std::vector<float>*>(q); });
  const size_t shape[2] = {curve.doc_nll.size(), curve.doc_nll.empty() ? 0 : curve.doc_nll[0].size()};
  return nb::make_tuple(numpy_from(std::move(mean)), FloatArray(p->data(), 2, shape, owner));
}

Session make_session(const Model& m, bool ttt_on, double inner_lr, const std::string& kv_dtype) {
  ttt::e2e::TTTOptions opt;
  opt.ttt = ttt_on;
  opt.inner_lr = inner_lr;
  opt.kv_dtype = ttt::model::parse_kv_dtype(kv_dtype);
  ttt::e2e::validate(opt);
  return Session{m.m, std::make_unique<ttt::inference::Session>(*m.m, opt)};
}

Session load_session(const Model& m, const std::filesystem::path& path) {
  return Session{m.m, engine_call([&] {
                   return std::make_unique<ttt::inference::Session>(ttt::inference::Session::load_state(*m.m, path.string()));
                 })};
}

// Feeds in pieces that end exactly where Session::feed's own segments end (a TTT step due, or
// 1024 tokens without TTT), so the result is bit for bit one feed's; signals are checked between
// pieces. A Python on_step sees each TTT step (chunk index, loss); if it raises, the feed stops at
// the end of the current piece and the exception comes back.
FloatArray session_feed(Session& s, nb::handle tokens, nb::handle on_step) {
  std::vector<int32_t> ids = to_tokens(tokens);
  const auto& cfg = s.m->config();
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] < 0 || ids[i] >= cfg.vocab_size)
      throw std::invalid_argument("token " + std::to_string(i) + " has id " + std::to_string(ids[i]) +
                                  ", out of range [0, " + std::to_string(cfg.vocab_size) + ")");
  if (ids.empty()) {
    if (s.s->last_logits().empty()) throw std::invalid_argument("feed: no tokens (and nothing read yet)");
    return numpy_from(std::vector<float>(s.s->last_logits()));
  }
  std::exception_ptr callback_error;
  ttt::inference::Session::StepObserver observer;
  nb::object cb = nb::borrow(on_step);
  if (!cb.is_none()) {
    if (!PyCallable_Check(cb.ptr())) throw std::invalid_argument("on_step must be callable");
    observer = [&](int64_t chunk, double loss) {
      nb::gil_scoped_acquire gil;
      if (callback_error) return;
      try {
        cb(chunk, loss);
      } catch (...) {
        callback_error = std::current_exception();
      }
    };
  }
  std::vector<float> logits;
  bool interrupted = false;
  {
    nb::gil_scoped_release release;
    EngineLock lock;
    EngineTimer timer;
    const int64_t total = static_cast<int64_t>(ids.size()), b = cfg.mini_batch_size;
    if (total <= (s.s->ttt_enabled() ? 1 : 1024)) {
      logits = s.s->feed(ids, observer);
    } else {
      int64_t i = 0;
      while (i < total) {
        int64_t n;
        if (s.s->ttt_enabled()) {
          const int64_t pending = s.s->pending_tokens();
          n = pending == b ? b : b - pending;  // the piece ends where the next step is due
        } else {
          n = 1024;
        }
        n = std::min(n, total - i);
        logits = s.s->feed(std::vector<int32_t>(ids.begin() + i, ids.begin() + i + n), observer);
        i += n;
        if (i < total && (callback_error || signals_pending())) {
          interrupted = !callback_error;
          break;
        }
      }
    }
  }
  if (callback_error) std::rethrow_exception(callback_error);
  if (interrupted) throw nb::python_error();
  return numpy_from(std::move(logits));
}

IntArray session_generate(Session& s, int64_t max_new_tokens, double temperature, int64_t top_k, double top_p,
                          uint64_t seed, double repetition_penalty, int64_t repetition_window, nb::handle prompt,
                          nb::handle stop_ids) {
  if (max_new_tokens < 0)
    throw std::invalid_argument("max_new_tokens must be >= 0, got " + std::to_string(max_new_tokens));
  ttt::inference::GenerateOptions go;
  go.max_new_tokens = max_new_tokens;
  go.sampling.temperature = temperature;
  go.sampling.top_k = top_k;
  go.sampling.top_p = top_p;
  go.sampling.seed = seed;
  go.sampling.repetition_penalty = repetition_penalty;
  go.sampling.repetition_window = repetition_window;
  go.feed_last = true;  // the session is kept: it has read its whole answer
  ttt::inference::validate(go.sampling);
  std::vector<int32_t> p;
  if (!prompt.is_none()) p = to_tokens(prompt, "prompt");
  if (!stop_ids.is_none()) go.stop_ids = to_tokens(stop_ids, "stop_ids");
  bool interrupted = false;
  auto res = [&] {
    nb::gil_scoped_release release;
    EngineLock lock;
    ttt::io::CancelScope cancel(signals_pending);
    return ttt::inference::generate(*s.s, p, go, [&](int32_t, int64_t) {
      interrupted = signals_pending();
      return !interrupted;
    });
  }();
  if (interrupted) throw nb::python_error();
  return numpy_from(std::move(res.tokens));
}

// ---------------------------------------------------------------------------------------------
// Training (`ttt train`): options as keywords.

nb::dict run_train(nb::dict kw) {
  ttt::train::TrainRequest r;
  auto& o = r.o;
  bool quiet = true;
  nb::object on_step = nb::none();
  for (auto [k, v] : kw) {
    const std::string key = nb::cast<std::string>(k);
    if (v.is_none()) continue;
    auto str = [&](std::string& dst) { dst = nb::cast<std::string>(nb::str(v)); };
    auto i64 = [&](int64_t& dst) { dst = nb::cast<int64_t>(v); };
    auto f64 = [&](double& dst) { dst = nb::cast<double>(v); };
    auto flag = [&](bool& dst) { dst = nb::cast<bool>(v); };
    try {
      if (key == "out") str(o.out_dir);
      else if (key == "model") str(r.model);
      else if (key == "config") str(r.config);
      else if (key == "data") str(r.data);
      else if (key == "tokens") str(r.tokens);
      else if (key == "tokenizer") str(r.tokenizer);
      else if (key == "seed") r.seed = nb::cast<uint64_t>(v);
      else if (key == "val_fraction") f64(r.val_fraction);
      else if (key == "needle_mix") f64(r.needle_mix);
      else if (key == "needle_pairs") i64(r.needle_pairs);
      else if (key == "no_remat") flag(r.no_remat);
      else if (key == "steps") i64(o.steps);
      else if (key == "seq_len") i64(o.seq_len);
      else if (key == "batch") i64(o.batch);
      else if (key == "lr") f64(o.lr);
      else if (key == "min_lr") f64(o.min_lr);
      else if (key == "warmup_frac") f64(o.warmup_frac);
      else if (key == "weight_decay") f64(o.adamw.weight_decay);
      else if (key == "wd_matrices_only") flag(o.adamw.decay_matrices_only);
      else if (key == "clip") f64(o.clip);
      else if (key == "ilr_init") f64(o.ilr_init);
      else if (key == "ilr_warmup_frac") f64(o.ilr_warmup_frac);
      else if (key == "val_every") i64(o.val_every);
      else if (key == "val_seqs") i64(o.val_seqs);
      else if (key == "ckpt_every") i64(o.ckpt_every);
      else if (key == "resume") flag(o.resume);
      else if (key == "stop_after") i64(o.stop_after);
      else if (key == "max_bad_steps") i64(o.max_bad_steps);
      else if (key == "graph_budget_mb") i64(o.graph_budget_mb);
      else if (key == "quiet") flag(quiet);
      else if (key == "on_step") on_step = nb::borrow(v);
      else throw std::invalid_argument("train: unknown option '" + key + "'");
    } catch (const nb::cast_error&) {
      throw std::invalid_argument("train: option '" + key + "' cannot be a " + Py_TYPE(v.ptr())->tp_name);
    }
  }
  if (o.out_dir.empty()) throw std::invalid_argument("train: give out (the output directory)");
  if (o.steps <= 0) throw std::invalid_argument("--steps must be positive");  // CLI11's check of the CLI
  if (!(r.needle_mix >= 0 && r.needle_mix <= 1)) throw std::invalid_argument("--needle-mix must be in [0, 1]");
  if (r.needle_pairs <= 0) throw std::invalid_argument("--needle-pairs must be positive");
  if (o.graph_budget_mb < -1) throw std::invalid_argument("--graph-budget-mb must be >= -1");
  std::exception_ptr callback_error;
  if (!on_step.is_none()) {
    if (!PyCallable_Check(on_step.ptr())) throw std::invalid_argument("on_step must be callable");
    // A raising callback stops training at the next step boundary (as Ctrl-C does).
    o.on_step = [&](const std::string& line) {
      nb::gil_scoped_acquire gil;
      if (callback_error) return;
      try {
        on_step(json_loads(line));
      } catch (...) {
        callback_error = std::current_exception();
      }
    };
  }
  ttt::train::TrainSummary sum;
  try {
    sum = [&] {
      nb::gil_scoped_release release;
      EngineLock lock;
      ttt::io::CancelScope cancel([&] { return callback_error != nullptr || signals_pending(); });
      return ttt::train::run_training(std::move(r), quiet ? nullptr : stderr);
    }();
  } catch (const ttt::io::Cancelled&) {
    if (callback_error) std::rethrow_exception(callback_error);
    throw;
  }
  if (callback_error) std::rethrow_exception(callback_error);
  nb::dict d;
  d["steps_done"] = sum.steps_done;
  d["steps_skipped"] = sum.steps_skipped;
  d["loss"] = sum.last_loss;
  d["val_loss"] = sum.last_val >= 0 ? nb::cast(sum.last_val) : nb::none();
  return d;
}

// `ttt import` with the converter and Python given (python/ttt/__init__.py picks them).
Model import_checkpoint(const std::string& from, const std::string& out, const std::string& size,
                        const std::string& config, const std::string& dtype, const std::string& python,
                        const std::string& converter) {
  if (dtype != "f32" && dtype != "bf16") throw std::invalid_argument("--dtype must be f32 or bf16, got " + dtype);
  ttt::model::OrbaxImport a;
  a.from = from;
  a.out = out;
  a.size = size;
  a.config = config;
  a.dtype = dtype;
  a.python = python;
  a.converter = converter;
  if (a.size.empty() == a.config.empty()) throw std::invalid_argument("give exactly one of --size and --config");
  return Model{engine_call([&] { return std::make_shared<ttt::model::Model>(ttt::model::import_orbax(a)); })};
}

}  // namespace

NB_MODULE(_ttt, mod) {
  mod.doc() = "TTT-E2E engine (C++): models, decoding sessions with test-time training, tokenizers, training";

  // One-line messages, the CLI's; Ctrl-C inside the engine comes back as KeyboardInterrupt.
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const ttt::io::Cancelled&) {
      if (!PyErr_Occurred()) PyErr_SetNone(PyExc_KeyboardInterrupt);
    } catch (const std::invalid_argument& e) {
      PyErr_SetString(PyExc_ValueError, ttt::io::one_line(e.what(), 4000).c_str());
    } catch (const std::bad_alloc&) {
      PyErr_SetString(PyExc_MemoryError, "out of memory");
    } catch (const std::exception& e) {
      PyErr_SetString(PyExc_RuntimeError, ttt::io::one_line(e.what(), 4000).c_str());
    }
  });

  mod.def("_last_engine_seconds", [] { return g_engine_seconds; },
          "Seconds the last long call spent inside the engine (the rest of its time is the binding's).");
  mod.def("num_threads", &ttt::num_threads, "Threads of the engine's kernels (TTT_NUM_THREADS, else the cores).");
  mod.def(
      "set_num_threads",
      [](int n) {
        if (n < 1) throw std::invalid_argument("set_num_threads: n must be >= 1, got " + std::to_string(n));
        nb::gil_scoped_release release;  // never wait for the engine holding the GIL
        EngineLock lock;
        ttt::set_num_threads(n);
      },
      "n"_a);

  nb::class_<Model>(mod, "Model")
      .def_static("load", &model_load, "dir"_a, "weights"_a = "auto", "compute"_a = "f32",
                  "A model directory (config.json, model.safetensors). weights: f32, bf16 or auto. compute: f32, or "
                  "bf16 (as `--compute bf16`: bf16 weights and bf16 x bf16 products, AMX where the CPU has it).")
      .def_static("init", &model_init, "config"_a, "seed"_a = 0, "Random initialization, as `ttt init`.")
      .def_prop_ro("config", [](const Model& m) { return json_loads(ttt::model::config_to_json(m.m->config())); })
      .def(
          "save",
          [](const Model& m, const std::filesystem::path& dir, const std::string& dtype) {
            if (dtype != "f32" && dtype != "bf16") throw std::invalid_argument("dtype must be f32 or bf16, got " + dtype);
            engine_call([&] {
              std::filesystem::create_directories(dir);
              m.m->save(dir.string(), dtype == "bf16" ? ttt::model::Storage::BF16 : ttt::model::Storage::F32);
              return 0;
            });
          },
          "dir"_a, "dtype"_a = "f32")
      .def("eval", &model_eval, "tokens"_a.none(), "ttt"_a = true, "stream"_a = false, "kv_dtype"_a = "f32",
           "T+1 tokens -> (loss, nll[T] float32), as `ttt eval --nll-out` (kv_dtype: \"f32\" or \"bf16\", as --kv-dtype).")
      .def("grad", &model_grad, "tokens"_a.none(), "ttt"_a = true, "inner_lr"_a = 1.0, "graph_budget_mb"_a = -1,
           "T+1 tokens -> (loss, {parameter name: gradient}), as `ttt grad`.")
      .def("eval_long", &model_eval_long, "docs"_a, "length"_a, "ttt"_a = true,
           "NLL per position over documents (the `ttt eval-long` curve): (mean[length], per_doc[docs, length]).")
      .def("session", &make_session, "ttt"_a = true, "inner_lr"_a = 1.0, "kv_dtype"_a = "f32",
           "A decoding session (SPEC section 3); kv_dtype \"bf16\" keeps attention's window cache in bfloat16.")
      .def("load_session", &load_session, "path"_a, "A session from a state file (`ttt generate --state-out`).")
      .def_prop_ro("num_parameters",
                   [](const Model& m) {
                     int64_t n = 0;
                     for (auto& [name, t] : m.m->named_parameters()) n += t.numel();
                     return n;
                   })
      .def("parameter_names", [](const Model& m) {
        std::vector<std::string> names;
        for (auto& [name, t] : m.m->named_parameters()) names.push_back(name);
        return names;
      });

  nb::class_<Session>(mod, "Session")
      .def("feed", &session_feed, "tokens"_a.none(), "on_step"_a = nb::none(),
           "Reads tokens; returns the logits [V] after the last one. on_step(chunk, loss) sees each TTT step.")
      .def("generate", &session_generate, "max_new_tokens"_a, "temperature"_a = 1.0, "top_k"_a = 0, "top_p"_a = 1.0,
           "seed"_a = 0, "repetition_penalty"_a = 1.0, "repetition_window"_a = 64, "prompt"_a = nb::none(),
           "stop_ids"_a = nb::none(), "Samples new tokens (int32), each read by the session.")
      .def("fork", [](const Session& s) {
        return Session{s.m, engine_call([&] { return std::make_unique<ttt::inference::Session>(s.s->fork()); })};
      })
      .def("reset", [](Session& s) { engine_call([&] { s.s->reset(); return 0; }); })
      .def("save", [](const Session& s, const std::filesystem::path& path) { engine_call([&] { s.s->save_state(path.string()); return 0; }); },
           "path"_a)
      .def_prop_ro("position", [](const Session& s) { return s.s->position(); })
      .def_prop_ro("ttt_steps", [](const Session& s) { return s.s->ttt_steps(); })
      .def_prop_ro("pending_tokens", [](const Session& s) { return s.s->pending_tokens(); })
      .def_prop_ro("ttt", [](const Session& s) { return s.s->ttt_enabled(); })
      .def_prop_ro("state_bytes", [](const Session& s) { return s.s->state_bytes(); })
      .def_prop_ro("last_logits", [](const Session& s) -> nb::object {
        if (s.s->last_logits().empty()) return nb::none();
        return nb::cast(numpy_from(std::vector<float>(s.s->last_logits())));
      });

  nb::class_<ttt::data::Tokenizer>(mod, "Tokenizer")
      .def_static("load", [](const std::filesystem::path& path) { return engine_call([&] { return ttt::data::Tokenizer::load(path.string()); }); },
                  "path"_a)
      .def(
          "encode",
          [](const ttt::data::Tokenizer& t, nb::handle text, bool bos) {
            std::string s;
            if (nb::isinstance<nb::str>(text)) s = nb::cast<std::string>(text);
            else if (nb::isinstance<nb::bytes>(text)) s.assign(nb::cast<nb::bytes>(text).c_str(), nb::len(text));
            else throw std::invalid_argument(std::string("encode: expected str or bytes, got ") + Py_TYPE(text.ptr())->tp_name);
            std::vector<int32_t> ids;
            if (bos) {
              if (t.bos_id() < 0) throw std::invalid_argument("--bos: tokenizer " + t.path() + " has no BOS token");
              ids.push_back(t.bos_id());
            }
            nb::gil_scoped_release release;
            t.encode_append(s, ids);
            nb::gil_scoped_acquire gil;
            return numpy_from(std::move(ids));
          },
          "text"_a, "bos"_a = false, "Text -> int32 ids, as `ttt tokenize` (no BOS unless asked).")
      .def(
          "decode",
          [](const ttt::data::Tokenizer& t, nb::handle ids, const std::string& errors) {
            const auto v = to_tokens(ids, "ids");
            std::string s;
            try {
              s = t.decode(v);
            } catch (const std::exception& e) {
              throw std::invalid_argument(std::string("ids: ") + e.what());
            }
            PyObject* u = PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), errors.c_str());
            if (!u) throw nb::python_error();
            return nb::steal<nb::str>(u);
          },
          "ids"_a.none(), "errors"_a = "replace", "Ids -> text (bytes that are not UTF-8: errors='replace' by default).")
      .def(
          "decode_bytes",
          [](const ttt::data::Tokenizer& t, nb::handle ids) {
            const auto v = to_tokens(ids, "ids");
            std::string s;
            try {
              s = t.decode(v);
            } catch (const std::exception& e) {
              throw std::invalid_argument(std::string("ids: ") + e.what());
            }
            return nb::bytes(s.data(), s.size());
          },
          "ids"_a)
      .def_prop_ro("vocab_size", &ttt::data::Tokenizer::vocab_size)
      .def_prop_ro("bos_id", &ttt::data::Tokenizer::bos_id)
      .def_prop_ro("eos_id", &ttt::data::Tokenizer::eos_id)
      .def_prop_ro("format", [](const ttt::data::Tokenizer& t) { return std::string(t.format_name()); });

  mod.def("_train", &run_train, "options"_a);
  mod.def("_import_checkpoint", &import_checkpoint, "source"_a, "out"_a, "size"_a, "config"_a, "dtype"_a, "python"_a,
          "converter"_a);
  mod.def("_official_config", [](const std::string& size) {
    return json_loads(ttt::model::config_to_json(ttt::model::official_config(size)));
  });
}
