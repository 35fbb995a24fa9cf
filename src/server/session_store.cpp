#include "server/session_store.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <random>
#include <set>

#include "io/atomic_file.h"
#include "io/file_read.h"
#include "io/messages.h"
#include "model/config.h"

namespace ttt::server {

namespace fs = std::filesystem;
using inference::Session;

ApiError not_found(const std::string& what) { return ApiError(404, "not_found_error", what + " not found"); }
ApiError bad_request(const std::string& msg) { return ApiError(400, "invalid_request_error", msg); }
ApiError exact_store_off() {
  return ApiError(409, "conflict", "the exact store is off (ttt serve --store-policy off): nothing to recall or export");
}

namespace {

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

void fsync_dir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

// A second name for an immutable state file (snapshots, forks): a hard link, or a copy where
// links are not possible. The target is replaced if it exists.
void link_or_copy(const std::string& from, const std::string& to) {
  ::unlink(to.c_str());
  if (::link(from.c_str(), to.c_str()) == 0) {
    fsync_dir(fs::path(to).parent_path().string());
    return;
  }
  const std::string bytes = io::read_regular_file(from, "session state");
  io::write_file_atomic(to, bytes.data(), bytes.size());
}

void remove_file(const std::string& path) {
  if (!path.empty()) ::unlink(path.c_str());
}

// An SQLite database and the journal files that may lie beside it.
void remove_db_files(const std::string& path) {
  if (path.empty()) return;
  for (const char* ext : {"", "-wal", "-shm", "-journal"}) ::unlink((path + ext).c_str());
}

// Renames a finished replacement store over `to` (no connection is open on either: stores are
// opened per request under the session's lock). The old store's journal files go first: they
// belong to the old contents.
void install_db(const std::string& from, const std::string& to) {
  for (const char* ext : {"-wal", "-shm", "-journal"}) ::unlink((to + ext).c_str());
  std::error_code ec;
  fs::rename(from, to, ec);
  if (ec) throw std::runtime_error("exact store: cannot rename " + from + ": " + ec.message());
  fsync_dir(fs::path(to).parent_path().string());
}

}  // namespace

SessionStore::SessionStore(const model::Model& m, StoreOptions o) : m_(m), o_(std::move(o)) {
  if (o_.max_resident < 0) throw std::invalid_argument("--max-resident-sessions must be >= 0");
  if (o_.max_snapshots < 0) throw std::invalid_argument("--max-snapshots must be >= 0");
  if (durable()) {
    dir_ = o_.state_dir;
    std::error_code ec;
    fs::create_directories(fs::path(dir_) / "states", ec);
    if (!ec) fs::create_directories(fs::path(dir_) / "snapshots", ec);
    if (!ec) fs::create_directories(fs::path(dir_) / "stores", ec);
    if (ec) throw std::runtime_error("--state-dir " + dir_ + ": " + ec.message());
    db_ = std::make_unique<Database>((fs::path(dir_) / "sessions.db").string());
    // A state directory belongs to one model: its state files are of that model only.
    const std::string cfg = model::config_to_json(m_.config());
    const auto saved = db_->get_meta("model_config");
    if (!saved) db_->set_meta("model_config", cfg);
    else if (*saved != cfg)
      throw std::runtime_error("--state-dir " + dir_ + " holds sessions of a model with another config");
    std::map<std::string, std::vector<SnapshotRow>> snaps;
    for (auto& s : db_->snapshots()) snaps[s.session].push_back(s);
    for (auto& r : db_->sessions()) {
      auto e = std::make_shared<Entry>();
      e->info = {r.id, r.tenant, r.version, r.position, r.ttt_steps, r.pending_tokens, r.state_bytes,
                 r.created, r.updated, r.metadata};
      if (!r.state_file.empty()) e->file = (fs::path(dir_) / "states" / r.state_file).string();
      for (auto& s : snaps[r.id])
        e->snaps.push_back({{s.version, s.label, s.created, s.position},
                            s.state_file.empty() ? "" : (fs::path(dir_) / "snapshots" / s.state_file).string()});
      entries_[r.id] = e;
    }
    sweep_orphans();
    finish_pending_exact();
  } else {
    // Memory only: spilled states go to a private directory that lives as long as the server.
    const char* tmp = std::getenv("TMPDIR");
    std::string templ = std::string(tmp && *tmp ? tmp : "/tmp") + "/ttt-serve-XXXXXX";
    std::vector<char> buf(templ.begin(), templ.end());
    buf.push_back('\0');
    if (!::mkdtemp(buf.data())) throw std::runtime_error("cannot create a spill directory under " + templ);
    dir_ = buf.data();
    own_dir_ = true;
    fs::create_directories(fs::path(dir_) / "states");
    fs::create_directories(fs::path(dir_) / "snapshots");
    fs::create_directories(fs::path(dir_) / "stores");
  }
}

SessionStore::~SessionStore() {
  if (own_dir_) {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
}

// State files nobody points to: written by a mutation killed before its commit, or left by a
// delete or an eviction killed half-way. Only at start, before any request.
void SessionStore::sweep_orphans() {
  std::set<std::string> keep;
  for (auto& [id, e] : entries_) {
    if (!e->file.empty()) keep.insert(e->file);
    for (auto& s : e->snaps)
      if (!s.second.empty()) keep.insert(s.second);
    for (auto& s : e->snaps) keep.insert(exact_snapshot_path(id, s.first.version));
  }
  for (const char* sub : {"states", "snapshots"}) {
    std::error_code ec;
    for (auto it = fs::directory_iterator(fs::path(dir_) / sub, ec); !ec && it != fs::directory_iterator();
         it.increment(ec))
      if (!keep.count(it->path().string())) fs::remove(it->path(), ec);
  }
}

std::string SessionStore::state_path(const std::string& id, int64_t version) const {
  return (fs::path(dir_) / "states" / (id + ".v" + std::to_string(version) + ".state")).string();
}

std::string SessionStore::snapshot_path(const std::string& id, int64_t version) const {
  return (fs::path(dir_) / "snapshots" / (id + ".v" + std::to_string(version) + ".state")).string();
}

std::string SessionStore::exact_path(const std::string& id) const {
  return (fs::path(dir_) / "stores" / (id + ".store")).string();
}

std::string SessionStore::exact_snapshot_path(const std::string& id, int64_t version) const {
  return (fs::path(dir_) / "snapshots" / (id + ".v" + std::to_string(version) + ".store")).string();
}

std::string SessionStore::exact_pending_path(const std::string& id, int64_t version) const {
  return (fs::path(dir_) / "stores" / (id + ".v" + std::to_string(version) + ".pending.store")).string();
}

std::unique_ptr<memory::ExactStore> SessionStore::open_exact(const std::string& id) const {
  if (!o_.exact_store) return nullptr;
  return std::make_unique<memory::ExactStore>(exact_path(id), o_.exact);
}

void SessionStore::write_empty_exact(const std::string& path, int64_t pos) const {
  remove_db_files(path);
  memory::ExactStore fresh(path, o_.exact);
  fresh.align(pos);
}

// Stores in stores/: a session's own (kept when the session exists), a pending replacement
// (renamed in when its version is the committed one: the commit happened, the rename did not),
// anything else (removed). Only at start, before any request.
void SessionStore::finish_pending_exact() {
  std::error_code ec;
  std::vector<fs::path> files;
  for (auto it = fs::directory_iterator(fs::path(dir_) / "stores", ec); !ec && it != fs::directory_iterator();
       it.increment(ec))
    files.push_back(it->path());
  std::sort(files.begin(), files.end());
  for (const auto& p : files) {
    const std::string name = p.filename().string();
    const auto dot = name.find('.');
    const std::string id = name.substr(0, dot);
    auto it = entries_.find(id);
    const std::string rest = dot == std::string::npos ? "" : name.substr(dot);
    bool keep = false;
    if (it != entries_.end()) {
      for (const char* ext : {"", "-wal", "-shm", "-journal"})
        if (rest == std::string(".store") + ext) keep = true;
      const std::string pending = ".v" + std::to_string(it->second->info.version) + ".pending.store";
      if (rest == pending) {
        try {
          install_db(p.string(), exact_path(id));
          continue;
        } catch (const std::exception& e) {
          std::fprintf(stderr, "ttt serve: %s\n", io::one_line(e.what(), 400).c_str());
        }
      }
    }
    if (!keep && fs::exists(p)) fs::remove(p, ec);
  }
}

std::string SessionStore::new_id() {
  static thread_local std::mt19937_64 gen{std::random_device{}() ^ (static_cast<uint64_t>(std::random_device{}()) << 32)};
  char buf[40];
  std::snprintf(buf, sizeof buf, "sess_%016llx%08llx", static_cast<unsigned long long>(gen()),
                static_cast<unsigned long long>(gen() & 0xffffffffu));
  return buf;
}

SessionRow SessionStore::row_of(const Entry& e, const SessionInfo& i) const {
  SessionRow r;
  r.id = i.id;
  r.tenant = i.tenant;
  r.version = i.version;
  r.position = i.position;
  r.ttt_steps = i.ttt_steps;
  r.pending_tokens = i.pending_tokens;
  r.state_bytes = i.state_bytes;
  r.created = i.created;
  r.updated = i.updated;
  r.metadata = i.metadata;
  r.state_file = e.file.empty() ? "" : fs::path(e.file).filename().string();
  return r;
}

std::unique_ptr<Session> SessionStore::fresh() const {
  e2e::TTTOptions opt;
  opt.kv_dtype = o_.kv_dtype;
  return std::make_unique<Session>(m_, opt);
}

SessionStore::Held SessionStore::lock(const std::string& tenant, const std::string& id) {
  Held h;
  {
    std::lock_guard<std::mutex> g(mu_);
    auto it = entries_.find(id);
    if (it == entries_.end() || it->second->info.tenant != tenant) throw not_found("session '" + io::one_line(id, 80) + "'");
    h.e = it->second;
  }
  h.lk = std::unique_lock<std::mutex>(h.e->mu);
  if (h.e->deleted) {
    h.lk.unlock();  // before h (and perhaps the last reference to the entry) goes
    throw not_found("session '" + io::one_line(id, 80) + "'");
  }
  return h;
}

void SessionStore::check_if_match(const Entry& e, std::optional<int64_t> if_match) {
  if (if_match && *if_match != e.info.version)
    throw ApiError(412, "precondition_failed",
                   "If-Match: version " + std::to_string(*if_match) + " is stale, the session is at version " +
                       std::to_string(e.info.version));
}

void SessionStore::touch(Entry& e) {
  std::lock_guard<std::mutex> g(mu_);
  e.last_used = ++clock_;
}

void SessionStore::set_live(Entry& e, std::unique_ptr<Session> s) {
  const bool was = e.live != nullptr, now = s != nullptr;
  e.live = std::move(s);
  resident_ += static_cast<int64_t>(now) - static_cast<int64_t>(was);
  e.resident = now;
}

Session& SessionStore::load(Entry& e) {
  if (!e.live) set_live(e, e.file.empty() ? fresh() : std::make_unique<Session>(Session::load_state(m_, e.file)));
  return *e.live;
}

void SessionStore::ensure_file(Entry& e) {
  if (!e.file.empty()) return;
  const std::string path = state_path(e.info.id, e.info.version);
  if (e.live) e.live->save_state(path);
  else fresh()->save_state(path);
  if (db_) {
    std::lock_guard<std::mutex> g(db_mu_);
    db_->set_state_file(e.info.id, fs::path(path).filename().string());
  }
  e.file = path;
}

SessionInfo SessionStore::commit(Entry& e, std::unique_ptr<Session> next, const std::string& op, int64_t tokens,
                                 const std::string& written, const std::string& exact_pending) {
  SessionInfo info;
  {
    std::lock_guard<std::mutex> g(mu_);
    info = e.info;
  }
  info.version += 1;
  info.position = next->position();
  info.ttt_steps = next->ttt_steps();
  info.pending_tokens = next->pending_tokens();
  info.state_bytes = static_cast<int64_t>(next->state_bytes());
  info.updated = now_seconds();
  const std::string old = e.file;
  if (db_) {
    const std::string path = written.empty() ? state_path(info.id, info.version) : written;
    try {
      if (written.empty()) next->save_state(path);
      Entry tmp;
      tmp.file = path;
      std::lock_guard<std::mutex> g(db_mu_);
      db_->update_session(row_of(tmp, info), {0, info.updated, info.tenant, op, info.id, info.version, tokens});
    } catch (...) {
      remove_file(path);
      remove_db_files(exact_pending);
      throw;
    }
    e.file = path;
  } else {
    e.file = written;  // an imported file holds exactly the new state
  }

  if (old != e.file) remove_file(old);  // snapshots have names of their own
  set_live(e, std::move(next));
  {
    std::lock_guard<std::mutex> g(mu_);
    e.info = info;
    e.last_used = ++clock_;
  }
  // Committed: the replacement store is now the session's (a kill before this leaves it pending
  // under the committed version, and finish_pending_exact installs it at start).
  if (!exact_pending.empty()) {
    try {
      install_db(exact_pending, exact_path(info.id));
    } catch (const std::exception& ex) {
      std::fprintf(stderr, "ttt serve: session %s: %s (installed at the next start)\n", info.id.c_str(),
                   io::one_line(ex.what(), 400).c_str());
    }
  }
  return info;
}

void SessionStore::evict_if_needed(const Entry* keep) {
  if (o_.max_resident <= 0) return;
  while (resident_.load() > o_.max_resident) {
    EntryPtr victim;
    std::unique_lock<std::mutex> vlk;
    {
      std::lock_guard<std::mutex> g(mu_);
      std::vector<EntryPtr> order;
      for (auto& [id, e] : entries_)
        if (e.get() != keep) order.push_back(e);
      std::sort(order.begin(), order.end(), [](const EntryPtr& a, const EntryPtr& b) { return a->last_used < b->last_used; });
      for (auto& e : order) {
        std::unique_lock<std::mutex> l(e->mu, std::try_to_lock);  // a busy session is in use: not a victim
        if (l.owns_lock() && e->live && !e->deleted) {
          victim = e;
          vlk = std::move(l);
          break;
        }
      }
    }
    if (!victim) return;
    try {
      ensure_file(*victim);  // with a state directory it is already current
    } catch (const std::exception& ex) {
      std::fprintf(stderr, "ttt serve: cannot spill session %s: %s\n", victim->info.id.c_str(),
                   io::one_line(ex.what(), 400).c_str());
      return;
    }
    set_live(*victim, nullptr);
  }
}

SessionInfo SessionStore::create(const std::string& tenant, const std::string& metadata_json) {
  auto e = std::make_shared<Entry>();
  const double t = now_seconds();
  e->info.tenant = tenant;
  e->info.created = e->info.updated = t;
  e->info.metadata = metadata_json;
  {
    Session s(m_);
    e->info.state_bytes = static_cast<int64_t>(s.state_bytes());
  }
  for (;;) {
    e->info.id = new_id();
    std::lock_guard<std::mutex> g(mu_);
    if (!entries_.count(e->info.id)) break;
  }
  if (db_) {
    std::lock_guard<std::mutex> g(db_mu_);
    db_->insert_session(row_of(*e, e->info), {0, t, tenant, "create", e->info.id, 0, 0});
  }
  std::lock_guard<std::mutex> g(mu_);
  e->last_used = ++clock_;
  entries_[e->info.id] = e;
  return e->info;
}

std::vector<SessionInfo> SessionStore::list(const std::string& tenant) {
  std::vector<SessionInfo> out;
  std::lock_guard<std::mutex> g(mu_);
  for (auto& [id, e] : entries_)
    if (e->info.tenant == tenant && !e->deleted) out.push_back(e->info);
  std::sort(out.begin(), out.end(), [](const SessionInfo& a, const SessionInfo& b) {
    return a.created != b.created ? a.created < b.created : a.id < b.id;
  });
  return out;
}

SessionInfo SessionStore::get(const std::string& tenant, const std::string& id) {
  std::lock_guard<std::mutex> g(mu_);
  auto it = entries_.find(id);
  if (it == entries_.end() || it->second->info.tenant != tenant || it->second->deleted)
    throw not_found("session '" + io::one_line(id, 80) + "'");
  return it->second->info;
}

void SessionStore::check_exists(const std::string& tenant, const std::string& id) { get(tenant, id); }

SessionInfo SessionStore::mutate(const std::string& tenant, const std::string& id, std::optional<int64_t> if_match,
                                 const std::string& op, const MutateFn& fn) {
  SessionInfo info;
  {
    auto e = lock(tenant, id);
    check_if_match(*e, if_match);
    // The working copy: a fork of the resident state, or the state read from disk directly.
    std::unique_ptr<Session> work = e->live ? std::make_unique<Session>(e->live->fork())
                                    : e->file.empty() ? fresh()
                                                      : std::make_unique<Session>(Session::load_state(m_, e->file));
    // The exact store sees what the working copy reads; it is written before the state is
    // committed, so a kill in between leaves it ahead of the position (dropped by align).
    auto ex = open_exact(id);
    const int64_t from = work->position();
    std::vector<int32_t> read;
    std::vector<std::pair<int64_t, std::vector<float>>> losses;
    if (ex) {
      ex->align(from);
      work->set_read_observer([&](int64_t pos, const std::vector<int32_t>& t) {
        if (pos != from + static_cast<int64_t>(read.size())) throw std::logic_error("exact store: reads out of order");
        read.insert(read.end(), t.begin(), t.end());
      });
      work->set_nll_observer([&](int64_t pos, const std::vector<float>& nll) { losses.emplace_back(pos, nll); });
    }
    const int64_t tokens = fn(*work, ex.get());
    if (ex) {
      work->set_read_observer({});
      work->set_nll_observer({});
      ex->append(read);
      for (const auto& [pos, nll] : losses) ex->set_losses(pos, nll);
      ex.reset();
    }
    info = commit(*e, std::move(work), op, tokens);
  }
  evict_if_needed(nullptr);
  return info;
}

void SessionStore::read(const std::string& tenant, const std::string& id, const ReadFn& fn, bool with_exact) {
  {
    auto e = lock(tenant, id);
    const Session& s = load(*e);
    touch(*e);
    SessionInfo info;
    {
      std::lock_guard<std::mutex> g(mu_);
      info = e->info;
    }
    // Possibly ahead of the position (a failed request): recall reads only before the window.
    auto ex = with_exact ? open_exact(id) : nullptr;
    fn(s, info, ex.get());
  }
  evict_if_needed(nullptr);
}

SessionInfo SessionStore::fork(const std::string& tenant, const std::string& id) {
  auto ne = std::make_shared<Entry>();
  {
    auto e = lock(tenant, id);
    {
      std::lock_guard<std::mutex> g(mu_);
      ne->info = e->info;
    }
    for (;;) {
      ne->info.id = new_id();
      std::lock_guard<std::mutex> g(mu_);
      if (!entries_.count(ne->info.id)) break;
    }
    ne->info.version = 0;
    ne->info.created = ne->info.updated = now_seconds();
    if (db_ || !e->live) {
      // State files are immutable: the fork's version 0 is another name for the same bytes.
      if (db_) ensure_file(*e);
      if (!e->file.empty()) {
        ne->file = state_path(ne->info.id, 0);
        link_or_copy(e->file, ne->file);
      }
    } else {
      set_live(*ne, std::make_unique<Session>(e->live->fork()));
    }
    try {
      if (o_.exact_store && fs::exists(exact_path(id))) {
        auto ex = open_exact(id);
        ex->align(e->info.position);
        ex->copy_to(exact_path(ne->info.id));
      }
      if (db_) {
        std::lock_guard<std::mutex> g(db_mu_);
        db_->insert_session(row_of(*ne, ne->info), {0, ne->info.created, tenant, "fork", ne->info.id, 0, 0});
      }
    } catch (...) {
      remove_file(ne->file);
      remove_db_files(exact_path(ne->info.id));
      throw;
    }
    touch(*e);
    std::lock_guard<std::mutex> g(mu_);
    ne->last_used = ++clock_;
    entries_[ne->info.id] = ne;
  }
  evict_if_needed(nullptr);
  return ne->info;
}

SessionInfo SessionStore::reset(const std::string& tenant, const std::string& id, std::optional<int64_t> if_match) {
  SessionInfo info;
  {
    auto e = lock(tenant, id);
    check_if_match(*e, if_match);
    // Session::reset keeps the TTT options (an imported state may have them off).
    const e2e::TTTOptions opt = load(*e).options();
    std::string pending;
    if (o_.exact_store) write_empty_exact(pending = exact_pending_path(id, e->info.version + 1), 0);
    info = commit(*e, std::make_unique<Session>(m_, opt), "reset", 0, "", pending);
  }
  evict_if_needed(nullptr);
  return info;
}

SnapshotInfo SessionStore::snapshot(const std::string& tenant, const std::string& id, const std::string& label) {
  auto e = lock(tenant, id);
  ensure_file(*e);
  SnapshotInfo s;
  {
    std::lock_guard<std::mutex> g(mu_);
    s = {e->info.version, label, now_seconds(), e->info.position};
  }
  const std::string path = snapshot_path(id, s.version);
  auto same = std::find_if(e->snaps.begin(), e->snaps.end(), [&](auto& p) { return p.first.version == s.version; });
  if (same == e->snaps.end()) link_or_copy(e->file, path);
  if (o_.exact_store) {
    try {
      auto ex = open_exact(id);
      ex->align(s.position);
      ex->copy_to(exact_snapshot_path(id, s.version));
    } catch (...) {
      if (same == e->snaps.end()) remove_file(path);
      throw;
    }
  }
  // Retention: the oldest snapshots beyond the limit go (never the one being made).
  std::vector<int64_t> drop;
  const size_t after = e->snaps.size() + (same == e->snaps.end() ? 1 : 0);
  if (o_.max_snapshots > 0 && after > static_cast<size_t>(o_.max_snapshots))
    for (size_t i = 0; i < after - static_cast<size_t>(o_.max_snapshots) && i < e->snaps.size(); ++i)
      if (e->snaps[i].first.version != s.version) drop.push_back(e->snaps[i].first.version);
  if (db_) {
    SnapshotRow r{id, s.version, label, s.created, fs::path(path).filename().string(), s.position};
    std::lock_guard<std::mutex> g(db_mu_);
    try {
      db_->put_snapshot(r, drop, {0, s.created, tenant, "snapshot", id, s.version, 0});
    } catch (...) {
      if (same == e->snaps.end()) {
        remove_file(path);
        remove_db_files(exact_snapshot_path(id, s.version));
      }
      throw;
    }
  }
  if (same != e->snaps.end()) same->first = s;
  else e->snaps.push_back({s, path});
  for (int64_t v : drop) {
    auto it = std::find_if(e->snaps.begin(), e->snaps.end(), [&](auto& p) { return p.first.version == v; });
    if (it != e->snaps.end()) {
      remove_file(it->second);
      remove_db_files(exact_snapshot_path(id, v));
      e->snaps.erase(it);
    }
  }
  std::sort(e->snaps.begin(), e->snaps.end(), [](auto& a, auto& b) { return a.first.version < b.first.version; });
  touch(*e);
  return s;
}

std::vector<SnapshotInfo> SessionStore::snapshots(const std::string& tenant, const std::string& id) {
  auto e = lock(tenant, id);
  std::vector<SnapshotInfo> out;
  for (auto& s : e->snaps) out.push_back(s.first);
  return out;
}

SessionInfo SessionStore::restore(const std::string& tenant, const std::string& id, int64_t version,
                                  std::optional<int64_t> if_match) {
  SessionInfo info;
  {
    auto e = lock(tenant, id);
    check_if_match(*e, if_match);
    auto it = std::find_if(e->snaps.begin(), e->snaps.end(), [&](auto& p) { return p.first.version == version; });
    if (it == e->snaps.end()) throw not_found("snapshot of version " + std::to_string(version));
    auto next = std::make_unique<Session>(Session::load_state(m_, it->second));
    std::string pending;
    if (o_.exact_store) {
      pending = exact_pending_path(id, e->info.version + 1);
      const std::string snap = exact_snapshot_path(id, version);
      if (fs::exists(snap)) {
        remove_db_files(pending);
        auto ro = o_.exact;
        ro.read_only = true;
        memory::ExactStore(snap, ro).copy_to(pending);
      } else {
        write_empty_exact(pending, next->position());  // a snapshot made while the store was off
      }
    }
    info = commit(*e, std::move(next), "restore", 0, "", pending);
  }
  evict_if_needed(nullptr);
  return info;
}

std::string SessionStore::export_state(const std::string& tenant, const std::string& id) {
  std::string bytes;
  {
    auto e = lock(tenant, id);
    ensure_file(*e);
    bytes = io::read_regular_file(e->file, "session state");
    touch(*e);
  }
  return bytes;
}

SessionInfo SessionStore::import_state(const std::string& tenant, const std::string& id, const std::string& bytes,
                                       std::optional<int64_t> if_match) {
  SessionInfo info;
  {
    auto e = lock(tenant, id);
    check_if_match(*e, if_match);
    // Written under the next version's name, then read back as a state: a file of another
    // model, or a damaged one, is refused before anything points to it.
    const std::string path = state_path(id, e->info.version + 1);
    io::write_file_atomic(path, bytes.data(), bytes.size());
    auto next = fresh();
    try {
      next->restore_state(path);
    } catch (const std::exception& ex) {
      remove_file(path);
      std::string msg = ex.what();
      for (size_t p; (p = msg.find(path)) != std::string::npos;) msg.replace(p, path.size(), "the uploaded file");
      throw bad_request(msg);
    }
    try {
      // An imported state comes without its store: nothing before its position is kept (PUT
      // .../store after it brings one).
      std::string pending;
      if (o_.exact_store) write_empty_exact(pending = exact_pending_path(id, e->info.version + 1), next->position());
      info = commit(*e, std::move(next), "import", 0, path, pending);
    } catch (...) {
      remove_file(path);
      throw;
    }
  }
  evict_if_needed(nullptr);
  return info;
}

void SessionStore::remove(const std::string& tenant, const std::string& id, std::optional<int64_t> if_match) {
  auto e = lock(tenant, id);
  check_if_match(*e, if_match);
  if (db_) {
    std::lock_guard<std::mutex> g(db_mu_);
    db_->delete_session(id, {0, now_seconds(), tenant, "delete", id, e->info.version, 0});
  }
  e->deleted = true;
  remove_file(e->file);
  for (auto& s : e->snaps) {
    remove_file(s.second);
    remove_db_files(exact_snapshot_path(id, s.first.version));
  }
  remove_db_files(exact_path(id));
  set_live(*e, nullptr);
  std::lock_guard<std::mutex> g(mu_);
  entries_.erase(id);
}

std::string SessionStore::export_exact(const std::string& tenant, const std::string& id) {
  if (!o_.exact_store) throw exact_store_off();
  auto e = lock(tenant, id);
  auto ex = open_exact(id);
  ex->align(e->info.position);
  const std::string tmp = (fs::path(dir_) / "stores" / (id + ".export.tmp")).string();
  ex->copy_to(tmp);
  std::string bytes;
  try {
    bytes = io::read_regular_file(tmp, "exact store", uint64_t{1} << 40);
  } catch (...) {
    remove_db_files(tmp);
    throw;
  }
  remove_db_files(tmp);
  touch(*e);
  return bytes;
}

SessionInfo SessionStore::import_exact(const std::string& tenant, const std::string& id, const std::string& bytes,
                                       std::optional<int64_t> if_match) {
  if (!o_.exact_store) throw exact_store_off();
  SessionInfo info;
  {
    auto e = lock(tenant, id);
    check_if_match(*e, if_match);
    const std::string upload = (fs::path(dir_) / "stores" / (id + ".upload.tmp")).string();
    const std::string pending = exact_pending_path(id, e->info.version + 1);
    remove_db_files(pending);
    try {
      io::write_file_atomic(upload, bytes.data(), bytes.size());
      // The upload is read, never trusted: its rows are copied into a store built here (ids
      // checked against the vocabulary), so its schema, index and settings play no part.
      auto ro = o_.exact;
      ro.read_only = true;
      memory::ExactStore src(upload, ro);
      memory::ExactStore dst(pending, o_.exact);
      dst.copy_rows_from(src, m_.config().vocab_size, e->info.position);
    } catch (const std::exception& ex) {
      remove_db_files(upload);
      remove_db_files(pending);
      std::string msg = ex.what();
      for (const std::string* p : {&upload, &pending})
        for (size_t at; (at = msg.find(*p)) != std::string::npos;) msg.replace(at, p->size(), "the uploaded store");
      throw bad_request(msg);
    }
    remove_db_files(upload);
    auto next = std::make_unique<Session>(load(*e).fork());
    info = commit(*e, std::move(next), "import_store", 0, "", pending);
  }
  evict_if_needed(nullptr);
  return info;
}

StoreStats SessionStore::stats() {
  StoreStats st;
  std::lock_guard<std::mutex> g(mu_);
  st.stored = static_cast<int64_t>(entries_.size());
  st.resident = resident_.load();
  for (auto& [id, e] : entries_) {
    st.state_bytes += e->info.state_bytes;
    if (e->resident) st.resident_bytes += e->info.state_bytes;
  }
  return st;
}

}  // namespace ttt::server
