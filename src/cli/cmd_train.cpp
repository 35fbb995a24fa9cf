// `ttt train` and `ttt convert`.
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "backend/backend.h"
#include "cli/commands.h"
#include "dist/communicator.h"
#include "model/model.h"
#include "train/convert.h"
#include "train/run.h"
#include "train/trainer.h"
#include "ttt/meta_gradient.h"

namespace ttt::cli {
namespace {

struct TrainArgs {
  train::TrainRequest r;
  bool quiet = false;
  std::string allreduce = "tree";
  std::string device = "cpu";
  dist::CommOptions comm;
} g_train;

struct ConvertArgs {
  std::string model, out;
  train::ConvertOptions o;
} g_convert;

int run_train_on(TrainArgs a, dist::Communicator& comm);

int run_train(TrainArgs a) {
  a.comm.reduction = a.allreduce == "ring" ? dist::Reduction::Ring : dist::Reduction::Tree;
  if (!(a.comm.timeout_s > 0)) throw std::invalid_argument("--comm-timeout must be positive");
  auto comm = dist::make_communicator(a.comm);
  if (comm->size() == 1) return run_train_on(std::move(a), *comm);
  // Under mpirun an error on one rank must end every rank, not leave the others waiting.
  try {
    return run_train_on(std::move(a), *comm);
  } catch (const std::exception& e) {
    comm->abort(e.what());
  }
  return 1;  // not reached: abort ends the process
}

int run_train_on(TrainArgs a, dist::Communicator& comm) {
  a.r.o.comm = &comm;
  if (comm.rank() != 0) a.quiet = true;  // rank 0 alone reports
  // Under mpirun with --device cuda: one GPU per rank (plain "cuda" is the GPU of this rank's place
  // on its node, the one the NCCL communicator drives), and the gradients are summed on the GPUs
  // through NCCL where the build has it (-DTTT_NCCL=ON), else through host memory over MPI.
  std::string device_name = a.device;
  std::unique_ptr<dist::Communicator> device_comm;
  if (comm.size() > 1 && device_name.rfind("cuda", 0) == 0) {
    int gpus = 0;
    for (const auto& b : backends())
      if (b.name == "cuda") gpus = static_cast<int>(b.devices.size());
    if (device_name == "cuda" && gpus > 0) device_name = "cuda:" + std::to_string(dist::local_rank() % gpus);
#if TTT_HAVE_NCCL
    if (gpus > 0 && device_option(device_name).index == dist::local_rank() % gpus) {
      device_comm = dist::nccl_communicator(a.comm);
      a.r.o.device_comm = device_comm.get();
    }
#endif
  }
  a.r.device = device_option(device_name);
  const auto s = train::run_training(std::move(a.r), a.quiet ? nullptr : stderr);
  if (comm.rank() != 0) return 0;
  std::printf("trained %lld steps: loss %.4f", static_cast<long long>(s.steps_done), s.last_loss);
  if (s.last_val >= 0) std::printf(", validation loss %.4f", s.last_val);
  std::printf("\n");
  return 0;
}

int run_convert(const ConvertArgs& a) {
  const auto m = model::Model::load(a.model, model::Weights::F32);  // a new float32 model
  const auto t = train::convert_to_ttt(m, a.o);
  std::filesystem::create_directories(a.out);
  t.save(a.out);
  std::printf("wrote TTT-E2E model to %s (suffix_len %lld, window %lld, b %lld)\n", a.out.c_str(),
              static_cast<long long>(t.config().suffix_len), static_cast<long long>(t.config().sliding_window_size),
              static_cast<long long>(t.config().mini_batch_size));
  return 0;
}

}  // namespace

void register_train_commands(CLI::App& app, Registry& reg) {
  auto* tr = app.add_subcommand("train", "Pretrain (full attention, SWA, hybrid) or meta-learn (TTT-E2E) a model");
  auto& a = g_train.r;
  tr->add_option("--model", a.model, "start from this model directory (also: context extension)");
  tr->add_option("--config", a.config, "or initialize from this config.json");
  tr->add_option("--seed", a.seed, "seed of the initialization and of the data sampler")->capture_default_str();
  tr->add_option("--data", a.data, "training data: a corpus directory from `ttt data build`");
  tr->add_option("--tokens", a.tokens, "training data: an int32 token file (the last --val-fraction is held out)");
  tr->add_option("--val-fraction", a.val_fraction, "held-out share of --tokens")->capture_default_str();
  tr->add_option("--needle-mix", a.needle_mix,
                 "share of training sequences that get RULER-style needle tasks spliced in (0: none)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  tr->add_option("--needle-pairs", a.needle_pairs, "needle/question pairs per mixed sequence")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  tr->add_option("--tokenizer", a.tokenizer, "tokenizer for --needle-mix (default: the corpus's tokenizer.model)");
  tr->add_option("--out", a.o.out_dir, "output directory (checkpoints, metrics.jsonl, loss.png)")->required();
  tr->add_option("--steps", a.o.steps, "optimizer steps")->capture_default_str()->check(CLI::PositiveNumber);
  tr->add_option("--seq-len", a.o.seq_len, "tokens per sequence (a multiple of b for TTT-E2E)")->capture_default_str();
  tr->add_option("--batch", a.o.batch, "sequences per step (gradient accumulation)")->capture_default_str();
  tr->add_option("--lr", a.o.lr, "peak learning rate")->capture_default_str();
  tr->add_option("--min-lr", a.o.min_lr, "final learning rate of the cosine decay")->capture_default_str();
  tr->add_option("--warmup-frac", a.o.warmup_frac, "share of steps with linear warmup")->capture_default_str();
  tr->add_option("--weight-decay", a.o.adamw.weight_decay, "AdamW weight decay (every parameter, as the official recipe)")->capture_default_str();
  tr->add_flag("--wd-matrices-only", a.o.adamw.decay_matrices_only, "apply weight decay to matrices only (not norm weights)");
  tr->add_option("--clip", a.o.clip, "global-norm clip of the outer gradient")->capture_default_str();
  tr->add_option("--ilr-init", a.o.ilr_init, "initial inner learning rate (meta-learning)")->capture_default_str();
  tr->add_option("--ilr-warmup-frac", a.o.ilr_warmup_frac,
                 "share of steps over which the inner learning rate warms up to 1 (0: 1 throughout)")
      ->capture_default_str();
  tr->add_option("--val-every", a.o.val_every, "steps between validations (0: none)")->capture_default_str();
  tr->add_option("--val-seqs", a.o.val_seqs, "validation sequences")->capture_default_str();
  tr->add_option("--ckpt-every", a.o.ckpt_every, "steps between checkpoints (0: only at the end)")->capture_default_str();
  tr->add_flag("--resume", a.o.resume, "continue exactly from the checkpoint in --out (none yet: start from step 0)");
  tr->add_option("--stop-after", a.o.stop_after, "stop (with a checkpoint) after this step; --resume continues")
      ->capture_default_str();
  tr->add_option("--max-bad-steps", a.o.max_bad_steps,
                 "stop after this many steps in a row with a non-finite loss or gradient (each is skipped)")
      ->capture_default_str();
  tr->add_option("--graph-budget-mb", a.o.graph_budget_mb,
                 "meta-learning: memory for chunk graphs; the first chunks keep theirs within it, the rest "
                 "are rematerialized (-1: a quarter of physical memory; 0: rematerialize every chunk)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{-1}, INT64_MAX));
  tr->add_flag("--no-remat", a.no_remat, "keep every chunk's graph, whatever the memory (fastest)");
  tr->add_flag("--quiet", g_train.quiet, "no progress output");
  tr->add_flag("--zero1", a.o.zero1,
               "under mpirun: each rank keeps the AdamW moments of its share of the parameters (ZeRO-1)");
  tr->add_option("--allreduce", g_train.allreduce,
                 "under mpirun: tree (fixed order, results independent of the number of ranks) or ring "
                 "(reduce-scatter + allgather, bandwidth-optimal)")
      ->capture_default_str()
      ->check(CLI::IsMember({"tree", "ring"}));
  tr->add_option("--comm-timeout", g_train.comm.timeout_s,
                 "under mpirun: seconds a collective may wait for the other ranks before the job stops")
      ->capture_default_str();
  add_device_option(tr, g_train.device);
  reg.push_back({tr, [] { return run_train(g_train); }});

  auto* cv = app.add_subcommand("convert", "Turn a pretrained full-attention or SWA model into TTT-E2E, function unchanged");
  cv->add_option("--model", g_convert.model, "pretrained model directory")->required();
  cv->add_option("--out", g_convert.out, "output model directory")->required();
  cv->add_option("--suffix-len", g_convert.o.suffix_len, "prime blocks (0: a quarter of the layers)")->capture_default_str();
  cv->add_option("--window", g_convert.o.window, "SWA window (required when converting full attention)");
  cv->add_option("--mini-batch-size", g_convert.o.mini_batch_size, "TTT chunk b (0: keep)");
  cv->add_option("--seed", g_convert.o.seed, "seed of the new prime weights")->capture_default_str();
  reg.push_back({cv, [] { return run_convert(g_convert); }});
}

}  // namespace ttt::cli
