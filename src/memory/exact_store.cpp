#include "memory/exact_store.h"

#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>
#include <stdexcept>
#include <utility>

#include "io/messages.h"

namespace ttt::memory {
namespace {

constexpr const char* kFormat = "ttt-exact-store";
constexpr int64_t kVersion = 1;
// Live bytes per kept token of a store (measured by eval-needle --recall on the Linux corpus: the token row plus its share of the FTS5 index
// of unigrams and bigrams and of span_loss); the surprise policy's budget is counted with it.
constexpr int64_t kBytesPerToken = 54;

// One prepared statement, finalized on scope exit.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) : db_(db) {
    if (sqlite3_prepare_v2(db, sql, -1, &s_, nullptr) != SQLITE_OK)
      throw std::runtime_error(std::string("exact store: ") + sqlite3_errmsg(db));
  }
  ~Stmt() { sqlite3_finalize(s_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  Stmt& bind(int i, int64_t v) {
    sqlite3_bind_int64(s_, i, v);
    return *this;
  }
  Stmt& bind(int i, double v) {
    if (std::isfinite(v))
      sqlite3_bind_double(s_, i, v);
    else
      sqlite3_bind_null(s_, i);
    return *this;
  }
  Stmt& bind(int i, const std::string& v) {
    sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  bool step() {  // true while rows come back
    const int rc = sqlite3_step(s_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    throw std::runtime_error(std::string("exact store: ") + sqlite3_errmsg(db_));
  }
  void run() {
    while (step()) {
    }
    reset();
  }
  void reset() {
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
  }
  int64_t i64(int c) const { return sqlite3_column_int64(s_, c); }
  bool null(int c) const { return sqlite3_column_type(s_, c) == SQLITE_NULL; }
  double f64(int c) const { return sqlite3_column_type(s_, c) == SQLITE_NULL ? std::nan("") : sqlite3_column_double(s_, c); }
  std::string text(int c) const {
    const auto* p = sqlite3_column_text(s_, c);
    return p ? reinterpret_cast<const char*>(p) : "";
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* s_ = nullptr;
};

// The FTS terms of token ids: "t<id>" per token, "b<id>x<next>" per adjacent pair. Built by
// appends (GCC 12 reports a false -Wrestrict on chains of string + char*).
std::string unigram(int32_t id) {
  std::string t(1, 't');
  t.append(std::to_string(id));
  return t;
}

std::string bigram(int32_t a, int32_t b) {
  std::string t(1, 'b');
  t.append(std::to_string(a));
  t.push_back('x');
  t.append(std::to_string(b));
  return t;
}

std::string span_terms(const std::vector<int32_t>& ids) {
  std::string t;
  for (size_t i = 0; i < ids.size(); ++i) {
    t.append(unigram(ids[i]));
    t.push_back(' ');
    if (i + 1 < ids.size()) {
      t.append(bigram(ids[i], ids[i + 1]));
      t.push_back(' ');
    }
  }
  return t;
}

}  // namespace

const char* keep_policy_name(KeepPolicy p) { return p == KeepPolicy::kAll ? "all" : "surprising"; }

KeepPolicy parse_keep_policy(const std::string& s) {
  if (s == "all") return KeepPolicy::kAll;
  if (s == "surprising") return KeepPolicy::kSurprising;
  throw std::invalid_argument("store policy must be all or surprising, got " + io::one_line(s, 40));
}

ExactStore::ExactStore(const std::string& path, const StoreOptions& o) : o_(o), path_(path) {
  if (o_.span_tokens < 2 || o_.span_tokens > 4096) throw std::invalid_argument("store span must be in [2, 4096] tokens");
  if (o_.policy == KeepPolicy::kSurprising && o_.budget_bytes <= 0)
    throw std::invalid_argument("the surprising-spans policy needs a positive byte budget");
  const std::string where = path.empty() ? ":memory:" : path;
  const int flags = (o_.read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) | SQLITE_OPEN_NOMUTEX;
  if (sqlite3_open_v2(where.c_str(), &db_, flags, nullptr) != SQLITE_OK) {
    const std::string msg = db_ ? sqlite3_errmsg(db_) : "out of memory";
    sqlite3_close(db_);
    db_ = nullptr;
    throw std::runtime_error("exact store " + io::one_line(where) + ": " + msg);
  }
  try {
    if (o_.read_only) {
      // A file from elsewhere (an upload): no schema-defined functions or triggers run.
      sqlite3_db_config(db_, SQLITE_DBCONFIG_DEFENSIVE, 1, nullptr);
      sqlite3_db_config(db_, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, nullptr);
    }
    if (!o_.read_only) exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;");
    if (!o_.read_only) exec("CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
         "CREATE TABLE IF NOT EXISTS tokens(pos INTEGER PRIMARY KEY, id INTEGER NOT NULL, loss REAL);"
         "CREATE VIRTUAL TABLE IF NOT EXISTS spans USING fts5(terms, start UNINDEXED, tokenize='ascii');"
         "CREATE TABLE IF NOT EXISTS span_loss(start INTEGER PRIMARY KEY, loss REAL);"
         "CREATE INDEX IF NOT EXISTS span_loss_by_loss ON span_loss(loss);");
    std::map<std::string, std::string> meta;
    {
      Stmt q(db_, "SELECT key, value FROM meta");
      while (q.step()) meta[q.text(0)] = q.text(1);
    }
    if (meta.empty() && o_.read_only) throw std::runtime_error("not an exact store (no meta rows)");
    if (meta.empty()) {
      Stmt put(db_, "INSERT INTO meta(key, value) VALUES (?1, ?2)");
      put.bind(1, std::string("format")).bind(2, std::string(kFormat)).run();
      put.bind(1, std::string("version")).bind(2, std::to_string(kVersion)).run();
      put.bind(1, std::string("span_tokens")).bind(2, std::to_string(o_.span_tokens)).run();
      put.bind(1, std::string("next_pos")).bind(2, std::string("0")).run();
      put.bind(1, std::string("next_span")).bind(2, std::string("0")).run();
      put.bind(1, std::string("deleted")).bind(2, std::string("0")).run();
    } else {
      if (meta["format"] != kFormat || meta["version"] != std::to_string(kVersion))
        throw std::runtime_error("not an exact store (format " + io::one_line(meta["format"], 40) + ")");
      if (meta["span_tokens"] != std::to_string(o_.span_tokens))
        throw std::runtime_error("made with spans of " + io::one_line(meta["span_tokens"], 20) + " tokens, not " +
                                 std::to_string(o_.span_tokens));
      read_meta();
    }
  } catch (const std::exception& e) {
    sqlite3_close(db_);
    db_ = nullptr;
    throw std::runtime_error("exact store " + io::one_line(where) + ": " + e.what());
  }
}

ExactStore::~ExactStore() {
  if (db_) sqlite3_close(db_);
}

void ExactStore::exec(const char* sql) const {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    const std::string msg = err ? err : "error";
    sqlite3_free(err);
    throw std::runtime_error("exact store: " + msg);
  }
}

void ExactStore::read_meta() {
  std::map<std::string, std::string> meta;
  {
    Stmt q(db_, "SELECT key, value FROM meta");
    while (q.step()) meta[q.text(0)] = q.text(1);
  }
  auto num = [&](const char* k) {
    try {
      size_t used = 0;
      const std::string& v = meta[k];
      const int64_t x = std::stoll(v, &used);
      if (used != v.size()) throw std::invalid_argument(k);
      return x;
    } catch (const std::exception&) {
      throw std::runtime_error(std::string("bad meta value for ") + k);
    }
  };
  next_pos_ = num("next_pos");
  next_span_ = num("next_span");
  deleted_ = num("deleted");
  if (next_pos_ < 0 || next_span_ < 0 || next_span_ > next_pos_ || deleted_ < 0 || deleted_ > next_pos_)
    throw std::runtime_error("inconsistent positions");
}

void ExactStore::put_meta(const char* key, int64_t v) {
  Stmt s(db_, "UPDATE meta SET value = ?2 WHERE key = ?1");
  s.bind(1, std::string(key)).bind(2, std::to_string(v)).run();
}

void ExactStore::append(const std::vector<int32_t>& ids) {
  if (ids.empty()) return;
  exec("BEGIN IMMEDIATE");
  try {
    Stmt ins(db_, "INSERT INTO tokens(pos, id, loss) VALUES (?1, ?2, NULL)");
    for (size_t i = 0; i < ids.size(); ++i) ins.bind(1, next_pos_ + static_cast<int64_t>(i)).bind(2, static_cast<int64_t>(ids[i])).run();
    next_pos_ += static_cast<int64_t>(ids.size());
    put_meta("next_pos", next_pos_);
    index_spans();
    enforce_budget();
    exec("COMMIT");
  } catch (...) {
    exec("ROLLBACK");
    Stmt q(db_, "SELECT value FROM meta WHERE key = 'next_pos'");  // back to what is committed
    if (q.step()) next_pos_ = std::stoll(q.text(0));
    Stmt q2(db_, "SELECT value FROM meta WHERE key = 'next_span'");
    if (q2.step()) next_span_ = std::stoll(q2.text(0));
    Stmt q3(db_, "SELECT value FROM meta WHERE key = 'deleted'");
    if (q3.step()) deleted_ = std::stoll(q3.text(0));
    throw;
  }
}

void ExactStore::index_spans() {
  const int64_t S = o_.span_tokens;
  if (next_pos_ - next_span_ < S) return;
  Stmt get(db_, "SELECT id FROM tokens WHERE pos >= ?1 AND pos < ?2 ORDER BY pos");
  Stmt put(db_, "INSERT INTO spans(rowid, terms, start) VALUES (?1, ?2, ?1)");
  Stmt loss(db_, "INSERT OR REPLACE INTO span_loss(start, loss) SELECT ?1, avg(loss) FROM tokens WHERE pos >= ?1 AND pos < ?2");
  Stmt first(db_, "SELECT min(pos) FROM tokens WHERE pos >= ?1");
  for (; next_pos_ - next_span_ >= S; next_span_ += S) {
    std::vector<int32_t> ids;
    get.bind(1, next_span_).bind(2, next_span_ + S);
    while (get.step()) ids.push_back(static_cast<int32_t>(get.i64(0)));
    get.reset();
    if (ids.empty()) {
      // Positions read but not kept (align): jump to the span of the next kept token.
      first.bind(1, next_span_);
      const bool any = first.step() && !first.null(0);
      const int64_t next = any ? first.i64(0) / S * S : next_pos_ / S * S;
      first.reset();
      next_span_ = std::max(next_span_, next - S);  // the loop adds S
      continue;
    }
    put.bind(1, next_span_).bind(2, span_terms(ids)).run();
    loss.bind(1, next_span_).bind(2, next_span_ + S).run();
  }
  put_meta("next_span", next_span_);
}

void ExactStore::set_losses(int64_t pos, const std::vector<float>& nll) {
  if (nll.empty()) return;
  exec("BEGIN IMMEDIATE");
  try {
    Stmt up(db_, "UPDATE tokens SET loss = ?2 WHERE pos = ?1");
    for (size_t i = 0; i < nll.size(); ++i) up.bind(1, pos + static_cast<int64_t>(i)).bind(2, static_cast<double>(nll[i])).run();
    // The spans these positions fall in get their mean again.
    const int64_t S = o_.span_tokens, end = pos + static_cast<int64_t>(nll.size());
    Stmt loss(db_,
              "UPDATE span_loss SET loss = (SELECT avg(loss) FROM tokens WHERE pos >= ?1 AND pos < ?1 + ?2) WHERE start = ?1");
    for (int64_t s = pos / S * S; s < end; s += S) loss.bind(1, s).bind(2, S).run();
    enforce_budget();
    exec("COMMIT");
  } catch (...) {
    exec("ROLLBACK");
    throw;
  }
}

int64_t ExactStore::bytes() const {
  auto pragma = [&](const char* sql) {
    Stmt s(db_, sql);
    return s.step() ? s.i64(0) : int64_t{0};
  };
  return (pragma("PRAGMA page_count") - pragma("PRAGMA freelist_count")) * pragma("PRAGMA page_size");
}

void ExactStore::enforce_budget() {
  if (o_.policy != KeepPolicy::kSurprising) return;
  // The budget as a number of kept tokens at kBytesPerToken (SQLite frees pages, and FTS5 its
  // index segments, only later, so the file size cannot steer deletions directly). Spans whose
  // losses are not known yet (NULL) are kept until they are scored.
  const int64_t budget_tokens = std::max<int64_t>(o_.span_tokens, o_.budget_bytes / kBytesPerToken);
  Stmt pick(db_, "SELECT start FROM span_loss WHERE loss IS NOT NULL ORDER BY loss, start LIMIT 1");
  Stmt del_tokens(db_, "DELETE FROM tokens WHERE pos >= ?1 AND pos < ?2");
  Stmt del_span(db_, "DELETE FROM spans WHERE rowid = ?1");
  Stmt del_loss(db_, "DELETE FROM span_loss WHERE start = ?1");
  while (next_pos_ - deleted_ > budget_tokens) {
    if (!pick.step()) break;
    const int64_t s = pick.i64(0);
    pick.reset();
    del_tokens.bind(1, s).bind(2, s + o_.span_tokens).run();
    deleted_ += sqlite3_changes(db_);
    del_span.bind(1, s).run();
    del_loss.bind(1, s).run();
  }
  put_meta("deleted", deleted_);
}

int64_t ExactStore::kept_tokens() const { return next_pos_ - deleted_; }

std::vector<std::pair<int64_t, int32_t>> ExactStore::tokens(int64_t from, int64_t to) const {
  std::vector<std::pair<int64_t, int32_t>> out;
  Stmt s(db_, "SELECT pos, id FROM tokens WHERE pos >= ?1 AND pos < ?2 ORDER BY pos");
  s.bind(1, from).bind(2, to);
  while (s.step()) out.emplace_back(s.i64(0), static_cast<int32_t>(s.i64(1)));
  return out;
}

std::vector<RecalledSpan> ExactStore::retrieve(const std::vector<int32_t>& query, int k, int64_t before,
                                               int64_t query_tokens) const {
  if (k <= 0 || query.empty()) return {};
  const size_t from = query.size() > static_cast<size_t>(std::max<int64_t>(query_tokens, 1))
                          ? query.size() - static_cast<size_t>(query_tokens)
                          : 0;
  std::set<std::string> terms;
  for (size_t i = from; i < query.size(); ++i) {
    terms.insert(unigram(query[i]));
    if (i + 1 < query.size()) terms.insert(bigram(query[i], query[i + 1]));
  }
  std::string match;
  for (const auto& t : terms) match += (match.empty() ? "" : " OR ") + t;
  const int64_t S = o_.span_tokens;
  std::vector<std::pair<int64_t, double>> hits;  // span start, score
  {
    Stmt s(db_,
           "SELECT start, bm25(spans) FROM spans WHERE spans MATCH ?1 AND start + ?2 <= ?3 ORDER BY bm25(spans) LIMIT ?4");
    s.bind(1, match).bind(2, S).bind(3, before).bind(4, static_cast<int64_t>(k));
    while (s.step()) hits.emplace_back(s.i64(0), -s.f64(1));
  }
  // Widen by half a span on each side (not past `before`), merge overlaps, order by position.
  std::sort(hits.begin(), hits.end());
  std::vector<RecalledSpan> out;
  int64_t cur_lo = 0, cur_hi = -1;
  double cur_score = 0;
  auto flush = [&]() {
    if (cur_hi <= cur_lo) return;
    RecalledSpan r;
    r.score = cur_score;
    for (auto& [p, id] : tokens(cur_lo, cur_hi)) {
      if (r.tokens.empty()) r.start = p;
      r.tokens.push_back(id);
    }
    if (!r.tokens.empty()) out.push_back(std::move(r));
  };
  for (auto& [start, score] : hits) {
    const int64_t lo = std::max<int64_t>(0, start - S / 2), hi = std::min(before, start + S + S / 2);
    if (cur_hi >= lo) {
      cur_hi = std::max(cur_hi, hi);
      cur_score = std::max(cur_score, score);
    } else {
      flush();
      cur_lo = lo;
      cur_hi = hi;
      cur_score = score;
    }
  }
  flush();
  return out;
}

void ExactStore::align(int64_t pos) {
  if (pos < 0) throw std::invalid_argument("exact store: negative position");
  if (pos == next_pos_) return;
  const int64_t np = next_pos_, ns = next_span_, dl = deleted_;
  exec("BEGIN IMMEDIATE");
  try {
    if (pos < next_pos_) {
      const int64_t S = o_.span_tokens;
      Stmt(db_, "DELETE FROM tokens WHERE pos >= ?1").bind(1, pos).run();
      // Spans reaching past pos go; the ones before it stay indexed.
      Stmt(db_, "DELETE FROM spans WHERE rowid > ?1").bind(1, pos - S).run();
      Stmt(db_, "DELETE FROM span_loss WHERE start > ?1").bind(1, pos - S).run();
      next_span_ = std::min(next_span_, pos / S * S);
      Stmt count(db_, "SELECT count(*) FROM tokens");
      const int64_t kept = count.step() ? count.i64(0) : 0;
      next_pos_ = pos;
      deleted_ = pos - kept;
    } else {
      deleted_ += pos - next_pos_;
      next_pos_ = pos;
      index_spans();
    }
    put_meta("next_pos", next_pos_);
    put_meta("next_span", next_span_);
    put_meta("deleted", deleted_);
    exec("COMMIT");
  } catch (...) {
    exec("ROLLBACK");
    next_pos_ = np;
    next_span_ = ns;
    deleted_ = dl;
    throw;
  }
}

void ExactStore::replace_with(const ExactStore& src) {
  if (src.o_.span_tokens != o_.span_tokens)
    throw std::runtime_error("exact store: spans of " + std::to_string(src.o_.span_tokens) + " tokens, not " +
                             std::to_string(o_.span_tokens));
  // The backup API writes the destination in one transaction of its own: a crash leaves either
  // the old contents or the new.
  sqlite3_backup* b = sqlite3_backup_init(db_, "main", src.db_, "main");
  if (!b) throw std::runtime_error(std::string("exact store: cannot replace: ") + sqlite3_errmsg(db_));
  const int rc = sqlite3_backup_step(b, -1);
  sqlite3_backup_finish(b);
  if (rc != SQLITE_DONE) throw std::runtime_error(std::string("exact store: replace failed: ") + sqlite3_errstr(rc));
  read_meta();
}

void ExactStore::copy_rows_from(const ExactStore& src, int64_t vocab, int64_t until) {
  if (next_pos_ != 0) throw std::logic_error("exact store: copy_rows_from into a store that is not empty");
  Stmt q(src.db_, "SELECT pos, id, loss FROM tokens WHERE pos >= 0 AND pos < ?1 ORDER BY pos");
  q.bind(1, std::min(src.size(), until));
  std::vector<int32_t> run;
  std::vector<float> losses;
  int64_t run_start = 0;
  auto flush = [&]() {
    if (run.empty()) return;
    align(run_start);
    append(run);
    set_losses(run_start, losses);  // NaN (unknown) stays NULL
    run.clear();
    losses.clear();
  };
  while (q.step()) {
    const int64_t pos = q.i64(0), id = q.i64(1);
    if (id < 0 || id >= vocab)
      throw std::runtime_error("token at position " + std::to_string(pos) + " has id " + std::to_string(id) +
                               ", outside the vocabulary [0, " + std::to_string(vocab) + ")");
    if (pos < (run.empty() ? next_pos_ : run_start + static_cast<int64_t>(run.size())))
      throw std::runtime_error("positions out of order");
    if (!run.empty() && pos != run_start + static_cast<int64_t>(run.size())) flush();
    if (run.empty()) run_start = pos;
    run.push_back(static_cast<int32_t>(id));
    losses.push_back(static_cast<float>(q.f64(2)));
    if (run.size() >= 65536) flush();
  }
  flush();
  align(until);
}

void ExactStore::copy_to(const std::string& path) const {
  const std::filesystem::path target(path);
  const std::string tmp = path + ".tmp-" + std::to_string(getpid());
  std::filesystem::remove(tmp);
  sqlite3* dst = nullptr;
  if (sqlite3_open_v2(tmp.c_str(), &dst, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) != SQLITE_OK) {
    const std::string msg = dst ? sqlite3_errmsg(dst) : "out of memory";
    sqlite3_close(dst);
    throw std::runtime_error("exact store: cannot write " + io::one_line(tmp) + ": " + msg);
  }
  sqlite3_backup* b = sqlite3_backup_init(dst, "main", db_, "main");
  const int rc = b ? sqlite3_backup_step(b, -1) : SQLITE_ERROR;
  if (b) sqlite3_backup_finish(b);
  std::string msg = sqlite3_errmsg(dst);
  // The copy is a plain file (rollback journal): it can be read, shipped or renamed without
  // -wal/-shm files beside it.
  if (rc == SQLITE_DONE && sqlite3_exec(dst, "PRAGMA journal_mode=DELETE", nullptr, nullptr, nullptr) != SQLITE_OK)
    msg = sqlite3_errmsg(dst);
  sqlite3_close(dst);
  if (rc != SQLITE_DONE) {
    std::filesystem::remove(tmp);
    throw std::runtime_error("exact store: copy to " + io::one_line(path) + " failed: " + msg);
  }
  std::filesystem::rename(tmp, target);
}

}  // namespace ttt::memory
