// RULER-style needle tasks (src/data/needle_task.h), the training mix that splices them into
// sequences (src/train/sequence_source.h) and the evaluation's scoring (src/eval/needle_eval.h).
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <regex>
#include <set>

#include "data/needle_task.h"
#include "eval/needle_eval.h"
#include "io/tokens.h"
#include "model/model.h"
#include "test_configs.h"
#include "train/sequence_source.h"
#include "ttt/inner_loop.h"

namespace {

namespace fs = std::filesystem;
using namespace ttt;
using data::NeedleTask;

class NeedleTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = fs::path(::testing::TempDir()) / ("ttt_needle_" + std::to_string(::getpid()));
    fs::remove_all(root_);
    fs::create_directories(root_);
    std::vector<std::string> texts;
    for (int i = 0; i < 40; ++i)
      texts.push_back("static int probe_" + std::to_string(i) +
                      "(struct device *dev)\n{\n\treturn 0;\n}\nThe device tree describes the clock " +
                      std::to_string(i * 37) + ".\n");
    data::TokenizerTrainOptions o;
    o.vocab_size = 300;
    o.num_threads = 1;
    data::Tokenizer::train(texts, (root_ / "tok").string(), o);
    tok_ = new data::Tokenizer(data::Tokenizer::load((root_ / "tok.model").string()));
  }
  static void TearDownTestSuite() {
    delete tok_;
    std::error_code ec;
    fs::remove_all(root_, ec);
  }
  static bool contains(const std::vector<int32_t>& hay, const std::vector<int32_t>& needle, int64_t at) {
    return at >= 0 && at + static_cast<int64_t>(needle.size()) <= static_cast<int64_t>(hay.size()) &&
           std::equal(needle.begin(), needle.end(), hay.begin() + at);
  }
  static inline fs::path root_;
  static inline data::Tokenizer* tok_ = nullptr;
};

TEST_F(NeedleTest, InstancesHaveTheRightFormatAndCopyableAnswers) {
  data::NeedleTaskMaker maker(*tok_);
  Rng r(3);
  const std::regex five("[1-9][0-9]{4}"), seven("[1-9][0-9]{6}"),
      uuid("[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}");
  for (int i = 0; i < 20; ++i)
    for (auto t : {NeedleTask::kPassKey, NeedleTask::kNumber, NeedleTask::kUuid}) {
      const auto x = maker.make(t, r);
      EXPECT_TRUE(std::regex_match(x.value, t == NeedleTask::kPassKey ? five : t == NeedleTask::kNumber ? seven : uuid))
          << x.value;
      EXPECT_EQ(tok_->decode(x.answer), " " + x.value);
      // The answer ids appear verbatim inside the needle (twice for the pass key).
      int copies = 0;
      for (size_t k = 0; k + x.answer.size() <= x.needle.size(); ++k) copies += contains(x.needle, x.answer, k);
      EXPECT_EQ(copies, t == NeedleTask::kPassKey ? 2 : 1);
      EXPECT_EQ(x.key.empty(), t == NeedleTask::kPassKey);
      const std::string q = tok_->decode(x.query);
      EXPECT_EQ(q.substr(q.size() - 3), " is") << q;
      if (!x.key.empty()) {
        EXPECT_NE(q.find(x.key), std::string::npos);
      }
      EXPECT_EQ(q.find(x.value), std::string::npos);
    }
  Rng a(9), b(9);
  EXPECT_EQ(maker.make(NeedleTask::kUuid, a).value, maker.make(NeedleTask::kUuid, b).value);
}

TEST_F(NeedleTest, PromptHasExactLengthNeedleAtDepthAndQuestionLast) {
  data::NeedleTaskMaker maker(*tok_);
  Rng r(5);
  const auto x = maker.make(NeedleTask::kNumber, r);
  std::vector<int32_t> hay(3000);
  for (size_t i = 0; i < hay.size(); ++i) hay[i] = 3 + static_cast<int32_t>(i % 200);
  for (int64_t len : {300, 1000}) {
    int64_t last_pos = -1;
    for (double depth : {0.0, 0.25, 0.5, 1.0}) {
      const auto p = data::build_needle_prompt(x, hay, len, depth, 0);
      ASSERT_EQ(static_cast<int64_t>(p.tokens.size()), len);
      EXPECT_EQ(p.tokens[0], 0);
      EXPECT_TRUE(contains(p.tokens, x.needle, p.needle_pos));
      EXPECT_TRUE(contains(p.tokens, x.query, len - static_cast<int64_t>(x.query.size())));
      EXPECT_TRUE(contains(p.tokens, x.answer, len - p.distance));
      EXPECT_GT(p.needle_pos, last_pos);  // deeper needles sit later
      last_pos = p.needle_pos;
      if (depth == 0.0) {
        EXPECT_EQ(p.needle_pos, 1);
      }
      if (depth == 1.0) {
        EXPECT_EQ(p.needle_pos + static_cast<int64_t>(x.needle.size() + x.query.size()), len);
      }
      // The haystack's tokens appear in order around the needle.
      EXPECT_EQ(p.tokens[1 + (p.needle_pos == 1 ? x.needle.size() : 0)], hay[0]);
    }
  }
  EXPECT_THROW(data::build_needle_prompt(x, hay, 10, 0.5, 0), std::invalid_argument);
  EXPECT_THROW(data::build_needle_prompt(x, std::vector<int32_t>(50), 1000, 0.5, 0), std::invalid_argument);
  EXPECT_THROW(data::build_needle_prompt(x, hay, 1000, 1.5, 0), std::invalid_argument);
}

TEST_F(NeedleTest, TaskNamesParse) {
  EXPECT_EQ(data::parse_needle_tasks("all").size(), 3u);
  const auto t = data::parse_needle_tasks("uuid,passkey,uuid");
  ASSERT_EQ(t.size(), 2u);
  EXPECT_EQ(t[0], NeedleTask::kUuid);
  EXPECT_EQ(t[1], NeedleTask::kPassKey);
  EXPECT_THROW(data::parse_needle_tasks("passkey,haystack"), std::invalid_argument);
  EXPECT_THROW(data::parse_needle_tasks(""), std::invalid_argument);
}

TEST_F(NeedleTest, SplicedPairsAreWellFormedAndDisjoint) {
  data::NeedleTaskMaker maker(*tok_);
  Rng r(11);
  int64_t total = 0;
  for (int trial = 0; trial < 30; ++trial) {
    std::vector<int32_t> seq(1025, 7);
    seq[0] = 0;
    const auto placed = data::splice_needles(seq, maker, 4, r);
    total += static_cast<int64_t>(placed.size());
    ASSERT_EQ(seq.size(), 1025u);
    EXPECT_EQ(seq[0], 0);
    std::vector<std::pair<int64_t, int64_t>> spans;
    std::set<std::string> keys;
    int passkeys = 0;
    for (auto& s : placed) {
      const auto& x = s.instance;
      EXPECT_TRUE(contains(seq, x.needle, s.needle_pos));
      EXPECT_TRUE(contains(seq, x.query, s.query_pos));
      EXPECT_TRUE(contains(seq, x.answer, s.query_pos + static_cast<int64_t>(x.query.size())));
      EXPECT_LT(s.needle_pos + static_cast<int64_t>(x.needle.size()), s.query_pos + 1);
      spans.emplace_back(s.needle_pos, s.needle_pos + static_cast<int64_t>(x.needle.size()));
      spans.emplace_back(s.query_pos, s.query_pos + static_cast<int64_t>(x.query.size() + x.answer.size()));
      if (x.key.empty()) ++passkeys;
      else EXPECT_TRUE(keys.insert(x.key).second) << "duplicate key " << x.key;
    }
    EXPECT_LE(passkeys, 1);
    std::sort(spans.begin(), spans.end());
    for (size_t i = 1; i < spans.size(); ++i) EXPECT_LE(spans[i - 1].second, spans[i].first);
  }
  EXPECT_GT(total, 30 * 2);  // most fit (this tiny tokenizer makes long spans)
  std::vector<int32_t> tiny(20, 7);
  EXPECT_TRUE(data::splice_needles(tiny, maker, 4, r).empty());
  EXPECT_EQ(tiny, std::vector<int32_t>(20, 7));
}

TEST_F(NeedleTest, NeedleMixSourceResumesExactlyAndKeepsValidationClean) {
  std::vector<int32_t> toks(20000);
  for (size_t i = 0; i < toks.size(); ++i) toks[i] = 3 + static_cast<int32_t>((i * 7) % 250);
  const std::string path = (root_ / "toks.bin").string();
  io::write_tokens(path, toks);
  const std::string tk = (root_ / "tok.model").string();
  auto a = train::needle_mix_source(train::token_file_source(path, 0.1, 5), tk, 0.5, 2, 5);
  auto plain = train::token_file_source(path, 0.1, 5);
  EXPECT_EQ(a->validation(512, 3), plain->validation(512, 3));
  int mixed = 0;
  for (int i = 0; i < 10; ++i) {
    const auto s = a->next_train(513), p = plain->next_train(513);
    ASSERT_EQ(s.size(), 513u);
    mixed += s != p;
  }
  EXPECT_GT(mixed, 0);
  EXPECT_LT(mixed, 10);
  const std::string st = a->state();
  std::vector<std::vector<int32_t>> after;
  for (int i = 0; i < 6; ++i) after.push_back(a->next_train(513));
  auto b = train::needle_mix_source(train::token_file_source(path, 0.1, 99), tk, 0.5, 2, 99);
  b->restore(st);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(b->next_train(513), after[static_cast<size_t>(i)]);
  EXPECT_THROW(plain->restore(st), std::exception);
  EXPECT_THROW(b->restore(plain->state() + "x"), std::runtime_error);
  EXPECT_THROW(train::needle_mix_source(train::token_file_source(path, 0.1, 5), tk, 1.5, 2, 5), std::invalid_argument);
}

// The evaluation's answer NLL (a session: bulk feed, then stepping the answer) must equal the
// prefill's NLL of the same positions: for a model without prime blocks, a TTT-E2E model, and the
// TTT-E2E model with its inner steps off (the ablation).
TEST_F(NeedleTest, ScoredAnswerNllMatchesPrefill) {
  for (int variant = 0; variant < 3; ++variant) {
    const bool prime = variant > 0, ttt = variant != 2;
    auto cfg = test::session_config(prime);
    cfg.vocab_size = tok_->vocab_size();
    const auto m = model::Model::init(cfg, 4);
    data::NeedleTaskMaker maker(*tok_);
    Rng r(2);
    const auto x = maker.make(NeedleTask::kNumber, r);
    const auto p = data::build_needle_prompt(x, maker.filler(300), 290, 0.3, 0);
    const auto rec = eval::score_needle_case(m, *tok_, x, p, 3, ttt);
    std::vector<int32_t> all = p.tokens;
    all.insert(all.end(), x.answer.begin(), x.answer.end());
    const std::vector<int32_t> in(all.begin(), all.end() - 1), tg(all.begin() + 1, all.end());
    e2e::TTTOptions opt;
    opt.ttt = ttt;
    const auto pre = e2e::prefill(m, in, tg, opt);
    if (variant == 2) {
      const auto with_ttt = e2e::prefill(m, in, tg);
      EXPECT_NE(with_ttt.loss, pre.loss);  // the ablation really changes something
    }
    double nll = 0;
    for (size_t i = p.tokens.size() - 1; i < in.size(); ++i) nll += pre.nll[i];
    nll /= static_cast<double>(x.answer.size());
    EXPECT_NEAR(rec.answer_nll, nll, 1e-4) << "variant " << variant;
    EXPECT_EQ(rec.distance, p.distance);
  }
}

TEST_F(NeedleTest, EvalRejectsMismatchedVocabulary) {
  auto cfg = test::session_config(false);  // vocabulary 13, not the tokenizer's 300
  const auto m = model::Model::init(cfg, 1);
  eval::NeedleEvalOptions o;
  o.tasks = {NeedleTask::kPassKey};
  o.lengths = {128};
  EXPECT_THROW(eval::needle_eval({{"m", &m}}, *tok_, {}, o, nullptr), std::invalid_argument);
}

TEST_F(NeedleTest, EvalTablesCoverEveryCase) {
  auto cfg = test::session_config(true);
  cfg.vocab_size = tok_->vocab_size();
  const auto m = model::Model::init(cfg, 1);
  eval::NeedleEvalOptions o;
  o.tasks = {NeedleTask::kPassKey, NeedleTask::kUuid};
  o.lengths = {400, 300};
  o.depths = 2;
  o.trials = 2;
  std::vector<int32_t> hay(500);
  for (size_t i = 0; i < hay.size(); ++i) hay[i] = 3 + static_cast<int32_t>(i % 250);
  const auto res = eval::needle_eval({{"a", &m}, {"b", &m}}, *tok_, hay, o, nullptr);
  ASSERT_EQ(res.records.size(), 2u * 2 * 2 * 2 * 2);
  EXPECT_EQ(res.lengths, (std::vector<int64_t>{300, 400}));
  // The same model answers the same cases identically.
  for (size_t i = 0; i < res.records.size() / 2; ++i) {
    EXPECT_EQ(res.records[i].generated, res.records[i + res.records.size() / 2].generated);
    EXPECT_EQ(res.records[i].answer_nll, res.records[i + res.records.size() / 2].answer_nll);
  }
  const double acc = res.accuracy(0, nullptr, -1);
  EXPECT_GE(acc, 0.0);
  EXPECT_LE(acc, 1.0);
  EXPECT_TRUE(std::isnan(res.accuracy_by_distance(0, 100000, 200000)));
  // Intervals: around the estimate, none where no case matches, and a model against an
  // identical one differs by exactly zero (paired over the same cases).
  const auto iv = res.accuracy_interval(0, nullptr, -1);
  EXPECT_EQ(iv.value, acc);
  EXPECT_LE(iv.lo, acc);
  EXPECT_GE(iv.hi, acc);
  EXPECT_EQ(iv.units, static_cast<int64_t>(res.records.size() / 2));
  EXPECT_EQ(res.distance_interval(0, 100000, 200000).units, 0);
  const auto diff = res.distance_difference(0, 1, 0, INT64_MAX);
  EXPECT_EQ(diff.value, 0.0);
  EXPECT_EQ(diff.lo, 0.0);
  EXPECT_EQ(diff.hi, 0.0);
  char* buf = nullptr;
  size_t len = 0;
  std::FILE* f = open_memstream(&buf, &len);
  eval::print_needle_eval(res, 6, f);
  std::fclose(f);
  const std::string text(buf, len);
  std::free(buf);
  EXPECT_NE(text.find("Needle accuracy, uuid"), std::string::npos);
  EXPECT_NE(text.find("| 400 |"), std::string::npos);
  EXPECT_NE(text.find("| 300 |"), std::string::npos);
}

}  // namespace
