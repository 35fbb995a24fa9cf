// A whole `ttt train` run as every front end starts it (the CLI, the Python module): the model
// (initialized from a config or loaded), the data source (a corpus or a token file, optionally
// with needle tasks mixed in), then train::train. Options are checked before anything is read or
// created (std::invalid_argument naming the option).
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>

#include "train/trainer.h"

namespace ttt::train {

struct TrainRequest {
  std::string model, config, tokens, data, tokenizer;  // exactly one of model/config, of tokens/data
  uint64_t seed = 0;
  double val_fraction = 0.1, needle_mix = 0;
  int64_t needle_pairs = 4;
  bool no_remat = false;
  Device device = Device::cpu();  // where the model trains (`--device`)
  TrainOptions o;  // o.out_dir is the output directory; o.comm null: one process
};

// progress: null for none; otherwise a header line and train::train's progress go there.
TrainSummary run_training(TrainRequest a, std::FILE* progress);

}  // namespace ttt::train
