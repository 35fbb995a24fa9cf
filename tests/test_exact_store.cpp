// The exact store (memory/exact_store.h) and recall (inference/recall.h): contents equal what was
// read, across reopening and copies; retrieval finds a planted span; the surprise policy keeps the
// highest-loss spans within its budget; recall never changes a session it was not given, and
// each mode does what it says to the session it is given.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "eval/long_context.h"
#include "eval/recall_eval.h"
#include "inference/recall.h"
#include "inference/session.h"
#include "memory/exact_store.h"
#include "model/model.h"
#include "tensor/random.h"
#include "test_configs.h"

namespace ttt::test {
namespace {

namespace fs = std::filesystem;

struct TempDir {
  fs::path p;
  TempDir() {
    p = fs::temp_directory_path() / ("ttt-store-" + std::to_string(::getpid()) + "-" + std::to_string(rand()));
    fs::create_directories(p);
  }
  ~TempDir() { fs::remove_all(p); }
};

std::vector<int32_t> random_ids(Rng& r, int64_t n, int32_t lo, int32_t hi) {
  std::vector<int32_t> v(static_cast<size_t>(n));
  for (auto& t : v) t = lo + static_cast<int32_t>(r.next_u64() % static_cast<uint64_t>(hi - lo));
  return v;
}

std::vector<int32_t> ids_of(const memory::ExactStore& s, int64_t from, int64_t to) {
  std::vector<int32_t> out;
  for (auto& [p, id] : s.tokens(from, to)) out.push_back(id);
  return out;
}

TEST(ExactStore, HoldsWhatWasReadAcrossReopenAndCopies) {
  TempDir d;
  Rng r(1);
  const auto a = random_ids(r, 300, 0, 500), b = random_ids(r, 77, 0, 500);
  {
    memory::ExactStore s((d.p / "s.db").string());
    s.append(a);
    s.append(b);
    EXPECT_EQ(s.size(), 377);
    s.copy_to((d.p / "copy.db").string());
    s.append({1, 2, 3});  // after the copy: only the original has it
  }
  std::vector<int32_t> all = a;
  all.insert(all.end(), b.begin(), b.end());
  memory::ExactStore copy((d.p / "copy.db").string());
  EXPECT_EQ(copy.size(), 377);
  EXPECT_EQ(ids_of(copy, 0, 1000), all);
  memory::ExactStore again((d.p / "s.db").string());
  EXPECT_EQ(again.size(), 380);
  EXPECT_EQ(ids_of(again, 370, 380), (std::vector<int32_t>{all[370], all[371], all[372], all[373], all[374], all[375], all[376], 1, 2, 3}));
  // Not a store / another span size: one-line errors, nothing changed.
  { std::ofstream(d.p / "junk.db") << "this is not a database at all, just some text that is long enough"; }
  EXPECT_THROW(memory::ExactStore((d.p / "junk.db").string()), std::runtime_error);
  memory::StoreOptions o;
  o.span_tokens = 32;
  EXPECT_THROW(memory::ExactStore((d.p / "s.db").string(), o), std::runtime_error);
}

TEST(ExactStore, RetrievalFindsAPlantedSpan) {
  Rng r(2);
  memory::ExactStore s("");
  auto text = random_ids(r, 5000, 100, 4000);
  const std::vector<int32_t> needle = {7, 11, 13, 17, 19, 23, 29};  // ids that occur nowhere else
  std::copy(needle.begin(), needle.end(), text.begin() + 2345);
  s.append(text);
  const std::vector<int32_t> query = {50, 13, 17, 19, 60};
  const auto got = s.retrieve(query, 2);
  ASSERT_FALSE(got.empty());
  bool found = false;
  for (const auto& sp : got) {
    if (sp.start <= 2345 && 2345 + 7 <= sp.start + static_cast<int64_t>(sp.tokens.size())) {
      found = true;
      EXPECT_EQ(std::vector<int32_t>(sp.tokens.begin() + (2345 - sp.start), sp.tokens.begin() + (2345 - sp.start) + 7), needle);
    }
  }
  EXPECT_TRUE(found);
  EXPECT_TRUE(s.retrieve(query, 2, /*before=*/2000).empty() ||
              s.retrieve(query, 2, 2000).front().start + static_cast<int64_t>(s.retrieve(query, 2, 2000).front().tokens.size()) <= 2000);
}

TEST(ExactStore, SurprisingPolicyKeepsTheHighestLossSpansWithinItsBudget) {
  memory::StoreOptions o;
  o.span_tokens = 16;
  o.policy = memory::KeepPolicy::kSurprising;
  o.budget_bytes = 54 * 64;  // four spans of 16 tokens
  memory::ExactStore s("", o);
  Rng r(3);
  const auto ids = random_ids(r, 160, 0, 100);
  s.append(ids);
  std::vector<float> loss(160);
  for (int i = 0; i < 160; ++i) loss[static_cast<size_t>(i)] = static_cast<float>((i / 16) % 5);  // spans 4 and 9 highest
  s.set_losses(0, loss);
  EXPECT_LE(s.kept_tokens(), 64);
  const auto kept = s.tokens(0, 160);
  for (auto& [p, id] : kept) EXPECT_GE((p / 16) % 5, 3) << "position " << p << " kept";
  EXPECT_EQ(ids_of(s, 64, 80), std::vector<int32_t>(ids.begin() + 64, ids.begin() + 80));
}

TEST(ExactStore, AlignDropsWhatLiesAheadAndCountsGapsAsNotKept) {
  memory::StoreOptions o;
  o.span_tokens = 8;
  memory::ExactStore s("", o);
  Rng r(5);
  const auto ids = random_ids(r, 50, 0, 300);
  s.append(ids);
  s.align(21);  // a request that appended 29 tokens and was never committed
  EXPECT_EQ(s.size(), 21);
  EXPECT_EQ(ids_of(s, 0, 100), std::vector<int32_t>(ids.begin(), ids.begin() + 21));
  // Spans reaching past 21 are gone from the index: the dropped tokens cannot be found.
  const std::vector<int32_t> gone(ids.begin() + 30, ids.begin() + 38);
  for (const auto& sp : s.retrieve(gone, 4)) EXPECT_LE(sp.start + static_cast<int64_t>(sp.tokens.size()), 21);
  s.append(ids);  // reads on from 21, and its spans are indexed again
  EXPECT_EQ(s.size(), 71);
  EXPECT_EQ(ids_of(s, 21, 71), ids);
  // Forward: positions read while nothing was kept (a state imported without its store).
  s.align(1000);
  EXPECT_EQ(s.size(), 1000);
  EXPECT_EQ(s.kept_tokens(), 71);
  s.append({1, 2, 3});
  EXPECT_EQ((ids_of(s, 990, 1100)), (std::vector<int32_t>{1, 2, 3}));
  EXPECT_THROW(s.align(-1), std::invalid_argument);
}

TEST(ExactStore, ImportedRowsAreCheckedAndReplaceIsWhole) {
  TempDir d;
  memory::StoreOptions o;
  o.span_tokens = 8;
  const std::string src_path = (d.p / "src.db").string();
  {
    memory::ExactStore src(src_path, o);
    src.append({5, 6, 7, 8, 9, 10, 11, 12, 13, 14});
    src.align(4);        // keeps 0..3
    src.align(20);       // 4..19 read, not kept
    src.append({40, 41});
  }
  memory::StoreOptions ro = o;
  ro.read_only = true;
  memory::ExactStore src(src_path, ro);
  memory::ExactStore dst("", o);
  dst.copy_rows_from(src, 100, 21);
  EXPECT_EQ(dst.size(), 21);
  EXPECT_EQ(dst.kept_tokens(), 5);
  EXPECT_EQ(ids_of(dst, 0, 100), (std::vector<int32_t>{5, 6, 7, 8, 40}));
  memory::ExactStore small("", o);
  EXPECT_THROW(small.copy_rows_from(src, 41, 100), std::runtime_error);  // id 41 is outside [0, 41)
  // replace_with: everything, counters included.
  memory::ExactStore other("", o);
  other.append({1, 1, 1});
  other.replace_with(dst);
  EXPECT_EQ(other.size(), 21);
  EXPECT_EQ(ids_of(other, 0, 100), ids_of(dst, 0, 100));
  memory::StoreOptions o16 = o;
  o16.span_tokens = 16;
  memory::ExactStore wrong("", o16);
  EXPECT_THROW(wrong.replace_with(dst), std::runtime_error);
  // A read-only open never creates a file.
  EXPECT_THROW(memory::ExactStore((d.p / "absent.db").string(), ro), std::runtime_error);
  EXPECT_FALSE(fs::exists(d.p / "absent.db"));
}

// A writer killed with SIGKILL in the middle of its appends: the store it leaves holds exactly
// the appends that committed, whole, in order, and reads on from there.
TEST(ExactStore, AWriterKilledMidAppendLeavesWholeCommittedAppends) {
  TempDir d;
  const std::string path = (d.p / "killed.db").string();
  memory::StoreOptions o;
  o.span_tokens = 16;
  // Batch k holds 97 tokens whose ids are their positions (mod 50000): a torn or reordered batch
  // would show, and every span's terms are its own (retrieval below is unambiguous).
  auto batch = [](int64_t k) {
    std::vector<int32_t> v(97);
    for (int i = 0; i < 97; ++i) v[static_cast<size_t>(i)] = static_cast<int32_t>((k * 97 + i) % 50000);
    return v;
  };
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    try {
      memory::ExactStore s(path, o);
      for (int64_t k = 0;; ++k) s.append(batch(k));
    } catch (...) {
    }
    ::_exit(1);
  }
  // Let it write for a while (at least a few batches), then kill it mid-flight.
  for (int i = 0; i < 500; ++i) {  // up to 10 s on a slow (sanitized, loaded) machine
    ::usleep(20000);
    std::error_code ec;
    if (fs::exists(path + "-wal", ec) && fs::file_size(path + "-wal", ec) > 200000) break;
  }
  ::kill(child, SIGKILL);
  int status = 0;
  ::waitpid(child, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status));
  memory::ExactStore s(path, o);
  ASSERT_GT(s.size(), 0);
  ASSERT_EQ(s.size() % 97, 0) << "a torn append";
  std::vector<int32_t> want;
  for (int64_t k = 0; k < s.size() / 97; ++k) {
    const auto b = batch(k);
    want.insert(want.end(), b.begin(), b.end());
  }
  EXPECT_EQ(ids_of(s, 0, s.size() + 1000), want);
  const int64_t n = s.size();
  s.append(batch(n / 97));
  EXPECT_EQ(s.size(), n + 97);
  // Its index is whole too: a span of the last committed batch is found.
  const auto last = batch(n / 97 - 1);
  const std::vector<int32_t> q(last.begin() + 10, last.begin() + 30);
  bool found = false;
  for (const auto& sp : s.retrieve(q, 4, n))
    found |= sp.start <= n - 97 + 10 && n - 97 + 30 <= sp.start + static_cast<int64_t>(sp.tokens.size());
  EXPECT_TRUE(found);
}

TEST(Recall, NeverChangesTheCallersSessionAndEachModeDoesWhatItSays) {
  auto cfg = session_config(true);
  cfg.vocab_size = 40;
  const auto m = model::Model::init(cfg, 5);
  Rng r(4);
  const auto text = random_ids(r, 60, 1, 40);
  memory::StoreOptions so;
  so.span_tokens = 8;
  memory::ExactStore store("", so);
  inference::Session s(m);
  s.feed(text);
  store.append(text);
  const std::vector<int32_t> prompt = {text[5], text[6], text[7]};  // far outside the window of 6
  const auto logits = s.last_logits();
  const int64_t pos = s.position(), steps = s.ttt_steps();

  inference::RecallOptions o;
  o.k = 1;
  for (auto mode : {inference::RecallMode::kWindow, inference::RecallMode::kReview, inference::RecallMode::kBoth}) {
    o.mode = mode;
    auto f = s.fork();
    const auto rr = inference::recall(f, store, prompt, o);
    ASSERT_EQ(rr.spans.size(), 1u) << inference::recall_mode_name(mode);
    EXPECT_LE(rr.spans[0].start, 5);
    EXPECT_GE(rr.spans[0].start + static_cast<int64_t>(rr.spans[0].tokens.size()), 8);
    if (mode == inference::RecallMode::kReview) {
      EXPECT_EQ(f.position(), pos);  // the window is as it was; the weights learned
      EXPECT_GT(f.ttt_steps(), steps);
    } else if (mode == inference::RecallMode::kBoth) {
      EXPECT_EQ(f.position(), pos + rr.tokens);
      EXPECT_GT(f.ttt_steps(), steps);
      EXPECT_EQ(f.pending_tokens(), 0);  // learned at once, not left pending
    } else {
      EXPECT_EQ(f.position(), pos + rr.tokens);
      EXPECT_EQ(f.ttt_steps(), steps);  // no learning
    }
  }
  // The session recall was not given is exactly as before, and continues as if nothing happened.
  EXPECT_EQ(s.position(), pos);
  EXPECT_EQ(s.ttt_steps(), steps);
  EXPECT_EQ(s.last_logits(), logits);
  auto g = s.fork();
  EXPECT_EQ(s.feed(prompt), g.feed(prompt));
  // Review changes only the weights: the same window, different predictions.
  auto rv = s.fork();
  o.mode = inference::RecallMode::kReview;
  inference::recall(rv, store, prompt, o);
  auto plain = s.fork();
  EXPECT_NE(rv.feed(prompt), plain.feed(prompt));
}

// The recall-loss evaluation's baseline is plain reading: its no-recall probes equal the prefill's
// per-position NLL; recalling variants see the same probes.
TEST(Recall, LossEvalWithoutRecallEqualsThePrefillsPositionLoss) {
  auto cfg = session_config(true);
  cfg.vocab_size = 40;
  const auto m = model::Model::init(cfg, 6);
  Rng r(9);
  std::vector<std::vector<int32_t>> docs = {random_ids(r, 200, 1, 40), random_ids(r, 200, 1, 40)};
  eval::RecallLossOptions o;
  o.length = 120;
  o.probe_every = 40;
  o.prompt_tokens = 8;
  o.probe_tokens = 10;
  o.k = 1;
  const auto res = eval::recall_loss_eval(m, docs, o, nullptr);
  ASSERT_EQ(res.variants.size(), 4u);
  ASSERT_EQ(res.probes, (std::vector<int64_t>{40, 80}));
  const auto curve = eval::position_nll(m, docs, 130);
  for (size_t d = 0; d < docs.size(); ++d)
    for (size_t j = 0; j < res.probes.size(); ++j) {
      double want = 0;
      for (int64_t t = 0; t < o.probe_tokens; ++t) want += curve.doc_nll[d][static_cast<size_t>(res.probes[j] + t - 1)];
      want /= static_cast<double>(o.probe_tokens);
      EXPECT_NEAR(res.nll[0][d][j], want, 1e-4) << "document " << d << " probe " << j;
      for (size_t v = 1; v < res.variants.size(); ++v) EXPECT_TRUE(std::isfinite(res.nll[v][d][j]));
    }
  EXPECT_GT(res.recalled_tokens, 0);
  EXPECT_EQ(res.tokens_read, 2 * (80 - 8));
}

}  // namespace
}  // namespace ttt::test
