#include "server/database.h"

#include <sqlite3.h>

#include <stdexcept>

namespace ttt::server {
namespace {

// One prepared statement, finalized on scope exit; binds by 1-based index.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) : db_(db) {
    if (sqlite3_prepare_v2(db, sql, -1, &st_, nullptr) != SQLITE_OK)
      throw std::runtime_error(std::string("state database: cannot prepare statement: ") + sqlite3_errmsg(db));
  }
  ~Stmt() { sqlite3_finalize(st_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  Stmt& bind(int i, const std::string& v) {
    check(sqlite3_bind_text(st_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT));
    return *this;
  }
  Stmt& bind(int i, int64_t v) {
    check(sqlite3_bind_int64(st_, i, v));
    return *this;
  }
  Stmt& bind(int i, double v) {
    check(sqlite3_bind_double(st_, i, v));
    return *this;
  }
  // Steps once: true while a row is available.
  bool step() {
    const int rc = sqlite3_step(st_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    throw std::runtime_error(std::string("state database: ") + sqlite3_errmsg(db_));
  }
  void run() {
    while (step()) {
    }
  }
  std::string text(int c) const {
    const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(st_, c));
    return p ? std::string(p, static_cast<size_t>(sqlite3_column_bytes(st_, c))) : std::string();
  }
  int64_t i64(int c) const { return sqlite3_column_int64(st_, c); }
  double f64(int c) const { return sqlite3_column_double(st_, c); }

 private:
  void check(int rc) {
    if (rc != SQLITE_OK) throw std::runtime_error(std::string("state database: cannot bind: ") + sqlite3_errmsg(db_));
  }
  sqlite3* db_;
  sqlite3_stmt* st_ = nullptr;
};

}  // namespace

Database::Database(const std::string& path) : path_(path) {
  if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                      nullptr) != SQLITE_OK) {
    const std::string msg = db_ ? sqlite3_errmsg(db_) : "out of memory";
    sqlite3_close(db_);
    db_ = nullptr;
    throw std::runtime_error("state database " + path + ": " + msg);
  }
  sqlite3_busy_timeout(db_, 5000);
  // WAL + FULL: a commit is on disk when it returns, and a torn write is rolled back on open.
  exec("PRAGMA journal_mode=WAL");
  exec("PRAGMA synchronous=FULL");
  exec("PRAGMA foreign_keys=ON");
  exec(
      "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
      "CREATE TABLE IF NOT EXISTS sessions(id TEXT PRIMARY KEY, tenant TEXT NOT NULL, version INTEGER NOT NULL,"
      " position INTEGER NOT NULL, ttt_steps INTEGER NOT NULL, pending_tokens INTEGER NOT NULL,"
      " state_bytes INTEGER NOT NULL, created REAL NOT NULL, updated REAL NOT NULL, metadata TEXT NOT NULL,"
      " state_file TEXT NOT NULL);"
      "CREATE TABLE IF NOT EXISTS snapshots(session TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,"
      " version INTEGER NOT NULL, label TEXT NOT NULL, created REAL NOT NULL, state_file TEXT NOT NULL,"
      " position INTEGER NOT NULL, PRIMARY KEY(session, version));"
      "CREATE TABLE IF NOT EXISTS audit(seq INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL,"
      " tenant TEXT NOT NULL, operation TEXT NOT NULL, session TEXT NOT NULL, version INTEGER NOT NULL,"
      " tokens INTEGER NOT NULL);");
}

Database::~Database() {
  if (db_) sqlite3_close(db_);
}

void Database::exec(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    const std::string msg = err ? err : "unknown error";
    sqlite3_free(err);
    throw std::runtime_error("state database " + path_ + ": " + msg);
  }
}

void Database::begin() { exec("BEGIN IMMEDIATE"); }
void Database::commit() { exec("COMMIT"); }
void Database::rollback() noexcept {
  sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
}

std::optional<std::string> Database::get_meta(const std::string& key) {
  Stmt s(db_, "SELECT value FROM meta WHERE key = ?");
  s.bind(1, key);
  if (!s.step()) return std::nullopt;
  return s.text(0);
}

void Database::set_meta(const std::string& key, const std::string& value) {
  Stmt s(db_, "INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)");
  s.bind(1, key).bind(2, value).run();
}

std::vector<SessionRow> Database::sessions() {
  Stmt s(db_,
         "SELECT id, tenant, version, position, ttt_steps, pending_tokens, state_bytes, created, updated, metadata,"
         " state_file FROM sessions ORDER BY created, id");
  std::vector<SessionRow> out;
  while (s.step()) {
    SessionRow r;
    r.id = s.text(0);
    r.tenant = s.text(1);
    r.version = s.i64(2);
    r.position = s.i64(3);
    r.ttt_steps = s.i64(4);
    r.pending_tokens = s.i64(5);
    r.state_bytes = s.i64(6);
    r.created = s.f64(7);
    r.updated = s.f64(8);
    r.metadata = s.text(9);
    r.state_file = s.text(10);
    out.push_back(std::move(r));
  }
  return out;
}

std::vector<SnapshotRow> Database::snapshots() {
  Stmt s(db_, "SELECT session, version, label, created, state_file, position FROM snapshots ORDER BY session, version");
  std::vector<SnapshotRow> out;
  while (s.step()) {
    SnapshotRow r;
    r.session = s.text(0);
    r.version = s.i64(1);
    r.label = s.text(2);
    r.created = s.f64(3);
    r.state_file = s.text(4);
    r.position = s.i64(5);
    out.push_back(std::move(r));
  }
  return out;
}

std::vector<AuditRow> Database::audit(const std::string& session) {
  Stmt s(db_, session.empty()
                  ? "SELECT seq, time, tenant, operation, session, version, tokens FROM audit ORDER BY seq"
                  : "SELECT seq, time, tenant, operation, session, version, tokens FROM audit WHERE session = ? ORDER BY seq");
  if (!session.empty()) s.bind(1, session);
  std::vector<AuditRow> out;
  while (s.step()) {
    AuditRow r;
    r.seq = s.i64(0);
    r.time = s.f64(1);
    r.tenant = s.text(2);
    r.operation = s.text(3);
    r.session = s.text(4);
    r.version = s.i64(5);
    r.tokens = s.i64(6);
    out.push_back(std::move(r));
  }
  return out;
}

void Database::add_audit(const AuditRow& a) {
  Stmt s(db_, "INSERT INTO audit(time, tenant, operation, session, version, tokens) VALUES(?, ?, ?, ?, ?, ?)");
  s.bind(1, a.time).bind(2, a.tenant).bind(3, a.operation).bind(4, a.session).bind(5, a.version).bind(6, a.tokens).run();
}

namespace {

// Runs body inside BEGIN IMMEDIATE .. COMMIT; any exception rolls back and is rethrown.
template <class F>
void in_transaction(Database& db, void (Database::*begin)(), void (Database::*commit)(),
                    void (Database::*rollback)() noexcept, F&& body) {
  (db.*begin)();
  try {
    body();
    (db.*commit)();
  } catch (...) {
    (db.*rollback)();
    throw;
  }
}

}  // namespace

void Database::insert_session(const SessionRow& r, const AuditRow& a) {
  in_transaction(*this, &Database::begin, &Database::commit, &Database::rollback, [&] {
    Stmt s(db_,
           "INSERT INTO sessions(id, tenant, version, position, ttt_steps, pending_tokens, state_bytes, created,"
           " updated, metadata, state_file) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
    s.bind(1, r.id).bind(2, r.tenant).bind(3, r.version).bind(4, r.position).bind(5, r.ttt_steps);
    s.bind(6, r.pending_tokens).bind(7, r.state_bytes).bind(8, r.created).bind(9, r.updated);
    s.bind(10, r.metadata).bind(11, r.state_file).run();
    add_audit(a);
  });
}

void Database::update_session(const SessionRow& r, const AuditRow& a) {
  in_transaction(*this, &Database::begin, &Database::commit, &Database::rollback, [&] {
    Stmt s(db_,
           "UPDATE sessions SET version = ?, position = ?, ttt_steps = ?, pending_tokens = ?, state_bytes = ?,"
           " updated = ?, metadata = ?, state_file = ? WHERE id = ?");
    s.bind(1, r.version).bind(2, r.position).bind(3, r.ttt_steps).bind(4, r.pending_tokens).bind(5, r.state_bytes);
    s.bind(6, r.updated).bind(7, r.metadata).bind(8, r.state_file).bind(9, r.id).run();
    if (sqlite3_changes(db_) != 1) throw std::runtime_error("state database: session " + r.id + " is not stored");
    add_audit(a);
  });
}

void Database::delete_session(const std::string& id, const AuditRow& a) {
  in_transaction(*this, &Database::begin, &Database::commit, &Database::rollback, [&] {
    Stmt(db_, "DELETE FROM snapshots WHERE session = ?").bind(1, id).run();
    Stmt(db_, "DELETE FROM sessions WHERE id = ?").bind(1, id).run();
    add_audit(a);
  });
}

void Database::put_snapshot(const SnapshotRow& r, const std::vector<int64_t>& drop, const AuditRow& a) {
  in_transaction(*this, &Database::begin, &Database::commit, &Database::rollback, [&] {
    Stmt s(db_,
           "INSERT OR REPLACE INTO snapshots(session, version, label, created, state_file, position)"
           " VALUES(?, ?, ?, ?, ?, ?)");
    s.bind(1, r.session).bind(2, r.version).bind(3, r.label).bind(4, r.created).bind(5, r.state_file);
    s.bind(6, r.position).run();
    for (int64_t v : drop)
      Stmt(db_, "DELETE FROM snapshots WHERE session = ? AND version = ?").bind(1, r.session).bind(2, v).run();
    add_audit(a);
  });
}

void Database::set_state_file(const std::string& id, const std::string& file) {
  Stmt(db_, "UPDATE sessions SET state_file = ? WHERE id = ?").bind(1, file).bind(2, id).run();
}

}  // namespace ttt::server
