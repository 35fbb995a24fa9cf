// RULER-style single-needle retrieval tasks (S-NIAH, Hsieh et al. 2024), built from token pieces
// so that the same generator serves evaluation (one needle in a long haystack, a question at the
// end) and training mixes (needle/question pairs spliced into corpus sequences, so that small
// models learn the format at all).
//
// Three tasks, as in the paper's needle test and RULER's single-needle set:
//   passkey  the pass-key test: a 5-digit key hidden in repeated filler sentences
//   number   a 7-digit "special magic number" for a key word, hidden in held-out corpus text
//   uuid     the same with a UUID value
//
// The value is tokenized on its own (" " + value) and those same ids appear in the needle and
// after the question, so a correct answer is an exact copy of ids seen once in the context:
// what is measured is retrieval, not tokenization luck at the boundaries.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data/tokenizer.h"
#include "tensor/random.h"

namespace ttt::data {

enum class NeedleTask { kPassKey, kNumber, kUuid };

const char* needle_task_name(NeedleTask t);
// "passkey", "number", "uuid"; throws std::invalid_argument naming the bad value.
NeedleTask parse_needle_task(const std::string& name);
// A comma list of task names, or "all".
std::vector<NeedleTask> parse_needle_tasks(const std::string& list);

struct NeedleInstance {
  std::vector<int32_t> needle;  // the sentence hidden in the haystack (contains `answer`)
  std::vector<int32_t> query;   // the question; the answer follows it directly
  std::vector<int32_t> answer;  // ids of " " + value
  std::string value;            // the value as text (what a correct generation contains)
  std::string key;              // the key word ("" for passkey)
};

class NeedleTaskMaker {
 public:
  explicit NeedleTaskMaker(const Tokenizer& tok);

  // A fresh random instance (key and value drawn from r).
  NeedleInstance make(NeedleTask t, Rng& r) const;

  // n tokens of the pass-key test's filler: the same few sentences over and over.
  std::vector<int32_t> filler(int64_t n) const;

  const Tokenizer& tokenizer() const { return tok_; }

 private:
  const Tokenizer& tok_;
  std::vector<int32_t> filler_;  // one period of the filler
};

// One evaluation prompt of exactly `length` tokens: BOS, haystack, the needle inserted so that it
// starts at fraction `depth` (0 = first, 1 = last place possible) of the haystack, and the query at
// the end. `haystack` must hold at least `length` tokens (its first ones are used).
struct NeedlePrompt {
  std::vector<int32_t> tokens;
  int64_t needle_pos = 0;  // index of the needle's first token
  int64_t distance = 0;    // tokens from the needle's answer ids to the end of the prompt
};
NeedlePrompt build_needle_prompt(const NeedleInstance& inst, const std::vector<int32_t>& haystack, int64_t length,
                                 double depth, int32_t bos);

// Training mix: overwrites up to `pairs` non-overlapping (needle, query + answer) spans of `seq`
// at random places, each needle before its query, keys distinct and at most one pass key within
// the sequence (so every question has one answer); fewer when the sequence is too short or
// crowded. Position 0 is left alone (BOS). Returns where each placed pair went.
struct NeedleSplice {
  NeedleTask task = NeedleTask::kPassKey;
  int64_t needle_pos = 0, query_pos = 0;  // the answer ids follow the query directly
  NeedleInstance instance;
};
std::vector<NeedleSplice> splice_needles(std::vector<int32_t>& seq, const NeedleTaskMaker& maker, int64_t pairs,
                                         Rng& r);

}  // namespace ttt::data
