// The pieces of `ttt serve` below HTTP: the inference API (generation.h), API keys, the SQLite
// catalogue, and the session store (versions, If-Match, tenants, failed mutations change
// nothing, persistence across a restart, spilling, snapshots and their retention).
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <thread>
#include <vector>
#include <fstream>
#include <stdexcept>

#include "inference/generation.h"
#include "inference/recall.h"
#include "memory/exact_store.h"
#include "model/model.h"
#include "server/auth.h"
#include "server/database.h"
#include "server/session_store.h"
#include "test_configs.h"
#include "ttt/inner_loop.h"

namespace ttt::test {
namespace {

namespace fs = std::filesystem;
using server::ApiError;
using server::SessionStore;
using server::StoreOptions;

std::vector<int32_t> seq_tokens(int n, int64_t vocab, uint64_t seed) {
  Rng r(seed);
  std::vector<int32_t> out(n);
  for (auto& t : out) t = static_cast<int32_t>(1 + r.next_u64() % (vocab - 1));
  out[0] = 0;  // BOS
  return out;
}

struct TempDir {
  std::string path;
  TempDir() {
    char buf[] = "/tmp/ttt-server-test-XXXXXX";
    path = mkdtemp(buf);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

server::StoreOptions store_options(const std::string& dir, int64_t resident, int64_t snapshots) {
  server::StoreOptions o;
  o.state_dir = dir;
  o.max_resident = resident;
  o.max_snapshots = snapshots;
  return o;
}

int status_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const ApiError& e) {
    return e.status;
  }
  return 0;
}

// ---- the inference API ----

TEST(Generation, IngestChunkLossesEqualPrefillChunkMeans) {
  const auto cfg = session_config(true);
  const auto m = model::Model::init(cfg, 3);
  const auto toks = seq_tokens(4 * 5 + 1, cfg.vocab_size, 7);
  const std::vector<int32_t> in(toks.begin(), toks.end() - 1), tg(toks.begin() + 1, toks.end());
  const auto pre = e2e::prefill(m, in, tg);
  inference::Session s(m);
  // In two requests that cut a chunk: the losses are per completed chunk, whichever request completes it.
  std::vector<double> losses = inference::ingest(s, std::vector<int32_t>(toks.begin(), toks.begin() + 7));
  const auto more = inference::ingest(s, std::vector<int32_t>(toks.begin() + 7, toks.end()));
  losses.insert(losses.end(), more.begin(), more.end());
  ASSERT_EQ(losses.size(), 5u);
  for (int c = 0; c < 5; ++c) {
    double sum = 0;
    int n = 0;
    for (int i = 4 * c; i < 4 * c + 4; ++i)
      if (tg[i] != cfg.bos_token_id) sum += pre.nll[i], ++n;
    EXPECT_NEAR(losses[c], sum / n, 1e-5) << "chunk " << c;
  }
}

TEST(Generation, GenerateEqualsTheManualLoopAndFeedLastOnlyChangesTheState) {
  const auto cfg = session_config(true);
  const auto m = model::Model::init(cfg, 4);
  inference::GenerateOptions go;
  go.max_new_tokens = 9;
  go.sampling.temperature = 0.9;
  go.sampling.seed = 5;
  const std::vector<int32_t> prompt = {0, 3, 4, 5, 6, 7};
  inference::Session a(m), b(m);
  const auto ra = inference::generate(a, prompt, go);
  go.feed_last = true;
  const auto rb = inference::generate(b, prompt, go);
  EXPECT_EQ(ra.tokens, rb.tokens);
  EXPECT_EQ(b.position(), a.position() + 1);
  // The manual loop (what cmd_generate did).
  inference::Session c(m);
  inference::Sampler sampler(go.sampling);
  auto logits = c.feed(prompt);
  std::vector<int32_t> ctx = prompt, gen;
  for (int i = 0; i < 9; ++i) {
    gen.push_back(sampler.sample(logits, ctx));
    ctx.push_back(gen.back());
    if (i + 1 < 9) logits = c.step(gen.back());
  }
  EXPECT_EQ(gen, ra.tokens);
}

TEST(Generation, StopIdsCallbackAndValidation) {
  const auto cfg = session_config(true);
  const auto m = model::Model::init(cfg, 4);
  inference::Session s(m);
  inference::GenerateOptions go;
  go.max_new_tokens = 20;
  go.sampling.temperature = 0;
  inference::Session s1 = s.fork(), s2 = s.fork();
  const auto first = inference::generate(s1, {0, 5, 6}, go).tokens;
  go.stop_ids = {first[2]};
  auto r = inference::generate(s2, {0, 5, 6}, go);
  EXPECT_EQ(r.stop, inference::StopReason::kStopToken);
  EXPECT_LE(r.tokens.size(), 3u);
  go.stop_ids.clear();
  inference::Session t = s.fork();
  r = inference::generate(t, {0, 5, 6}, go, [](int32_t, int64_t i) { return i < 4; });
  EXPECT_EQ(r.stop, inference::StopReason::kCancelled);
  EXPECT_EQ(r.tokens.size(), 5u);
  inference::Session u(m);
  EXPECT_THROW(inference::generate(u, {0, 99}, go), std::invalid_argument);
  EXPECT_EQ(u.position(), 0);
  EXPECT_THROW(inference::generate(u, {}, go), std::invalid_argument);  // nothing read, no prompt
}

// ---- API keys ----

TEST(ServerAuth, KeysMapToTenants) {
  const auto k = server::ApiKeys::parse("# comment\nkey-a alice\n\nkey-b bob\r\n", "keys");
  EXPECT_TRUE(k.enabled());
  EXPECT_EQ(k.tenant("Bearer key-a").value(), "alice");
  EXPECT_EQ(k.tenant("Bearer key-b").value(), "bob");
  EXPECT_FALSE(k.tenant("Bearer key-c"));
  EXPECT_FALSE(k.tenant("key-a"));
  EXPECT_FALSE(k.tenant(""));
  EXPECT_FALSE(k.tenant("Bearer "));
  EXPECT_EQ(server::ApiKeys().tenant("").value(), "");
}

TEST(ServerAuth, MalformedFilesAreRefused) {
  EXPECT_THROW(server::ApiKeys::parse("onlykey\n", "keys"), std::runtime_error);
  EXPECT_THROW(server::ApiKeys::parse("a t1\na t2\n", "keys"), std::runtime_error);
  EXPECT_THROW(server::ApiKeys::parse("a t1 extra\n", "keys"), std::runtime_error);
  EXPECT_THROW(server::ApiKeys::parse("# nothing\n", "keys"), std::runtime_error);
  try {
    server::ApiKeys::parse("secret-key\n", "keys");
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()).find("secret-key"), std::string::npos) << "a key must never be echoed";
  }
}

// ---- the SQLite catalogue ----

TEST(ServerDatabase, TransactionsAndAudit) {
  TempDir d;
  const std::string path = d.path + "/db.sqlite";
  {
    server::Database db(path);
    server::SessionRow r;
    r.id = "s1";
    r.tenant = "t";
    db.insert_session(r, {0, 1.0, "t", "create", "s1", 0, 0});
    r.version = 1;
    r.position = 9;
    r.state_file = "s1.v1.state";
    db.update_session(r, {0, 2.0, "t", "ingest", "s1", 1, 9});
    server::SessionRow ghost = r;
    ghost.id = "nope";
    EXPECT_THROW(db.update_session(ghost, {0, 3.0, "t", "ingest", "nope", 1, 1}), std::runtime_error);
    db.put_snapshot({"s1", 1, "first", 2.5, "s1.v1.state", 9}, {}, {0, 2.5, "t", "snapshot", "s1", 1, 0});
  }
  server::Database db(path);  // reopened: everything committed is there, the failed update is not
  const auto rows = db.sessions();
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].version, 1);
  EXPECT_EQ(rows[0].position, 9);
  EXPECT_EQ(rows[0].state_file, "s1.v1.state");
  const auto audit = db.audit();
  ASSERT_EQ(audit.size(), 3u);
  EXPECT_EQ(audit[1].operation, "ingest");
  EXPECT_EQ(audit[1].tokens, 9);
  ASSERT_EQ(db.snapshots().size(), 1u);
  db.delete_session("s1", {0, 4.0, "t", "delete", "s1", 1, 0});
  EXPECT_TRUE(db.sessions().empty());
  EXPECT_TRUE(db.snapshots().empty());
}

// ---- the session store ----

std::vector<float> next_logits(const inference::Session& s, int32_t t) {
  inference::Session f = s.fork();
  return f.step(t);
}

std::vector<float> store_logits(SessionStore& st, const std::string& tenant, const std::string& id) {
  std::vector<float> out;
  st.read(tenant, id, [&](const inference::Session& s, const server::SessionInfo&, const memory::ExactStore*) { out = next_logits(s, 3); });
  return out;
}

int64_t feed(inference::Session& s, const std::vector<int32_t>& t) {
  s.feed(t);
  return static_cast<int64_t>(t.size());
}

TEST(ServerStore, VersionsIfMatchTenantsAndFailedMutations) {
  const auto m = model::Model::init(session_config(true), 5);
  SessionStore st(m, StoreOptions());
  const auto a = st.create("alice", "{\"k\":1}");
  EXPECT_EQ(a.version, 0);
  EXPECT_EQ(a.position, 0);
  const auto toks = seq_tokens(11, 13, 1);
  auto i1 = st.mutate("alice", a.id, std::nullopt, "ingest", [&](inference::Session& s, const memory::ExactStore*) { return feed(s, toks); });
  EXPECT_EQ(i1.version, 1);
  EXPECT_EQ(i1.position, 11);
  EXPECT_EQ(i1.ttt_steps, 2);
  EXPECT_EQ(status_of([&] { st.mutate("alice", a.id, 0, "ingest", [&](inference::Session& s, const memory::ExactStore*) { return feed(s, toks); }); }), 412);
  EXPECT_EQ(status_of([&] { st.get("bob", a.id); }), 404);
  EXPECT_TRUE(st.list("bob").empty());
  EXPECT_EQ(st.list("alice").size(), 1u);
  const auto before = store_logits(st, "alice", a.id);
  // A mutation that throws half-way changes nothing.
  EXPECT_THROW(st.mutate("alice", a.id, 1, "ingest",
                         [&](inference::Session& s, const memory::ExactStore*) -> int64_t {
                           s.feed(toks);
                           throw std::runtime_error("boom");
                         }),
               std::runtime_error);
  EXPECT_EQ(st.get("alice", a.id).version, 1);
  EXPECT_EQ(st.get("alice", a.id).position, 11);
  EXPECT_EQ(store_logits(st, "alice", a.id), before);
  // Fork: same state, version 0, independent.
  const auto f = st.fork("alice", a.id);
  EXPECT_EQ(f.version, 0);
  EXPECT_EQ(f.position, 11);
  EXPECT_EQ(store_logits(st, "alice", f.id), before);
  st.mutate("alice", f.id, 0, "ingest", [&](inference::Session& s, const memory::ExactStore*) { return feed(s, {4, 5}); });
  EXPECT_EQ(store_logits(st, "alice", a.id), before);
  // Reset, delete.
  EXPECT_EQ(st.reset("alice", f.id, std::nullopt).position, 0);
  st.remove("alice", f.id, std::nullopt);
  EXPECT_EQ(status_of([&] { st.get("alice", f.id); }), 404);
  EXPECT_EQ(status_of([&] { st.remove("bob", a.id, std::nullopt); }), 404);
}

TEST(ServerStore, SnapshotsRestoreRetentionAndImport) {
  const auto m = model::Model::init(session_config(true), 6);
  TempDir d;
  SessionStore st(m, store_options(d.path, 0, 2));
  const auto a = st.create("", "{}");
  const auto toks = seq_tokens(9, 13, 2);
  st.mutate("", a.id, std::nullopt, "ingest", [&](inference::Session& s, const memory::ExactStore*) { return feed(s, toks); });
  const auto at1 = store_logits(st, "", a.id);
  EXPECT_EQ(st.snapshot("", a.id, "one").version, 1);
  st.mutate("", a.id, std::nullopt, "ingest", [&](inference::Session& s, const memory::ExactStore*) { return feed(s, {5, 6, 7}); });
  st.snapshot("", a.id, "two");
  st.mutate("", a.id, std::nullopt, "ingest", [&](inference::Session& s, const memory::ExactStore*) { return feed(s, {8}); });
  st.snapshot("", a.id, "three");
  const auto snaps = st.snapshots("", a.id);
  ASSERT_EQ(snaps.size(), 2u);  // retention: the oldest went
  EXPECT_EQ(snaps[0].label, "two");
  EXPECT_EQ(status_of([&] { st.restore("", a.id, 1, std::nullopt); }), 404);
  const auto r = st.restore("", a.id, 2, std::nullopt);
  EXPECT_EQ(r.version, 4);
  EXPECT_EQ(r.position, 12);
  // Export and import elsewhere: continues exactly.
  st.restore("", a.id, 2, std::nullopt);
  const std::string bytes = st.export_state("", a.id);
  const auto b = st.create("", "{}");
  EXPECT_EQ(st.import_state("", b.id, bytes, 0).position, 12);
  EXPECT_EQ(store_logits(st, "", b.id), store_logits(st, "", a.id));
  EXPECT_EQ(status_of([&] { st.import_state("", b.id, "not a state file", std::nullopt); }), 400);
  EXPECT_EQ(st.get("", b.id).version, 1);
  (void)at1;
}

TEST(ServerStore, StateSurvivesARestartAndSpilledSessionsReloadExactly) {
  const auto m = model::Model::init(session_config(true), 7);
  TempDir d;
  std::vector<std::string> ids;
  std::vector<std::vector<float>> logits;
  {
    SessionStore st(m, store_options(d.path, 1, 0));  // one resident: the others spill
    for (int k = 0; k < 3; ++k) {
      ids.push_back(st.create("t", "{}").id);
      st.mutate("t", ids.back(), std::nullopt, "ingest",
                [&](inference::Session& s, const memory::ExactStore*) { return feed(s, seq_tokens(6 + k, 13, 10 + k)); });
    }
    EXPECT_LE(st.stats().resident, 1);
    for (auto& id : ids) logits.push_back(store_logits(st, "t", id));  // reloads the spilled ones
    st.snapshot("t", ids[0], "s");
  }
  // Planted leftovers of a killed mutation: an unreferenced state file.
  { std::ofstream(d.path + "/states/" + ids[0] + ".v2.state") << "half"; }
  SessionStore st(m, store_options(d.path, 0, 0));
  EXPECT_FALSE(fs::exists(d.path + "/states/" + ids[0] + ".v2.state"));
  for (size_t k = 0; k < ids.size(); ++k) {
    const auto info = st.get("t", ids[k]);
    EXPECT_EQ(info.version, 1);
    EXPECT_EQ(info.position, static_cast<int64_t>(6 + k));
    EXPECT_EQ(store_logits(st, "t", ids[k]), logits[k]);
  }
  EXPECT_EQ(st.snapshots("t", ids[0]).size(), 1u);
  ASSERT_NE(st.database(), nullptr);
  EXPECT_EQ(st.database()->audit(ids[0]).size(), 3u);  // create, ingest, snapshot
  // Memory only, with spilling.
  SessionStore mem(m, store_options("", 1, 0));
  std::vector<std::string> mids;
  for (int k = 0; k < 3; ++k) {
    mids.push_back(mem.create("t", "{}").id);
    mem.mutate("t", mids.back(), std::nullopt, "ingest",
               [&](inference::Session& s, const memory::ExactStore*) { return feed(s, seq_tokens(6 + k, 13, 10 + k)); });
  }
  for (size_t k = 0; k < mids.size(); ++k) EXPECT_EQ(store_logits(mem, "t", mids[k]), logits[k]);
  EXPECT_LE(mem.stats().resident, 1);
}

// ---- the exact store of each session (issue 13) ----

StoreOptions exact_on(const std::string& dir) {
  StoreOptions o = store_options(dir, 0, 0);
  o.exact_store = true;
  o.exact.span_tokens = 4;
  return o;
}

// Every token of the session's store, in order (via an export: what a client gets).
std::vector<int32_t> store_ids(SessionStore& st, const std::string& tenant, const std::string& id, const std::string& dir) {
  const std::string bytes = st.export_exact(tenant, id);
  const std::string path = dir + "/export-check.db";
  { std::ofstream(path, std::ios::binary) << bytes; }
  std::vector<int32_t> out;
  {
    memory::StoreOptions ro;
    ro.span_tokens = 4;
    ro.read_only = true;
    memory::ExactStore s(path, ro);
    for (auto& [p, t] : s.tokens(0, s.size())) out.push_back(t);
  }
  fs::remove(path);
  return out;
}

std::vector<int32_t> cat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

TEST(ServerExactStore, HoldsWhatEachSessionReadAcrossEveryOperation) {
  const auto m = model::Model::init(session_config(true), 8);
  TempDir d;
  const auto t1 = seq_tokens(11, 13, 21), t2 = seq_tokens(6, 13, 22), t3 = seq_tokens(5, 13, 23);
  std::string a_id, f_id;
  {
    SessionStore st(m, exact_on(d.path));
    a_id = st.create("t", "{}").id;
    st.mutate("t", a_id, std::nullopt, "ingest", [&](inference::Session& s, const memory::ExactStore* ex) {
      EXPECT_NE(ex, nullptr);
      return feed(s, t1);
    });
    EXPECT_EQ(store_ids(st, "t", a_id, d.path), t1);
    // A failed mutation leaves the store as it was.
    EXPECT_THROW(st.mutate("t", a_id, std::nullopt, "ingest",
                           [&](inference::Session& s, const memory::ExactStore*) -> int64_t {
                             s.feed(t2);
                             throw std::runtime_error("boom");
                           }),
                 std::runtime_error);
    EXPECT_EQ(store_ids(st, "t", a_id, d.path), t1);
    st.snapshot("t", a_id, "at 11");  // version 1
    st.mutate("t", a_id, std::nullopt, "ingest", [&](inference::Session& s, const memory::ExactStore*) { return feed(s, t2); });
    EXPECT_EQ(store_ids(st, "t", a_id, d.path), cat(t1, t2));
    // Fork: the same store, then each its own.
    f_id = st.fork("t", a_id).id;
    st.mutate("t", f_id, std::nullopt, "ingest", [&](inference::Session& s, const memory::ExactStore*) { return feed(s, t3); });
    EXPECT_EQ(store_ids(st, "t", f_id, d.path), cat(cat(t1, t2), t3));
    EXPECT_EQ(store_ids(st, "t", a_id, d.path), cat(t1, t2));
    // Restore: back to the snapshot's store.
    st.restore("t", a_id, 1, std::nullopt);
    EXPECT_EQ(store_ids(st, "t", a_id, d.path), t1);
    // Export and import: into another session, which reads on from there.
    const std::string state = st.export_state("t", f_id), store = st.export_exact("t", f_id);
    const auto b = st.create("t", "{}");
    st.import_state("t", b.id, state, std::nullopt);
    EXPECT_TRUE(store_ids(st, "t", b.id, d.path).empty());  // a state alone brings no tokens
    EXPECT_EQ(st.import_exact("t", b.id, store, std::nullopt).version, 2);
    EXPECT_EQ(store_ids(st, "t", b.id, d.path), cat(cat(t1, t2), t3));
    EXPECT_EQ(status_of([&] { st.import_exact("t", b.id, "not a store", std::nullopt); }), 400);
    EXPECT_EQ(st.get("t", b.id).version, 2);
    // Reset empties it; delete removes its files.
    st.reset("t", b.id, std::nullopt);
    EXPECT_TRUE(store_ids(st, "t", b.id, d.path).empty());
    st.remove("t", b.id, std::nullopt);
    EXPECT_FALSE(fs::exists(d.path + "/stores/" + b.id + ".store"));
  }
  // A restart keeps every store; a replacement committed but not yet renamed (a kill between
  // the two) is installed, one of an uncommitted version removed.
  {
    SessionStore st(m, exact_on(d.path));
    const auto info = st.get("t", a_id);
    std::string pending = d.path + "/stores/" + a_id + ".v" + std::to_string(info.version) + ".pending.store";
    memory::StoreOptions so;
    so.span_tokens = 4;
    memory::ExactStore planted(pending, so);
    planted.append(cat(t3, t2));  // 11 tokens unlike a's own
    { std::ofstream(d.path + "/stores/" + a_id + ".v99.pending.store") << "stale"; }
  }
  SessionStore st(m, exact_on(d.path));
  EXPECT_FALSE(fs::exists(d.path + "/stores/" + a_id + ".v99.pending.store"));
  EXPECT_EQ(store_ids(st, "t", a_id, d.path), cat(t3, t2));
  EXPECT_EQ(store_ids(st, "t", f_id, d.path), cat(cat(t1, t2), t3));
}

TEST(ServerExactStore, GenerateWithRecallNeverChangesTheSessionUnlessCommitted) {
  const auto m = model::Model::init(session_config(true), 9);
  TempDir d;
  SessionStore st(m, exact_on(""));
  const auto a = st.create("t", "{}");
  const auto toks = seq_tokens(40, 13, 31);
  st.mutate("t", a.id, std::nullopt, "ingest", [&](inference::Session& s, const memory::ExactStore*) { return feed(s, toks); });
  const auto before = store_logits(st, "t", a.id);
  // A read (commit false) recalls on a fork of its own.
  st.read("t", a.id, [&](const inference::Session& cur, const server::SessionInfo&, const memory::ExactStore* ex) {
    ASSERT_NE(ex, nullptr);
    inference::Session w = cur.fork();
    inference::RecallOptions ro;
    ro.k = 2;
    const std::vector<int32_t> prompt(toks.begin() + 4, toks.begin() + 10);
    const auto rr = inference::recall(w, *ex, prompt, ro);
    EXPECT_GT(rr.tokens, 0);
  }, /*with_exact=*/true);
  EXPECT_EQ(store_logits(st, "t", a.id), before);
  EXPECT_EQ(st.get("t", a.id).version, 1);
  EXPECT_EQ(store_ids(st, "t", a.id, d.path), toks);
}


// Issue 25: a delete while other requests wait on the session's lock. The entry (and its mutex)
// must outlive every lock on it: under ASan or TSan the old code's unlock of a freed mutex shows.
TEST(ServerStore, DeleteWhileRequestsWaitOnTheSession) {
  const auto m = model::Model::init(session_config(true), 8);
  SessionStore st(m, StoreOptions());
  for (int round = 0; round < 20; ++round) {
    const auto a = st.create("t", "{}");
    std::atomic<int> ok{0}, gone{0};
    std::vector<std::thread> ts;
    for (int k = 0; k < 6; ++k)
      ts.emplace_back([&, k] {
        try {
          if (k == 3) {
            st.remove("t", a.id, std::nullopt);
          } else if (k % 2) {
            st.mutate("t", a.id, std::nullopt, "ingest", [&](inference::Session& s, const memory::ExactStore*) {
              return feed(s, seq_tokens(5, 13, 1));
            });
          } else {
            st.fork("t", a.id);
          }
          ++ok;
        } catch (const server::ApiError& e) {
          EXPECT_EQ(e.status, 404);
          ++gone;
        }
      });
    for (auto& t : ts) t.join();
    EXPECT_EQ(ok + gone, 6);
    EXPECT_EQ(status_of([&] { st.get("t", a.id); }), 404);
  }
}

}  // namespace
}  // namespace ttt::test
