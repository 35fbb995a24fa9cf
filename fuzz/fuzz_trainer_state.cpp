// libFuzzer target: the two files of a training checkpoint. The first byte selects the mode:
//  - even: the rest is text for ttt::train::parse_trainer_state(text, default TrainOptions
//    (steps 200), "trainer.json"); property on success: 0 <= step <= 200 and
//    0 <= optimizer_steps <= step.
//  - odd: the rest is bytes for ttt::io::parse_safetensors(.., "optimizer") and, if they parse,
//    AdamW::load_state(tensors, steps) on an AdamW over the tiny model of tests/cli_test.sh, with
//    steps = (int8_t)first byte >> 1 (so -64..63). Properties: a load_state that throws leaves
//    state_tensors() and steps() byte-identical to before; one that succeeds holds exactly the
//    loaded moments (as float32) and steps.
// Other failures must throw std::exception.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fuzz_common.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/model.h"
#include "train/optimizer.h"
#include "train/trainer.h"

namespace {

const char* kConfig = R"({"vocab_size": 40, "hidden_size": 16, "num_hidden_layers": 3, "num_attention_heads": 2,
 "intermediate_size": 24, "seq_modeling_block": "SWA", "sliding_window_size": 6,
 "mini_batch_size": 4, "prime": true, "suffix_len": 2, "rope_theta": 10000,
 "bos_token_id": 0, "initializer_range": 0.2})";

using Named = std::vector<std::pair<std::string, ttt::Tensor>>;

// A deep copy of the optimizer's state: names, shapes and float32 values.
struct Snapshot {
  std::vector<std::string> names;
  std::vector<ttt::Shape> shapes;
  std::vector<std::vector<float>> values;
  int64_t steps = 0;
  bool operator==(const Snapshot& o) const {
    if (names != o.names || shapes != o.shapes || steps != o.steps || values.size() != o.values.size()) return false;
    for (size_t i = 0; i < values.size(); ++i)
      if (values[i].size() != o.values[i].size() ||
          (!values[i].empty() && std::memcmp(values[i].data(), o.values[i].data(), values[i].size() * sizeof(float)) != 0))
        return false;
    return true;
  }
};

Snapshot snapshot(const ttt::train::AdamW& opt) {
  Snapshot s;
  for (const auto& [name, t] : opt.state_tensors()) {
    s.names.push_back(name);
    s.shapes.push_back(t.shape());
    s.values.push_back(t.to_floats());
  }
  s.steps = opt.steps();
  return s;
}

ttt::train::AdamW& optimizer() {
  static ttt::model::Model model = ttt::model::Model::init(ttt::model::config_from_json(kConfig), 3);
  static ttt::train::AdamW opt = [] {
    ttt::train::AdamW o(model.named_parameters(), ttt::train::AdamWOptions{});
    // Non-zero moments to start from, so that a partial overwrite would show.
    Named st;
    float x = 0.001f;
    for (const auto& [name, t] : o.state_tensors()) {
      ttt::Tensor c = ttt::Tensor::empty(t.shape(), ttt::DType::F32);
      for (int64_t i = 0; i < c.numel(); ++i, x += 0.001f) c.data<float>()[i] = x;
      st.emplace_back(name, c);
    }
    o.load_state(st, 7);
    return o;
  }();
  return opt;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t mode = data[0];
  ++data;
  --size;
  if ((mode & 1) == 0) {
    static const ttt::train::TrainOptions opts;
    ttt::train::TrainerState st;
    try {
      st = ttt::train::parse_trainer_state(std::string_view(reinterpret_cast<const char*>(data), size), opts,
                                           "trainer.json");
    } catch (const std::exception&) {
      return 0;
    }
    if (st.step < 0 || st.step > opts.steps) ttt_fuzz::fail("step outside [0, steps]");
    if (st.optimizer_steps < 0 || st.optimizer_steps > st.step) ttt_fuzz::fail("optimizer_steps outside [0, step]");
    return 0;
  }
  const int64_t steps = static_cast<int8_t>(mode) >> 1;
  ttt::io::TensorFile file;
  try {
    file = ttt::io::parse_safetensors(data, size, "optimizer");
  } catch (const std::exception&) {
    return 0;
  }
  const Named tensors(file.tensors.begin(), file.tensors.end());
  auto& opt = optimizer();
  const Snapshot before = snapshot(opt);
  try {
    opt.load_state(tensors, steps);
  } catch (const std::exception&) {
    if (!(snapshot(opt) == before)) ttt_fuzz::fail("a failed load_state changed the optimizer state");
    return 0;
  }
  // Loaded: the state is exactly the file's moments, in float32.
  if (opt.steps() != steps) ttt_fuzz::fail("load_state did not set the step count");
  for (const auto& [name, t] : opt.state_tensors()) {
    const auto it = file.tensors.find(name);
    if (it == file.tensors.end()) ttt_fuzz::fail("optimizer state holds a tensor the file did not");
    const auto want = it->second.to_floats();
    const auto got = t.to_floats();
    if (want.size() != got.size() || (!want.empty() && std::memcmp(want.data(), got.data(), want.size() * sizeof(float)) != 0))
      ttt_fuzz::fail("loaded moments differ from the file's");
  }
  return 0;
}
