// Checks every sequence mixer must pass (model/sequence_memory.h), shared by the mixer tests:
// a state carried across calls equals one call, teacher-forced decode equals prefill, the
// decode state does not grow, and session files restore the state exactly.
#pragma once
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "inference/session.h"
#include "model/model.h"
#include "ttt/inner_loop.h"

namespace ttt::test {

inline double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

// Block 0's mixer over T random rows in one call, and in three calls [0, 5), [5, 6), [6, T)
// carrying the state (float64 model): equal within 1e-12, and the state has the mixer's shapes.
inline void expect_carried_state_equals_one_call(const model::Model& m, int64_t T, uint64_t seed) {
  Rng r(seed);
  const Tensor x = randn({T, m.config().hidden_size}, r, 1.0, DType::F64);
  const auto whole = m.mixer(0).forward(x, 0, {}, nullptr).to_vector();
  std::vector<double> parts;
  model::MixerState st;
  for (auto [s, e] : {std::pair<int64_t, int64_t>{0, 5}, {5, 6}, {6, T}}) {
    model::MixerState next;
    const auto y = m.mixer(0).forward(slice(x, 0, s, e), s, st, &next).to_vector();
    parts.insert(parts.end(), y.begin(), y.end());
    st = next.detached();
  }
  EXPECT_LT(max_abs_diff(parts, whole), 1e-12);
  const auto shapes = m.mixer(0).state_shapes(T);
  ASSERT_EQ(st.tensors.size(), shapes.size());
  for (size_t i = 0; i < shapes.size(); ++i) EXPECT_EQ(st.tensors[i].shape(), shapes[i]) << "state tensor " << i;
}

// A float32 model read token by token: every NLL equals prefill's, the state's bytes are the
// same at positions `a` and `b` (both after whole chunks of every kind), a state saved after 19
// tokens and restored, or forked, continues bit for bit like the session that wrote it, and a fresh
// session's saved state behaves like a fresh session.
inline void expect_decode_equals_prefill_and_states_restore(const model::Model& m, size_t a, size_t b) {
  const int64_t V = m.config().vocab_size;
  std::vector<int32_t> seq;
  for (int i = 0; i < 41; ++i) seq.push_back(i % 13 == 0 ? 0 : static_cast<int32_t>(1 + (i * 5) % (V - 1)));
  const std::vector<int32_t> in(seq.begin(), seq.end() - 1), tg(seq.begin() + 1, seq.end());
  const auto pre = e2e::prefill(m, in, tg);
  inference::Session s(m);
  size_t bytes_at_a = 0;
  const std::string path = ::testing::TempDir() + "/mixer_state_" + std::to_string(::getpid()) + ".safetensors";
  for (size_t i = 0; i < in.size(); ++i) {
    const auto logits = s.step(in[i]);
    double mx = -1e300, z = 0;
    for (float v : logits) mx = std::max(mx, static_cast<double>(v));
    for (float v : logits) z += std::exp(v - mx);
    EXPECT_NEAR(std::log(z) + mx - logits[tg[i]], pre.nll[i], 2e-5) << "position " << i;
    if (i + 1 == a) bytes_at_a = s.state_bytes();
    if (i + 1 == b) {
      EXPECT_EQ(s.state_bytes(), bytes_at_a) << "the state grew with the context";
    }
    if (i + 1 == 19) s.save_state(path);
  }
  auto restored = inference::Session::load_state(m, path);
  inference::Session again(m);
  for (size_t i = 0; i < 19; ++i) again.step(in[i]);  // the same path as the saved session
  auto forked = again.fork();
  for (int32_t t : {3, 4, 5, 6, 7, 8, 9}) {
    const auto want = again.step(t);
    EXPECT_EQ(restored.step(t), want);
    EXPECT_EQ(forked.step(t), want);
  }
  inference::Session fresh(m);
  fresh.save_state(path);
  auto fresh_restored = inference::Session::load_state(m, path);
  inference::Session fresh2(m);
  EXPECT_EQ(fresh_restored.step(5), fresh2.step(5));
  std::remove(path.c_str());
}

}  // namespace ttt::test
