// The tokenizer (src/data/tokenizer.h): SentencePiece BPE with byte fallback, trained on a tiny
// synthetic corpus; exact byte round trips (random bytes, invalid UTF-8, NUL, tabs, emoji), the
// id convention (BOS 0, bytes 3..258) and clear errors.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "data/text.h"
#include "data/tokenizer.h"

#include <sentencepiece_trainer.h>

namespace {

namespace fs = std::filesystem;
using ttt::data::Tokenizer;

// A small corpus of fake C code (tab-indented), space-indented Python-like code and prose.
std::vector<std::string> synthetic_texts(int n, uint32_t seed) {
  std::mt19937 rng(seed);
  const char* names[] = {"count", "buffer", "index", "value", "result", "node", "list", "state", "flags", "length"};
  const char* words[] = {"the", "kernel", "driver", "memory", "device", "returns", "a", "pointer", "to", "of", "and", "is"};
  std::vector<std::string> out;
  for (int k = 0; k < n; ++k) {
    std::string c = "/* file " + std::to_string(k) + " */\n#include <linux/kernel.h>\n\n";
    for (int f = 0; f < 6; ++f) {
      const std::string a = names[rng() % 10], b = names[rng() % 10];
      c += "static int " + a + "_" + b + "(struct " + a + " *" + b + ")\n{\n";
      c += "\tint " + a + " = 0;\n\n\tif (!" + b + ")\n\t\treturn -EINVAL;\n";
      c += "\tfor (" + a + " = 0; " + a + " < " + std::to_string(rng() % 1000) + "; " + a + "++) {\n";
      c += "\t\t" + b + "->" + a + " += " + std::to_string(rng() % 100) + ";\n\t}\n\treturn " + a + ";\n}\n\n";
    }
    out.push_back(c);
    std::string py = "def " + std::string(names[rng() % 10]) + "(x):\n";
    for (int l = 0; l < 8; ++l) py += "    if x > " + std::to_string(rng() % 50) + ":\n        x = x - 1\n";
    py += "    return x  # caf\xc3\xa9 \xf0\x9f\x98\x80\n";
    out.push_back(py);
    std::string prose;
    for (int w = 0; w < 120; ++w) prose += std::string(words[rng() % 12]) + (w % 15 == 14 ? ".\n" : " ");
    out.push_back(prose);
  }
  return out;
}

class TokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::path(::testing::TempDir()) / ("ttt_tok_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    ttt::data::TokenizerTrainOptions o;
    o.vocab_size = 600;
    o.num_threads = 2;
    Tokenizer::train(synthetic_texts(40, 1), (dir_ / "tok").string(), o);
    tok_ = new Tokenizer(Tokenizer::load((dir_ / "tok.model").string()));
  }
  static void TearDownTestSuite() {
    delete tok_;
    tok_ = nullptr;
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  static void expect_round_trip(const std::string& s) {
    const auto ids = tok_->encode(s);
    for (int32_t id : ids) {
      ASSERT_GE(id, 3) << "encode produced a special id";
      ASSERT_LT(id, tok_->vocab_size());
    }
    const std::string d = tok_->decode(ids);
    ASSERT_TRUE(d == s) << "round trip of " << s.size() << " bytes gave " << d.size() << " bytes; first 80: "
                        << ::testing::PrintToString(s.substr(0, 80));
  }
  static inline fs::path dir_;
  static inline Tokenizer* tok_ = nullptr;
};

TEST_F(TokenizerTest, TrainsWithTheIdConvention) {
  EXPECT_EQ(tok_->vocab_size(), 600);
  EXPECT_EQ(tok_->bos_id(), 0);
  EXPECT_EQ(tok_->piece(0), "<s>");
  EXPECT_EQ(tok_->piece(1), "<unk>");
  EXPECT_EQ(tok_->piece(2), "</s>");
  EXPECT_EQ(tok_->piece(3), "<0x00>");
  EXPECT_EQ(tok_->piece(258), "<0xFF>");
  EXPECT_EQ(tok_->piece_bytes(3 + 'A'), "A");
  EXPECT_TRUE(fs::exists(dir_ / "tok.vocab"));
  std::ifstream v(dir_ / "tok.vocab");
  int lines = 0;
  for (std::string l; std::getline(v, l);) ++lines;
  EXPECT_EQ(lines, 600);  // newlines inside pieces are escaped
}

TEST_F(TokenizerTest, RoundTripsText) {
  for (const auto& t : synthetic_texts(3, 99)) expect_round_trip(t);
  expect_round_trip("");
  expect_round_trip("int main(void)\r\n{\r\n\treturn 0;\r\n}\r\n");
  expect_round_trip("  leading, trailing  \n\n\n   \t \t\n");
  expect_round_trip("emoji \xf0\x9f\x98\x80\xf0\x9f\xa6\x84 \xe4\xb8\xad\xe6\x96\x87 \xd0\xbf\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82 caf\xc3\xa9");
  expect_round_trip("<s> </s> <unk> <0x41> \xe2\x96\x81 \xe2\x90\x89 \xe2\x96\x85 literal markers");
}

TEST_F(TokenizerTest, RoundTripsInvalidUtf8AndNul) {
  const std::vector<std::string> cases = {
      std::string("a\0b", 3),       std::string(5, '\0'),   "\xff\xfe",      "x\x80y",          "\xc0\x80",
      "\xed\xa0\x80 surrogate",     "\xf5\x80\x80\x80",     "\xf4\x90\x80\x80", "truncated \xe2\x82", "\xe2",
      "\xf0\x9f\x98",               "latin-1 caf\xe9\n",    "\xc3\x28",      "\xe2\x96",         "ok\xe2\x96\x81\xe2\x96\x81",
  };
  for (const auto& c : cases) expect_round_trip(c);
}

TEST_F(TokenizerTest, RoundTripsRandomBytes) {
  std::mt19937 rng(7);
  const std::string alphabet = " \t\n\r{}();=abcdefxyz0123456789\xe2\x96\x81\xc3\xa9\xf0\x9f\x98\x80";
  for (int k = 0; k < 600; ++k) {
    const size_t n = rng() % 200;
    std::string s;
    for (size_t i = 0; i < n; ++i) {
      if (k % 3 == 0) s += static_cast<char>(rng() & 0xff);  // uniform bytes
      else s += alphabet[rng() % alphabet.size()];           // mostly valid pieces, split multibyte chars too
    }
    expect_round_trip(s);
  }
}

TEST_F(TokenizerTest, RoundTripsLongInputs) {
  // Longer than the 64 KiB encoding segments, with and without newlines.
  std::string code;
  for (const auto& t : synthetic_texts(120, 5)) code += t;
  ASSERT_GT(code.size(), 200000u);
  expect_round_trip(code);
  expect_round_trip(std::string(300000, 'a') + "\t" + std::string(70000, ' '));
  std::string mixed(150000, 'z');
  for (size_t i = 0; i < mixed.size(); i += 997) mixed[i] = static_cast<char>(0x80 + i % 64);
  expect_round_trip(mixed);
}

TEST_F(TokenizerTest, TabsAndIndentationGetPieces) {
  // SentencePiece alone cannot learn pieces containing '\t'; the wrapper's substitution can.
  const auto ids = tok_->encode("\t\treturn -EINVAL;\n");
  EXPECT_LT(ids.size(), 8u);
  bool multi_tab = false;
  for (int32_t id : ids)
    if (tok_->piece_bytes(id).find("\t\t") != std::string::npos) multi_tab = true;
  EXPECT_TRUE(multi_tab);
  const auto sp = tok_->encode("        x = x - 1\n");
  EXPECT_LT(sp.size(), 10u);
}

TEST_F(TokenizerTest, CompressesHeldOutText) {
  std::string t;
  for (const auto& s : synthetic_texts(4, 1234)) t += s;
  const auto ids = tok_->encode(t);
  EXPECT_GT(static_cast<double>(t.size()) / static_cast<double>(ids.size()), 2.0);
}

TEST_F(TokenizerTest, BosHandling) {
  const std::string s = "int x;\n";
  std::vector<int32_t> ids{tok_->bos_id()};
  tok_->encode_append(s, ids);
  EXPECT_EQ(ids[0], 0);
  EXPECT_EQ(tok_->decode(ids), s);  // control tokens decode to nothing
  std::vector<int32_t> two = ids;
  two.push_back(0);
  tok_->encode_append(s, two);
  EXPECT_EQ(tok_->decode(two), s + s);
  for (int32_t id : tok_->encode("<s>")) EXPECT_NE(id, 0);  // the text "<s>" is not BOS
}

TEST_F(TokenizerTest, DecodeRejectsIdsOutsideTheVocabulary) {
  try {
    tok_->decode(std::vector<int32_t>{5, 600});
    FAIL() << "no error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("outside the tokenizer's vocabulary"), std::string::npos) << e.what();
  }
  EXPECT_THROW(tok_->decode(std::vector<int32_t>{-1}), std::runtime_error);
}

TEST_F(TokenizerTest, TrainingIsDeterministic) {
  ttt::data::TokenizerTrainOptions o;
  o.vocab_size = 400;
  o.num_threads = 2;
  const auto texts = synthetic_texts(10, 3);
  Tokenizer::train(texts, (dir_ / "a").string(), o);
  Tokenizer::train(texts, (dir_ / "b").string(), o);
  auto bytes = [&](const char* name) { return ttt::data::read_file((dir_ / name).string()); };
  EXPECT_TRUE(bytes("a.model") == bytes("b.model"));
  // The thread count is recorded in the model, but the pieces do not depend on it.
  o.num_threads = 1;
  Tokenizer::train(texts, (dir_ / "c").string(), o);
  EXPECT_TRUE(bytes("a.vocab") == bytes("c.vocab"));
}

TEST_F(TokenizerTest, TrainFilesSkipsBinaryFiles) {
  const fs::path src = dir_ / "src";
  fs::create_directories(src / "sub");
  const auto texts = synthetic_texts(6, 11);
  for (size_t i = 0; i < texts.size(); ++i) std::ofstream(src / "sub" / ("f" + std::to_string(i) + ".c")) << texts[i];
  std::ofstream(src / "blob.bin", std::ios::binary) << std::string("\x7f" "ELF\0\0\0\xff\xfe", 9);
  ttt::data::TokenizerTrainOptions o;
  o.vocab_size = 400;
  const uint64_t bytes = Tokenizer::train_files({src.string()}, (dir_ / "files").string(), o);
  uint64_t want = 0;
  for (const auto& t : texts) want += t.size();
  EXPECT_EQ(bytes, want);
  EXPECT_EQ(Tokenizer::load((dir_ / "files.model").string()).vocab_size(), 400);
}

TEST_F(TokenizerTest, ClearErrors) {
  auto expect_error = [](auto&& f, const std::string& part) {
    try {
      f();
      FAIL() << "no error, expected: " << part;
    } catch (const std::runtime_error& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find(part), std::string::npos) << m;
      EXPECT_EQ(m.find('\n'), std::string::npos) << m;
    }
  };
  expect_error([] { Tokenizer::load("/nonexistent/tok.model"); }, "cannot open tokenizer model");
  const std::string junk = (dir_ / "junk.model").string();
  std::ofstream(junk) << "not a model";
  expect_error([&] { Tokenizer::load(junk); }, "is not a SentencePiece model");
  ttt::data::TokenizerTrainOptions o;
  o.vocab_size = 100;
  expect_error([&] { Tokenizer::train({"abc"}, (dir_ / "x").string(), o); }, "at least 260");
  o.vocab_size = 50000;
  expect_error([&] { Tokenizer::train({"tiny text\n"}, (dir_ / "x").string(), o); }, "tokenizer training failed");
  o.vocab_size = 300;
  expect_error([&] { Tokenizer::train({std::string("\0\0", 2)}, (dir_ / "x").string(), o); }, "no training text");
}

// A model file with the project's ids but its own normalization (NFKC, a dummy prefix,
// collapsed spaces) would change text silently; load refuses it (found by fuzz_tokenizer_model:
// a mutated model broke decode(encode(s)) == s).
TEST_F(TokenizerTest, RefusesModelsThatDoNotRoundTrip) {
  const fs::path text = dir_ / "nfkc_input.txt";
  {
    std::ofstream f(text);
    for (const auto& t : synthetic_texts(20, 3)) f << t << "\n";
  }
  const std::string prefix = (dir_ / "nfkc").string();
  const auto st = sentencepiece::SentencePieceTrainer::Train(
      "--input=" + text.string() + " --model_prefix=" + prefix +
      " --model_type=bpe --vocab_size=400 --byte_fallback=true --bos_id=0 --unk_id=1 --eos_id=2 --pad_id=-1"
      " --normalization_rule_name=nmt_nfkc --add_dummy_prefix=true --remove_extra_whitespaces=true --minloglevel=2");
  ASSERT_TRUE(st.ok()) << st.ToString();
  try {
    Tokenizer::load(prefix + ".model");
    FAIL() << "a model with NFKC and a dummy prefix was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("does not round-trip text"), std::string::npos) << e.what();
  }
}

// The models fuzz_tokenizer_model found (fuzz/corpus/tokenizer_model/regression_*): mutations that
// switch on remove_extra_whitespaces or add_dummy_prefix, or leave a NUL inside a learned piece,
// each broke decode(encode(s)) == s; load must refuse them all.
TEST_F(TokenizerTest, RefusesTheModelsTheFuzzerFound) {
  int seen = 0;
  for (const auto& e : fs::directory_iterator(fs::path(TTT_SOURCE_DIR) / "fuzz" / "corpus" / "tokenizer_model")) {
    if (e.path().filename().string().rfind("regression_", 0) != 0) continue;
    ++seen;
    EXPECT_THROW(Tokenizer::load(e.path().string()), std::runtime_error) << e.path();
  }
  EXPECT_GE(seen, 3);
  EXPECT_NO_THROW(Tokenizer::load((fs::path(TTT_SOURCE_DIR) / "fuzz" / "corpus" / "tokenizer_model" / "tok300").string()));
}

}  // namespace
