// Decoding: teacher-forced token-by-token decode equals prefill; state stays bounded.
#include <gtest/gtest.h>

#include <cmath>

#include "inference/session.h"
#include "test_configs.h"
#include "model/model.h"
#include "ttt/inner_loop.h"

namespace ttt::test {
namespace {


double nll_of(const std::vector<float>& logits, int32_t target) {
  double mx = logits[0];
  for (float v : logits) mx = std::max(mx, static_cast<double>(v));
  double s = 0;
  for (float v : logits) s += std::exp(v - mx);
  return std::log(s) + mx - logits[target];
}

void expect_stream_equals_prefill(const model::ModelConfig& cfg, bool ttt) {
  const auto m = model::Model::init(cfg, 21);
  Rng r(3);
  std::vector<int32_t> seq(23);
  for (auto& t : seq) t = static_cast<int32_t>(r.next_u64() % cfg.vocab_size);
  std::vector<int32_t> in(seq.begin(), seq.end() - 1), tg(seq.begin() + 1, seq.end());
  e2e::TTTOptions opt;
  opt.ttt = ttt;
  const auto pre = e2e::prefill(m, in, tg, opt);
  inference::Session s(m, opt);
  for (size_t i = 0; i < in.size(); ++i) {
    const double nll = nll_of(s.step(in[i]), tg[i]);
    EXPECT_NEAR(nll, pre.nll[i], 2e-5) << "position " << i;
  }
  if (ttt && cfg.prime) {
    EXPECT_EQ(s.ttt_steps(), 5);  // chunks 0..4 completed before the last token
  }
}

TEST(Session, TeacherForcedDecodeEqualsPrefillWithTTT) { expect_stream_equals_prefill(session_config(true), true); }
TEST(Session, TeacherForcedDecodeEqualsPrefillWithoutTTT) { expect_stream_equals_prefill(session_config(true), false); }
TEST(Session, TeacherForcedDecodeEqualsPrefillSwaModel) { expect_stream_equals_prefill(session_config(false), true); }
TEST(Session, TeacherForcedDecodeEqualsPrefillHybrid) { expect_stream_equals_prefill(session_config(true, 2), true); }

TEST(Session, StateMemoryDoesNotGrowWithContext) {
  const auto m = model::Model::init(session_config(true), 1);
  inference::Session s(m);
  size_t at_short = 0;
  for (int i = 0; i < 200; ++i) {
    s.step(i % 13);
    if (i == 47) at_short = s.state_bytes();  // same phase of the chunk cycle (b = 4) as i == 199
  }
  EXPECT_EQ(s.state_bytes(), at_short);
}

TEST(Session, ResetReturnsToPhi0) {
  const auto m = model::Model::init(session_config(true), 2);
  inference::Session s(m);
  std::vector<std::vector<float>> first;
  for (int i = 0; i < 10; ++i) first.push_back(s.step(i % 13));
  s.reset();
  for (int i = 0; i < 10; ++i) EXPECT_EQ(s.step(i % 13), first[i]) << i;
  EXPECT_THROW(s.step(13), std::invalid_argument);
}

}  // namespace
}  // namespace ttt::test
