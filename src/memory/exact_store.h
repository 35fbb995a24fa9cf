// The exact store: the third layer of a session's memory (issue 13). The window holds the last W
// tokens exactly, the fast weights hold a compressed memory of everything; the store keeps the
// tokens themselves, in order, so that an identifier, a number or a clause read long ago can be
// found again and put back in front of the model ("recall", inference/recall.h).
//
// One SQLite database per session (Debian's libsqlite3, FTS5 built in):
//   meta(key, value)            format "ttt-exact-store", version 1, span_tokens, next_pos, next_span
//   tokens(pos, id, loss)       every kept token at its position, with the NLL it was read with
//                               (NULL until known: TTT models score a chunk when it completes)
//   spans (FTS5)                one row per span of span_tokens consecutive positions: its terms
//                               (each token id "t<id>" and each adjacent pair "b<id>x<id>"), its
//                               start; ranked by FTS5's BM25
//   span_loss(start, loss)      each span's mean NLL (for the surprise policy; indexed by loss)
// Lookup is lexical (BM25 over token unigrams and bigrams): what the store is for is exact
// strings, where lexical overlap is the signal, it needs no model or embedding, and its cost does
// not depend on the model's size. Writing is O(1) per token (one row; one FTS row per span).
//
// Policies: keep everything, or keep only the most surprising spans (highest mean NLL when read:
// what the model could not predict, which is what compression in the weights is least likely to
// hold) within a byte budget: the least surprising spans are deleted first.
#pragma once
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

struct sqlite3;

namespace ttt::memory {

enum class KeepPolicy { kAll, kSurprising };
const char* keep_policy_name(KeepPolicy p);      // "all", "surprising"
KeepPolicy parse_keep_policy(const std::string& s);  // throws std::invalid_argument

struct StoreOptions {
  int64_t span_tokens = 64;  // the retrieval unit; fixed when the store is created
  KeepPolicy policy = KeepPolicy::kAll;
  // kSurprising: kept tokens are limited to budget_bytes at the store's typical bytes per token
  // (exact_store.cpp: kBytesPerToken, measured); the least surprising scored spans go first.
  int64_t budget_bytes = 0;
  // Opens an existing store for reading only (a snapshot's copy): nothing is created or written,
  // and no journal files appear beside it.
  bool read_only = false;
};

// A retrieved stretch of the store: a span that matched, widened by half a span on each side
// (a string cut by a span boundary comes back whole); overlapping stretches are merged.
struct RecalledSpan {
  int64_t start = 0;  // position of tokens[0]
  std::vector<int32_t> tokens;
  double score = 0;  // best BM25 score of the spans inside it (higher: more relevant)
};

class ExactStore {
 public:
  // Opens the store at `path`, creating it when absent ("" or ":memory:": in memory only). A file
  // that is not a store, or one of another span size, is a one-line std::runtime_error.
  explicit ExactStore(const std::string& path, const StoreOptions& o = {});
  ~ExactStore();
  ExactStore(const ExactStore&) = delete;
  ExactStore& operator=(const ExactStore&) = delete;

  // Appends tokens at positions size(), size() + 1, ... in one transaction.
  void append(const std::vector<int32_t>& tokens);
  // Records the NLL each token of [pos, pos + n) was read with (a TTT chunk's scores, known when
  // its step runs); positions no longer kept are skipped.
  void set_losses(int64_t pos, const std::vector<float>& nll);

  int64_t size() const { return next_pos_; }  // tokens appended so far: the next position
  int64_t kept_tokens() const;
  // The kept tokens of [from, to), in order, with their positions.
  std::vector<std::pair<int64_t, int32_t>> tokens(int64_t from, int64_t to) const;
  // Up to k stretches most relevant to `query` (its last query_tokens ids), from spans that end
  // at or before `before` (positions the window no longer holds), in order of position.
  std::vector<RecalledSpan> retrieve(const std::vector<int32_t>& query, int k,
                                     int64_t before = std::numeric_limits<int64_t>::max(),
                                     int64_t query_tokens = 256) const;

  // Makes the store end at position `pos` in one transaction: tokens at or after it (and the spans
  // they fall in) are dropped, or, when the store is shorter, the positions up to `pos` are
  // counted as read but not kept. A session's store is aligned to the session's position before
  // it is used: what a failed or killed request appended is dropped, and a state imported or
  // restored without its store starts with nothing kept.
  void align(int64_t pos);

  // A consistent copy at `path` (fork, snapshot, export), written to a temporary file and renamed.
  void copy_to(const std::string& path) const;
  // Replaces this store's whole contents with `src`'s in one transaction (restore, import); `src`
  // must have the same span size.
  void replace_with(const ExactStore& src);
  // Appends every kept token of `src` before position `until` (with its loss) at its position,
  // and counts the positions it did not keep as read but not kept, up to `until`; this store
  // must be empty. Ids outside [0, vocab) throw. Used to import a store that is not trusted:
  // only its rows are read.
  void copy_rows_from(const ExactStore& src, int64_t vocab, int64_t until);
  int64_t bytes() const;  // live bytes of the database (pages in use)
  const StoreOptions& options() const { return o_; }

 private:
  void exec(const char* sql) const;
  void index_spans();     // FTS rows for every complete span not yet indexed
  void enforce_budget();  // kSurprising: drop the least surprising spans beyond the budget
  void put_meta(const char* key, int64_t v);
  void read_meta();  // next_pos_, next_span_, deleted_ from the database (checked)

  StoreOptions o_;
  std::string path_;
  sqlite3* db_ = nullptr;
  int64_t next_pos_ = 0, next_span_ = 0, deleted_ = 0;
};

}  // namespace ttt::memory
