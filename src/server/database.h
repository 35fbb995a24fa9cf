// The durable catalogue of `ttt serve --state-dir`: an SQLite database (Debian libsqlite3) that
// holds, per session, its owner, version, counters, metadata and the name of the state file of
// its current version; its snapshots; an audit record per mutation; and the served model's
// identity (a state directory belongs to one model).
//
// Why a database and not a JSON index: a mutation must move the session's pointer to a new,
// fully written state file and add its audit record at once. State files are written (and
// fsynced) first under a name of their own (session id and version), then one transaction
// commits the pointer: a kill -9 before the commit leaves the old version answering (the new
// file is an orphan the next start removes), after it the new one. WAL mode with
// synchronous=FULL makes a commit durable when it returns.
//
// Not thread-safe by itself: the session store serializes calls (one connection, one mutex).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

struct sqlite3;

namespace ttt::server {

struct SessionRow {
  std::string id, tenant;
  int64_t version = 0, position = 0, ttt_steps = 0, pending_tokens = 0, state_bytes = 0;
  double created = 0, updated = 0;
  std::string metadata = "{}";  // a JSON object, as text
  std::string state_file;       // file name inside the state directory's states/; "" = fresh state
};

struct SnapshotRow {
  std::string session;
  int64_t version = 0;
  std::string label;
  double created = 0;
  std::string state_file;  // file name inside snapshots/; "" = fresh state
  int64_t position = 0;
};

struct AuditRow {
  int64_t seq = 0;
  double time = 0;
  std::string tenant, operation, session;
  int64_t version = 0, tokens = 0;
};

class Database {
 public:
  // Opens (creating if needed) the database file and its tables. Throws std::runtime_error.
  explicit Database(const std::string& path);
  ~Database();
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;

  // The model a state directory was made for: absent on a new database.
  std::optional<std::string> get_meta(const std::string& key);
  void set_meta(const std::string& key, const std::string& value);

  std::vector<SessionRow> sessions();
  std::vector<SnapshotRow> snapshots();  // all sessions', ordered by session then version
  std::vector<AuditRow> audit(const std::string& session = "");

  // Each of these is one transaction: all of it is committed or none.
  void insert_session(const SessionRow& s, const AuditRow& a);
  void update_session(const SessionRow& s, const AuditRow& a);  // by id
  // Deletes the session and its snapshots.
  void delete_session(const std::string& id, const AuditRow& a);
  // Adds (or replaces the label of) a snapshot and removes the snapshots `drop` lists.
  void put_snapshot(const SnapshotRow& s, const std::vector<int64_t>& drop, const AuditRow& a);
  // Sets a session's state file without a new version (the state is the same, now on disk).
  void set_state_file(const std::string& id, const std::string& file);

 private:
  void exec(const char* sql);
  void begin();
  void commit();
  void rollback() noexcept;
  void add_audit(const AuditRow& a);

  sqlite3* db_ = nullptr;
  std::string path_;
};

}  // namespace ttt::server
