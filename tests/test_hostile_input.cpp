// Regressions for hostile input and faults (issue 9): every case here crashed, hung, read out of
// bounds, printed a multi-line error, trained on a wrong schedule or overwrote the wrong file
// before the fix. Cases that could hang arm an alarm, so a regression fails fast instead of
// stalling ctest.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <map>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>

#include "data/dataset.h"
#include "data/tokenizer.h"
#include "inference/session.h"
#include "io/atomic_file.h"
#include "io/file_read.h"
#include "io/json_read.h"
#include "io/safetensors.h"
#include "io/tokens.h"
#include "model/config.h"
#include "model/model.h"
#include "train/optimizer.h"
#include "train/sequence_source.h"
#include "train/trainer.h"
#include "test_configs.h"
#include "ttt/inner_loop.h"

namespace ttt::test {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

fs::path temp_dir(const std::string& name) {
  const fs::path p = fs::path(::testing::TempDir()) / ("ttt_hostile_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

void write_bytes(const fs::path& p, const std::string& s) { std::ofstream(p, std::ios::binary) << s; }
std::string read_bytes(const fs::path& p) { return io::read_regular_file(p.string(), "test file"); }

// Runs f, expecting a std::exception whose message contains `part` and is one line.
void expect_error(const std::function<void()>& f, const std::string& part) {
  try {
    f();
    ADD_FAILURE() << "no error, expected: " << part;
  } catch (const std::exception& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find(part), std::string::npos) << m;
    EXPECT_EQ(m.find('\n'), std::string::npos) << "multi-line message: " << m;
    EXPECT_EQ(m.find('\r'), std::string::npos) << m;
  }
}

// A regression that hangs dies by SIGALRM (a failed test) instead of stalling the suite.
struct Deadline {
  explicit Deadline(unsigned seconds) { alarm(seconds); }
  ~Deadline() { alarm(0); }
};

// A pid that no process has now.
long dead_pid() {
  for (long pid = 4194000; pid > 1000; --pid)
    if (::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) return pid;
  return 999999;
}

// A valid corpus index with one document per split, for tampering.
json good_index() {
  auto split = [](const std::string& name) {
    return json{{"tokens", 100},
                {"shards", json::array({json{{"file", name + "-00000.bin"}, {"tokens", 100}, {"checksum", "0123456789abcdef"}}})},
                {"documents", json::array({json::array({"doc", 0, 0, 100, 1})})}};
  };
  return json{{"format", "ttt-corpus"},
              {"version", 1},
              {"tokenizer", {{"vocab_size", 500}, {"bos_id", 0}}},
              {"splits", {{"train", split("train")}, {"val", split("val")}, {"val-long", split("val-long")}}}};
}

// The CLI tests' tiny model: vocab 40 so that the ids below fit.
model::ModelConfig tiny_config() {
  auto c = session_config(true);
  c.vocab_size = 40;
  return c;
}

}  // namespace

// ---- 1. Corpus index: overflow, wrapped sizes, truncated integers, float versions ----

TEST(HostileCorpusIndex, ValidIndexParses) {
  const auto ci = data::parse_corpus_index(good_index().dump(), "index.json");
  EXPECT_EQ(ci.vocab, 500);
  EXPECT_EQ(ci.splits[0].documents.size(), 1u);
}

TEST(HostileCorpusIndex, DocumentOffsetPlusLengthOverflow) {
  json j = good_index();
  j["splits"]["train"]["documents"][0] = json::array({"doc", 0, 50, INT64_MAX, 1});  // 50 + 2^63-1 wraps negative
  expect_error([&] { data::parse_corpus_index(j.dump(), "index.json"); }, "length");
  j["splits"]["train"]["documents"][0] = json::array({"doc", 0, INT64_MAX - 10, 20, 1});
  expect_error([&] { data::parse_corpus_index(j.dump(), "index.json"); }, "offset");
  j["splits"]["train"]["documents"][0] = json::array({"doc", 0, 90, 20, 1});  // plainly past the end
  expect_error([&] { data::parse_corpus_index(j.dump(), "index.json"); }, "lies outside its shard");
}

TEST(HostileCorpusIndex, ShardTokenCountWhoseByteSizeWraps) {
  json j = good_index();
  const int64_t wraps = (int64_t{1} << 62) + 1;  // x4 bytes wraps to 4
  j["splits"]["train"]["tokens"] = wraps;
  j["splits"]["train"]["shards"][0]["tokens"] = wraps;
  expect_error([&] { data::parse_corpus_index(j.dump(), "index.json"); }, "out of range");
}

TEST(HostileCorpusIndex, VocabSizeIsNotTruncated) {
  json j = good_index();
  j["tokenizer"]["vocab_size"] = (int64_t{1} << 40) + 512;  // was accepted as 512
  expect_error([&] { data::parse_corpus_index(j.dump(), "index.json"); }, "vocab_size");
  j = good_index();
  j["tokenizer"]["bos_id"] = 500;
  expect_error([&] { data::parse_corpus_index(j.dump(), "index.json"); }, "bos_id");
}

TEST(HostileCorpusIndex, FloatVersionIsAnErrorNotUndefinedBehaviour) {
  std::string s = good_index().dump();
  const auto at = s.find("\"version\":1");
  ASSERT_NE(at, std::string::npos);
  s.replace(at, 11, "\"version\":1e30");
  expect_error([&] { data::parse_corpus_index(s, "index.json"); }, "format version");
}

TEST(HostileCorpusIndex, ShardSumOverflowAndBadEntries) {
  json j = good_index();
  const int64_t big = int64_t{1} << 60;
  j["splits"]["train"]["shards"] = json::array({json{{"file", "a"}, {"tokens", big}, {"checksum", "0123456789abcdef"}},
                                                json{{"file", "b"}, {"tokens", big}, {"checksum", "0123456789abcdef"}},
                                                json{{"file", "c"}, {"tokens", big}, {"checksum", "0123456789abcdef"}}});
  expect_error([&] { data::parse_corpus_index(j.dump(), "index.json"); }, "2^61");
  j = good_index();
  j["splits"]["train"]["documents"][0] = "not an array";
  expect_error([&] { data::parse_corpus_index(j.dump(), "index.json"); }, "document entry");
  j = good_index();
  j["splits"]["train"]["shards"][0]["file"] = "../../etc/passwd";
  expect_error([&] { data::parse_corpus_index(j.dump(), "index.json"); }, "invalid shard entry");
}

TEST(HostileCorpusIndex, ControlCharactersInNamesStayOnOneLine) {
  json j = good_index();
  j["splits"]["train"]["documents"][0] = json::array({"evil\nname\r\x1b[2J", 0, 90, 20, 1});
  expect_error([&] { data::parse_corpus_index(j.dump(), "index.json"); }, "evil name");
  j = good_index();
  j["splits"]["train"]["shards"][0]["file"] = "a\nb/c";
  expect_error([&] { data::parse_corpus_index(j.dump(), "index.json"); }, "invalid shard entry");
}

// ---- 2 and 3. JSON: nesting depth, linear duplicate detection ----

TEST(HostileJson, DeepNestingIsRefusedBeforeItCostsMemory) {
  const size_t depth = 5'000'000;  // 10 MB of brackets: the old parser built all of it
  std::string s(depth, '[');
  s += std::string(depth, ']');
  expect_error([&] { io::parse_json(s, "test"); }, "nested deeper than 64");
  std::string o;
  for (int i = 0; i < 100000; ++i) o += "{\"a\":";
  o += "1" + std::string(100000, '}');
  expect_error([&] { model::config_from_json(o); }, "nested deeper");
}

TEST(HostileJson, DuplicateKeysAtAnyDepth) {
  expect_error([] { io::parse_json(R"({"a": 1, "b": {"c": 1, "c": 2}})", "test"); }, "duplicate key \"c\" at depth 2");
  EXPECT_NO_THROW(io::parse_json(R"({"a": {"c": 1}, "b": {"c": 2}, "d": [{"c": 1}, {"c": 2}]})", "test"));
}

TEST(HostileJson, ManyKeysParseInLinearTime) {
  // A 4 MB safetensors header of 100k distinct names: the old duplicate check took minutes on
  // 1 MB (quadratic); this must finish in well under the alarm even under ASan.
  Deadline d(60);
  std::string h = "{";
  for (int i = 0; i < 100000; ++i) {
    if (i) h += ",";
    h += "\"tensor_with_a_long_name_" + std::to_string(i) + "\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}";
  }
  h += "}";
  std::string file(8, '\0');
  const uint64_t n = h.size();
  std::memcpy(file.data(), &n, 8);
  file += h;
  const auto tf = io::parse_safetensors(reinterpret_cast<const uint8_t*>(file.data()), file.size(), "big");
  EXPECT_EQ(tf.tensors.size(), 100000u);
}

TEST(HostileJson, StrictIntegers) {
  EXPECT_EQ(io::json_int(json::parse("7"), 0, 10, "x"), 7);
  expect_error([] { io::json_int(json::parse("1e30"), 0, 10, "x"); }, "expected an integer");
  expect_error([] { io::json_int(json::parse("18446744073709551615"), 0, INT64_MAX, "x"); }, "out of range");
  expect_error([] { io::json_int(json::parse("-5"), 0, 10, "x"); }, "out of range");
}

// ---- 4. Non-regular files: FIFOs never block, /dev/zero is never read ----

TEST(HostileFiles, FifoAndDevZeroAreRefused) {
  Deadline d(30);
  const fs::path dir = temp_dir("fifo");
  const fs::path fifo = dir / "fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  expect_error([&] { io::read_tokens(fifo.string()); }, "it is a FIFO, not a regular file");
  expect_error([&] { model::load_config(fifo.string()); }, "it is a FIFO");
  expect_error([&] { io::read_safetensors(fifo.string()); }, "FIFO");
  expect_error([&] { data::Tokenizer::load(fifo.string()); }, "FIFO");
  expect_error([&] { io::read_tokens("/dev/zero"); }, "character device");
  expect_error([&] { model::load_config("/dev/zero"); }, "character device");
  expect_error([&] { io::read_tokens(dir.string()); }, "directory");
  // A model directory whose weights are a FIFO.
  const fs::path mdir = dir / "model";
  fs::create_directories(mdir);
  model::Model::init(tiny_config(), 1).save(mdir.string());
  fs::remove(mdir / "model.safetensors");
  ASSERT_EQ(::mkfifo((mdir / "model.safetensors").c_str(), 0600), 0);
  expect_error([&] { model::Model::load(mdir.string()); }, "FIFO");
}

TEST(HostileFiles, SizeLimitIsCheckedBeforeReading) {
  const fs::path dir = temp_dir("limit");
  write_bytes(dir / "f", std::string(100, 'x'));
  expect_error([&] { io::read_regular_file((dir / "f").string(), "config file", 10); }, "over the limit");
  EXPECT_EQ(io::read_regular_file((dir / "f").string(), "config file", 100).size(), 100u);
}

// ---- 5. One-line errors for names with control characters ----

TEST(HostileNames, TensorNameWithNewline) {
  const fs::path dir = temp_dir("names");
  model::Model::init(tiny_config(), 1).save(dir.string());
  auto tf = io::read_safetensors((dir / "model.safetensors").string());
  std::vector<std::pair<std::string, Tensor>> ts(tf.tensors.begin(), tf.tensors.end());
  ts.emplace_back("evil\nname\x1b[31m", ts.front().second);
  io::write_safetensors((dir / "model.safetensors").string(), ts, io::StoreAs::F32);
  expect_error([&] { model::Model::load(dir.string()); }, "unexpected tensor evil name");
}

TEST(HostileNames, SessionMetadataWithNewline) {
  const fs::path dir = temp_dir("meta");
  const auto m = model::Model::init(tiny_config(), 1);
  inference::Session s(m);
  s.feed({0, 5, 6});
  const std::string path = (dir / "s.state").string();
  s.save_state(path);
  auto tf = io::read_safetensors(path);
  tf.metadata["position"] = "3\nttt: everything is fine";
  std::vector<std::pair<std::string, Tensor>> ts(tf.tensors.begin(), tf.tensors.end());
  io::write_safetensors(path, ts, io::StoreAs::F32, tf.metadata);
  expect_error([&] { inference::Session::load_state(m, path); }, "position");
}

// ---- 6. trainer.json: step range, deep nesting ----

TEST(HostileTrainerState, StepOutOfRange) {
  train::TrainOptions o;
  o.steps = 100;
  auto state = [&](const json& step) {
    json j = {{"format", "ttt-train-checkpoint"}, {"version", 1}, {"step", step}, {"optimizer_steps", 0},
              {"data_state", "1 2"}};
    j["options"] = json::object();  // filled below from a real checkpoint's keys
    return j;
  };
  // The options are checked after the step, so these fail on the step alone.
  expect_error([&] { train::parse_trainer_state(state(-5).dump(), o, "trainer.json"); }, "step: -5 is out of range [0, 100]");
  expect_error([&] { train::parse_trainer_state(state(int64_t{1000000000000}).dump(), o, "trainer.json"); },
               "is out of range [0, 100]");
  expect_error([&] { train::parse_trainer_state(state(1.5).dump(), o, "trainer.json"); }, "expected an integer");
}

TEST(HostileTrainerState, DeeplyNestedOptionsDoNotOverflowTheStack) {
  train::TrainOptions o;
  std::string nested;
  for (int i = 0; i < 200000; ++i) nested += "[";
  nested += std::string(200000, ']');
  const std::string text = R"({"format":"ttt-train-checkpoint","version":1,"step":1,"optimizer_steps":1,)"
                           R"("data_state":"1 2","options":{"steps":)" + nested + "}}";
  expect_error([&] { train::parse_trainer_state(text, o, "trainer.json"); }, "nested deeper");
}

TEST(HostileTrainerState, SamplerStatesAreStrict) {
  data::SequenceSampler smp(3);
  EXPECT_NO_THROW(smp.restore("7 11"));
  EXPECT_EQ(smp.counter(), 11u);
  for (const char* bad : {"-5 1", "18446744073709551616 0", "1 2 3", "1  2", "1", " 1 2", "1 2 ", "x y"})
    expect_error([&] { smp.restore(bad); }, "is not \"seed counter\"");
  EXPECT_EQ(smp.seed(), 7u) << "a failed restore changed the sampler";
}

TEST(HostileTrainerState, OptimizerStateIsCheckedBeforeItIsApplied) {
  auto m = model::Model::init(tiny_config(), 1);
  m.set_requires_grad(true);
  train::AdamW opt(m.named_parameters(), {});
  auto before = opt.state_tensors();
  std::vector<std::pair<std::string, Tensor>> bad;
  for (auto& [name, t] : before) bad.emplace_back(name, clone(t));
  bad.back().second.data<float>()[0] = std::numeric_limits<float>::quiet_NaN();  // the last one: all others apply first
  bad.front().second.data<float>()[0] = 42;
  expect_error([&] { opt.load_state(bad, 3); }, "not finite");
  const auto after = opt.state_tensors();
  ASSERT_EQ(after.size(), before.size());
  EXPECT_EQ(after.front().second.data<float>()[0], before.front().second.data<float>()[0]) << "half-applied";
}

// ---- 7. Non-finite numbers ----

TEST(HostileNumbers, InnerStepOptionsMustBeFinite) {
  const auto m = model::Model::init(tiny_config(), 1);
  const std::vector<int32_t> in = {0, 1, 2, 3}, tg = {1, 2, 3, 4};
  for (double bad : {std::nan(""), double(INFINITY), -1.0}) {
    e2e::TTTOptions o;
    o.inner_lr = bad;
    expect_error([&] { e2e::prefill(m, in, tg, o); }, "inner learning rate");
    expect_error([&] { inference::Session s(m, o); }, "inner learning rate");
  }
  e2e::TTTOptions o;
  o.clip_norm = std::nan("");
  expect_error([&] { e2e::prefill(m, in, tg, o); }, "clip norm");
}

TEST(HostileNumbers, TrainOptionsMustBeFiniteAndInRange) {
  train::TrainOptions o;
  o.out_dir = "x";
  EXPECT_NO_THROW(train::validate_options(o));
  auto with = [&](const std::function<void(train::TrainOptions&)>& f, const std::string& part) {
    train::TrainOptions b = o;
    f(b);
    expect_error([&] { train::validate_options(b); }, part);
  };
  with([](auto& b) { b.clip = std::nan(""); }, "--clip");
  with([](auto& b) { b.clip = 0; }, "--clip");
  with([](auto& b) { b.lr = INFINITY; }, "--lr");
  with([](auto& b) { b.ilr_init = std::nan(""); }, "--ilr-init");
  with([](auto& b) { b.warmup_frac = 2; }, "--warmup-frac");
  with([](auto& b) { b.adamw.weight_decay = -1; }, "--weight-decay");
}

TEST(HostileNumbers, NonFiniteGradientSkipsTheStepAndNeverReachesACheckpoint) {
  const fs::path dir = temp_dir("nan_train");
  std::vector<int32_t> toks;
  for (int i = 0; i < 2000; ++i) toks.push_back(i % 50 == 0 ? 0 : 1 + (i * 7) % 39);
  io::write_tokens((dir / "tok.bin").string(), toks);
  train::TrainOptions o;
  o.steps = 20;
  o.seq_len = 8;
  o.val_every = 0;
  o.ckpt_every = 1;
  o.out_dir = (dir / "run").string();
  o.plot = false;
  o.max_bad_steps = 3;
  {  // A starting model with a NaN weight is refused before any step.
    auto m = model::Model::init(tiny_config(), 1);
    m.named_parameters()[1].second.data<float>()[0] = std::numeric_limits<float>::quiet_NaN();
    auto data = train::token_file_source((dir / "tok.bin").string(), 0.1, 1);
    expect_error([&] { train::train(m, *data, o, nullptr); }, "of the starting model is not finite");
  }
  // Finite weights whose logits overflow: every loss and gradient is non-finite.
  auto m = model::Model::init(tiny_config(), 1);
  for (auto& [name, t] : m.named_parameters())
    if (name == "embed.weight")
      for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = i % 2 ? 3e38f : -3e38f;
  const auto snapshot = [&] {
    std::vector<std::vector<float>> w;
    for (auto& [name, t] : m.named_parameters()) w.push_back(t.to_floats());
    return w;
  };
  const auto before = snapshot();
  {
    std::vector<std::vector<int32_t>> seqs = {std::vector<int32_t>(toks.begin(), toks.begin() + 9)};
    m.set_requires_grad(true);
    train::AdamW opt(m.named_parameters(), o.adamw);
    const auto r = train::train_step(m, opt, seqs, o, 0);
    ASSERT_TRUE(r.skipped) << "loss " << r.loss << ", gradient norm " << r.grad_norm;
    EXPECT_EQ(snapshot(), before) << "a skipped step changed the weights";
  }
  auto data = train::token_file_source((dir / "tok.bin").string(), 0.1, 1);
  expect_error([&] { train::train(m, *data, o, nullptr); }, "3 steps in a row");
  EXPECT_EQ(snapshot(), before) << "a skipped step changed the weights";
  const std::string metrics = read_bytes(dir / "run" / "metrics.jsonl");
  EXPECT_NE(metrics.find("\"skipped\":true"), std::string::npos) << metrics;
  // Checkpoints written meanwhile hold the (finite) weights unchanged.
  if (fs::exists(dir / "run" / "checkpoint")) {
    const auto saved = model::Model::load((dir / "run" / "checkpoint").string());
    for (auto& [name, t] : saved.named_parameters())
      for (float v : t.to_floats()) ASSERT_TRUE(std::isfinite(v)) << name;
  }
}

// ---- 8. Atomic writes: links, devices, FIFOs, leftovers ----

TEST(HostileWrites, SymlinkTargetIsRefusedAndItsTargetUntouched) {
  const fs::path dir = temp_dir("link");
  write_bytes(dir / "victim", "precious");
  fs::create_symlink(dir / "victim", dir / "out.bin");
  expect_error([&] { io::write_file_atomic((dir / "out.bin").string(), "x", 1); }, "symbolic link");
  EXPECT_EQ(read_bytes(dir / "victim"), "precious");
  EXPECT_TRUE(fs::is_symlink(dir / "out.bin"));
  fs::create_directory(dir / "d");
  expect_error([&] { io::write_file_atomic((dir / "d").string(), "x", 1); }, "directory");
}

TEST(HostileWrites, DeviceIsWrittenInPlaceNeverReplaced) {
  // A private null device (major 1, minor 3): a regression must not replace the real /dev/null.
  const fs::path dev = temp_dir("device") / "null";
  if (::mknod(dev.c_str(), S_IFCHR | 0666, makedev(1, 3)) != 0) GTEST_SKIP() << "mknod needs root";
  io::write_file_atomic(dev.string(), "hello", 5);
  struct stat st {};
  ASSERT_EQ(::lstat(dev.c_str(), &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode)) << "the device node was replaced by a regular file";
}

TEST(HostileWrites, FifoWithoutReaderIsAnErrorNotAHang) {
  Deadline d(30);
  const fs::path dir = temp_dir("wfifo");
  ASSERT_EQ(::mkfifo((dir / "p").c_str(), 0600), 0);
  expect_error([&] { io::write_file_atomic((dir / "p").string(), "x", 1); }, "FIFO with no reader");
  struct stat st {};
  ASSERT_EQ(::lstat((dir / "p").c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode));
}

TEST(HostileWrites, PlantedFilesAtTempNamesAreNeverFollowed) {
  // The temp name is random and created with O_EXCL | O_NOFOLLOW: links planted at the old
  // predictable names (PATH.tmp.<pid>.<n>) are not written through.
  const fs::path dir = temp_dir("planted");
  write_bytes(dir / "victim", "precious");
  for (int n = 0; n < 8; ++n)
    fs::create_symlink(dir / "victim", dir / ("out.bin.tmp." + std::to_string(::getpid()) + "." + std::to_string(n)));
  io::write_file_atomic((dir / "out.bin").string(), "new", 3);
  EXPECT_EQ(read_bytes(dir / "victim"), "precious");
  EXPECT_EQ(read_bytes(dir / "out.bin"), "new");
}

TEST(HostileWrites, LeftoversOfKilledWritersAreRemoved) {
  const fs::path dir = temp_dir("leftovers");
  const std::string dead = std::to_string(dead_pid());
  const std::string stale = "out.bin.tmp." + dead + ".0123456789abcdef";
  const std::string mine = "out.bin.tmp." + std::to_string(::getpid()) + ".fedcba9876543210";  // same pid, not active
  const std::string alive = "out.bin.tmp.1.0123456789abcdef";  // pid 1 exists: may be writing
  const std::string other = "other.bin.tmp." + dead + ".0123456789abcdef";
  for (const auto& n : {stale, mine, alive, other}) write_bytes(dir / n, "partial");
  io::write_file_atomic((dir / "out.bin").string(), "ok", 2);
  EXPECT_FALSE(fs::exists(dir / stale));
  EXPECT_FALSE(fs::exists(dir / mine));
  EXPECT_TRUE(fs::exists(dir / alive));
  EXPECT_TRUE(fs::exists(dir / other)) << "only the target's own leftovers are swept on a write";
  EXPECT_EQ(io::remove_stale_temp_files(dir.string()), 1u);
  EXPECT_FALSE(fs::exists(dir / other));
  EXPECT_FALSE(io::is_stale_temp_name("model.safetensors"));
  EXPECT_FALSE(io::is_stale_temp_name("x.tmp." + dead + ".nothex0123456789"));
}

// ---- 9. Training output directories after a kill ----

TEST(HostileKill, TempCheckpointsAreRemovedAndMetricsNotDuplicated) {
  const fs::path dir = temp_dir("killed");
  std::vector<int32_t> toks;
  for (int i = 0; i < 3000; ++i) toks.push_back(i % 50 == 0 ? 0 : 1 + (i * 7) % 39);
  io::write_tokens((dir / "tok.bin").string(), toks);
  const fs::path run = dir / "run";
  fs::create_directories(run / ("checkpoint.tmp-" + std::to_string(dead_pid())));
  write_bytes(run / ("checkpoint.tmp-" + std::to_string(dead_pid())) / "model.safetensors", "partial");
  write_bytes(run / ("config.json.tmp." + std::to_string(dead_pid()) + ".0123456789abcdef"), "{");
  // What a run killed before its first checkpoint leaves: metrics lines, a torn last line.
  write_bytes(run / "metrics.jsonl", "{\"step\":1,\"loss\":3.0}\n{\"step\":2,\"loss\":2.9}\n{\"step\":3,\"lo");
  auto m = model::Model::init(tiny_config(), 1);
  auto data = train::token_file_source((dir / "tok.bin").string(), 0.1, 1);
  train::TrainOptions o;
  o.steps = 2;
  o.seq_len = 8;
  o.val_every = 0;
  o.out_dir = run.string();
  o.plot = false;
  train::train(m, *data, o, nullptr);
  for (const auto& e : fs::directory_iterator(run))
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << "leftover " << e.path();
  const std::string metrics = read_bytes(run / "metrics.jsonl");
  size_t lines = 0;
  for (char c : metrics) lines += c == '\n';
  EXPECT_EQ(lines, 2u) << metrics;
  EXPECT_EQ(metrics.find("\"loss\":3.0"), std::string::npos) << "the killed run's lines were kept: " << metrics;
}

TEST(HostileKill, CheckpointLeftOnlyAsOldIsRestored) {
  const fs::path dir = temp_dir("old_only");
  std::vector<int32_t> toks;
  for (int i = 0; i < 3000; ++i) toks.push_back(i % 50 == 0 ? 0 : 1 + (i * 7) % 39);
  io::write_tokens((dir / "tok.bin").string(), toks);
  train::TrainOptions o;
  o.steps = 4;
  o.seq_len = 8;
  o.val_every = 0;
  o.ckpt_every = 2;
  o.stop_after = 2;
  o.out_dir = (dir / "run").string();
  o.plot = false;
  {
    auto m = model::Model::init(tiny_config(), 1);
    auto data = train::token_file_source((dir / "tok.bin").string(), 0.1, 1);
    train::train(m, *data, o, nullptr);
  }
  // A kill between write_checkpoint's two renames: only checkpoint.old holds a checkpoint.
  fs::rename(dir / "run" / "checkpoint", dir / "run" / "checkpoint.old");
  o.stop_after = 0;
  o.resume = true;
  auto m = model::Model::init(tiny_config(), 1);
  auto data = train::token_file_source((dir / "tok.bin").string(), 0.1, 1);
  const auto sum = train::train(m, *data, o, nullptr);
  EXPECT_EQ(sum.steps_done, 4);
  EXPECT_TRUE(fs::exists(dir / "run" / "checkpoint" / "trainer.json"));
  EXPECT_FALSE(fs::exists(dir / "run" / "checkpoint.old"));
}

// ---- 10. Session state: pending token ids out of the vocabulary ----

TEST(HostileSessionState, PendingTokenIdsOutOfVocabulary) {
  const fs::path dir = temp_dir("pending");
  const auto m = model::Model::init(tiny_config(), 1);
  inference::Session s(m);
  s.feed({0, 5, 6, 7, 8, 9});  // b = 4: two tokens pending
  const std::string path = (dir / "s.state").string();
  s.save_state(path);
  const auto tf = io::read_safetensors(path);
  const std::string pending = tf.metadata.at("pending_tokens");
  ASSERT_FALSE(pending.empty());
  for (const std::string bad : {"99999", "1180591620717411303424", "-1", "40", "+5", "5 x"}) {
    auto t2 = tf;
    t2.metadata["pending_tokens"] = bad + pending.substr(pending.find(' '));
    std::vector<std::pair<std::string, Tensor>> ts(t2.tensors.begin(), t2.tensors.end());
    const std::string p2 = (dir / "bad.state").string();
    io::write_safetensors(p2, ts, io::StoreAs::F32, t2.metadata);
    expect_error([&] { inference::Session::load_state(m, p2); }, "pending");
  }
}

}  // namespace ttt::test

namespace ttt::test {

// ---- Issue 25: safetensors headers of the format's maximum size (100 MB) ----

namespace {
std::string with_header(const std::string& h) {
  std::string file(8, '\0');
  const uint64_t n = h.size();
  std::memcpy(file.data(), &n, 8);
  return file + h;
}
double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

TEST(HostileSafetensors, HundredMegabyteHeaderOfTinyEntriesIsRefusedFast) {
  // ~100 MB of empty tensors (the old parser built all of it: 3.8 GB, 14-29 s): refused at the
  // tensor count limit, after reading a fraction of the header.
  std::string h = "{";
  h.reserve(101u << 20);
  for (int i = 0; h.size() < (100u << 20) - 200; ++i) {
    if (i) h += ",";
    h += "\"t" + std::to_string(i) + "\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}";
  }
  h += "}";
  const std::string file = with_header(h);
  h.clear();
  h.shrink_to_fit();
  const auto t0 = std::chrono::steady_clock::now();
  expect_error([&] { io::parse_safetensors(reinterpret_cast<const uint8_t*>(file.data()), file.size(), "big"); },
               "more than 262144 tensors");
  EXPECT_LT(seconds_since(t0), 10.0);  // about 0.3 s in a release build; sanitizers are slower
}

TEST(HostileSafetensors, HundredMegabyteMetadataParsesInOnePass) {
  // One 100 MB metadata string: parsed (a state file's metadata is text), in linear time.
  const std::string big((100u << 20) - 100, 'x');
  const std::string file = with_header("{\"__metadata__\":{\"k\":\"" + big + "\"}}");
  const auto t0 = std::chrono::steady_clock::now();
  const auto tf = io::parse_safetensors(reinterpret_cast<const uint8_t*>(file.data()), file.size(), "meta");
  EXPECT_EQ(tf.metadata.at("k").size(), big.size());
  EXPECT_LT(seconds_since(t0), 20.0);
}

TEST(HostileSafetensors, OneHugeEntryIsRefusedByItsValueCount) {
  std::string shape = "[";
  for (int i = 0; i < 2000000; ++i) shape += i ? ",1" : "1";
  shape += "]";
  const std::string file = with_header("{\"t\":{\"dtype\":\"F32\",\"shape\":" + shape + ",\"data_offsets\":[0,4]}}");
  expect_error([&] { io::parse_safetensors(reinterpret_cast<const uint8_t*>(file.data()), file.size(), "shape"); },
               "holds more than 65536 values");
  expect_error([&] { io::parse_safetensors(reinterpret_cast<const uint8_t*>(with_header("[1]").data()), 11, "arr"); },
               "not a JSON object");
}

TEST(HostileSessionState, NonFiniteValuesAreRefusedNamingTheTensor) {
  const auto cfg = model::config_from_json(R"({"vocab_size": 40, "hidden_size": 16, "num_hidden_layers": 3,
    "num_attention_heads": 2, "intermediate_size": 24, "seq_modeling_block": "SWA", "sliding_window_size": 6,
    "mini_batch_size": 4, "prime": true, "suffix_len": 2, "rope_theta": 10000, "bos_token_id": 0,
    "initializer_range": 0.2})");
  const auto m = model::Model::init(cfg, 3);
  inference::Session s(m);
  for (int32_t t : {1, 2, 3, 4, 5, 6}) s.step(t);
  const std::string path = ::testing::TempDir() + "/nan_state.safetensors";
  s.save_state(path);
  for (float bad : {std::nanf(""), std::numeric_limits<float>::infinity()}) {
    auto tf = io::read_safetensors(path);
    std::string victim;
    for (auto& [name, t] : tf.tensors)
      if (name.rfind("phi.", 0) == 0 && t.numel() > 0) {
        victim = name;
        static_cast<float*>(t.raw_data())[t.numel() - 1] = bad;
        break;
      }
    ASSERT_FALSE(victim.empty());
    std::vector<std::pair<std::string, Tensor>> tensors(tf.tensors.begin(), tf.tensors.end());
    const std::string bad_path = ::testing::TempDir() + "/nan_state_bad.safetensors";
    io::write_safetensors(bad_path, tensors, io::StoreAs::F32, tf.metadata);
    expect_error([&] { inference::Session::load_state(m, bad_path); }, "tensor '" + victim + "' holds a non-finite value");
  }
}

}  // namespace ttt::test
