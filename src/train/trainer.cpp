#include "train/trainer.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include <unistd.h>

#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "report/plot.h"
#include "ttt/meta_gradient.h"
#include "ttt/test_time_training.h"

namespace ttt::train {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

using Clock = std::chrono::steady_clock;

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
          {"seed", o.seed}};
}

// Options that must not change across a resume for it to continue exactly.
void check_resume_options(const json& saved, const TrainOptions& o) {
  const json now = options_json(o);
  for (auto& [k, v] : now.items())
    if (!saved.contains(k) || saved[k] != v)
      throw std::runtime_error("cannot resume: option " + k + " was " + (saved.contains(k) ? saved[k].dump() : "unset") +
                               " in the checkpoint, now " + v.dump());
}

void write_checkpoint(const fs::path& out, const model::Model& m, const AdamW& opt, const SequenceSource& data,
                      const TrainOptions& o, int64_t step) {
  const fs::path dir = out / "checkpoint";
  const fs::path tmp = out / ("checkpoint.tmp-" + std::to_string(getpid()));
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  m.save(tmp.string());
  io::write_safetensors((tmp / "optimizer.safetensors").string(), opt.state_tensors(), io::StoreAs::F32);
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
  fs::path dir = out / "checkpoint";
  if (!fs::exists(dir / "trainer.json") && fs::exists(out / "checkpoint.old" / "trainer.json")) dir = out / "checkpoint.old";
  if (!fs::exists(dir / "trainer.json")) throw std::runtime_error("cannot resume: no checkpoint in " + out.string());
  std::ifstream f(dir / "trainer.json");
  json st;
  try {
    st = json::parse(f);
  } catch (const std::exception& e) {
    throw std::runtime_error("cannot resume: " + (dir / "trainer.json").string() + " is corrupt: " + e.what());
  }
  if (st.value("format", "") != "ttt-train-checkpoint")
    throw std::runtime_error("cannot resume: " + (dir / "trainer.json").string() + " is not a training checkpoint");
  check_resume_options(st.at("options"), o);
  const auto saved = model::Model::load(dir.string());
  if (model::config_to_json(saved.config()) != model::config_to_json(m.config()))
    throw std::runtime_error("cannot resume: the checkpoint's model config differs from the model being trained");
  // Copy the weights into the live parameters (the optimizer holds references to them).
  for (size_t i = 0; i < m.named_parameters().size(); ++i) {
    const Tensor& dst = m.named_parameters()[i].second;
    const Tensor& src = saved.named_parameters()[i].second;
    std::copy(src.data<float>(), src.data<float>() + src.numel(), dst.data<float>());
  }
  auto file = io::read_safetensors((dir / "optimizer.safetensors").string());
  std::vector<std::pair<std::string, Tensor>> moments(file.tensors.begin(), file.tensors.end());
  opt.load_state(moments, st.at("optimizer_steps").get<int64_t>());
  data.restore(st.at("data_state").get<std::string>());
  return st.at("step").get<int64_t>();
}

// Keeps metrics.jsonl consistent with a resumed run: drops lines after the checkpoint's step.
void truncate_metrics(const fs::path& path, int64_t step) {
  if (!fs::exists(path)) return;
  std::ifstream in(path);
  std::string line, kept;
  while (std::getline(in, line)) {
    try {
      if (json::parse(line).value("step", int64_t{0}) <= step) kept += line + "\n";
    } catch (...) {
      // a torn last line from a crash: dropped
    }
  }
  io::write_file_atomic(path.string(), kept.data(), kept.size());
}

// loss.png from metrics.jsonl: training loss per step and validation loss.
void write_loss_plot(const fs::path& out) {
  std::ifstream in(out / "metrics.jsonl");
  report::Series train{"training loss", {}, {}}, val{"validation loss", {}, {}};
  val.markers = true;
  std::string line;
  while (std::getline(in, line)) {
    try {
      const json j = json::parse(line);
      const double step = j.at("step").get<double>();
      train.x.push_back(step);
      train.y.push_back(j.at("loss").get<double>());
      if (j.contains("val_loss")) {
        val.x.push_back(step);
        val.y.push_back(j.at("val_loss").get<double>());
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
  report::write_line_chart_png((out / "loss.png").string(), series, c);
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
  std::vector<Tensor> total;
  for (auto& seq : seqs) {
    std::vector<int32_t> in(seq.begin(), seq.end() - 1), tg(seq.begin() + 1, seq.end());
    auto g = e2e::meta_gradient(m, in, tg, topt, o.remat);
    r.loss += g.loss / static_cast<double>(seqs.size());
    NoGrad ng;
    for (size_t i = 0; i < g.grads.size(); ++i) {
      Tensor gi = mul_scalar(g.grads[i], 1.0 / static_cast<double>(seqs.size()));
      if (total.size() <= i)
        total.push_back(gi);
      else
        total[i] = add(total[i], gi);
    }
  }
  r.grad_norm = clip_global_norm(total, o.clip);
  opt.step(total, r.lr);
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

TrainSummary train(model::Model& m, SequenceSource& data, const TrainOptions& o, std::FILE* progress) {
  const auto& cfg = m.config();
  if (o.out_dir.empty()) throw std::invalid_argument("train: an output directory is required");
  if (o.steps < 1 || o.batch < 1 || o.seq_len < 1) throw std::invalid_argument("train: steps, batch and seq-len must be positive");
  if (cfg.prime && o.seq_len % cfg.mini_batch_size != 0)
    throw std::invalid_argument("train: seq-len " + std::to_string(o.seq_len) + " is not a multiple of mini_batch_size " +
                                std::to_string(cfg.mini_batch_size) + " (meta-learning trains on whole chunks)");
  data.check_model(cfg.vocab_size, cfg.bos_token_id);
  const fs::path out(o.out_dir);
  fs::create_directories(out);
  m.set_requires_grad(true);
  AdamW opt(m.named_parameters(), o.adamw);
  int64_t start = 0;
  if (o.resume) {
    start = read_checkpoint(out, m, opt, data, o);
    truncate_metrics(out / "metrics.jsonl", start);
    if (progress) std::fprintf(progress, "resumed from step %lld\n", static_cast<long long>(start));
  } else if (fs::exists(out / "checkpoint")) {
    throw std::runtime_error("train: " + out.string() + " already holds a checkpoint; use --resume or another --out");
  }
  const auto val = o.val_every > 0 ? data.validation(o.seq_len + 1, o.val_seqs) : std::vector<std::vector<int32_t>>{};
  std::ofstream metrics(out / "metrics.jsonl", std::ios::app);
  if (!metrics) throw std::runtime_error("train: cannot write " + (out / "metrics.jsonl").string());
  const bool tty = progress && isatty(fileno(progress));
  TrainSummary sum;
  const auto t_begin = Clock::now();
  for (int64_t step = start; step < o.steps; ++step) {
    const auto t0 = Clock::now();
    std::vector<std::vector<int32_t>> seqs;
    for (int64_t b = 0; b < o.batch; ++b) seqs.push_back(data.next_train(o.seq_len + 1));
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
    if (!std::isfinite(r.loss)) throw std::runtime_error("train: loss is not finite at step " + std::to_string(step + 1));
    const bool do_val = o.val_every > 0 && !val.empty() && ((step + 1) % o.val_every == 0 || step + 1 == o.steps);
    if (do_val) {
      sum.last_val = validation_loss(m, val);
      line["val_loss"] = sum.last_val;
    }
    metrics << line.dump() << "\n" << std::flush;
    // On a terminal the bar redraws every step; in a log, about 50 lines per run plus validations.
    const int64_t every = tty ? 1 : std::max<int64_t>(1, o.steps / 50);
    if (progress && ((step + 1) % every == 0 || do_val || step + 1 == o.steps)) {
      const int width = 24;
      const int filled = static_cast<int>(width * static_cast<double>(step + 1) / static_cast<double>(o.steps));
      char bar[width + 3], val_txt[32] = "", ilr_txt[32] = "";
      bar[0] = '[';
      for (int i = 0; i < width; ++i) bar[1 + i] = i < filled ? '#' : '.';
      bar[width + 1] = ']';
      bar[width + 2] = 0;
      if (do_val) std::snprintf(val_txt, sizeof val_txt, "  val %.4f", sum.last_val);
      if (cfg.prime) std::snprintf(ilr_txt, sizeof ilr_txt, "  ilr %.2f", r.inner_lr);
      std::fprintf(progress, "%s%s step %lld/%lld  loss %.4f%s  lr %.2e%s  %.0f tok/s  ETA %s%s", tty ? "\r" : "", bar,
                   static_cast<long long>(step + 1), static_cast<long long>(o.steps), r.loss, val_txt, r.lr, ilr_txt,
                   toks / secs, fmt_duration(eta).c_str(), tty && !do_val ? "" : "\n");
      std::fflush(progress);
    }
    const bool stop = o.stop_after > 0 && step + 1 >= o.stop_after;
    const bool do_ckpt = (o.ckpt_every > 0 && (step + 1) % o.ckpt_every == 0) || step + 1 == o.steps || stop;
    if (do_ckpt) {
      write_checkpoint(out, m, opt, data, o, step + 1);
      if (o.plot) write_loss_plot(out);
    }
    if (stop) break;
  }
  if (tty) std::fprintf(progress, "\n");
  return sum;
}

}  // namespace ttt::train
