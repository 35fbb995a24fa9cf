// safetensors reader/writer and the atomic file writer.
#include <gtest/gtest.h>
#include <unistd.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <stdexcept>

#include "autodiff/ops.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"

namespace {

namespace fs = std::filesystem;
using ttt::DType;
using ttt::Tensor;
using ttt::io::StoreAs;

fs::path test_dir() {
  static int counter = 0;
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  fs::path p = fs::path(::testing::TempDir()) /
               ("ttt_st_" + std::to_string(::getpid()) + "_" + info->test_suite_name() + "_" + info->name() +
                "_" + std::to_string(counter++));
  fs::create_directories(p);
  return p;
}

std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void write_bytes(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A safetensors file from a raw header text and data buffer.
std::string make_file(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  const uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  return out + header + data;
}

std::string f32_bytes(const std::vector<float>& v) {
  std::string s(v.size() * 4, '\0');
  std::memcpy(s.data(), v.data(), s.size());
  return s;
}

uint32_t bits(float f) { return std::bit_cast<uint32_t>(f); }

// Expects reading `bytes` (from a file and from memory) to throw a one-line runtime_error
// containing `word` and naming the file.
void expect_corrupt(const std::string& bytes, const std::string& word) {
  const fs::path p = test_dir() / "corrupt.safetensors";
  write_bytes(p, bytes);
  try {
    ttt::io::read_safetensors(p.string());
    ADD_FAILURE() << "no exception; expected one containing '" << word << "'";
  } catch (const std::runtime_error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(word), std::string::npos) << "message: " << msg << "\nexpected: " << word;
    EXPECT_NE(msg.find(p.string()), std::string::npos) << "message does not name the file: " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "message is not one line: " << msg;
  }
  std::vector<uint8_t> heap(bytes.begin(), bytes.end());  // exact-size copy: ASan sees over-reads
  EXPECT_THROW(ttt::io::parse_safetensors(heap.data(), heap.size(), "mem"), std::runtime_error);
}

// A valid two-tensor file: a [2, 2] F32 at [0, 16), b [3] F32 at [16, 28).
const char* kGoodHeader =
    R"({"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[3],"data_offsets":[16,28]}})";
std::string good_data() { return f32_bytes({1, 2, 3, 4, 5, 6, 7}); }

TEST(Safetensors, GoodHandMadeFileLoads) {
  const fs::path p = test_dir() / "good.safetensors";
  write_bytes(p, make_file(kGoodHeader, good_data()));
  auto f = ttt::io::read_safetensors(p.string());
  ASSERT_EQ(f.tensors.size(), 2u);
  EXPECT_EQ(f.tensors.at("a").shape(), (ttt::Shape{2, 2}));
  EXPECT_EQ(f.tensors.at("b").to_floats(), (std::vector<float>{5, 6, 7}));
  EXPECT_TRUE(f.metadata.empty());
}

TEST(Safetensors, F32RoundTripBitExact) {
  const fs::path p = test_dir() / "rt.safetensors";
  std::mt19937 gen(7);
  std::normal_distribution<float> nd(0.f, 3.f);
  std::vector<double> vals;
  for (int i = 0; i < 60; ++i) vals.push_back(nd(gen));
  Tensor a = ttt::from_vector(vals, {3, 4, 5});
  // Special values: non-finite values are data, not errors.
  float* pa = a.data<float>();
  pa[0] = std::numeric_limits<float>::infinity();
  pa[1] = -std::numeric_limits<float>::infinity();
  pa[2] = std::numeric_limits<float>::quiet_NaN();
  pa[3] = -0.0f;
  pa[4] = std::numeric_limits<float>::denorm_min();
  pa[5] = std::numeric_limits<float>::max();
  Tensor scalar = ttt::from_vector({0.1}, {});
  Tensor empty = ttt::zeros({0, 3});
  ttt::io::write_safetensors(p.string(), {{"w.a", a}, {"scalar", scalar}, {"empty", empty}});

  auto f = ttt::io::read_safetensors(p.string());
  ASSERT_EQ(f.tensors.size(), 3u);
  const Tensor& b = f.tensors.at("w.a");
  ASSERT_EQ(b.shape(), a.shape());
  ASSERT_EQ(b.dtype(), DType::F32);
  for (int64_t i = 0; i < a.numel(); ++i) EXPECT_EQ(bits(b.data<float>()[i]), bits(pa[i])) << i;
  EXPECT_EQ(f.tensors.at("scalar").shape(), ttt::Shape{});
  EXPECT_EQ(f.tensors.at("scalar").data<float>()[0], 0.1f);
  EXPECT_EQ(f.tensors.at("empty").shape(), (ttt::Shape{0, 3}));

  // Header length is padded to a multiple of 8 and the data follows in the given order.
  const std::string raw = read_bytes(p);
  uint64_t n = 0;
  std::memcpy(&n, raw.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  auto header = nlohmann::json::parse(raw.substr(8, n));
  EXPECT_EQ(header["w.a"]["dtype"], "F32");
  EXPECT_EQ(header["w.a"]["data_offsets"], (std::vector<uint64_t>{0, 240}));
  EXPECT_EQ(header["scalar"]["data_offsets"], (std::vector<uint64_t>{240, 244}));
  EXPECT_EQ(raw.size(), 8 + n + 244);
}

TEST(Safetensors, Bf16RoundTripWithinPrecision) {
  const fs::path p = test_dir() / "bf16.safetensors";
  std::mt19937 gen(3);
  std::uniform_real_distribution<double> ud(-100.0, 100.0);
  std::vector<double> vals;
  for (int i = 0; i < 500; ++i) vals.push_back(ud(gen));
  Tensor a = ttt::from_vector(vals, {20, 25});
  ttt::io::write_safetensors(p.string(), {{"x", a}}, StoreAs::BF16);
  const std::string raw = read_bytes(p);
  EXPECT_EQ(raw.size() % 2, 0u);
  auto f = ttt::io::read_safetensors(p.string());
  const Tensor& b = f.tensors.at("x");
  ASSERT_EQ(b.dtype(), DType::F32);
  ASSERT_EQ(b.shape(), a.shape());
  for (int64_t i = 0; i < a.numel(); ++i) {
    const float x = a.data<float>()[i], y = b.data<float>()[i];
    EXPECT_LE(std::fabs(x - y), std::fabs(x) * (1.0f / 256.0f)) << i;  // 8 significant bits: rel err <= 2^-8
    EXPECT_EQ(bits(y) & 0xffffu, 0u);
  }
}

TEST(Safetensors, Bf16RoundsToNearestEven) {
  using ttt::io::float_to_bf16;
  auto f = [](uint32_t u) { return std::bit_cast<float>(u); };
  EXPECT_EQ(float_to_bf16(1.0f), 0x3F80);
  EXPECT_EQ(float_to_bf16(f(0x3F808000)), 0x3F80);  // tie, even below: stays
  EXPECT_EQ(float_to_bf16(f(0x3F818000)), 0x3F82);  // tie, odd below: rounds up to even
  EXPECT_EQ(float_to_bf16(f(0x3F808001)), 0x3F81);  // just above the tie
  EXPECT_EQ(float_to_bf16(f(0x3F807FFF)), 0x3F80);  // just below the tie
  EXPECT_EQ(float_to_bf16(f(0xBF818000)), 0xBF82);  // sign symmetric
  EXPECT_EQ(float_to_bf16(-0.0f), 0x8000);
  EXPECT_EQ(float_to_bf16(std::numeric_limits<float>::infinity()), 0x7F80);
  EXPECT_EQ(float_to_bf16(std::numeric_limits<float>::max()), 0x7F80);  // rounds to infinity
  EXPECT_EQ(float_to_bf16(f(0x7F7F0000)), 0x7F7F);                      // largest bf16 stays
  const uint16_t nan = float_to_bf16(std::numeric_limits<float>::quiet_NaN());
  EXPECT_TRUE(std::isnan(ttt::io::bf16_to_float(nan)));
  EXPECT_TRUE(std::isnan(ttt::io::bf16_to_float(float_to_bf16(f(0x7F800001)))));  // payload in low bits
  EXPECT_EQ(ttt::io::bf16_to_float(0x3F82), f(0x3F820000));

  // The same values through a file: exact bytes on disk.
  const fs::path p = test_dir() / "rne.safetensors";
  Tensor t = ttt::zeros({4});
  t.data<float>()[0] = f(0x3F808000);
  t.data<float>()[1] = f(0x3F818000);
  t.data<float>()[2] = f(0x3F808001);
  t.data<float>()[3] = f(0xC0490FDB);  // -pi -> 0xC049 (0x0FDB < 0x8000 rounds down)
  ttt::io::write_safetensors(p.string(), {{"t", t}}, StoreAs::BF16);
  const std::string raw = read_bytes(p);
  uint16_t on_disk[4];
  std::memcpy(on_disk, raw.data() + raw.size() - 8, 8);
  EXPECT_EQ(on_disk[0], 0x3F80);
  EXPECT_EQ(on_disk[1], 0x3F82);
  EXPECT_EQ(on_disk[2], 0x3F81);
  EXPECT_EQ(on_disk[3], 0xC049);
  uint64_t n = 0;
  std::memcpy(&n, raw.data(), 8);
  EXPECT_EQ(nlohmann::json::parse(raw.substr(8, n))["t"]["dtype"], "BF16");
}

TEST(Safetensors, MetadataRoundTrip) {
  const fs::path p = test_dir() / "meta.safetensors";
  std::map<std::string, std::string> meta{{"format", "pt"}, {"step", "123"}, {"note", "a \"quoted\" value"}};
  ttt::io::write_safetensors(p.string(), {{"x", ttt::ones({2})}}, StoreAs::F32, meta);
  auto f = ttt::io::read_safetensors(p.string());
  EXPECT_EQ(f.metadata, meta);
  EXPECT_EQ(f.tensors.size(), 1u);
}

TEST(Safetensors, NonContiguousInputWrittenInLogicalOrder) {
  const fs::path p = test_dir() / "nc.safetensors";
  std::vector<double> v(12);
  for (int i = 0; i < 12; ++i) v[i] = i;
  Tensor base = ttt::from_vector(v, {3, 4});
  Tensor tr = ttt::transpose(base, 0, 1);  // [4, 3], strides [1, 4]
  Tensor sl = ttt::slice(base, 1, 1, 3);   // [3, 2], row stride 4
  Tensor bc = ttt::broadcast_to(ttt::from_vector({1, 2, 3}, {3}), {2, 3});  // stride 0
  ASSERT_FALSE(tr.is_contiguous());
  ASSERT_FALSE(sl.is_contiguous());
  Tensor base64 = ttt::from_vector(v, {3, 4}, DType::F64);
  Tensor tr64 = ttt::transpose(base64, 0, 1);
  ttt::io::write_safetensors(p.string(), {{"tr", tr}, {"sl", sl}, {"bc", bc}, {"tr64", tr64}});
  auto f = ttt::io::read_safetensors(p.string());
  EXPECT_EQ(f.tensors.at("tr").shape(), (ttt::Shape{4, 3}));
  EXPECT_EQ(f.tensors.at("tr").to_floats(), tr.to_floats());
  EXPECT_EQ(f.tensors.at("tr").to_floats(), (std::vector<float>{0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11}));
  EXPECT_EQ(f.tensors.at("sl").to_floats(), (std::vector<float>{1, 2, 5, 6, 9, 10}));
  EXPECT_EQ(f.tensors.at("bc").to_floats(), (std::vector<float>{1, 2, 3, 1, 2, 3}));
  EXPECT_EQ(f.tensors.at("tr64").dtype(), DType::F32);
  EXPECT_EQ(f.tensors.at("tr64").to_floats(), tr.to_floats());
}

TEST(Safetensors, F64StoredAndLoadedAsF64) {
  const fs::path p = test_dir() / "f64.safetensors";
  Tensor a = ttt::from_vector({0.1, 1e-300, -2.5}, {3}, DType::F64);
  ttt::io::write_safetensors(p.string(), {{"a", a}}, StoreAs::F64);
  auto f = ttt::io::read_safetensors(p.string());
  ASSERT_EQ(f.tensors.at("a").dtype(), DType::F64);
  EXPECT_EQ(f.tensors.at("a").to_vector(), a.to_vector());
}

TEST(Safetensors, WriterRejectsBadInput) {
  const fs::path p = test_dir() / "w.safetensors";
  EXPECT_THROW(ttt::io::write_safetensors(p.string(), {{"a", ttt::ones({1})}, {"a", ttt::ones({1})}}),
               std::runtime_error);
  EXPECT_THROW(ttt::io::write_safetensors(p.string(), {{"__metadata__", ttt::ones({1})}}), std::runtime_error);
  EXPECT_THROW(ttt::io::write_safetensors(p.string(), {{"u", Tensor()}}), std::runtime_error);
  EXPECT_FALSE(fs::exists(p));
}

TEST(SafetensorsCorrupt, MissingFile) {
  try {
    ttt::io::read_safetensors((test_dir() / "nope.safetensors").string());
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot open"), std::string::npos) << e.what();
  }
}

TEST(SafetensorsCorrupt, HeaderLevel) {
  const std::string data = good_data();
  expect_corrupt("", "too short");
  expect_corrupt(std::string(5, '\x01'), "too short");
  std::string huge(8, '\0');
  const uint64_t big = 1ull << 40;
  std::memcpy(huge.data(), &big, 8);
  expect_corrupt(huge + "{}", "implausible");
  expect_corrupt("PK\x03\x04garbage and more garbage", "implausible");  // wrong magic (a zip file)
  std::string past(8, '\0');
  const uint64_t n = 1000;
  std::memcpy(past.data(), &n, 8);
  expect_corrupt(past + kGoodHeader, "exceeds the file size");
  expect_corrupt(make_file("{\"a\": ", data), "not valid JSON");
  expect_corrupt(make_file("", data), "not valid JSON");
  expect_corrupt(make_file("[1, 2]", data), "not a JSON object");
  expect_corrupt(make_file(R"({"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"a":{"dtype":"F32","shape":[3],"data_offsets":[16,28]}})", data),
                 "duplicate");
  expect_corrupt(make_file(R"({"__metadata__":[1],"a":{"dtype":"F32","shape":[7],"data_offsets":[0,28]}})", data),
                 "__metadata__");
  expect_corrupt(make_file(R"({"__metadata__":{"k":1},"a":{"dtype":"F32","shape":[7],"data_offsets":[0,28]}})", data),
                 "__metadata__");
}

TEST(SafetensorsCorrupt, EntryLevel) {
  const std::string data = good_data();
  auto one = [&](const std::string& entry) { return make_file("{\"a\":" + entry + "}", data); };
  expect_corrupt(one("5"), "not an object");
  expect_corrupt(one(R"({"shape":[7],"data_offsets":[0,28]})"), "missing \"dtype\"");
  expect_corrupt(one(R"({"dtype":"F32","data_offsets":[0,28]})"), "missing \"shape\"");
  expect_corrupt(one(R"({"dtype":"F32","shape":[7]})"), "missing \"data_offsets\"");
  expect_corrupt(one(R"({"dtype":32,"shape":[7],"data_offsets":[0,28]})"), "dtype is not a string");
  expect_corrupt(one(R"({"dtype":"I8","shape":[28],"data_offsets":[0,28]})"), "unsupported dtype");
  expect_corrupt(one(R"({"dtype":"F32","shape":7,"data_offsets":[0,28]})"), "shape is not an array");
  expect_corrupt(one(R"({"dtype":"F32","shape":[7.0],"data_offsets":[0,28]})"), "non-integer");
  expect_corrupt(one(R"({"dtype":"F32","shape":[-7],"data_offsets":[0,28]})"), "negative dimension");
  expect_corrupt(one(R"({"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,28]})"), "overflow");
  expect_corrupt(one(R"({"dtype":"F32","shape":[18446744073709551615],"data_offsets":[0,28]})"), "overflow");
  expect_corrupt(one(R"({"dtype":"F32","shape":[7],"data_offsets":[0]})"), "data_offsets");
  expect_corrupt(one(R"({"dtype":"F32","shape":[7],"data_offsets":"0-28"})"), "data_offsets");
  expect_corrupt(one(R"({"dtype":"F32","shape":[7],"data_offsets":[-4,28]})"), "non-negative");
  expect_corrupt(one(R"({"dtype":"F32","shape":[0],"data_offsets":[28,0]})"), "reversed");
  expect_corrupt(one(R"({"dtype":"F32","shape":[8],"data_offsets":[0,32]})"), "past the end");
  expect_corrupt(one(R"({"dtype":"F32","shape":[6],"data_offsets":[0,28]})"), "does not match");
  expect_corrupt(one(R"({"dtype":"BF16","shape":[7],"data_offsets":[0,28]})"), "does not match");
}

TEST(SafetensorsCorrupt, BufferCoverage) {
  const std::string data = good_data();  // 28 bytes
  expect_corrupt(make_file(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[12,28]}})", data),
                 "overlap");
  expect_corrupt(make_file(R"({"a":{"dtype":"F32","shape":[7],"data_offsets":[0,28]},"b":{"dtype":"F32","shape":[7],"data_offsets":[0,28]}})", data),
                 "overlap");
  expect_corrupt(make_file(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},"b":{"dtype":"F32","shape":[3],"data_offsets":[16,28]}})", data),
                 "gap");
  expect_corrupt(make_file(R"({"a":{"dtype":"F32","shape":[6],"data_offsets":[0,24]}})", data), "trailing");
  expect_corrupt(make_file("{}", data), "trailing");
}

TEST(SafetensorsCorrupt, EveryTruncationThrows) {
  const fs::path good = test_dir() / "small.safetensors";
  ttt::io::write_safetensors(good.string(), {{"a", ttt::from_vector({1, 2, 3}, {3})}, {"b", ttt::ones({2, 2})}},
                             StoreAs::BF16, {{"k", "v"}});
  const std::string bytes = read_bytes(good);
  ASSERT_NO_THROW(ttt::io::read_safetensors(good.string()));
  const fs::path p = good.parent_path() / "trunc.safetensors";
  for (size_t len = 0; len < bytes.size(); ++len) {
    write_bytes(p, bytes.substr(0, len));
    EXPECT_THROW(ttt::io::read_safetensors(p.string()), std::runtime_error) << "length " << len;
    std::vector<uint8_t> heap(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(len));
    EXPECT_THROW(ttt::io::parse_safetensors(heap.data(), heap.size(), "mem"), std::runtime_error)
        << "length " << len;
  }
  // One byte too many is a gap at the end, also an error.
  write_bytes(p, bytes + "x");
  EXPECT_THROW(ttt::io::read_safetensors(p.string()), std::runtime_error);
}

TEST(SafetensorsAtomicFile, FailedWriterLeavesTargetUntouched) {
  const fs::path dir = test_dir();
  const fs::path p = dir / "target.bin";
  write_bytes(p, "original contents");
  try {
    ttt::io::write_file_atomic(p.string(), [](std::ostream& out) {
      out << "half written";
      throw std::runtime_error("disk on fire");
    });
    FAIL() << "no exception";
  } catch (const std::runtime_error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(p.string()), std::string::npos) << msg;
    EXPECT_NE(msg.find("disk on fire"), std::string::npos) << msg;
  }
  EXPECT_EQ(read_bytes(p), "original contents");
  // No temporary file left behind.
  int files = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    (void)e;
    ++files;
  }
  EXPECT_EQ(files, 1);
}

TEST(SafetensorsAtomicFile, ReplacesTargetAndFailsInMissingDirectory) {
  const fs::path dir = test_dir();
  const fs::path p = dir / "target.bin";
  write_bytes(p, "old");
  ttt::io::write_file_atomic(p.string(), [](std::ostream& out) { out << "new contents"; });
  EXPECT_EQ(read_bytes(p), "new contents");
  const std::string bytes = "\x01\x02\x03";
  ttt::io::write_file_atomic(p.string(), bytes.data(), bytes.size());
  EXPECT_EQ(read_bytes(p), bytes);
  const fs::path missing = dir / "no_such_dir" / "x.bin";
  try {
    ttt::io::write_file_atomic(missing.string(), [](std::ostream& out) { out << "x"; });
    FAIL() << "no exception";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(missing.string()), std::string::npos) << e.what();
  }
}

TEST(SafetensorsAtomicFile, FailedSafetensorsWriteKeepsOldFile) {
  const fs::path p = test_dir() / "m.safetensors";
  ttt::io::write_safetensors(p.string(), {{"a", ttt::ones({2})}});
  const std::string before = read_bytes(p);
  EXPECT_THROW(ttt::io::write_safetensors(p.string(), {{"b", ttt::ones({3})}, {"b", ttt::ones({3})}}),
               std::runtime_error);
  EXPECT_EQ(read_bytes(p), before);
}

}  // namespace
