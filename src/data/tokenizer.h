// The tokenizer: SentencePiece BPE with byte fallback (Debian libsentencepiece-dev 0.1.97),
// wrapped so that any byte string round-trips exactly: decode(encode(s)) == s. load() also reads
// pretrained byte-level BPE vocabularies (data/bpe_tokenizer.h), told apart by the file's content:
// a tiktoken rank file such as Meta's Llama 3 `tokenizer.model` (read as Llama 3: its
// pre-tokenizer, BOS 128000 and 256 special tokens) or a Hugging Face `tokenizer.json`. Those
// round-trip any bytes too; their ids are the vocabulary's own (bos_id() is per instance), their
// special ids decode to their text, and training stays SentencePiece only.
//
// Id convention of the SentencePiece models (fixed for every model this project trains):
//   0 = <s>   BOS, a control token: starts every document. The model config's bos_token_id
//             must be 0 (the engine masks targets equal to it out of the loss).
//   1 = <unk> never produced by encode (byte fallback covers everything)
//   2 = </s>  EOS, a control token, unused by the corpus pipeline
//   3 .. 258  <0x00> .. <0xFF>: one byte each (byte id = 3 + byte value)
//   259 ..    learned BPE pieces
//
// What the wrapper adds around SentencePiece (which alone does not round-trip every input):
// - Normalization is identity, no dummy prefix, no whitespace folding; ' ' is SentencePiece's
//   U+2581 inside pieces and whitespace-only pieces (indentation) are allowed.
// - Tab: SentencePiece 0.1.97 reserves '\t' while training, so it could never be part of a
//   learned piece. The wrapper substitutes U+2409 (SYMBOL FOR HORIZONTAL TABULATION) for '\t'
//   before SentencePiece, so runs of tabs and tab-indented code get pieces of their own.
// - Bytes SentencePiece would alter are sent to the byte pieces directly: invalid UTF-8
//   (SentencePiece would replace it with U+FFFD), NUL, and the literal characters U+2581,
//   U+2409 and U+2585 (the first two would decode as ' ' and '\t'; SentencePiece reserves the
//   third). Byte pieces therefore always mean raw bytes, and decode() is the wrapper's own
//   (id -> bytes table), so invalid UTF-8 survives decoding too.
// - Text is encoded in segments cut after the first newline past 4 KiB (SentencePiece's BPE
//   encoder is faster on short inputs; training sentences are the same size); a piece never
//   spans such a cut. Encoding is a pure function of the text.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace ttt::data {

struct TokenizerTrainOptions {
  int vocab_size = 4096;
  double character_coverage = 0.9995;  // rarer characters fall back to byte pieces
  int64_t input_sentence_size = 1000000;  // sentences SentencePiece samples (shuffled); 0 = all
  int64_t sentence_bytes = 4096;       // training sentences: whole lines, up to this many bytes
  uint64_t seed = 0;                   // SentencePiece's sampling seed, and file sampling
  int num_threads = 0;                 // 0 = hardware concurrency
  bool verbose = false;                // SentencePiece's own log on stderr
};

class Tokenizer {
 public:
  static constexpr int32_t kBosId = 0, kUnkId = 1, kEosId = 2, kFirstByteId = 3;

  Tokenizer();
  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;

  // Trains on in-memory texts (each a whole file or sample); writes PREFIX.model and
  // PREFIX.vocab (one "piece<TAB>score" line per id, with \t \n \r \\ escaped).
  // Throws std::runtime_error (one line) on failure, e.g. a vocabulary too large for the text.
  static void train(const std::vector<std::string>& texts, const std::string& model_prefix,
                    const TokenizerTrainOptions& opt = {});
  // Trains on the text files found under the given files/directories (binary files skipped);
  // when they hold more than sample_bytes, a deterministic sample of files (by seeded hash of
  // their paths) is used. Returns the number of bytes trained on.
  static uint64_t train_files(const std::vector<std::string>& inputs, const std::string& model_prefix,
                              const TokenizerTrainOptions& opt = {}, uint64_t sample_bytes = 64ull << 20);

  // A SentencePiece model, a tiktoken rank file or a tokenizer.json, by content; throws
  // std::runtime_error (one line) naming the file and the problem.
  static Tokenizer load(const std::string& model_path);

  // Special-token text inside `text` is encoded as ordinary text (never a control/special id).
  std::vector<int32_t> encode(std::string_view text) const;
  // max_out: std::length_error as soon as `out` holds more ids than this (checked after each
  // segment or piece: a text far over a limit is refused after little work, issue 25).
  void encode_append(std::string_view text, std::vector<int32_t>& out, size_t max_out = SIZE_MAX) const;
  // SentencePiece: control ids decode to nothing, an id out of range throws std::runtime_error.
  // BPE: special ids decode to their text, an id out of range throws std::invalid_argument.
  std::string decode(const std::vector<int32_t>& ids) const;
  std::string decode(const int32_t* ids, size_t n) const;

  enum class Format { SentencePiece, Tiktoken, HuggingFace };
  Format format() const;
  const char* format_name() const;  // "SentencePiece", "tiktoken", "tokenizer.json"
  int32_t vocab_size() const;
  int32_t bos_id() const;  // kBosId for SentencePiece; the vocabulary's BOS for BPE (-1: none)
  int32_t eos_id() const;  // kEosId for SentencePiece; the vocabulary's EOS for BPE (-1: none)
  const std::string& piece_bytes(int32_t id) const;  // what decode() gives for one id
  std::string piece(int32_t id) const;  // SentencePiece's piece string; BPE: tokenizer.json's
  uint64_t fingerprint() const;         // hash of the model file's bytes
  const std::string& path() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ttt::data
