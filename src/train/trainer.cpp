#include "train/trainer.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include <signal.h>
#include <unistd.h>

#include <cerrno>

#include "dist/communicator.h"
#include "dist/device_allreduce.h"
#include "io/atomic_file.h"
#include "io/cancel.h"
#include "io/file_read.h"
#include "io/json_read.h"
#include "io/messages.h"
#include "io/safetensors.h"
#include "report/plot.h"
#include "ttt/meta_gradient.h"
#include "ttt/inner_loop.h"

namespace ttt::train {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

using Clock = std::chrono::steady_clock;
constexpr uint64_t kMaxMetricsBytes = uint64_t{1} << 30;

std::string fmt_duration(double s) {
  if (!(s >= 0) || s > 1e7) return "?";
  const long t = static_cast<long>(s + 0.5);
  char buf[32];
  if (t >= 3600)
    std::snprintf(buf, sizeof buf, "%ldh%02ldm", t / 3600, (t / 60) % 60);
  else
    std::snprintf(buf, sizeof buf, "%ldm%02lds", t / 60, t % 60);
  return buf;
}

json options_json(const TrainOptions& o) {
  return {{"steps", o.steps},         {"seq_len", o.seq_len},   {"batch", o.batch},
          {"lr", o.lr},               {"min_lr", o.min_lr},     {"warmup_frac", o.warmup_frac},
          {"beta1", o.adamw.beta1},   {"beta2", o.adamw.beta2}, {"weight_decay", o.adamw.weight_decay},
          {"clip", o.clip},           {"ilr_init", o.ilr_init}, {"ilr_warmup_frac", o.ilr_warmup_frac},
          {"seed", o.seed},           {"wd_matrices_only", o.adamw.decay_matrices_only},
          // The schedules, decay mask and pretraining objective of the official recipe; a
          // checkpoint of the earlier recipe cannot continue under this one.
          {"recipe", "official-1"}};
}

// Options that must not change across a resume for it to continue exactly.
void check_resume_options(const json& saved, const TrainOptions& o) {
  if (!saved.is_object()) throw std::runtime_error("cannot resume: the checkpoint's options are not an object");
  const json now = options_json(o);
  for (auto& [k, v] : now.items())
    if (!saved.contains(k) || saved[k] != v)
      throw std::runtime_error("cannot resume: option " + k + " was " +
                               (saved.contains(k) ? io::one_line(saved[k].dump(), 60) : "unset") + " in the checkpoint, now " +
                               v.dump());
}

void write_checkpoint(const fs::path& out, const model::Model& m, const AdamW& opt,
                      const std::vector<std::pair<std::string, Tensor>>& moments, const SequenceSource& data,
                      const TrainOptions& o, int64_t step) {
  // The last good checkpoint is worth more than this one: never replace it with poisoned weights.
  const std::string bad = model::first_nonfinite_parameter(m);
  if (!bad.empty())
    throw std::runtime_error("train: parameter " + bad + " is not finite at step " + std::to_string(step) +
                             "; the last checkpoint was kept");
  const fs::path dir = out / "checkpoint";
  const fs::path tmp = out / ("checkpoint.tmp-" + std::to_string(getpid()));
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  m.save(tmp.string());
  io::write_safetensors((tmp / "optimizer.safetensors").string(), moments, io::StoreAs::F32);
  json st = {{"format", "ttt-train-checkpoint"}, {"version", 1},          {"step", step},
             {"optimizer_steps", opt.steps()},   {"data_state", data.state()}, {"options", options_json(o)}};
  const std::string text = st.dump(2) + "\n";
  io::write_file_atomic((tmp / "trainer.json").string(), text.data(), text.size());
  // Swap directories: the old checkpoint stays complete until the new one is in place.
  const fs::path old = out / "checkpoint.old";
  fs::remove_all(old);
  if (fs::exists(dir)) fs::rename(dir, old);
  fs::rename(tmp, dir);
  fs::remove_all(old);
  m.save(out.string());  // the latest weights at the top level too (atomic files)
}

int64_t read_checkpoint(const fs::path& out, model::Model& m, AdamW& opt, SequenceSource& data, const TrainOptions& o) {
  const fs::path dir = out / "checkpoint";  // recover_output_dir already put back a checkpoint.old
  if (!fs::exists(dir / "trainer.json")) throw std::runtime_error("cannot resume: no checkpoint in " + out.string());
  const std::string tj = (dir / "trainer.json").string();
  const TrainerState st = parse_trainer_state(io::read_regular_file(tj, "training state", uint64_t{1} << 24), o, tj);
  const int64_t step = st.step, opt_steps = st.optimizer_steps;
  const std::string& data_state = st.data_state;
  const auto saved = model::Model::load(dir.string(), model::Weights::F32);  // trains: float32
  if (const std::string bad = model::first_nonfinite_parameter(saved); !bad.empty())
    throw std::runtime_error("cannot resume: the checkpoint's parameter " + bad + " is not finite");
  if (model::config_to_json(saved.config()) != model::config_to_json(m.config()))
    throw std::runtime_error("cannot resume: the checkpoint's model config differs from the model being trained");
  // Copy the weights into the live parameters (the optimizer holds references to them).
  for (size_t i = 0; i < m.named_parameters().size(); ++i) {
    const Tensor& dst = m.named_parameters()[i].second;
    const Tensor& src = saved.named_parameters()[i].second;
    assign(dst, to_device(src, dst.device()));
  }
  auto file = io::read_safetensors((dir / "optimizer.safetensors").string());
  std::vector<std::pair<std::string, Tensor>> moments(file.tensors.begin(), file.tensors.end());
  opt.load_state(moments, opt_steps);
  data.restore(data_state);
  return step;
}

// Keeps metrics.jsonl consistent with a resumed run: drops lines after the checkpoint's step.
void truncate_metrics(const fs::path& path, int64_t step) {
  std::error_code ec;
  if (!fs::exists(fs::symlink_status(path, ec))) return;
  const std::string kept = metrics_through_step(io::read_regular_file(path.string(), "metrics file", kMaxMetricsBytes), step);
  io::write_file_atomic(path.string(), kept.data(), kept.size());
}

// What a kill -9 leaves in an output directory: temporary checkpoint directories of dead
// processes, temporary files of interrupted atomic writes, and, if the kill fell between the two
// renames of write_checkpoint, the previous checkpoint under checkpoint.old only.
void recover_output_dir(const fs::path& out, std::FILE* progress) {
  std::error_code ec;
  size_t removed = io::remove_stale_temp_files(out.string()) + io::remove_stale_temp_files((out / "checkpoint").string());
  const std::string prefix = "checkpoint.tmp-";
  for (const auto& e : fs::directory_iterator(out, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(prefix, 0) != 0) continue;
    const std::string digits = name.substr(prefix.size());
    if (digits.empty() || digits.size() > 10 || digits.find_first_not_of("0123456789") != std::string::npos) continue;
    const long pid = std::stol(digits);
    const bool dead = pid == static_cast<long>(getpid()) || (::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH);
    if (dead && fs::is_directory(fs::symlink_status(e.path(), ec))) {
      fs::remove_all(e.path(), ec);
      ++removed;
    }
  }
  const fs::path dir = out / "checkpoint", old = out / "checkpoint.old";
  if (fs::exists(old / "trainer.json", ec) && !fs::exists(dir / "trainer.json", ec)) {
    fs::remove_all(dir, ec);
    fs::rename(old, dir);  // the only complete checkpoint: put it back where it belongs
  } else if (fs::exists(old, ec)) {
    fs::remove_all(old, ec);
  }
  if (removed > 0 && progress)
    std::fprintf(progress, "removed %zu leftover temporary file(s) of an interrupted run\n", removed);
}

}  // namespace

TrainerState parse_trainer_state(std::string_view text, const TrainOptions& o, const std::string& path) {
  const std::string w = "cannot resume: " + io::one_line(path);
  json st;
  try {
    st = io::parse_json(text, "JSON");
  } catch (const io::JsonError& e) {
    throw std::runtime_error(w + " is corrupt: " + e.problem);
  }
  if (!st.is_object() || st.value("format", "") != "ttt-train-checkpoint")
    throw std::runtime_error(w + " is not a training checkpoint");
  TrainerState out;
  // A step outside [0, --steps] would train with a schedule outside its range (negative
  // learning rates) or not at all.
  out.step = io::json_int(io::json_field(st, "step", w), 0, o.steps, w + ": step");
  out.optimizer_steps = io::json_int(io::json_field(st, "optimizer_steps", w), 0, out.step, w + ": optimizer_steps");
  out.data_state = io::json_string(io::json_field(st, "data_state", w), w + ": data_state");
  check_resume_options(io::json_field(st, "options", w), o);
  return out;
}

void write_loss_plot(const fs::path& out) {
  std::string text;
  try {
    text = io::read_regular_file((out / "metrics.jsonl").string(), "metrics file", kMaxMetricsBytes);
  } catch (const std::exception&) {
    return;  // a plot is a convenience, never a reason to stop training
  }
  report::Series train{"training loss", {}, {}}, val{"validation loss", {}, {}};
  val.markers = true;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    try {
      const json j = io::parse_json(line, "metrics line");
      // A skipped step or a non-finite validation loss is written as null: no point for it.
      const auto number = [&](const char* key) {
        const auto it = j.find(key);
        return it != j.end() && it->is_number() ? it->get<double>() : std::nan("");
      };
      const double step = number("step"), loss = number("loss"), v = number("val_loss");
      if (std::isfinite(step) && std::isfinite(loss)) {
        train.x.push_back(step);
        train.y.push_back(loss);
      }
      if (std::isfinite(step) && std::isfinite(v)) {
        val.x.push_back(step);
        val.y.push_back(v);
      }
    } catch (...) {
    }
  }
  if (train.x.empty()) return;
  report::ChartOptions c;
  c.title = "Training: " + out.filename().string();
  c.x_label = "step";
  c.y_label = "loss (nats/token)";
  std::vector<report::Series> series = {train};
  if (!val.x.empty()) series.push_back(val);
  try {
    report::write_line_chart((out / "loss.png").string(), series, c);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "warning: %s/loss.png not drawn: %s\n", out.c_str(), e.what());
  }
}

std::string metrics_through_step(std::string_view text, int64_t step) {
  std::string kept;
  size_t at = 0;
  while (at < text.size()) {
    size_t nl = text.find('\n', at);
    const bool torn = nl == std::string_view::npos;  // no newline: a line cut short by a kill
    if (torn) nl = text.size();
    const std::string_view line = text.substr(at, nl - at);
    at = nl + 1;
    if (torn) break;
    try {
      const json j = io::parse_json(line, "metrics line");
      if (!j.is_object()) continue;
      const auto it = j.find("step");
      if (it == j.end() || !it->is_number_integer()) continue;
      if (it->is_number_unsigned() ? it->get<uint64_t>() <= static_cast<uint64_t>(std::max<int64_t>(step, 0))
                                   : it->get<int64_t>() <= step) {
        kept.append(line);
        kept += '\n';
      }
    } catch (const std::exception&) {
      // not a metrics line: dropped
    }
  }
  return kept;
}

void validate_options(const TrainOptions& o) {
  auto bad = [](const std::string& what) { throw std::invalid_argument("train: " + what); };
  auto finite_in = [&](double v, double lo, double hi, const char* name, const char* range) {
    if (!std::isfinite(v) || v < lo || v > hi) bad(std::string(name) + " must be " + range + ", got " + std::to_string(v));
  };
  if (o.out_dir.empty()) bad("an output directory is required");
  if (o.steps < 1 || o.batch < 1 || o.seq_len < 1) bad("steps, batch and seq-len must be positive");
  if (o.seq_len > (int64_t{1} << 30) || o.batch > (int64_t{1} << 20) || o.steps > (int64_t{1} << 40))
    bad("steps, batch or seq-len is implausibly large");
  finite_in(o.lr, 0, 1e6, "--lr", "a finite number >= 0");
  finite_in(o.min_lr, 0, 1e6, "--min-lr", "a finite number >= 0");
  finite_in(o.warmup_frac, 0, 1, "--warmup-frac", "in [0, 1]");
  finite_in(o.adamw.beta1, 0, 0.999999, "beta1", "in [0, 1)");
  finite_in(o.adamw.beta2, 0, 0.999999, "beta2", "in [0, 1)");
  if (!std::isfinite(o.adamw.eps) || !(o.adamw.eps > 0)) bad("AdamW eps must be a finite number > 0");
  finite_in(o.adamw.weight_decay, 0, 1e6, "--weight-decay", "a finite number >= 0");
  if (!std::isfinite(o.clip) || !(o.clip > 0)) bad("--clip must be a finite number > 0, got " + std::to_string(o.clip));
  finite_in(o.ilr_init, 0, 1e6, "--ilr-init", "a finite number >= 0");
  finite_in(o.ilr_warmup_frac, 0, 1, "--ilr-warmup-frac", "in [0, 1]");
  if (o.val_every < 0 || o.ckpt_every < 0 || o.stop_after < 0) bad("--val-every, --ckpt-every and --stop-after must be >= 0");
  if (o.val_every > 0 && o.val_seqs < 1) bad("--val-seqs must be positive");
  if (o.max_bad_steps < 1) bad("--max-bad-steps must be positive");
}

namespace {

// Sums leaves arriving one by one in a balanced binary tree over their order: a leaf is pushed,
// equal-sized neighbours merge (left + right), and what remains folds from the right. The result
// is the recursive sum whose left half is the largest power of two below the count, so a
// power-of-two block of leaves sums the same way alone as inside a larger batch.
template <class T, class Add>
class PairwiseSum {
 public:
  explicit PairwiseSum(Add add) : add_(add) {}
  void push(T leaf) {
    stack_.push_back({1, std::move(leaf)});
    while (stack_.size() >= 2 && stack_[stack_.size() - 2].first == stack_.back().first) {
      auto right = std::move(stack_.back());
      stack_.pop_back();
      stack_.back().second = add_(stack_.back().second, right.second);
      stack_.back().first *= 2;
    }
  }
  T total() {
    T acc = std::move(stack_.back().second);
    for (size_t i = stack_.size() - 1; i-- > 0;) acc = add_(stack_[i].second, acc);
    return acc;
  }
  bool empty() const { return stack_.empty(); }

 private:
  Add add_;
  std::vector<std::pair<int64_t, T>> stack_;
};

// Sums the gradients (and the loss) of every rank in place; every rank gets the same bits.
// With device_comm (NCCL) and gradients on a GPU, the sums run on the device buffers themselves.
void allreduce_grads(dist::Communicator& comm, dist::Communicator* device_comm, std::vector<Tensor>& grads,
                     double& loss) {
  size_t n = 0;
  for (auto& g : grads) {
    if (g.dtype() != DType::F32) g = to_dtype(g, DType::F32);
    if (!g.is_contiguous()) g = contiguous(g);
    n += static_cast<size_t>(g.numel());
  }
  if (device_comm && !grads.empty() && grads.front().device().kind == DeviceKind::CUDA) {
    dist::allreduce_on_device(*device_comm, grads, loss);
    return;
  }
  std::vector<float> flat(n);
  size_t at = 0;
  for (const auto& g : grads) {  // the collective works on host memory (src/dist)
    copy_to_host(g, flat.data() + at);
    at += static_cast<size_t>(g.numel());
  }
  comm.allreduce_sum(flat.data(), n);
  comm.allreduce_sum(&loss, 1);
  at = 0;
  for (auto& g : grads) {
    Tensor out = Tensor::empty(g.shape(), DType::F32, g.device());
    copy_from_host(flat.data() + at, out);
    at += static_cast<size_t>(g.numel());
    g = out;
  }
}

// ZeRO-1 ownership: each parameter to the rank with the fewest elements so far, largest first.
std::vector<int> shard_owners(const std::vector<std::pair<std::string, Tensor>>& params, int ranks) {
  std::vector<size_t> order(params.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return params[a].second.numel() > params[b].second.numel(); });
  std::vector<int64_t> load(static_cast<size_t>(ranks), 0);
  std::vector<int> owner(params.size(), 0);
  for (size_t i : order) {
    const int r = static_cast<int>(std::min_element(load.begin(), load.end()) - load.begin());
    owner[i] = r;
    load[static_cast<size_t>(r)] += params[i].second.numel();
  }
  return owner;
}

void broadcast_tensor(dist::Communicator& comm, const Tensor& t, int root) {
  std::vector<float> host(static_cast<size_t>(t.numel()));  // the collective works on host memory
  copy_to_host(t, host.data());
  comm.broadcast(host.data(), host.size() * sizeof(float), root);
  copy_from_host(host.data(), t);
}

void broadcast_string(dist::Communicator& comm, std::string& s) {
  uint64_t n = s.size();
  comm.broadcast(&n, sizeof n, 0);
  s.resize(n);
  if (n > 0) comm.broadcast(s.data(), n, 0);
}

}  // namespace

StepResult train_step(model::Model& m, AdamW& opt, const std::vector<std::vector<int32_t>>& seqs,
                      const TrainOptions& o, int64_t step) {
  StepResult r;
  const int64_t warm = static_cast<int64_t>(std::ceil(o.warmup_frac * static_cast<double>(o.steps)));
  r.lr = cosine_lr(step, o.steps, warm, o.lr, o.min_lr);
  const int64_t ilr_warm = static_cast<int64_t>(std::ceil(o.ilr_warmup_frac * static_cast<double>(o.steps)));
  r.inner_lr = inner_lr_warmup(step, ilr_warm, o.ilr_init);
  e2e::TTTOptions topt;
  topt.inner_lr = r.inner_lr;
  const bool distributed = o.comm && o.comm->size() > 1;
  const double batch = static_cast<double>(distributed ? o.batch : static_cast<int64_t>(seqs.size()));
  auto add_grads = [](const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
    NoGrad ng;
    std::vector<Tensor> s(a.size());
    for (size_t i = 0; i < a.size(); ++i) s[i] = add(a[i], b[i]);
    return s;
  };
  auto add_scalars = [](double a, double b) { return a + b; };
  PairwiseSum<std::vector<Tensor>, decltype(add_grads)> grads(add_grads);
  PairwiseSum<double, decltype(add_scalars)> losses(add_scalars);
  for (auto& seq : seqs) {
    std::vector<int32_t> in(seq.begin(), seq.end() - 1), tg(seq.begin() + 1, seq.end());
    auto g = e2e::meta_gradient(m, in, tg, topt, e2e::GraphBudget::megabytes(o.graph_budget_mb));
    r.chunks += g.chunks;
    r.kept_chunks += g.kept_chunks;
    losses.push(g.loss / batch);
    NoGrad ng;
    std::vector<Tensor> leaf(g.grads.size());
    for (size_t i = 0; i < g.grads.size(); ++i) leaf[i] = mul_scalar(g.grads[i], 1.0 / batch);
    grads.push(std::move(leaf));
  }
  if (grads.empty()) throw std::invalid_argument("train_step: no sequences");
  std::vector<Tensor> total = grads.total();
  r.loss = losses.total();
  if (distributed) {
    o.comm->reset_seconds();
    allreduce_grads(*o.comm, o.device_comm, total, r.loss);
  }
  r.grad_norm = clip_global_norm(total, o.clip);
  if (!std::isfinite(r.loss) || !std::isfinite(r.grad_norm)) {
    r.skipped = true;  // one NaN in the moments would poison every later step
    if (distributed) r.comm_seconds = o.comm->seconds();
    return r;
  }
  opt.step(total, r.lr);
  if (distributed && o.zero1) {
    // Each parameter was updated by the rank that keeps its moments: send it to the others.
    const auto& params = opt.params();
    const auto owners = shard_owners(params, o.comm->size());
    for (size_t i = 0; i < params.size(); ++i) broadcast_tensor(*o.comm, params[i].second, owners[i]);
  }
  if (distributed) r.comm_seconds = o.comm->seconds();
  return r;
}

double validation_loss(const model::Model& m, const std::vector<std::vector<int32_t>>& seqs) {
  double s = 0;
  for (auto& seq : seqs) {
    std::vector<int32_t> in(seq.begin(), seq.end() - 1), tg(seq.begin() + 1, seq.end());
    s += e2e::prefill(m, in, tg).loss;
  }
  return seqs.empty() ? std::nan("") : s / static_cast<double>(seqs.size());
}

namespace {

void check_train_setup(const model::ModelConfig& cfg, const TrainOptions& o, int ranks) {
  if (o.batch < ranks)
    throw std::invalid_argument("train: --batch " + std::to_string(o.batch) + " is smaller than the number of ranks (" +
                                std::to_string(ranks) + "): every rank needs at least one sequence per step");
  if (cfg.prime && o.seq_len % cfg.mini_batch_size != 0)
    throw std::invalid_argument("train: seq-len " + std::to_string(o.seq_len) + " is not a multiple of mini_batch_size " +
                                std::to_string(cfg.mini_batch_size) + " (meta-learning trains on whole chunks)");
}

// Rank 0: the output directory, resumed from its checkpoint (--resume) or started fresh.
// Returns the first step to run.
int64_t open_output(const fs::path& out, model::Model& m, AdamW& opt, SequenceSource& data, const TrainOptions& o,
                    std::FILE* progress) {
  int64_t start = 0;
  fs::create_directories(out);
  recover_output_dir(out, progress);
  const bool have_checkpoint = fs::exists(out / "checkpoint");
  if (o.resume && have_checkpoint) {
    start = read_checkpoint(out, m, opt, data, o);
    truncate_metrics(out / "metrics.jsonl", start);
    if (progress) std::fprintf(progress, "resumed from step %lld\n", static_cast<long long>(start));
  } else if (have_checkpoint) {
    throw std::runtime_error("train: " + out.string() + " already holds a checkpoint; use --resume or another --out");
  } else {
    // --resume of a run killed before its first checkpoint starts it again, so a supervisor can
    // always pass --resume.
    if (o.resume && progress) std::fprintf(progress, "no checkpoint in %s yet: starting from step 0\n", out.c_str());
    truncate_metrics(out / "metrics.jsonl", 0);  // lines of a run killed before its first checkpoint
  }
  return start;
}

// Rank 0's view of the run (step, sampler, weights, moments) to every rank, so that all start
// from the same bits whatever each one loaded. Returns the ZeRO-1 owners of the parameters'
// moments (empty without --zero1).
std::vector<int> sync_ranks(dist::Communicator& comm, model::Model& m, AdamW& opt, SequenceSource& data,
                            const TrainOptions& o, int64_t& start, std::FILE* progress) {
  const int rank = comm.rank(), ranks = comm.size();
  const bool lead = rank == 0;
  int64_t head[2] = {start, opt.steps()};
  comm.broadcast(head, sizeof head, 0);
  start = head[0];
  std::string st = lead ? data.state() : std::string();
  broadcast_string(comm, st);
  if (!lead) data.restore(st);
  for (const auto& [name, p] : m.named_parameters()) broadcast_tensor(comm, p, 0);
  for (size_t i = 0; i < opt.params().size(); ++i) {
    broadcast_tensor(comm, opt.moments(i).first, 0);
    broadcast_tensor(comm, opt.moments(i).second, 0);
  }
  opt.set_steps(head[1]);
  std::vector<int> owners;
  if (o.zero1) {
    owners = shard_owners(opt.params(), ranks);
    std::vector<bool> keep(owners.size());
    for (size_t i = 0; i < owners.size(); ++i) keep[i] = owners[i] == rank;
    opt.shard(keep);
  }
  if (progress) std::fprintf(progress, "data parallel: %s%s\n", comm.describe().c_str(), o.zero1 ? ", ZeRO-1 optimizer shards" : "");
  return owners;
}

// Every rank's moments, on rank 0, for a checkpoint (sharded: each from the rank that keeps it).
std::vector<std::pair<std::string, Tensor>> all_moments(dist::Communicator& comm, const AdamW& opt,
                                                        const std::vector<int>& owners) {
  if (owners.empty()) return opt.state_tensors();
  std::vector<std::pair<std::string, Tensor>> out_m;
  for (size_t i = 0; i < owners.size(); ++i) {
    const auto& [name, p] = opt.params()[i];
    auto [mm, vv] = opt.moments(i);
    if (!mm.defined()) {
      mm = zeros(p.shape(), DType::F32, p.device());
      vv = zeros(p.shape(), DType::F32, p.device());
    }
    broadcast_tensor(comm, mm, owners[i]);
    broadcast_tensor(comm, vv, owners[i]);
    out_m.emplace_back("m." + name, mm);
    out_m.emplace_back("v." + name, vv);
  }
  return out_m;
}

// The progress line: a bar, the step, loss (and validation loss), learning rates, speed, ETA.
void print_progress(std::FILE* progress, bool tty, int64_t step, const TrainOptions& o, const StepResult& r,
                    const double* val_loss, bool prime, double tokens_per_s, double eta) {
  const int width = 24;
  const int filled = static_cast<int>(width * static_cast<double>(step + 1) / static_cast<double>(o.steps));
  char bar[width + 3], val_txt[32] = "", ilr_txt[32] = "";
  bar[0] = '[';
  for (int i = 0; i < width; ++i) bar[1 + i] = i < filled ? '#' : '.';
  bar[width + 1] = ']';
  bar[width + 2] = 0;
  if (val_loss) std::snprintf(val_txt, sizeof val_txt, "  val %.4f", *val_loss);
  if (prime) std::snprintf(ilr_txt, sizeof ilr_txt, "  ilr %.2f", r.inner_lr);
  std::fprintf(progress, "%s%s step %lld/%lld  loss %.4f%s  lr %.2e%s  %.0f tok/s  ETA %s%s", tty ? "\r" : "", bar,
               static_cast<long long>(step + 1), static_cast<long long>(o.steps), r.loss, val_txt, r.lr, ilr_txt,
               tokens_per_s, fmt_duration(eta).c_str(), tty && !val_loss ? "" : "\n");
  std::fflush(progress);
}

// A skipped step (non-finite loss or gradient): logged; too many in a row stop the run (the
// metrics line written first).
void note_skipped_step(const StepResult& r, int64_t step, int64_t bad_in_a_row, const TrainOptions& o, bool tty,
                       std::FILE* progress, std::ofstream* metrics, const json& line) {
  if (progress)
    std::fprintf(progress, "%sstep %lld skipped: %s is not finite (%lld in a row)\n", tty ? "\n" : "",
                 static_cast<long long>(step + 1), std::isfinite(r.loss) ? "the gradient norm" : "the loss",
                 static_cast<long long>(bad_in_a_row));
  if (bad_in_a_row >= o.max_bad_steps) {
    if (metrics) *metrics << line.dump() << "\n" << std::flush;
    throw std::runtime_error("train: " + std::to_string(bad_in_a_row) + " steps in a row with a non-finite " +
                             (std::isfinite(r.loss) ? "gradient" : "loss") + " (last: step " + std::to_string(step + 1) +
                             "); stopped, the last checkpoint is intact");
  }
}

}  // namespace

TrainSummary train(model::Model& m, SequenceSource& data, const TrainOptions& o, std::FILE* progress) {
  const auto& cfg = m.config();
  validate_options(o);
  auto single = dist::local_communicator();
  dist::Communicator& comm = o.comm ? *o.comm : *single;
  const int rank = comm.rank(), ranks = comm.size();
  const bool lead = rank == 0;  // rank 0 alone logs, validates and writes
  if (!lead) progress = nullptr;
  check_train_setup(cfg, o, ranks);
  data.check_model(cfg.vocab_size, cfg.bos_token_id);
  const fs::path out(o.out_dir);
  m.set_requires_grad(true);
  AdamW opt(m.named_parameters(), o.adamw);
  int64_t start = lead ? open_output(out, m, opt, data, o, progress) : 0;  // the others get theirs from rank 0
  if (const std::string bad = model::first_nonfinite_parameter(m); lead && !bad.empty())
    throw std::runtime_error("train: parameter " + bad + " of the starting model is not finite");
  const std::vector<int> owners = ranks > 1 ? sync_ranks(comm, m, opt, data, o, start, progress) : std::vector<int>{};
  const int64_t my_first = o.batch * rank / ranks, my_end = o.batch * (rank + 1) / ranks;
  const auto val = lead && o.val_every > 0 ? data.validation(o.seq_len + 1, o.val_seqs) : std::vector<std::vector<int32_t>>{};
  std::ofstream metrics;
  if (lead) {
    metrics.open(out / "metrics.jsonl", std::ios::app);
    if (!metrics) throw std::runtime_error("train: cannot write " + (out / "metrics.jsonl").string());
  }
  const bool tty = progress && isatty(fileno(progress));
  TrainSummary sum;
  int64_t bad_in_a_row = 0;
  const auto t_begin = Clock::now();
  for (int64_t step = start; step < o.steps; ++step) {
    io::check_cancelled();  // between steps: the last checkpoint stays the state to resume from
    const auto t0 = Clock::now();
    std::vector<std::vector<int32_t>> seqs;  // every rank draws the whole batch and keeps its share
    for (int64_t b = 0; b < o.batch; ++b) {
      auto seq = data.next_train(o.seq_len + 1);
      if (b >= my_first && b < my_end) seqs.push_back(std::move(seq));
    }
    const StepResult r = train_step(m, opt, seqs, o, step);
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    const double toks = static_cast<double>(o.batch * o.seq_len);
    const double elapsed = std::chrono::duration<double>(Clock::now() - t_begin).count();
    const double eta = elapsed / static_cast<double>(step + 1 - start) * static_cast<double>(o.steps - step - 1);
    sum.steps_done = step + 1;
    sum.last_loss = r.loss;
    json line = {{"step", step + 1}, {"loss", r.loss},         {"lr", r.lr},
                 {"inner_lr", r.inner_lr}, {"grad_norm", r.grad_norm}, {"tokens_per_s", toks / secs},
                 {"seconds", secs}};
    if (ranks > 1) {
      line["ranks"] = ranks;
      line["comm_seconds"] = r.comm_seconds;
    }
    if (r.skipped) {
      line["skipped"] = true;
      ++sum.steps_skipped;
      note_skipped_step(r, step, ++bad_in_a_row, o, tty, progress, lead ? &metrics : nullptr, line);
    } else {
      bad_in_a_row = 0;
    }
    const bool do_val = lead && o.val_every > 0 && !val.empty() && ((step + 1) % o.val_every == 0 || step + 1 == o.steps);
    if (do_val) {
      sum.last_val = validation_loss(m, val);
      line["val_loss"] = sum.last_val;
    }
    if (lead) metrics << line.dump() << "\n" << std::flush;
    if (lead && o.on_step) o.on_step(line.dump());
    // On a terminal the bar redraws every step; in a log, about 50 lines per run plus validations.
    const int64_t every = tty ? 1 : std::max<int64_t>(1, o.steps / 50);
    if (progress && ((step + 1) % every == 0 || do_val || step + 1 == o.steps))
      print_progress(progress, tty, step, o, r, do_val ? &sum.last_val : nullptr, cfg.prime, toks / secs, eta);
    const bool stop = o.stop_after > 0 && step + 1 >= o.stop_after;
    const bool do_ckpt = (o.ckpt_every > 0 && (step + 1) % o.ckpt_every == 0) || step + 1 == o.steps || stop;
    if (do_ckpt) {
      const auto moments = all_moments(comm, opt, owners);  // a collective under ZeRO-1: every rank takes part
      if (lead) {
        write_checkpoint(out, m, opt, moments, data, o, step + 1);
        if (o.plot) write_loss_plot(out);
      }
    }
    if (stop) break;
  }
  if (tty) std::fprintf(progress, "\n");
  return sum;
}

}  // namespace ttt::train
