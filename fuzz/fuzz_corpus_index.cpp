// libFuzzer target: arbitrary text through ttt::data::parse_corpus_index (a corpus's index.json;
// the parser never opens a file). Every input must parse or throw std::exception. Property on
// success: 0 <= bos < vocab; each split's shards hold >= 1 token each and add up to the split's
// token count (summed with overflow checks); every document names an existing shard and lies
// inside it (offset >= 0, length > 0, offset + length <= shard tokens, computed without overflow).
#include <cstddef>
#include <cstdint>
#include <exception>
#include <string_view>

#include "data/dataset.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  ttt::data::CorpusIndex ci;
  try {
    ci = ttt::data::parse_corpus_index(text, "index.json");
  } catch (const std::exception&) {
    return 0;
  }
  if (ci.vocab <= 0 || ci.bos < 0 || ci.bos >= ci.vocab) ttt_fuzz::fail("bos outside [0, vocab)");
  for (const auto& sp : ci.splits) {
    if (sp.tokens < 0) ttt_fuzz::fail("negative split token count");
    int64_t sum = 0;
    for (const auto& sh : sp.shards) {
      if (sh.tokens <= 0) ttt_fuzz::fail("shard with no tokens");
      if (__builtin_add_overflow(sum, sh.tokens, &sum)) ttt_fuzz::fail("shard token counts overflow int64");
    }
    if (sum != sp.tokens) ttt_fuzz::fail("shards do not add up to the split's token count");
    for (const auto& d : sp.documents) {
      if (d.shard < 0 || static_cast<size_t>(d.shard) >= sp.shards.size()) ttt_fuzz::fail("document names no shard");
      const int64_t shard_tokens = sp.shards[static_cast<size_t>(d.shard)].tokens;
      int64_t end = 0;
      if (d.offset < 0 || d.length <= 0 || __builtin_add_overflow(d.offset, d.length, &end) || end > shard_tokens)
        ttt_fuzz::fail("document lies outside its shard");
    }
  }
  return 0;
}
