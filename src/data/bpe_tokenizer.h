// Byte-level BPE (Llama 3, GPT-2 style), for pretrained vocabularies the engine did not train.
// Reads two formats, told apart by content (data/tokenizer.h's Tokenizer::load does that):
//
// - a tiktoken rank file, such as Meta's Llama 3 `tokenizer.model`: one line per token,
//   "<base64 of the token's bytes> <rank>", ranks 0..n-1. The rank is both the id and the merge
//   priority. Such a file carries no special tokens and no pre-tokenizer, so it is read as
//   Llama 3's: the pattern below, and 256 special tokens from id n on, named as llama-models
//   (llama_models/llama3/tokenizer.py) names them: <|begin_of_text|> (BOS), <|end_of_text|>
//   (EOS), ..., <|image|>, then <|reserved_special_token_2|> and on.
// - a Hugging Face `tokenizer.json` with a byte-level BPE model: model.vocab (strings in GPT-2's
//   byte-to-unicode alphabet), model.merges (priority = position), added_tokens (the special
//   tokens), and a pre-tokenizer that is a Split on a regex followed by ByteLevel without its
//   own regex (Llama 3), or ByteLevel with its regex (GPT-2). BOS: the first special token of
//   the post-processor's template, else an added token with a usual BOS name.
//
// Encoding is tiktoken's `encode(text, disallowed_special=())`: special-token strings inside
// the text are ordinary text; the pre-tokenizer regex (PCRE2, UTF + UCP, JIT when built in)
// cuts the text into pieces and each piece is merged on its own. Any bytes encode (every single
// byte has a token; bytes that are not valid UTF-8 never match the regex and are merged as
// pieces of their own), so decode(encode(s)) == s for every s. Decoding gives the bytes back;
// a special id decodes to its text (e.g. "<|begin_of_text|>").
//
// A file that is corrupt or truncated, or uses a feature this reader does not implement, is
// refused at load with one line naming the file and the problem. Instances are immutable after
// load; encode/decode are safe to call from several threads at once.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace ttt::data {

class BpeTokenizer {
 public:
  enum class Format { Tiktoken, HuggingFace };

  // The Llama 3 pre-tokenizer pattern, as written in llama-models and tiktoken.
  static const char* const kLlama3Pattern;

  // What the file's bytes look like: a tiktoken rank file (first line "<base64> <integer>"), a
  // JSON document (first non-blank byte '{'), or neither (false from both).
  static bool looks_like_tiktoken(std::string_view bytes);
  static bool looks_like_json(std::string_view bytes);

  // Parse `bytes` (the file's content); `name` is the path quoted in errors.
  // Throw std::runtime_error (one line) for a corrupt or unsupported file.
  static BpeTokenizer from_tiktoken(std::string_view bytes, const std::string& name);
  static BpeTokenizer from_hf_json(std::string_view bytes, const std::string& name);

  BpeTokenizer(BpeTokenizer&&) noexcept;
  BpeTokenizer& operator=(BpeTokenizer&&) noexcept;
  ~BpeTokenizer();

  // max_out: std::length_error as soon as `out` holds more ids than this (checked after each
  // pre-tokenized piece, so a text far over a limit costs little before the error).
  void encode_append(std::string_view text, std::vector<int32_t>& out, size_t max_out = SIZE_MAX) const;
  std::vector<int32_t> encode(std::string_view text) const;
  // The pre-tokenizer's pieces of `text` in order: what encode() merges, each on its own.
  std::vector<std::string_view> pre_tokenize(std::string_view text) const;
  // Throws std::invalid_argument naming the first id outside [0, vocab_size()).
  std::string decode(const int32_t* ids, size_t n) const;

  Format format() const;
  int32_t vocab_size() const;
  int32_t bos_id() const;  // -1 if the vocabulary has none
  int32_t eos_id() const;  // -1 if the vocabulary has none
  bool is_special(int32_t id) const;
  // The id's bytes (a special token's text); throws std::invalid_argument when out of range.
  const std::string& piece_bytes(int32_t id) const;
  // The piece as tokenizer.json writes it: GPT-2's byte-to-unicode string, or a special's text.
  std::string piece(int32_t id) const;
  // Id of a special token by its text, -1 if there is none.
  int32_t special_id(std::string_view text) const;

 private:
  struct Impl;
  friend struct HfJsonReader;  // from_hf_json's parts (bpe_tokenizer.cpp)
  explicit BpeTokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// GPT-2's reversible byte -> printable character map (bytes 33..126, 161..172, 174..255 stand
// for themselves; the rest get U+0100 on), as UTF-8, and its inverse (-1 for other characters).
std::string byte_to_unicode(unsigned char b);
int unicode_to_byte(uint32_t code_point);

}  // namespace ttt::data
