// Session state: save/restore, fork and reset continue bit for bit like a session that never
// stopped; damaged or mismatched state files are refused with one-line errors and change nothing.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <unistd.h>

#include "inference/session.h"
#include "test_configs.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "tensor/random.h"

namespace ttt::test {
namespace {

model::ModelConfig state_config(bool prime, int64_t full_every = 0) { return session_config(prime, full_every); }

std::string temp_path(const std::string& name) {
  // Unique per process: ctest runs the tests of this file in parallel processes.
  return (std::filesystem::path(::testing::TempDir()) /
          ("ttt_state_" + std::to_string(::getpid()) + "_" + name + ".safetensors"))
      .string();
}

std::vector<int32_t> tokens(int n, int64_t vocab, uint64_t seed) {
  Rng r(seed);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = static_cast<int32_t>(r.next_u64() % vocab);
  return t;
}

std::vector<std::vector<float>> run_all(const model::Model& m, const std::vector<int32_t>& seq,
                                        const e2e::TTTOptions& opt) {
  inference::Session s(m, opt);
  std::vector<std::vector<float>> out;
  for (int32_t t : seq) out.push_back(s.step(t));
  return out;
}

// Save points: before any token, mid first chunk (before the first TTT step), exactly at a chunk
// boundary (b tokens pending, the step not yet taken), right after a step, mid-chunk with the
// caches full, later boundaries.
const std::vector<int> kSavePoints = {0, 1, 2, 4, 5, 7, 8, 12, 13, 19};

void expect_restore_is_bit_exact(const model::ModelConfig& cfg, bool ttt) {
  const auto m = model::Model::init(cfg, 31);
  const auto seq = tokens(26, cfg.vocab_size, 5);
  e2e::TTTOptions opt;
  opt.ttt = ttt;
  const auto ref = run_all(m, seq, opt);
  inference::Session ref_s(m, opt);
  for (int32_t t : seq) ref_s.step(t);
  for (int k : kSavePoints) {
    SCOPED_TRACE("saved after " + std::to_string(k) + " tokens");
    inference::Session s(m, opt);
    for (int i = 0; i < k; ++i) s.step(seq[i]);
    const std::string path = temp_path("exact_" + std::to_string(k));
    s.save_state(path);

    // Into a fresh session (default options: the state carries its own).
    inference::Session r = inference::Session::load_state(m, path);
    EXPECT_EQ(r.position(), k);
    EXPECT_EQ(r.ttt_steps(), s.ttt_steps());
    EXPECT_EQ(r.pending_tokens(), s.pending_tokens());
    EXPECT_EQ(r.state_bytes(), s.state_bytes());
    EXPECT_EQ(r.options().ttt, ttt);
    if (k > 0) {
      EXPECT_EQ(r.last_logits(), ref[k - 1]);
    }
    // Into a session that already holds another document.
    inference::Session busy(m, opt);
    for (int i = 0; i < 9; ++i) busy.step(static_cast<int32_t>((i * 5 + 3) % cfg.vocab_size));
    busy.restore_state(path);
    for (size_t i = k; i < seq.size(); ++i) {
      EXPECT_EQ(r.step(seq[i]), ref[i]) << "restored, step " << i;
      EXPECT_EQ(busy.step(seq[i]), ref[i]) << "restored into a used session, step " << i;
      EXPECT_EQ(s.step(seq[i]), ref[i]) << "original after saving, step " << i;
    }
    EXPECT_EQ(r.ttt_steps(), ref_s.ttt_steps());
    EXPECT_EQ(busy.ttt_steps(), ref_s.ttt_steps());
    std::filesystem::remove(path);
  }
}

TEST(SessionState, RestoreContinuesBitExactWithTTT) { expect_restore_is_bit_exact(state_config(true), true); }
TEST(SessionState, RestoreContinuesBitExactWithoutTTT) { expect_restore_is_bit_exact(state_config(true), false); }
TEST(SessionState, RestoreContinuesBitExactSwaModel) { expect_restore_is_bit_exact(state_config(false), true); }
TEST(SessionState, RestoreContinuesBitExactHybrid) { expect_restore_is_bit_exact(state_config(true, 2), true); }

TEST(SessionState, RestoreContinuesBitExactFloat64Model) {
  const auto cfg = state_config(true);
  const auto m = model::Model::init(cfg, 8, DType::F64);
  const auto seq = tokens(14, cfg.vocab_size, 6);
  const auto ref = run_all(m, seq, {});
  inference::Session s(m);
  for (int i = 0; i < 6; ++i) s.step(seq[i]);
  const std::string path = temp_path("f64");
  s.save_state(path);
  EXPECT_EQ(io::read_safetensors(path).tensors.at("phi.1.w1").dtype(), DType::F64);
  auto r = inference::Session::load_state(m, path);
  for (size_t i = 6; i < seq.size(); ++i) EXPECT_EQ(r.step(seq[i]), ref[i]) << i;
  std::filesystem::remove(path);
}

TEST(SessionState, ForkIsIndependentAndBitExact) {
  for (bool ttt : {true, false}) {
    const auto cfg = state_config(true, 2);
    const auto m = model::Model::init(cfg, 12);
    const auto seq = tokens(25, cfg.vocab_size, 9);
    e2e::TTTOptions opt;
    opt.ttt = ttt;
    const auto ref = run_all(m, seq, opt);
    for (int k : kSavePoints) {
      SCOPED_TRACE("forked after " + std::to_string(k) + " tokens, ttt " + std::to_string(ttt));
      inference::Session s(m, opt);
      for (int i = 0; i < k; ++i) s.step(seq[i]);
      inference::Session f = s.fork();
      // Drive a second fork down a different document first: it must not disturb the others.
      inference::Session g = s.fork();
      for (int i = 0; i < 11; ++i) g.step(static_cast<int32_t>((7 * i + 1) % cfg.vocab_size));
      for (size_t i = k; i < seq.size(); ++i) {
        EXPECT_EQ(f.step(seq[i]), ref[i]) << "fork, step " << i;
        EXPECT_EQ(s.step(seq[i]), ref[i]) << "original, step " << i;
      }
      EXPECT_EQ(f.ttt_steps(), s.ttt_steps());
    }
  }
}

TEST(SessionState, ResetAfterRestoreReturnsToPhi0) {
  const auto cfg = state_config(true);
  const auto m = model::Model::init(cfg, 4);
  const auto seq = tokens(12, cfg.vocab_size, 2);
  const auto ref = run_all(m, seq, {});
  inference::Session s(m);
  for (int i = 0; i < 10; ++i) s.step(seq[i]);
  const std::string path = temp_path("reset");
  s.save_state(path);
  auto r = inference::Session::load_state(m, path);
  r.reset();
  EXPECT_EQ(r.position(), 0);
  EXPECT_TRUE(r.last_logits().empty());
  for (size_t i = 0; i < seq.size(); ++i) EXPECT_EQ(r.step(seq[i]), ref[i]) << i;
  std::filesystem::remove(path);
}

TEST(SessionState, StateFileLayout) {
  const auto cfg = state_config(true, 2);  // layer 1 is full attention
  const auto m = model::Model::init(cfg, 4);
  inference::Session s(m);
  const std::string path = temp_path("layout");
  s.save_state(path);  // position 0: every cache is empty
  auto f = io::read_safetensors(path);
  EXPECT_EQ(f.metadata.at("format"), "ttt-session");
  EXPECT_EQ(f.metadata.at("version"), "1");
  EXPECT_EQ(f.metadata.at("position"), "0");
  EXPECT_EQ(f.metadata.at("pending_tokens"), "");
  EXPECT_EQ(f.tensors.at("cache.0.k").shape(), (Shape{0, 2, 8}));
  EXPECT_EQ(f.tensors.at("chunk_start.2.v").shape(), (Shape{0, 2, 8}));
  EXPECT_EQ(f.tensors.at("pending_h").shape(), (Shape{0, 16}));
  EXPECT_EQ(f.tensors.at("last_logits").shape(), (Shape{0}));
  EXPECT_EQ(f.tensors.at("phi.1.w2").shape(), (Shape{24, 16}));
  EXPECT_EQ(f.tensors.count("chunk_start.0.k"), 0u);  // layer 0 has no prime MLP

  for (int i = 0; i < 10; ++i) s.step(static_cast<int32_t>(i % 13));
  s.save_state(path);
  f = io::read_safetensors(path);
  EXPECT_EQ(f.metadata.at("position"), "10");
  EXPECT_EQ(f.metadata.at("ttt_steps"), "2");
  EXPECT_EQ(f.metadata.at("chunk_start_position"), "8");
  EXPECT_EQ(f.metadata.at("pending_tokens"), "8 9");
  EXPECT_EQ(f.tensors.at("cache.0.k").shape(), (Shape{6, 2, 8}));   // window 6
  EXPECT_EQ(f.tensors.at("cache.1.k").shape(), (Shape{10, 2, 8}));  // full attention
  EXPECT_EQ(f.tensors.at("chunk_start.1.k").shape(), (Shape{8, 2, 8}));
  EXPECT_EQ(f.tensors.at("chunk_start.2.k").shape(), (Shape{6, 2, 8}));
  EXPECT_EQ(f.tensors.at("pending_h").shape(), (Shape{2, 16}));
  EXPECT_EQ(f.tensors.at("last_logits").shape(), (Shape{13}));
  std::filesystem::remove(path);
}

// ---- the bulk path ----

void expect_feed_matches_steps(const model::ModelConfig& cfg, bool ttt) {
  const auto m = model::Model::init(cfg, 23);
  const auto seq = tokens(40, cfg.vocab_size, 8);
  e2e::TTTOptions opt;
  opt.ttt = ttt;
  const auto ref = run_all(m, seq, opt);
  inference::Session stepped(m, opt);
  for (int32_t t : seq) stepped.step(t);
  // Different cuts: one piece, pieces that straddle chunk boundaries, pieces ending on them.
  for (const std::vector<int>& cuts : std::vector<std::vector<int>>{{40}, {3, 9, 1, 27}, {4, 4, 8, 24}, {1, 1, 38}}) {
    inference::Session s(m, opt);
    size_t at = 0;
    for (int n : cuts) {
      const std::vector<int32_t> part(seq.begin() + at, seq.begin() + at + n);
      const auto lg = s.feed(part);
      at += n;
      ASSERT_EQ(lg.size(), ref[at - 1].size());
      for (size_t v = 0; v < lg.size(); ++v) EXPECT_NEAR(lg[v], ref[at - 1][v], 2e-4) << "after " << at;
      EXPECT_EQ(s.position(), static_cast<int64_t>(at));
    }
    EXPECT_EQ(s.ttt_steps(), stepped.ttt_steps());
    EXPECT_EQ(s.pending_tokens(), stepped.pending_tokens());
    EXPECT_EQ(s.state_bytes(), stepped.state_bytes());
    // The state is a valid one: it saves, restores and continues like the fed session.
    const std::string path = temp_path("feed");
    s.save_state(path);
    auto r = inference::Session::load_state(m, path);
    for (int32_t t : {3, 1, 4, 1, 5, 9, 2, 6}) EXPECT_EQ(r.step(t), s.step(t));
    std::filesystem::remove(path);
  }
}

TEST(SessionState, FeedMatchesStepsWithTTT) { expect_feed_matches_steps(state_config(true), true); }
TEST(SessionState, FeedMatchesStepsWithoutTTT) { expect_feed_matches_steps(state_config(true), false); }
TEST(SessionState, FeedMatchesStepsHybrid) { expect_feed_matches_steps(state_config(true, 2), true); }
TEST(SessionState, FeedMatchesStepsSwaModel) { expect_feed_matches_steps(state_config(false), true); }

TEST(SessionState, FeedRejectsBadTokensWithoutChangingState) {
  const auto m = model::Model::init(state_config(true), 3);
  inference::Session s(m);
  const auto lg = s.feed({1, 2, 3, 4, 5});
  EXPECT_THROW(s.feed({1, 2, 13}), std::invalid_argument);
  EXPECT_THROW(s.feed({-1}), std::invalid_argument);
  EXPECT_EQ(s.position(), 5);
  EXPECT_EQ(s.feed({}), lg);
}

// ---- refusals ----

struct Damaged {
  std::string name;
  std::function<void(io::TensorFile&)> edit;
  std::string expect;  // substring of the message
};

std::vector<std::pair<std::string, Tensor>> ordered(const io::TensorFile& f) {
  return {f.tensors.begin(), f.tensors.end()};
}

TEST(SessionState, RefusesDamagedFilesAndChangesNothing) {
  const auto cfg = state_config(true);
  const auto m = model::Model::init(cfg, 17);
  const auto seq = tokens(20, cfg.vocab_size, 3);
  const auto ref = run_all(m, seq, {});
  inference::Session good(m);
  for (int i = 0; i < 10; ++i) good.step(seq[i]);
  const std::string good_path = temp_path("good");
  good.save_state(good_path);

  auto resize_rows = [](io::TensorFile& f, const std::string& name, int64_t rows) {
    Shape s = f.tensors.at(name).shape();
    s[0] = rows;
    f.tensors[name] = zeros(s);
  };
  const std::vector<Damaged> cases = {
      {"format", [](io::TensorFile& f) { f.metadata["format"] = "something-else"; }, "format"},
      {"no_format", [](io::TensorFile& f) { f.metadata.erase("format"); }, "missing metadata field 'format'"},
      {"version", [](io::TensorFile& f) { f.metadata["version"] = "2"; }, "version '2'"},
      {"config",
       [](io::TensorFile& f) {
         auto c = state_config(true);
         c.sliding_window_size = 7;
         f.metadata["model_config"] = model::config_to_json(c);
       },
       "sliding_window_size"},
      {"bad_config", [](io::TensorFile& f) { f.metadata["model_config"] = "{"; }, "model_config"},
      {"checksum", [](io::TensorFile& f) { f.metadata["param_checksum"] = "0000000000000000"; }, "different parameters"},
      {"missing", [](io::TensorFile& f) { f.tensors.erase("cache.1.v"); }, "missing tensor 'cache.1.v'"},
      {"missing_phi", [](io::TensorFile& f) { f.tensors.erase("phi.2.w3"); }, "missing tensor 'phi.2.w3'"},
      {"phi_shape", [](io::TensorFile& f) { f.tensors["phi.1.w1"] = zeros({16, 25}); }, "phi.1.w1"},
      {"head_shape", [](io::TensorFile& f) { f.tensors["cache.0.v"] = zeros({6, 1, 16}); }, "cache.0.v"},
      {"cache_longer_than_window", [&](io::TensorFile& f) { resize_rows(f, "cache.0.k", 7); }, "window 6"},
      {"chunk_cache_rows", [&](io::TensorFile& f) { resize_rows(f, "chunk_start.2.v", 3); }, "chunk_start.2.v"},
      {"pending_count", [](io::TensorFile& f) { f.metadata["pending_tokens"] = "1"; }, "pending tokens"},
      {"pending_h_rows", [&](io::TensorFile& f) { resize_rows(f, "pending_h", 3); }, "pending_h"},
      {"pending_id", [](io::TensorFile& f) { f.metadata["pending_tokens"] = "1 99"; }, "out of range"},
      {"pending_text", [](io::TensorFile& f) { f.metadata["pending_tokens"] = "1 x"; }, "pending_tokens"},
      {"steps", [](io::TensorFile& f) { f.metadata["ttt_steps"] = "3"; }, "ttt_steps"},
      {"position", [](io::TensorFile& f) { f.metadata["position"] = "-4"; }, "position"},
      {"position_text", [](io::TensorFile& f) { f.metadata["position"] = "ten"; }, "position"},
      {"ttt_flag", [](io::TensorFile& f) { f.metadata["ttt"] = "yes"; }, "'ttt'"},
      {"lr", [](io::TensorFile& f) { f.metadata["inner_lr"] = "nan"; }, "inner_lr"},
      {"logits", [](io::TensorFile& f) { f.tensors["last_logits"] = zeros({12}); }, "last_logits"},
      {"unexpected", [](io::TensorFile& f) { f.tensors["extra"] = zeros({1}); }, "unexpected tensor 'extra'"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    auto f = io::read_safetensors(good_path);
    c.edit(f);
    const std::string path = temp_path("bad_" + c.name);
    io::write_safetensors(path, ordered(f), io::StoreAs::F32, f.metadata);
    inference::Session s(m);
    for (int i = 0; i < 10; ++i) s.step(seq[i]);
    try {
      s.restore_state(path);
      ADD_FAILURE() << "restore accepted a damaged state";
    } catch (const std::runtime_error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(c.expect), std::string::npos) << msg;
      EXPECT_NE(msg.find(path), std::string::npos) << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    }
    EXPECT_THROW(inference::Session::load_state(m, path), std::runtime_error);
    EXPECT_EQ(s.position(), 10);
    for (size_t i = 10; i < seq.size(); ++i) EXPECT_EQ(s.step(seq[i]), ref[i]) << "step " << i;
    std::filesystem::remove(path);
  }
  inference::Session s(m);
  EXPECT_THROW(s.restore_state(temp_path("does_not_exist")), std::runtime_error);
  EXPECT_EQ(s.position(), 0);
  std::filesystem::remove(good_path);
}

TEST(SessionState, RefusesAnotherModel) {
  const auto m = model::Model::init(state_config(true), 1);
  inference::Session s(m);
  for (int i = 0; i < 5; ++i) s.step(static_cast<int32_t>(i));
  const std::string path = temp_path("other_model");
  s.save_state(path);

  auto cfg2 = state_config(true);
  cfg2.vocab_size = 17;
  const auto m2 = model::Model::init(cfg2, 1);
  inference::Session s2(m2);
  try {
    s2.restore_state(path);
    ADD_FAILURE() << "accepted a state of another config";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("\"vocab_size\": 13"), std::string::npos) << e.what();
  }
  const auto m3 = model::Model::init(state_config(true), 2);  // same config, other weights
  inference::Session s3(m3);
  try {
    s3.restore_state(path);
    ADD_FAILURE() << "accepted a state of other weights";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("different parameters"), std::string::npos) << e.what();
  }
  EXPECT_EQ(s3.position(), 0);
  std::filesystem::remove(path);
}

TEST(SessionState, SaveFailureLeavesExistingFile) {
  const auto m = model::Model::init(state_config(true), 1);
  inference::Session s(m);
  EXPECT_THROW(s.save_state(temp_path("no_such_dir/x")), std::runtime_error);
  const std::string path = temp_path("keep");
  s.step(3);
  s.save_state(path);
  s.step(4);
  s.save_state(path);  // replaced atomically
  EXPECT_EQ(inference::Session::load_state(m, path).position(), 2);
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace ttt::test
