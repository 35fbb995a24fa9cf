// Where training sequences come from. The trainer only needs: the next training sequence of
// T+1 tokens, a fixed set of validation sequences, and a sampler state that a checkpoint can
// save so that a resumed run draws exactly the same sequences.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace ttt::train {

class SequenceSource {
 public:
  virtual ~SequenceSource() = default;
  virtual std::vector<int32_t> next_train(int64_t len) = 0;
  // Deterministic: the same `count` sequences every call.
  virtual std::vector<std::vector<int32_t>> validation(int64_t len, int64_t count) const = 0;
  virtual std::string state() const = 0;  // opaque, for checkpoints
  virtual void restore(const std::string& state) = 0;
  virtual int64_t max_token_id() const = 0;
  // Throws std::invalid_argument when the data cannot train this model (vocabulary, BOS id).
  virtual void check_model(int64_t vocab_size, int64_t bos_token_id) const;
  virtual std::string describe() const = 0;
};

// A corpus directory built by `ttt data build` (data/dataset.h): random windows of the train
// split, validation windows of the val split; checks the model's vocabulary and BOS id.
std::unique_ptr<SequenceSource> corpus_source(const std::string& dir, uint64_t seed);

// One int32 token file: the last `val_fraction` of it is held out for validation; training
// sequences start at random offsets in the rest.
std::unique_ptr<SequenceSource> token_file_source(const std::string& path, double val_fraction, uint64_t seed);

// Needle-task mix (data/needle_task.h): a `fraction` of the training sequences of `inner` get
// `pairs` (needle, question + answer) spans of RULER-style retrieval tasks spliced in, so that a
// small model learns the format the needle tests ask about. Validation sequences stay unchanged
// (pure corpus text); the mix's own sampler state is part of state(), so a resume is exact.
std::unique_ptr<SequenceSource> needle_mix_source(std::unique_ptr<SequenceSource> inner,
                                                  const std::string& tokenizer_path, double fraction,
                                                  int64_t pairs, uint64_t seed);

}  // namespace ttt::train
