// libFuzzer target: arbitrary bytes written to a scratch file and loaded as a decode-session state
// with ttt::inference::Session::load_state, against the tiny TTT-E2E model of tests/cli_test.sh
// (Model::init(config, seed 3), the model that wrote the seeds with `ttt generate --state-out`).
// Every input must load or throw std::exception. Property on success: saving the session and
// loading that file gives a session whose saved state is byte-identical (save/load is a fixed
// point after one round).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <string>

#include "fuzz_common.h"
#include "inference/session.h"
#include "model/config.h"
#include "model/model.h"

namespace {

const char* kConfig = R"({"vocab_size": 40, "hidden_size": 16, "num_hidden_layers": 3, "num_attention_heads": 2,
 "intermediate_size": 24, "seq_modeling_block": "SWA", "sliding_window_size": 6,
 "mini_batch_size": 4, "prime": true, "suffix_len": 2, "rope_theta": 10000,
 "bos_token_id": 0, "initializer_range": 0.2})";

const ttt::model::Model& tiny_model() {
  static const ttt::model::Model m = ttt::model::Model::init(ttt::model::config_from_json(kConfig), 3);
  return m;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto& model = tiny_model();
  static const std::string in = ttt_fuzz::scratch_path("session-in");
  static const std::string once = ttt_fuzz::scratch_path("session-once");
  static const std::string twice = ttt_fuzz::scratch_path("session-twice");
  ttt_fuzz::write_bytes(in, data, size);
  try {
    auto s = ttt::inference::Session::load_state(model, in);
    (void)s.state_bytes();
  } catch (const std::exception&) {
    return 0;
  }
  // Accepted: the round trip must not throw, and must be a fixed point.
  auto s = ttt::inference::Session::load_state(model, in);
  s.save_state(once);
  auto s2 = ttt::inference::Session::load_state(model, once);
  s2.save_state(twice);
  if (s2.position() != s.position() || s2.ttt_steps() != s.ttt_steps() || s2.pending_tokens() != s.pending_tokens() ||
      s2.last_logits().size() != s.last_logits().size() ||
      (!s.last_logits().empty() &&  // bytes, not ==: a loaded NaN must compare equal to itself
       std::memcmp(s2.last_logits().data(), s.last_logits().data(), s.last_logits().size() * sizeof(float)) != 0))
    ttt_fuzz::fail("session counters or logits changed across save/load");
  if (ttt_fuzz::read_bytes(once) != ttt_fuzz::read_bytes(twice))
    ttt_fuzz::fail("saved state is not byte-identical after save -> load -> save");
  return 0;
}
