// libFuzzer target: arbitrary bytes written to a scratch file and loaded with
// ttt::data::Tokenizer::load, which tells SentencePiece models, tiktoken rank files and
// tokenizer.json apart by content (SentencePiece itself is not instrumented; the wrappers' checks,
// the BPE loaders and id -> bytes tables are). Every input must load or throw std::exception.
// Property on success, for a fixed set of strings (ASCII, UTF-8, invalid UTF-8, tabs, NUL, the
// marker characters, pieces of the model itself): every id is in [0, vocab) and
// decode(encode(s)) == s. A SentencePiece model must hold the id convention (>= 259 ids) and
// encode any bytes; a byte-level BPE vocabulary that lacks some byte may refuse a string with an
// exception, never with a wrong answer.
#include <cstddef>
#include <cstdint>
#include <exception>
#include <string>
#include <vector>

#include "data/tokenizer.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = ttt_fuzz::scratch_path("tokenizer");
  ttt_fuzz::write_bytes(path, data, size);
  ttt::data::Tokenizer tok;
  try {
    tok = ttt::data::Tokenizer::load(path);
  } catch (const std::exception&) {
    return 0;
  }
  const int32_t vocab = tok.vocab_size();
  const bool sp = tok.format() == ttt::data::Tokenizer::Format::SentencePiece;
  if (sp && vocab < ttt::data::Tokenizer::kFirstByteId + 256) ttt_fuzz::fail("loaded a model without the byte pieces");
  std::vector<std::string> texts = {
      "",
      "hello world\n",
      "int main(void) {\n\treturn 0;\n}\n",
      "\t\t\tx\t\n",
      std::string("nul\0byte\0", 9),
      "\xff\xfe invalid \xc3( utf-8 \xe2\x82",
      "caf\xc3\xa9 \xe2\x96\x81 \xe2\x90\x89 \xe2\x96\x85 \xf0\x9f\x98\x80",  // U+2581 U+2409 U+2585, an emoji
      "  leading and trailing spaces  ",
      "\r\n\r\n",
  };
  // A learned piece's bytes, repeated: exercises the BPE merges of this particular model.
  if (vocab > 259) texts.push_back(tok.piece_bytes(259) + tok.piece_bytes(vocab - 1) + tok.piece_bytes(259));
  if (!sp && vocab > 0) texts.push_back(tok.piece_bytes(0) + tok.piece_bytes(vocab - 1));
  for (const auto& s : texts) {
    std::vector<int32_t> ids;
    try {
      ids = tok.encode(s);
    } catch (const std::exception&) {
      if (sp) ttt_fuzz::fail("a SentencePiece model failed to encode a string");
      continue;
    }
    for (int32_t id : ids)
      if (id < 0 || id >= vocab) ttt_fuzz::fail("encode returned an id outside the vocabulary");
    if (tok.decode(ids) != s) ttt_fuzz::fail("decode(encode(s)) != s");
  }
  return 0;
}
