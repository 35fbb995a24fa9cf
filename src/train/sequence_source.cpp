#include "train/sequence_source.h"

#include <charconv>
#include <algorithm>
#include <stdexcept>

#include "data/dataset.h"
#include "data/needle_task.h"
#include "io/tokens.h"
#include "tensor/random.h"

namespace ttt::train {

void SequenceSource::check_model(int64_t vocab_size, int64_t) const {
  if (max_token_id() >= vocab_size)
    throw std::invalid_argument("the data holds token id " + std::to_string(max_token_id()) +
                                " but the model's vocabulary has " + std::to_string(vocab_size) +
                                " entries (tokenizer and model do not match)");
}

namespace {

class CorpusSource final : public SequenceSource {
 public:
  CorpusSource(const std::string& dir, uint64_t seed) : ds_(data::Dataset::open(dir)), sampler_(seed) {}
  std::vector<int32_t> next_train(int64_t len) override { return ds_.sample_train(len, sampler_); }
  std::vector<std::vector<int32_t>> validation(int64_t len, int64_t count) const override {
    std::vector<std::vector<int32_t>> out;
    const int64_t n = std::min(count, ds_.num_sequences("val", len));
    for (int64_t i = 0; i < n; ++i) out.push_back(ds_.sequence("val", len, i));
    return out;
  }
  std::string state() const override { return sampler_.state(); }
  void restore(const std::string& s) override { sampler_.restore(s); }
  int64_t max_token_id() const override { return ds_.vocab_size() - 1; }
  void check_model(int64_t vocab_size, int64_t bos) const override {
    try {
      ds_.check_model(vocab_size, bos);
    } catch (const std::runtime_error& e) {
      throw std::invalid_argument(e.what());
    }
  }
  std::string describe() const override { return ds_.describe(); }

 private:
  data::Dataset ds_;
  data::SequenceSampler sampler_;
};

class TokenFileSource final : public SequenceSource {
 public:
  TokenFileSource(const std::string& path, double val_fraction, uint64_t seed)
      : path_(path), tokens_(io::read_tokens(path)), rng_(seed) {
    if (tokens_.empty()) throw std::runtime_error("token file " + path + " is empty");
    if (!(val_fraction >= 0 && val_fraction < 1)) throw std::invalid_argument("validation fraction must be in [0, 1)");
    split_ = static_cast<int64_t>(static_cast<double>(tokens_.size()) * (1.0 - val_fraction));
    for (int32_t t : tokens_) {
      if (t < 0) throw std::runtime_error("token file " + path + " holds a negative token id");
      max_id_ = std::max<int64_t>(max_id_, t);
    }
  }

  std::vector<int32_t> next_train(int64_t len) override {
    if (split_ < len)
      throw std::runtime_error("token file " + path_ + ": the training part (" + std::to_string(split_) +
                               " tokens) is shorter than one sequence of " + std::to_string(len));
    const int64_t start = static_cast<int64_t>(rng_.next_u64() % static_cast<uint64_t>(split_ - len + 1));
    return std::vector<int32_t>(tokens_.begin() + start, tokens_.begin() + start + len);
  }

  std::vector<std::vector<int32_t>> validation(int64_t len, int64_t count) const override {
    const int64_t avail = static_cast<int64_t>(tokens_.size()) - split_;
    std::vector<std::vector<int32_t>> out;
    for (int64_t i = 0; i < count && (i + 1) * len <= avail; ++i)
      out.emplace_back(tokens_.begin() + split_ + i * len, tokens_.begin() + split_ + (i + 1) * len);
    return out;
  }

  std::string state() const override { return std::to_string(rng_.state()); }
  void restore(const std::string& s) override {
    uint64_t v = 0;
    const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (s.empty() || ec != std::errc() || p != s.data() + s.size())
      throw std::runtime_error("checkpoint's data sampler state is not a token-file sampler state");
    rng_.set_state(v);
  }
  int64_t max_token_id() const override { return max_id_; }
  std::string describe() const override {
    return path_ + " (" + std::to_string(split_) + " training tokens, " +
           std::to_string(tokens_.size() - split_) + " validation)";
  }

 private:
  std::string path_;
  std::vector<int32_t> tokens_;
  Rng rng_;
  int64_t split_ = 0, max_id_ = 0;
};

class NeedleMixSource final : public SequenceSource {
 public:
  NeedleMixSource(std::unique_ptr<SequenceSource> inner, const std::string& tokenizer_path, double fraction,
                  int64_t pairs, uint64_t seed)
      : inner_(std::move(inner)),
        tok_(data::Tokenizer::load(tokenizer_path)),
        maker_(tok_),
        fraction_(fraction),
        pairs_(pairs),
        rng_(seed ^ 0x6e6565646c65ull) {
    if (!(fraction >= 0 && fraction <= 1)) throw std::invalid_argument("needle mix fraction must be in [0, 1]");
    if (pairs < 1) throw std::invalid_argument("needle pairs per sequence must be at least 1");
  }

  std::vector<int32_t> next_train(int64_t len) override {
    auto seq = inner_->next_train(len);
    if (rng_.uniform() < fraction_) data::splice_needles(seq, maker_, pairs_, rng_);
    return seq;
  }
  std::vector<std::vector<int32_t>> validation(int64_t len, int64_t count) const override {
    return inner_->validation(len, count);
  }
  // "<mix rng state> <inner state>": the inner state is the rest of the string, whatever it holds.
  std::string state() const override { return std::to_string(rng_.state()) + " " + inner_->state(); }
  void restore(const std::string& s) override {
    const size_t sp = s.find(' ');
    uint64_t v = 0;
    const auto [p, ec] = std::from_chars(s.data(), s.data() + (sp == std::string::npos ? 0 : sp), v);
    if (sp == std::string::npos || sp == 0 || ec != std::errc() || p != s.data() + sp)
      throw std::runtime_error("checkpoint's data sampler state is not a needle-mix state (was the run started without --needle-mix?)");
    inner_->restore(s.substr(sp + 1));  // throws before anything changes, or applies wholly
    rng_.set_state(v);
  }
  int64_t max_token_id() const override { return std::max<int64_t>(inner_->max_token_id(), tok_.vocab_size() - 1); }
  void check_model(int64_t vocab_size, int64_t bos) const override {
    inner_->check_model(vocab_size, bos);
    SequenceSource::check_model(vocab_size, bos);
  }
  std::string describe() const override {
    return inner_->describe() + "; needle tasks spliced into " + std::to_string(static_cast<int>(fraction_ * 100 + 0.5)) +
           "% of training sequences (" + std::to_string(pairs_) + " pairs each)";
  }

 private:
  std::unique_ptr<SequenceSource> inner_;
  data::Tokenizer tok_;
  data::NeedleTaskMaker maker_;
  double fraction_;
  int64_t pairs_;
  Rng rng_;
};

}  // namespace

std::unique_ptr<SequenceSource> corpus_source(const std::string& dir, uint64_t seed) {
  return std::make_unique<CorpusSource>(dir, seed);
}

std::unique_ptr<SequenceSource> token_file_source(const std::string& path, double val_fraction, uint64_t seed) {
  return std::make_unique<TokenFileSource>(path, val_fraction, seed);
}

std::unique_ptr<SequenceSource> needle_mix_source(std::unique_ptr<SequenceSource> inner,
                                                  const std::string& tokenizer_path, double fraction,
                                                  int64_t pairs, uint64_t seed) {
  return std::make_unique<NeedleMixSource>(std::move(inner), tokenizer_path, fraction, pairs, seed);
}

}  // namespace ttt::train
