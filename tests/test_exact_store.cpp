// The exact store (memory/exact_store.h) and recall (inference/recall.h): contents equal what was
// read, across reopening and copies; retrieval finds a planted span; the surprise policy keeps the
// highest-loss spans within its budget; recall never changes a session it was not given, and
// each mode does what it says to the session it is given.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

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

}  // namespace
}  // namespace ttt::test
