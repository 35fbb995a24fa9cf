// The corpus builder (src/data/corpus.h) and reader (src/data/dataset.h) on a synthetic tree:
// deterministic bytes, document grouping, BOS at every document start, index/shard
// consistency, a split stable under additions, the long-document validation set, resumable
// sampling, and clear errors for bad input and corrupt outputs.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "data/corpus.h"
#include "data/dataset.h"
#include "data/text.h"
#include "data/tokenizer.h"

namespace {

namespace fs = std::filesystem;
using ttt::data::CorpusOptions;
using ttt::data::Dataset;
using ttt::data::Tokenizer;

std::string fake_c(std::mt19937& rng, int functions) {
  const char* names[] = {"alloc", "free", "init", "exit", "probe", "remove", "read", "write"};
  std::string s = "#include <linux/module.h>\n\n";
  for (int f = 0; f < functions; ++f) {
    const std::string n = names[rng() % 8];
    s += "static int " + n + "_" + std::to_string(rng() % 100) + "(void)\n{\n\tint i;\n\n\tfor (i = 0; i < " +
         std::to_string(rng() % 64) + "; i++)\n\t\tpr_info(\"" + n + " %d\\n\", i);\n\treturn 0;\n}\n\n";
  }
  return s;
}

std::string fake_prose(std::mt19937& rng, int sentences) {
  const char* words[] = {"the", "device", "tree", "binding", "describes", "a", "clock", "for", "each", "controller"};
  std::string s = "Title\n=====\n\n";
  for (int k = 0; k < sentences; ++k) {
    for (int w = 0; w < 12; ++w) s += std::string(words[rng() % 10]) + (w == 11 ? ".\n" : " ");
  }
  return s;
}

void write(const fs::path& p, const std::string& s) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << s;
}

std::map<std::string, std::string> dir_bytes(const fs::path& d) {
  std::map<std::string, std::string> m;
  for (const auto& e : fs::directory_iterator(d)) m[e.path().filename().string()] = ttt::data::read_file(e.path().string());
  return m;
}

class CorpusTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = fs::path(::testing::TempDir()) / ("ttt_corpus_" + std::to_string(::getpid()));
    fs::remove_all(root_);
    make_tree(root_ / "src");
    ttt::data::TokenizerTrainOptions o;
    o.vocab_size = 500;
    o.num_threads = 2;
    Tokenizer::train_files({(root_ / "src").string()}, (root_ / "tok").string(), o);
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    fs::remove_all(root_, ec);
  }
  static void make_tree(const fs::path& src) {
    std::mt19937 rng(42);
    write(src / "kernel" / "sched.c", fake_c(rng, 30));
    write(src / "kernel" / "fork.c", fake_c(rng, 10));
    write(src / "kernel" / "sched.h", "#ifndef SCHED_H\n#define SCHED_H\nint schedule(void);\n#endif");  // no final newline
    write(src / "kernel" / "blob.bin", std::string("\x7f" "ELF\0\0\0\x01\x02", 9) + std::string(100, '\0'));
    write(src / "lib" / "string.c", fake_c(rng, 5));
    write(src / "lib" / "list.h", fake_c(rng, 2));
    write(src / "lib" / "empty.c", "");
    write(src / "drivers" / "net" / "e1000.c", fake_c(rng, 60));
    write(src / "drivers" / "net" / "Makefile", "obj-y += e1000.o\n");
    write(src / "drivers" / "gpio" / "gpio.c", fake_c(rng, 8));
    write(src / "docs" / "intro.txt", fake_prose(rng, 20));
    write(src / "docs" / "guide.rst", fake_prose(rng, 40));
    write(src / "docs" / "api" / "clk.rst", fake_prose(rng, 10));
    write(src / "README", fake_prose(rng, 5));
    write(src / ".git" / "config", "[core]\n");  // hidden: skipped
  }
  CorpusOptions options(const std::string& out) const {
    CorpusOptions c;
    c.source = (root_ / "src").string();
    c.tokenizer = (root_ / "tok.model").string();
    c.out = (root_ / out).string();
    c.val_fraction = 0.3;
    c.min_val_doc_tokens = 2000;
    c.shard_tokens = 4000;
    c.threads = 2;
    c.progress = false;
    return c;
  }
  static void expect_error(const std::function<void()>& f, const std::string& part) {
    try {
      f();
      ADD_FAILURE() << "no error, expected: " << part;
    } catch (const std::runtime_error& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find(part), std::string::npos) << m;
      EXPECT_EQ(m.find('\n'), std::string::npos) << m;
    }
  }
  static inline fs::path root_;
};

TEST_F(CorpusTest, BuildIsDeterministic) {
  auto a = options("det_a"), b = options("det_b");
  b.threads = 1;
  ttt::data::build_corpus(a);
  ttt::data::build_corpus(b);
  const auto ma = dir_bytes(a.out), mb = dir_bytes(b.out);
  EXPECT_EQ(ma, mb);
  EXPECT_TRUE(ma.count("index.json"));
  EXPECT_TRUE(ma.count("tokenizer.model"));
  EXPECT_TRUE(ma.count("train-00000.bin"));
  ttt::data::build_corpus(a);  // rebuilding in place gives the same bytes
  EXPECT_EQ(dir_bytes(a.out), ma);
}

TEST_F(CorpusTest, GroupsCodeByDirectoryProseByFileAndSkipsBinary) {
  auto c = options("group");
  c.val_fraction = 0;
  const auto s = ttt::data::build_corpus(c);
  const auto ds = Dataset::open(c.out);
  std::set<std::string> names;
  for (const auto& d : ds.split("train").documents) names.insert(d.name);
  const std::set<std::string> want = {"kernel", "lib", "drivers/net", "drivers/gpio", "docs/intro.txt",
                                      "docs/guide.rst", "docs/api/clk.rst", "README"};
  EXPECT_EQ(names, want);
  EXPECT_EQ(s.skipped_binary, 1);
  EXPECT_EQ(s.skipped_empty, 1);
  EXPECT_EQ(s.files_used, 12);

  // Each document decodes to its files (sorted by name) behind header lines.
  const auto tok = Tokenizer::load(ds.tokenizer_path());
  const auto& docs = ds.split("train").documents;
  for (size_t i = 0; i < docs.size(); ++i) {
    if (docs[i].name != "kernel") continue;
    const auto t = ds.document("train", i);
    const fs::path k = root_ / "src" / "kernel";
    const std::string want_text = "==> kernel/fork.c <==\n" + ttt::data::read_file((k / "fork.c").string()) +
                                  "==> kernel/sched.c <==\n" + ttt::data::read_file((k / "sched.c").string()) +
                                  "==> kernel/sched.h <==\n" + ttt::data::read_file((k / "sched.h").string()) + "\n";
    EXPECT_EQ(t[0], 0);
    EXPECT_EQ(tok.decode(t), want_text);
    EXPECT_EQ(docs[i].files, 3);
  }
}

TEST_F(CorpusTest, ModesCodeAndProse) {
  auto c = options("mode_prose");
  c.val_fraction = 0;
  c.mode = ttt::data::GroupMode::Prose;
  ttt::data::build_corpus(c);
  EXPECT_EQ(Dataset::open(c.out).split("train").documents.size(), 12u);  // one per used file
  c = options("mode_code");
  c.val_fraction = 0;
  c.mode = ttt::data::GroupMode::Code;
  c.prose_prefixes = {"docs/api"};
  ttt::data::build_corpus(c);
  std::set<std::string> names;
  const auto ds = Dataset::open(c.out);
  for (const auto& d : ds.split("train").documents) names.insert(d.name);
  const std::set<std::string> want = {"kernel", "lib", "drivers/net", "drivers/gpio", "docs", "docs/api/clk.rst", "."};
  EXPECT_EQ(names, want);
}

TEST_F(CorpusTest, DocumentsStartWithBosAndTileTheShards) {
  auto c = options("tile");
  c.shard_tokens = 1500;
  ttt::data::build_corpus(c);
  const auto ds = Dataset::open(c.out);
  int64_t total = 0;
  for (const char* split : {"train", "val", "val-long"}) {
    const auto& sp = ds.split(split);
    std::vector<int64_t> next(sp.shards.size(), 0);
    for (size_t i = 0; i < sp.documents.size(); ++i) {
      const auto& d = sp.documents[i];
      ASSERT_LT(static_cast<size_t>(d.shard), sp.shards.size());
      EXPECT_EQ(d.offset, next[static_cast<size_t>(d.shard)]) << "documents follow each other in a shard";
      next[static_cast<size_t>(d.shard)] += d.length;
      const auto t = ds.document(split, i);
      EXPECT_EQ(t[0], ds.bos_id());
      EXPECT_EQ(std::count(t.begin(), t.end(), ds.bos_id()), 1) << "BOS only at the start";
    }
    for (size_t s = 0; s < sp.shards.size(); ++s) {
      EXPECT_EQ(next[s], sp.shards[s].tokens);
      // A shard holds several documents only if they fit in shard_tokens.
      if (std::count_if(sp.documents.begin(), sp.documents.end(), [&](const auto& d) { return d.shard == static_cast<int64_t>(s); }) > 1) {
        EXPECT_LE(sp.shards[s].tokens, c.shard_tokens);
      }
    }
    total += sp.tokens;
  }
  EXPECT_GT(total, 0);
  EXPECT_GT(ds.split("train").shards.size(), 1u);
}

TEST_F(CorpusTest, SplitIsStableUnderAdditions) {
  auto c = options("stable_a");
  c.val_fraction = 0.5;
  ttt::data::build_corpus(c);
  // A copy of the tree with new files elsewhere and a new file in an existing directory.
  const fs::path src2 = root_ / "src2";
  fs::remove_all(src2);
  fs::copy(root_ / "src", src2, fs::copy_options::recursive);
  std::mt19937 rng(5);
  for (int i = 0; i < 20; ++i) write(src2 / ("new" + std::to_string(i)) / "x.c", fake_c(rng, 2));
  write(src2 / "lib" / "added.c", fake_c(rng, 3));
  auto c2 = c;
  c2.source = src2.string();
  c2.out = (root_ / "stable_b").string();
  ttt::data::build_corpus(c2);
  auto in_train = [](const Dataset& ds) {
    std::map<std::string, bool> m;
    for (const char* s : {"train", "val", "val-long"})
      for (const auto& d : ds.split(s).documents) m[d.name] = std::string(s) == "train";
    return m;
  };
  const auto a = in_train(Dataset::open(c.out)), b = in_train(Dataset::open(c2.out));
  int val = 0;
  for (const auto& [name, tr] : a) {
    ASSERT_TRUE(b.count(name)) << name;
    EXPECT_EQ(b.at(name), tr) << name;
    val += !tr;
  }
  EXPECT_GT(val, 0);
  EXPECT_LT(val, static_cast<int>(a.size()));
}

TEST_F(CorpusTest, LongValidationDocuments) {
  auto c = options("long");
  c.val_fraction = 1.0;
  c.min_val_doc_tokens = 1500;
  ttt::data::build_corpus(c);
  const auto ds = Dataset::open(c.out);
  EXPECT_EQ(ds.split("train").tokens, 0);
  ASSERT_GT(ds.split("val-long").documents.size(), 0u);
  ASSERT_GT(ds.split("val").documents.size(), 0u);
  for (const auto& d : ds.split("val-long").documents) EXPECT_GE(d.length, 1500);
  for (const auto& d : ds.split("val").documents) EXPECT_LT(d.length, 1500);
  EXPECT_TRUE(fs::exists(fs::path(c.out) / "val-long-00000.bin"));
  // No training data: sampling says so.
  ttt::data::SequenceSampler rng(1);
  expect_error([&] { ds.sample_train(65, rng); }, "no training shard");
}

TEST_F(CorpusTest, MaxTokensCapsTheCorpus) {
  auto c = options("cap");
  c.max_tokens = 3000;
  const auto s = ttt::data::build_corpus(c);
  EXPECT_GT(s.train.tokens, 0);
  EXPECT_LE(s.train.tokens, 3000);
  EXPECT_GT(s.documents_capped, 0);
}

TEST_F(CorpusTest, MaxTokensKeepsEveryHeldOutDocument) {
  // The cap is on training tokens: the held-out splits are the same with or without it.
  auto a = options("cap-val-a");
  a.val_fraction = 0.3;
  auto b = options("cap-val-b");
  b.val_fraction = 0.3;
  b.max_tokens = 1000;
  const auto sa = ttt::data::build_corpus(a), sb = ttt::data::build_corpus(b);
  ASSERT_GT(sa.val.documents + sa.val_long.documents, 0);
  EXPECT_EQ(sb.val.tokens, sa.val.tokens);
  EXPECT_EQ(sb.val_long.tokens, sa.val_long.tokens);
  EXPECT_EQ(sb.val.documents, sa.val.documents);
  EXPECT_LT(sb.train.tokens, sa.train.tokens);
  EXPECT_LE(sb.train.tokens, 1000);
}

// The reader's tests share the builder's fixture.
class DatasetTest : public CorpusTest {};

TEST_F(DatasetTest, SamplerAndValidationAreDeterministic) {
  auto c = options("sample");
  c.val_fraction = 0.5;
  ttt::data::build_corpus(c);
  const auto ds = Dataset::open(c.out);
  const int64_t len = 33;
  ttt::data::SequenceSampler a(123);
  std::vector<std::vector<int32_t>> first;
  std::string saved;
  for (int i = 0; i < 10; ++i) {
    if (i == 5) saved = a.state();
    first.push_back(ds.sample_train(len, a));
    ASSERT_EQ(first.back().size(), static_cast<size_t>(len));
  }
  ttt::data::SequenceSampler b;
  b.restore(saved);
  for (int i = 5; i < 10; ++i) EXPECT_EQ(ds.sample_train(len, b), first[static_cast<size_t>(i)]);
  EXPECT_THROW(b.restore("garbage"), std::runtime_error);
  // Every sample is a window of one training shard.
  const auto& tr = ds.split("train");
  for (const auto& s : first) {
    bool found = false;
    for (size_t k = 0; k < tr.shards.size() && !found; ++k) {
      const int32_t* p = ds.shard_data("train", k);
      found = std::search(p, p + tr.shards[k].tokens, s.begin(), s.end()) != p + tr.shards[k].tokens;
    }
    EXPECT_TRUE(found);
  }
  // Validation windows: deterministic, overlapping by one token, in order.
  const auto ds2 = Dataset::open(c.out);
  const int64_t n = ds.num_sequences("val", len);
  ASSERT_GT(n, 0);
  EXPECT_EQ(n, ds2.num_sequences("val", len));
  for (int64_t i = 0; i < n; ++i) {
    const auto v = ds.sequence("val", len, i);
    EXPECT_EQ(v, ds2.sequence("val", len, i));
    if (i == 0) {
      EXPECT_EQ(v[0], ds.bos_id());
    }
  }
  const auto v0 = ds.sequence("val", len, 0), v1 = ds.sequence("val", len, 1);
  if (ds.split("val").shards[0].tokens >= 2 * len - 1) {
    EXPECT_EQ(v0.back(), v1.front());
  }
  EXPECT_THROW(ds.sequence("val", len, n + 1000), std::runtime_error);
}

TEST_F(CorpusTest, BadInputGivesClearErrors) {
  const fs::path empty = root_ / "empty_src";
  fs::create_directories(empty);
  auto c = options("bad");
  c.source = empty.string();
  expect_error([&] { ttt::data::build_corpus(c); }, "holds no files");
  const fs::path bin = root_ / "bin_src";
  write(bin / "a.bin", std::string("\0\1\2\3", 4));
  c.source = bin.string();
  expect_error([&] { ttt::data::build_corpus(c); }, "no usable text files");
  c = options("bad");
  c.source = (root_ / "missing").string();
  expect_error([&] { ttt::data::build_corpus(c); }, "does not exist");
  c = options("bad");
  c.tokenizer = (root_ / "missing.model").string();
  expect_error([&] { ttt::data::build_corpus(c); }, "cannot open tokenizer model");
  c = options("bad");
  c.out = (root_ / "src" / "out").string();
  expect_error([&] { ttt::data::build_corpus(c); }, "inside the source");
  expect_error([] { ttt::data::parse_group_mode("poetry"); }, "--mode");
}

TEST_F(DatasetTest, DetectsCorruptionAndMismatches) {
  auto c = options("corrupt");
  ttt::data::build_corpus(c);
  const fs::path out(c.out);
  const auto good = dir_bytes(out);
  auto restore = [&] {
    for (const auto& [n, b] : good) write(out / n, b);
  };
  EXPECT_NO_THROW(Dataset::open(c.out));

  // A flipped byte in a shard.
  std::string s = good.at("train-00000.bin");
  s[s.size() / 2] ^= 0x01;
  write(out / "train-00000.bin", s);
  expect_error([&] { Dataset::open(c.out); }, "is corrupt (checksum mismatch)");
  restore();
  // A truncated shard.
  write(out / "train-00000.bin", good.at("train-00000.bin").substr(0, 40));
  expect_error([&] { Dataset::open(c.out); }, "truncated or corrupt");
  restore();
  // A missing shard.
  fs::remove(out / "train-00000.bin");
  expect_error([&] { Dataset::open(c.out); }, "is missing");
  restore();
  // A truncated index, a missing index, an index whose fields are wrong.
  write(out / "index.json", good.at("index.json").substr(0, good.at("index.json").size() / 2));
  expect_error([&] { Dataset::open(c.out); }, "truncated or not valid JSON");
  fs::remove(out / "index.json");
  expect_error([&] { Dataset::open(c.out); }, "has no index.json");
  write(out / "index.json", "{\"format\": \"ttt-corpus\", \"version\": 1}");
  expect_error([&] { Dataset::open(c.out); }, "missing field");
  restore();
  expect_error([&] { Dataset::open((root_ / "nowhere").string()); }, "does not exist");

  // Model/corpus mismatch.
  const auto ds = Dataset::open(c.out);
  EXPECT_NO_THROW(ds.check_model(500, 0));
  expect_error([&] { ds.check_model(4096, 0); }, "vocab_size 500, the model has vocab_size 4096");
  expect_error([&] { ds.check_model(500, 1); }, "bos_token_id 1");
}

}  // namespace
