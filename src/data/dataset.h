// The corpus reader for training and evaluation: opens a directory written by build_corpus
// (corpus.h), validates it, samples training sequences and iterates validation data.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace ttt::data {

struct DocumentRef {
  std::string name;  // directory (code) or file (prose) relative to the source
  int64_t shard = 0, offset = 0, length = 0, files = 0;
};

struct ShardRef {
  std::string file;
  int64_t tokens = 0;
  uint64_t checksum = 0;
};

struct SplitInfo {
  std::string name;  // "train", "val" or "val-long"
  int64_t tokens = 0;
  std::vector<ShardRef> shards;
  std::vector<DocumentRef> documents;
};

// The parsed index.json of a corpus: every count range-checked (token counts below 2^61, so byte
// sizes and sums cannot wrap), every document inside its shard. Throws std::runtime_error (one
// line, naming `index_path`) for anything else; never reads a file.
struct CorpusIndex {
  int32_t vocab = 0, bos = 0;
  SplitInfo splits[3];  // train, val, val-long
};
CorpusIndex parse_corpus_index(std::string_view text, const std::string& index_path);

// Random training windows: a counter-based generator, so its whole state is (seed, counter)
// and a resumed run draws exactly the sequences an uninterrupted one would.
class SequenceSampler {
 public:
  explicit SequenceSampler(uint64_t seed = 0) : seed_(seed) {}
  uint64_t next_u64();
  std::string state() const;              // "seed counter"
  void restore(const std::string& state); // throws on a malformed state
  uint64_t seed() const { return seed_; }
  uint64_t counter() const { return counter_; }

 private:
  uint64_t seed_ = 0, counter_ = 0;
};

class Dataset {
 public:
  // Opens DIR. Checks index.json (format, version, fields), that every shard exists with the
  // size the index gives, and that documents lie inside their shards; with verify also every
  // shard's checksum, token ids < vocab_size and that every document starts with BOS.
  // Errors are std::runtime_error with one line naming the problem.
  static Dataset open(const std::string& dir, bool verify = true);

  Dataset();
  ~Dataset();
  Dataset(Dataset&&) noexcept;
  Dataset& operator=(Dataset&&) noexcept;

  const std::string& dir() const;
  int32_t vocab_size() const;
  int32_t bos_id() const;
  std::string tokenizer_path() const;  // DIR/tokenizer.model
  // Throws unless the model's vocab_size and bos_token_id match the corpus.
  void check_model(int64_t model_vocab_size, int64_t model_bos_token_id) const;

  const SplitInfo& split(std::string_view name) const;  // "train", "val", "val-long"
  const int32_t* shard_data(std::string_view split, size_t shard) const;

  // A training sequence of `len` tokens (T+1) from a uniformly random position of the train
  // split (windows never cross shards; they may cross documents, which start with BOS).
  std::vector<int32_t> sample_train(int64_t len, SequenceSampler& rng) const;

  // Deterministic sequences of `len` tokens over a split: consecutive windows that overlap by
  // one token (stride len-1), so every token after the first is a target exactly once.
  int64_t num_sequences(std::string_view split, int64_t len) const;
  std::vector<int32_t> sequence(std::string_view split, int64_t len, int64_t i) const;

  // One whole document (BOS first), e.g. the long validation documents of "val-long".
  std::vector<int32_t> document(std::string_view split, size_t i) const;

  std::string describe() const;  // one line

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ttt::data
