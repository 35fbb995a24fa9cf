// `ttt train`: pretraining (full attention, SWA, hybrid) and meta-learning (TTT-E2E) of SPEC
// section 4, with gradient accumulation, periodic validation, atomic checkpoints and exact resume.
//
// Output directory:
//   config.json, model.safetensors   the latest weights (rewritten at every checkpoint and at the end)
//   checkpoint/                      model, optimizer moments and trainer.json (step, sampler state);
//                                    written to a temporary directory and renamed into place
//   metrics.jsonl                    one JSON object per step and per validation
//
// A fresh run (no --resume) starts metrics.jsonl anew; every start removes what a killed run
// left behind (temporary checkpoint directories and files of dead processes).
//   loss.png                         training and validation loss curves
#pragma once
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>

#include "model/model.h"
#include "train/optimizer.h"
#include "train/sequence_source.h"

namespace ttt::dist {
class Communicator;
}

namespace ttt::train {

struct TrainOptions {
  int64_t steps = 200;
  int64_t seq_len = 1024;  // T: inputs per sequence (T+1 tokens are drawn)
  int64_t batch = 1;       // sequences per step (gradient accumulation)
  double lr = 3e-3, min_lr = 1e-5, warmup_frac = 0.1;
  AdamWOptions adamw;
  double clip = 1.0;
  // Meta mode: inner learning rate from ilr_init to 1.0 over the first ilr_warmup_frac of steps
  // (0: 1.0 throughout, as for context extension).
  double ilr_init = 0.1, ilr_warmup_frac = 0.1;
  // Memory the meta-gradient may hold in chunk graphs (e2e::GraphBudget): the first chunks keep
  // theirs within it, the rest are rematerialized. -1: a quarter of physical memory; 0:
  // rematerialize every chunk; a huge value: keep every graph (no recomputation).
  int64_t graph_budget_mb = -1;
  int64_t val_every = 50, val_seqs = 4;  // val_every 0: no validation
  int64_t ckpt_every = 50;               // 0: only at the end
  std::string out_dir;
  bool resume = false;
  int64_t stop_after = 0;  // stop once this step is reached (checkpointed), to resume later; 0: never
  uint64_t seed = 0;  // recorded; the data source carries its own seeded sampler
  bool plot = true;
  // A step whose loss or gradient norm is not finite is skipped (no update, logged in
  // metrics.jsonl as "skipped"); this many skips in a row stop training with an error.
  int64_t max_bad_steps = 5;
  // Data parallel (`mpirun -np N ttt train`): null or one rank is a single process. `batch` stays
  // the global batch; rank r computes the gradients of its contiguous share of every step's
  // sequences, which every rank draws from the same sampler. Neither option changes the
  // trajectory, so a run may resume with another number of ranks or sharding.
  dist::Communicator* comm = nullptr;
  // With a model on a GPU: a communicator over device memory (NCCL, one GPU per rank, beside
  // `comm`) that sums the gradients where they are; null sums them through host memory.
  dist::Communicator* device_comm = nullptr;
  bool zero1 = false;  // ZeRO-1: each rank keeps the AdamW moments of its share of the parameters
  // Sees every step's metrics.jsonl line (JSON text, without the newline) once it is written, on
  // the rank that reports (progress callbacks of embedding programs: the Python module).
  std::function<void(const std::string& metrics_line)> on_step;
};

// checkpoint/trainer.json: the step reached, the optimizer's step count and the data sampler's
// state. parse_trainer_state checks the format, every field's type and range (step within
// [0, o.steps]) and that the options that fix the run's trajectory equal `o`; errors are one
// line starting "cannot resume: <path>".
struct TrainerState {
  int64_t step = 0, optimizer_steps = 0;
  std::string data_state;
};
TrainerState parse_trainer_state(std::string_view text, const TrainOptions& o, const std::string& path);

// The lines of metrics.jsonl text to keep when resuming at `step`: whole JSON-object lines whose
// integer "step" is at most `step`; anything else (a torn last line, garbage) is dropped.
std::string metrics_through_step(std::string_view text, int64_t step);

// DIR/loss.png from DIR/metrics.jsonl (training and validation loss per step). Lines without a
// finite value (a skipped step, a null validation loss) give no point; a chart that cannot be
// drawn is a warning on stderr, never an error: a plot must not stop a training run.
void write_loss_plot(const std::filesystem::path& dir);

// Throws std::invalid_argument naming the first option that is out of range or not finite.
void validate_options(const TrainOptions& o);

struct StepResult {
  double loss = 0, grad_norm = 0, lr = 0, inner_lr = 1;
  bool skipped = false;  // loss or gradient not finite: nothing was applied
  double comm_seconds = 0;  // inside collectives (several ranks)
  int64_t chunks = 0, kept_chunks = 0;  // meta-gradient chunks, and of those not rematerialized (summed over sequences)
};

struct TrainSummary {
  int64_t steps_done = 0, steps_skipped = 0;
  double last_loss = 0, last_val = -1;
};

// One optimizer step over `batch` sequences of seq_len+1 tokens (exposed for the benchmark);
// not applied (skipped = true) if the loss or the gradient norm is not finite. Under o.comm with
// several ranks, `seqs` is this rank's share of the o.batch sequences of the step. The
// sequences' gradients (each divided by the batch) are summed in one fixed pairwise order: a
// balanced binary tree over the step's sequences, of which each rank's share is a subtree when
// batch / ranks and ranks are powers of two; then the per-rank results are bit-identical to one
// process.
StepResult train_step(model::Model& m, AdamW& opt, const std::vector<std::vector<int32_t>>& seqs,
                      const TrainOptions& o, int64_t step);

// Mean validation loss (prefill; with test-time training for models with prime blocks).
double validation_loss(const model::Model& m, const std::vector<std::vector<int32_t>>& seqs);

TrainSummary train(model::Model& m, SequenceSource& data, const TrainOptions& o, std::FILE* progress);

}  // namespace ttt::train
