// The sessions `ttt serve` holds: who owns each, its version, its state (in memory, on disk or
// both), its snapshots, and the rules every request goes through.
//
// - Requests on one session are serialized by its own mutex, held for the whole request
//   (including a streamed generation); requests on different sessions run concurrently.
// - A mutation works on a copy of the state (Session::fork) and swaps it in only after it is
//   persisted: a request that fails, or whose client goes away, changes nothing.
// - With a state directory every mutation writes the new state to states/<id>.v<version>.state
//   (atomically, fsynced) and then commits the pointer, the counters and an audit record in one
//   SQLite transaction (database.h). Without one, sessions live in memory, and the ones that
//   spill go to a private temporary directory removed at exit.
// - At most max_resident states stay in memory; the least recently used others are dropped (with
//   a state directory their file is already current; without, it is written first) and read
//   back on the next request.
// - Tenants: a session exists only for the tenant that created it (others get 404).
// - The exact store (memory/exact_store.h, issue 13), when on: every session keeps every token it
//   reads in stores/<id>.store, an SQLite database beside its state. The session's position is
//   the commit point: a mutation appends what it read to the store before it commits the state,
//   and the store is aligned to the committed position before each use (what a failed or killed
//   request appended is dropped). Forks and snapshots copy it; a restore, a state import or a
//   store import writes the replacement to stores/<id>.v<version>.pending.store and renames it
//   over the store only once the new version is committed (at start, a pending file of the
//   committed version is renamed, any other one removed).
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "inference/session.h"
#include "memory/exact_store.h"
#include "model/model.h"
#include "server/database.h"

namespace ttt::server {

// An error with its HTTP status and OpenAI-style type; the message is one line.
struct ApiError : std::runtime_error {
  ApiError(int status_, std::string type_, const std::string& msg)
      : std::runtime_error(msg), status(status_), type(std::move(type_)) {}
  int status;
  std::string type;
};
ApiError not_found(const std::string& what);
ApiError bad_request(const std::string& msg);
ApiError exact_store_off();  // 409: recall or a store request while --store-policy is off

struct StoreOptions {
  std::string state_dir;      // "" = memory only
  int64_t max_resident = 0;   // states kept in memory; 0 = no limit
  int64_t max_snapshots = 0;  // per session, oldest dropped first; 0 = no limit
  bool exact_store = false;   // keep every session's tokens in an exact store
  memory::StoreOptions exact;  // its policy, budget and span size
  model::KvDtype kv_dtype = model::KvDtype::F32;  // new sessions' window caches (--kv-dtype)
};

struct SessionInfo {
  std::string id, tenant;
  int64_t version = 0, position = 0, ttt_steps = 0, pending_tokens = 0, state_bytes = 0;
  double created = 0, updated = 0;
  std::string metadata = "{}";  // JSON object text
};

struct SnapshotInfo {
  int64_t version = 0;
  std::string label;
  double created = 0;
  int64_t position = 0;
};

struct StoreStats {
  int64_t stored = 0, resident = 0, resident_bytes = 0, state_bytes = 0;
};

class SessionStore {
 public:
  SessionStore(const model::Model& m, StoreOptions o);
  ~SessionStore();
  SessionStore(const SessionStore&) = delete;
  SessionStore& operator=(const SessionStore&) = delete;

  SessionInfo create(const std::string& tenant, const std::string& metadata_json);
  std::vector<SessionInfo> list(const std::string& tenant);
  SessionInfo get(const std::string& tenant, const std::string& id);
  // Throws ApiError 404 unless the session exists for this tenant.
  void check_exists(const std::string& tenant, const std::string& id);

  // A mutation: fn gets a working copy of the state (forked from the current one) and returns
  // how many tokens it read or wrote (for the audit). If fn returns normally the copy becomes
  // the new state, one version later; if it throws, nothing changes. If-Match (if_match) is
  // checked under the session's lock: 412 when stale.
  // fn also gets the session's exact store (null when the store is off), aligned to the working
  // copy's position, for recall; what the copy reads is appended to it by mutate itself.
  using MutateFn = std::function<int64_t(inference::Session&, const memory::ExactStore*)>;
  SessionInfo mutate(const std::string& tenant, const std::string& id, std::optional<int64_t> if_match,
                     const std::string& op, const MutateFn& fn);
  // A read under the session's lock: fn sees the current state, its info and, when with_exact,
  // its exact store (otherwise, or when the store is off, null; fn must not keep references).
  // Used by generate with commit false (fn forks) and by recall.
  using ReadFn = std::function<void(const inference::Session&, const SessionInfo&, const memory::ExactStore*)>;
  void read(const std::string& tenant, const std::string& id, const ReadFn& fn, bool with_exact = false);

  SessionInfo fork(const std::string& tenant, const std::string& id);
  SessionInfo reset(const std::string& tenant, const std::string& id, std::optional<int64_t> if_match);
  SnapshotInfo snapshot(const std::string& tenant, const std::string& id, const std::string& label);
  std::vector<SnapshotInfo> snapshots(const std::string& tenant, const std::string& id);
  SessionInfo restore(const std::string& tenant, const std::string& id, int64_t version,
                      std::optional<int64_t> if_match);
  std::string export_state(const std::string& tenant, const std::string& id);  // the state file's bytes
  // Replaces the state with a state file's (400 for a file of another model or a damaged one).
  SessionInfo import_state(const std::string& tenant, const std::string& id, const std::string& bytes,
                           std::optional<int64_t> if_match);
  void remove(const std::string& tenant, const std::string& id, std::optional<int64_t> if_match);

  // The exact store as one SQLite file (a consistent copy, rollback-journal mode); 409 when the
  // store is off.
  std::string export_exact(const std::string& tenant, const std::string& id);
  // Replaces the session's exact store with an uploaded one (400 for a file that is not a store
  // or has another span size): a new version with the same state. The store is then aligned to
  // the session's position.
  SessionInfo import_exact(const std::string& tenant, const std::string& id, const std::string& bytes,
                           std::optional<int64_t> if_match);
  bool exact_enabled() const { return o_.exact_store; }

  StoreStats stats();
  bool durable() const { return !o_.state_dir.empty(); }
  Database* database() { return db_.get(); }  // null without a state directory

 private:
  struct Entry {
    std::mutex mu;  // serializes requests on this session; guards live, file, snapshots
    SessionInfo info;  // guarded by the store's mu_ (listings read it without mu)
    std::unique_ptr<inference::Session> live;
    std::string file;  // a file holding the current version's state ("" = none written)
    std::vector<std::pair<SnapshotInfo, std::string>> snaps;  // with each one's file
    bool deleted = false;
    std::atomic<bool> resident{false};  // live is set (read by stats without the lock)
    uint64_t last_used = 0;  // guarded by mu_
  };
  using EntryPtr = std::shared_ptr<Entry>;

  // A session locked for one request. The entry is owned here, and released only after the
  // lock (members go in reverse order): a delete that erased the map's reference never leaves a
  // lock on a freed mutex, nor a waiter on one.
  struct Held {
    EntryPtr e;
    std::unique_lock<std::mutex> lk;
    Entry* operator->() const { return e.get(); }
    Entry& operator*() const { return *e; }
  };
  // Finds and locks a session of this tenant (404 otherwise, also when it is deleted meanwhile).
  Held lock(const std::string& tenant, const std::string& id);
  static void check_if_match(const Entry& e, std::optional<int64_t> if_match);
  // The current state, loaded if spilled (does not count as resident until kept).
  inference::Session& load(Entry& e);
  std::unique_ptr<inference::Session> fresh() const;
  // Makes e.file hold the current state (writes it if needed).
  void ensure_file(Entry& e);
  // Persists `next` as the session's next version and swaps it in. `written`: a state file of
  // `next` already in place under the next version's name (import).
  // `exact_pending`: a replacement exact store for the new version, renamed over the session's
  // store once the version is committed (removed if the commit fails).
  SessionInfo commit(Entry& e, std::unique_ptr<inference::Session> next, const std::string& op, int64_t tokens,
                     const std::string& written = "", const std::string& exact_pending = "");
  void touch(Entry& e);
  void set_live(Entry& e, std::unique_ptr<inference::Session> s);  // keeps the resident count
  void evict_if_needed(const Entry* keep);
  std::string state_path(const std::string& id, int64_t version) const;
  std::string snapshot_path(const std::string& id, int64_t version) const;
  std::string exact_path(const std::string& id) const;
  std::string exact_snapshot_path(const std::string& id, int64_t version) const;
  std::string exact_pending_path(const std::string& id, int64_t version) const;
  // The session's exact store, created if absent (null when the store is off).
  std::unique_ptr<memory::ExactStore> open_exact(const std::string& id) const;
  // An empty store file at `path` aligned to `pos` (nothing kept): a state imported without one.
  void write_empty_exact(const std::string& path, int64_t pos) const;
  void finish_pending_exact();  // at start: see the class comment
  std::string new_id();
  void sweep_orphans();
  SessionRow row_of(const Entry& e, const SessionInfo& info) const;

  const model::Model& m_;
  StoreOptions o_;
  std::string dir_;       // state dir or the private spill dir
  bool own_dir_ = false;  // the private spill dir (removed at exit)
  std::unique_ptr<Database> db_;
  std::mutex db_mu_;
  std::mutex mu_;  // guards entries_, every entry's info and last_used
  std::map<std::string, EntryPtr> entries_;
  uint64_t clock_ = 0;
  std::atomic<int64_t> resident_{0};
};

}  // namespace ttt::server
