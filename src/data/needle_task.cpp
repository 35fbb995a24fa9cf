#include "data/needle_task.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace ttt::data {

namespace {

// Key words: adjective-noun pairs, 24 x 24 of them.
constexpr const char* kAdjectives[] = {"amber",  "brisk",  "calm",   "dusty", "eager",  "faded",  "gentle", "hollow",
                                       "icy",    "jolly",  "keen",   "lunar", "mellow", "narrow", "olive",  "proud",
                                       "quiet",  "rusty",  "silent", "tidy",  "upper",  "vivid",  "wooden", "young"};
constexpr const char* kNouns[] = {"anchor", "badger", "canyon", "dragon", "engine", "falcon", "garden", "harbor",
                                  "island", "jacket", "kettle", "lantern", "meadow", "needle", "orchard", "pebble",
                                  "quarry", "rocket", "saddle", "temple", "violin", "walnut", "yarrow", "zephyr"};
constexpr int kWords = 24;

// The pass-key test's filler (our own sentences; the original test repeats a few plain ones).
constexpr const char* kFiller =
    "The river runs down to the sea. The hills are green and quiet. The wind moves over the grass. "
    "Here we go again, there and back. ";

std::string digits(Rng& r, int n) {
  std::string s;
  s += static_cast<char>('1' + r.next_u64() % 9);
  for (int i = 1; i < n; ++i) s += static_cast<char>('0' + r.next_u64() % 10);
  return s;
}

std::string uuid4(Rng& r) {
  static const char* hex = "0123456789abcdef";
  std::string s;
  for (int i = 0; i < 32; ++i) {
    if (i == 8 || i == 12 || i == 16 || i == 20) s += '-';
    int v = static_cast<int>(r.next_u64() % 16);
    if (i == 12) v = 4;                 // version 4
    if (i == 16) v = 8 + (v & 3);       // variant 10xx
    s += hex[v];
  }
  return s;
}

void append(std::vector<int32_t>& out, const std::vector<int32_t>& x) { out.insert(out.end(), x.begin(), x.end()); }

}  // namespace

const char* needle_task_name(NeedleTask t) {
  switch (t) {
    case NeedleTask::kPassKey: return "passkey";
    case NeedleTask::kNumber: return "number";
    case NeedleTask::kUuid: return "uuid";
  }
  return "?";
}

NeedleTask parse_needle_task(const std::string& name) {
  if (name == "passkey") return NeedleTask::kPassKey;
  if (name == "number") return NeedleTask::kNumber;
  if (name == "uuid") return NeedleTask::kUuid;
  throw std::invalid_argument("unknown needle task '" + name + "' (expected passkey, number or uuid)");
}

std::vector<NeedleTask> parse_needle_tasks(const std::string& list) {
  if (list == "all") return {NeedleTask::kPassKey, NeedleTask::kNumber, NeedleTask::kUuid};
  std::vector<NeedleTask> out;
  size_t start = 0;
  while (start <= list.size()) {
    const size_t comma = list.find(',', start);
    const std::string item = list.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    const NeedleTask t = parse_needle_task(item);
    if (std::find(out.begin(), out.end(), t) == out.end()) out.push_back(t);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

NeedleTaskMaker::NeedleTaskMaker(const Tokenizer& tok) : tok_(tok), filler_(tok.encode(kFiller)) {}

NeedleInstance NeedleTaskMaker::make(NeedleTask t, Rng& r) const {
  NeedleInstance x;
  if (t == NeedleTask::kPassKey) {
    x.value = digits(r, 5);
    x.answer = tok_.encode(" " + x.value);
    tok_.encode_append("\nThe pass key is", x.needle);
    append(x.needle, x.answer);
    tok_.encode_append(". Remember it.", x.needle);
    append(x.needle, x.answer);
    tok_.encode_append(" is the pass key.\n", x.needle);
    x.query = tok_.encode("\nWhat is the pass key? The pass key is");
    return x;
  }
  const bool number = t == NeedleTask::kNumber;
  x.key = std::string(kAdjectives[r.next_u64() % kWords]) + "-" + kNouns[r.next_u64() % kWords];
  x.value = number ? digits(r, 7) : uuid4(r);
  x.answer = tok_.encode(" " + x.value);
  const std::string what = number ? "number" : "uuid";
  tok_.encode_append("\nOne of the special magic " + what + "s for " + x.key + " is:", x.needle);
  append(x.needle, x.answer);
  tok_.encode_append(".\n", x.needle);
  x.query = tok_.encode("\nWhat is the special magic " + what + " for " + x.key +
                        " mentioned in the provided text? The special magic " + what + " for " + x.key +
                        " mentioned in the provided text is");
  return x;
}

std::vector<int32_t> NeedleTaskMaker::filler(int64_t n) const {
  std::vector<int32_t> out;
  out.reserve(n);
  while (static_cast<int64_t>(out.size()) < n)
    for (size_t i = 0; i < filler_.size() && static_cast<int64_t>(out.size()) < n; ++i) out.push_back(filler_[i]);
  return out;
}

NeedlePrompt build_needle_prompt(const NeedleInstance& inst, const std::vector<int32_t>& haystack, int64_t length,
                                 double depth, int32_t bos) {
  const int64_t fixed = 1 + static_cast<int64_t>(inst.needle.size() + inst.query.size());
  if (length < fixed)
    throw std::invalid_argument("needle prompt of " + std::to_string(length) + " tokens cannot hold the needle and the question (" +
                                std::to_string(fixed) + " tokens)");
  if (!(depth >= 0 && depth <= 1)) throw std::invalid_argument("needle depth must lie in [0, 1]");
  const int64_t hay = length - fixed;
  if (static_cast<int64_t>(haystack.size()) < hay)
    throw std::invalid_argument("haystack of " + std::to_string(haystack.size()) + " tokens is shorter than the " +
                                std::to_string(hay) + " a prompt of " + std::to_string(length) + " tokens needs");
  const int64_t before = std::llround(depth * static_cast<double>(hay));
  NeedlePrompt p;
  p.tokens.reserve(length);
  p.tokens.push_back(bos);
  p.tokens.insert(p.tokens.end(), haystack.begin(), haystack.begin() + before);
  p.needle_pos = static_cast<int64_t>(p.tokens.size());
  append(p.tokens, inst.needle);
  p.tokens.insert(p.tokens.end(), haystack.begin() + before, haystack.begin() + hay);
  append(p.tokens, inst.query);
  // The last copy of the answer inside the needle is the nearest one to the question.
  const auto it = std::find_end(inst.needle.begin(), inst.needle.end(), inst.answer.begin(), inst.answer.end());
  const int64_t answer_at = p.needle_pos + (it == inst.needle.end() ? 0 : it - inst.needle.begin());
  p.distance = length - answer_at;
  return p;
}

std::vector<NeedleSplice> splice_needles(std::vector<int32_t>& seq, const NeedleTaskMaker& maker, int64_t pairs,
                                         Rng& r) {
  const int64_t n = static_cast<int64_t>(seq.size());
  std::vector<std::pair<int64_t, int64_t>> used;  // [begin, end) spans already written
  std::vector<std::string> keys;
  bool passkey_used = false;
  std::vector<NeedleSplice> placed;
  auto free_span = [&](int64_t b, int64_t e) {
    for (auto& [ub, ue] : used)
      if (b < ue && ub < e) return false;
    return true;
  };
  for (int64_t i = 0; i < pairs; ++i) {
    NeedleTask t = static_cast<NeedleTask>(r.next_u64() % 3);
    if (t == NeedleTask::kPassKey && passkey_used) t = NeedleTask::kNumber;  // one pass key per sequence
    NeedleInstance inst = maker.make(t, r);
    for (int tries = 0; tries < 8 && !inst.key.empty() && std::find(keys.begin(), keys.end(), inst.key) != keys.end();
         ++tries)
      inst = maker.make(t, r);
    if (!inst.key.empty() && std::find(keys.begin(), keys.end(), inst.key) != keys.end()) continue;
    const int64_t a = static_cast<int64_t>(inst.needle.size());
    const int64_t b = static_cast<int64_t>(inst.query.size() + inst.answer.size());
    if (1 + a + b > n) break;
    for (int tries = 0; tries < 32; ++tries) {
      // Question start q in [1 + a, n - b], needle start p in [1, q - a].
      const int64_t q = 1 + a + static_cast<int64_t>(r.next_u64() % static_cast<uint64_t>(n - b - a));
      const int64_t p = 1 + static_cast<int64_t>(r.next_u64() % static_cast<uint64_t>(q - a));
      if (!free_span(p, p + a) || !free_span(q, q + b)) continue;
      std::copy(inst.needle.begin(), inst.needle.end(), seq.begin() + p);
      std::copy(inst.query.begin(), inst.query.end(), seq.begin() + q);
      std::copy(inst.answer.begin(), inst.answer.end(), seq.begin() + q + static_cast<int64_t>(inst.query.size()));
      used.emplace_back(p, p + a);
      used.emplace_back(q, q + b);
      if (!inst.key.empty()) keys.push_back(inst.key);
      if (t == NeedleTask::kPassKey) passkey_used = true;
      placed.push_back({t, p, q, std::move(inst)});
      break;
    }
  }
  return placed;
}

}  // namespace ttt::data
