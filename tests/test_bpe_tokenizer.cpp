// The byte-level BPE tokenizer (src/data/bpe_tokenizer.h) on a small rank file and tokenizer.json
// written here: merge order (tiktoken's rank of the merged bytes, Hugging Face's merge position),
// the Llama 3 pre-tokenizer's splits, special tokens, exact byte round trips, format detection
// through the Tokenizer facade, and one-line errors for corrupt files. Agreement with tiktoken on
// Meta's real Llama 3 file is checked end to end by tests/tiktoken_compare_test.sh.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "data/bpe_tokenizer.h"
#include "data/text.h"
#include "data/tokenizer.h"

namespace {

namespace fs = std::filesystem;
using ttt::data::BpeTokenizer;
using ttt::data::Tokenizer;

std::string base64(const std::string& in) {
  static const char* a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string o;
  size_t i = 0;
  for (; i + 3 <= in.size(); i += 3) {
    const uint32_t v = static_cast<uint32_t>(static_cast<unsigned char>(in[i])) << 16 |
                       static_cast<uint32_t>(static_cast<unsigned char>(in[i + 1])) << 8 | static_cast<unsigned char>(in[i + 2]);
    o += a[v >> 18];
    o += a[(v >> 12) & 63];
    o += a[(v >> 6) & 63];
    o += a[v & 63];
  }
  if (i < in.size()) {
    uint32_t v = static_cast<uint32_t>(static_cast<unsigned char>(in[i])) << 16;
    if (i + 1 < in.size()) v |= static_cast<uint32_t>(static_cast<unsigned char>(in[i + 1])) << 8;
    o += a[v >> 18];
    o += a[(v >> 12) & 63];
    o += i + 1 < in.size() ? a[(v >> 6) & 63] : '=';
    o += '=';
  }
  return o;
}

// The hand-made vocabulary: every byte (rank = byte value), then merged tokens in rank order.
// "yz" ranks below "xy", so "xyz" merges as x + yz; "ab" below "bc", so "abc" is ab + c.
const std::vector<std::string>& merged_tokens() {
  static const std::vector<std::string> t = {
      "he", "ll", "hell", "hello", " h", " hello", "ab", "bc", "yz", "xy", "12", "123", "  ", "    ", "\r\n",
      "in", "int", " int", "\xe4\xb8", "\xe4\xb8\xad",  // the first bytes of U+4E2D, then the character
      "'s", "'S", "er", "ing", " t", "th", " th", "the", " the",
  };
  return t;
}

std::vector<std::string> all_tokens() {
  std::vector<std::string> t;
  for (int b = 0; b < 256; ++b) t.emplace_back(1, static_cast<char>(b));
  for (const auto& m : merged_tokens()) t.push_back(m);
  return t;
}

std::string rank_file(const std::vector<std::string>& tokens) {
  std::string s;
  for (size_t r = 0; r < tokens.size(); ++r) s += base64(tokens[r]) + " " + std::to_string(r) + "\n";
  return s;
}

std::string json_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\';
    o += c;
  }
  return o;
}

std::string byte_level(const std::string& bytes) {
  std::string s;
  for (char c : bytes) s += ttt::data::byte_to_unicode(static_cast<unsigned char>(c));
  return s;
}

// The tiktoken vocabulary as a tokenizer.json, converted the way scripts/tiktoken_to_hf.py
// does: every split of a token into two tokens is a merge, ordered by the rank of the merged
// token (then of its parts), which makes Hugging Face's merge order tiktoken's.
std::string hf_json(const std::vector<std::string>& tokens, const std::string& merges_override = "",
                    const std::string& pattern = BpeTokenizer::kLlama3Pattern, bool ignore_merges = true,
                    const std::string& pre_tokenizer_override = "") {
  std::map<std::string, size_t> rank;
  for (size_t r = 0; r < tokens.size(); ++r) rank[tokens[r]] = r;
  std::string vocab, merges;
  for (size_t r = 0; r < tokens.size(); ++r) {
    vocab += (r ? ", \"" : "\"") + json_escape(byte_level(tokens[r])) + "\": " + std::to_string(r);
    std::vector<std::pair<size_t, size_t>> splits;
    for (size_t k = 1; k < tokens[r].size(); ++k) {
      const auto a = rank.find(tokens[r].substr(0, k)), b = rank.find(tokens[r].substr(k));
      if (a != rank.end() && b != rank.end()) splits.push_back({a->second, b->second});
    }
    std::sort(splits.begin(), splits.end());
    for (const auto& [a, b] : splits)
      merges += std::string(merges.empty() ? "" : ", ") + "\"" + json_escape(byte_level(tokens[a])) + " " +
                json_escape(byte_level(tokens[b])) + "\"";
  }
  const size_t n = tokens.size();
  const std::string pre_tokenizer = !pre_tokenizer_override.empty() ? pre_tokenizer_override :
      "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": {\"Regex\": \"" + json_escape(pattern) +
      "\"}, \"behavior\": \"Isolated\", \"invert\": false}, {\"type\": \"ByteLevel\", \"add_prefix_space\": false, "
      "\"trim_offsets\": true, \"use_regex\": false}]}";
  return "{\"version\": \"1.0\", \"truncation\": null, \"padding\": null,\n"
         "\"added_tokens\": [{\"id\": " + std::to_string(n) + ", \"content\": \"<|begin_of_text|>\", \"special\": true},"
         " {\"id\": " + std::to_string(n + 1) + ", \"content\": \"<|end_of_text|>\", \"special\": true}],\n"
         "\"normalizer\": null,\n"
         "\"pre_tokenizer\": " + pre_tokenizer + ",\n"
         "\"post_processor\": {\"type\": \"Sequence\", \"processors\": [{\"type\": \"ByteLevel\"}, {\"type\": \"TemplateProcessing\", "
         "\"single\": [{\"SpecialToken\": {\"id\": \"<|begin_of_text|>\", \"type_id\": 0}}, {\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}]}]},\n"
         "\"decoder\": {\"type\": \"ByteLevel\"},\n"
         "\"model\": {\"type\": \"BPE\", \"dropout\": null, \"unk_token\": null, \"continuing_subword_prefix\": null, "
         "\"end_of_word_suffix\": null, \"fuse_unk\": false, \"byte_fallback\": false, \"ignore_merges\": " +
         std::string(ignore_merges ? "true" : "false") + ",\n\"vocab\": {" + vocab + "},\n\"merges\": [" +
         (merges_override.empty() ? merges : merges_override) + "]}}\n";
}

class BpeTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::path(::testing::TempDir()) / ("ttt_bpe_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    tik_ = new BpeTokenizer(BpeTokenizer::from_tiktoken(rank_file(all_tokens()), "small.tiktoken"));
    hf_ = new BpeTokenizer(BpeTokenizer::from_hf_json(hf_json(all_tokens()), "small.json"));
  }
  static void TearDownTestSuite() {
    delete tik_;
    delete hf_;
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  static std::string write(const std::string& name, const std::string& bytes) {
    const fs::path p = dir_ / name;
    std::ofstream(p, std::ios::binary) << bytes;
    return p.string();
  }
  static int32_t id_of(const std::string& token) {
    const auto t = all_tokens();
    return static_cast<int32_t>(std::find(t.begin(), t.end(), token) - t.begin());
  }
  static std::vector<std::string> pieces(const BpeTokenizer& tok, const std::string& text) {
    std::vector<std::string> out;
    for (int32_t id : tok.encode(text)) out.push_back(tok.piece_bytes(id));
    return out;
  }
  static std::vector<std::string> splits(const std::string& text) {
    std::vector<std::string> out;
    for (auto p : tik_->pre_tokenize(text)) out.emplace_back(p);
    return out;
  }
  static inline fs::path dir_;
  static inline BpeTokenizer* tik_ = nullptr;
  static inline BpeTokenizer* hf_ = nullptr;
};

using V = std::vector<std::string>;

TEST_F(BpeTest, VocabularyAndSpecialTokens) {
  const auto n = static_cast<int32_t>(all_tokens().size());
  EXPECT_EQ(tik_->vocab_size(), n + 256);  // Llama 3's 256 special tokens follow the ranks
  EXPECT_EQ(tik_->bos_id(), n);
  EXPECT_EQ(tik_->eos_id(), n + 1);
  EXPECT_EQ(tik_->piece_bytes(n), "<|begin_of_text|>");
  EXPECT_EQ(tik_->piece_bytes(n + 1), "<|end_of_text|>");
  EXPECT_EQ(tik_->piece_bytes(n + 2), "<|reserved_special_token_0|>");
  EXPECT_EQ(tik_->piece_bytes(n + 4), "<|finetune_right_pad_id|>");
  EXPECT_EQ(tik_->piece_bytes(n + 6), "<|start_header_id|>");
  EXPECT_EQ(tik_->piece_bytes(n + 9), "<|eot_id|>");
  EXPECT_EQ(tik_->piece_bytes(n + 10), "<|python_tag|>");
  EXPECT_EQ(tik_->piece_bytes(n + 11), "<|image|>");
  EXPECT_EQ(tik_->piece_bytes(n + 12), "<|reserved_special_token_2|>");
  EXPECT_EQ(tik_->piece_bytes(n + 255), "<|reserved_special_token_245|>");
  EXPECT_EQ(tik_->special_id("<|eot_id|>"), n + 9);
  EXPECT_TRUE(tik_->is_special(n));
  EXPECT_FALSE(tik_->is_special(n - 1));
  // piece(): tokenizer.json's byte-level strings (space is U+0120, newline U+010A)
  EXPECT_EQ(tik_->piece(id_of(" hello")), "\xc4\xa0hello");
  EXPECT_EQ(tik_->piece(id_of("\r\n")), "\xc4\x8d\xc4\x8a");
  EXPECT_EQ(tik_->piece(n), "<|begin_of_text|>");

  EXPECT_EQ(hf_->vocab_size(), n + 2);
  EXPECT_EQ(hf_->bos_id(), n);  // from the post-processor's template
  EXPECT_EQ(hf_->eos_id(), n + 1);
  EXPECT_EQ(hf_->piece(id_of(" hello")), "\xc4\xa0hello");
}

TEST_F(BpeTest, MergesLowestRankFirst) {
  EXPECT_EQ(pieces(*tik_, "hello"), (V{"hello"}));               // a whole piece that is a token
  EXPECT_EQ(pieces(*tik_, "hellos"), (V{"hello", "s"}));         // he, ll, hell, hello
  EXPECT_EQ(pieces(*tik_, "xyz"), (V{"x", "yz"}));               // "yz" ranks below "xy"
  EXPECT_EQ(pieces(*tik_, "abc"), (V{"ab", "c"}));               // "ab" ranks below "bc"
  EXPECT_EQ(pieces(*tik_, "abcbc"), (V{"ab", "c", "bc"}));
  EXPECT_EQ(pieces(*tik_, "hellohello"), (V{"hello", "hello"}));
  EXPECT_EQ(pieces(*tik_, " the"), (V{" the"}));
  EXPECT_EQ(pieces(*tik_, " int"), (V{" int"}));
  EXPECT_EQ(pieces(*tik_, "\xe4\xb8\xad\xe4\xb8\xad"), (V{"\xe4\xb8\xad", "\xe4\xb8\xad"}));
  EXPECT_EQ(pieces(*tik_, "\xe4\xb8\xac"), (V{"\xe4\xb8", "\xac"}));  // a partial-character token
  // Long pieces take the heap merge; it must give the same as the linear one on the same bytes.
  const std::string spaces(1001, ' ');
  const auto ids = tik_->encode("x" + spaces + "y");
  EXPECT_EQ(tik_->decode(ids.data(), ids.size()), "x" + spaces + "y");
  // Pieces "x", 1000 spaces (the last space goes with "y"), " y": "  " pairs merge leftmost
  // first, then "    " out of them.
  int quads = 0;
  for (int32_t id : ids) quads += tik_->piece_bytes(id) == "    ";
  EXPECT_EQ(quads, 250);
  std::string word;
  for (int i = 0; i < 100; ++i) word += "hellxyzabc";
  std::vector<std::string> want;
  for (int i = 0; i < 100; ++i) want.insert(want.end(), {"hell", "x", "yz", "ab", "c"});
  EXPECT_EQ(pieces(*tik_, word), want);  // 1000 letters: one pre-token, heap merge
  EXPECT_EQ(pieces(*tik_, word.substr(0, 100)), std::vector<std::string>(want.begin(), want.begin() + 50));  // linear
}

TEST_F(BpeTest, HuggingFaceMergeOrderIsTheMergeList) {
  // tiktoken merges by the rank of the merged bytes; tokenizer.json by the merge's position.
  // Listing "b c" before "a b" makes "abc" = a + bc, where tiktoken's ranks give ab + c.
  std::string merges;
  for (const char* m : {"b c", "a b", "h e", "l l", "he ll", "hell o"}) merges += std::string(merges.empty() ? "" : ", ") + "\"" + m + "\"";
  const auto hf = BpeTokenizer::from_hf_json(hf_json(all_tokens(), merges, BpeTokenizer::kLlama3Pattern, false), "m.json");
  EXPECT_EQ(pieces(hf, "abc"), (V{"a", "bc"}));
  EXPECT_EQ(pieces(hf, "hellos"), (V{"hello", "s"}));
  EXPECT_EQ(pieces(hf, "xyz"), (V{"x", "y", "z"}));  // no merge listed: "yz" is in the vocabulary only
  // ignore_merges off: a piece that is a token is still built by merges (tokenizers' default).
  EXPECT_EQ(pieces(hf, "yz"), (V{"y", "z"}));
  EXPECT_EQ(pieces(*hf_, "yz"), (V{"yz"}));
}

TEST_F(BpeTest, HuggingFaceByteLevelRegexIsGpt2s) {
  // ByteLevel with use_regex and no Split: GPT-2's pattern (case-sensitive contractions, digit
  // runs of any length with a leading space).
  const auto gpt2 = BpeTokenizer::from_hf_json(
      hf_json(all_tokens(), "", "", true, R"({"type": "ByteLevel", "add_prefix_space": false, "use_regex": true})"), "gpt2.json");
  std::vector<std::string> got;
  for (auto p : gpt2.pre_tokenize("I'M it's 123456 x\n\n  y")) got.emplace_back(p);
  EXPECT_EQ(got, (V{"I", "'", "M", " it", "'s", " 123456", " x", "\n\n ", " y"}));
  // BOS from the post-processor template.
  EXPECT_EQ(gpt2.bos_id(), static_cast<int32_t>(all_tokens().size()));
}

TEST_F(BpeTest, TiktokenAndConvertedJsonAgree) {
  std::mt19937 rng(3);
  const std::vector<std::string> alphabet = {"h", "e", "l", "o", "a", "b", "c", "x", "y", "z", " ", "  ", "1", "2", "3",
                                             "'s", "'S", "\r\n", "\n", "\t", "in", "t", "\xe4\xb8\xad", "th", "!", "\xf0\x9f\x98\x80"};
  for (int k = 0; k < 500; ++k) {
    std::string s;
    const size_t len = rng() % 60;
    for (size_t i = 0; i < len; ++i) s += alphabet[rng() % alphabet.size()];
    ASSERT_EQ(tik_->encode(s), hf_->encode(s)) << ::testing::PrintToString(s);
  }
}

TEST_F(BpeTest, PreTokenizerSplitsLikeLlama3) {
  // Expected splits are those of the pattern under Python's `regex` (as tiktoken splits).
  EXPECT_EQ(splits("I'M you'RE he's THEY'LL we'Ve it'D don'T o'S"),
            (V{"I", "'M", " you", "'RE", " he", "'s", " THEY", "'LL", " we", "'Ve", " it", "'D", " don", "'T", " o", "'S"}));
  EXPECT_EQ(splits("1234567 12 3.14159"), (V{"123", "456", "7", " ", "12", " ", "3", ".", "141", "59"}));
  EXPECT_EQ(splits("$100,000.00"), (V{"$", "100", ",", "000", ".", "00"}));
  EXPECT_EQ(splits("a\r\nb\r\n\r\n  c\n"), (V{"a", "\r\n", "b", "\r\n\r\n", " ", " c", "\n"}));
  EXPECT_EQ(splits("a   b  \n\n  x\t\ty  "), (V{"a", "  ", " b", "  \n\n", " ", " x", "\t", "\ty", "  "}));
  EXPECT_EQ(splits("  leading"), (V{" ", " leading"}));
  EXPECT_EQ(splits("trailing   "), (V{"trailing", "   "}));
  EXPECT_EQ(splits("don't!!!\n\n"), (V{"don", "'t", "!!!\n\n"}));
  // CJK letters, emoji (symbols), combining marks (not letters), no-break and ideographic spaces
  EXPECT_EQ(splits("\xe4\xb8\xad\xe6\x96\x87\xe5\xad\x97\xe7\xac\xa6 \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe3\x81\xae\xe3\x83\x86\xe3\x82\xad\xe3\x82\xb9\xe3\x83\x88\xe3\x80\x82"),
            (V{"\xe4\xb8\xad\xe6\x96\x87\xe5\xad\x97\xe7\xac\xa6", " \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe3\x81\xae\xe3\x83\x86\xe3\x82\xad\xe3\x82\xb9\xe3\x83\x88", "\xe3\x80\x82"}));
  EXPECT_EQ(splits("hi \xf0\x9f\x98\x80\xf0\x9f\x98\x80! ok"), (V{"hi", " \xf0\x9f\x98\x80\xf0\x9f\x98\x80!", " ok"}));
  EXPECT_EQ(splits("cafe\xcc\x81 e\xcc\x81t"), (V{"cafe", "\xcc\x81", " e", "\xcc\x81t"}));
  EXPECT_EQ(splits("foo\xc2\xa0" "bar"), (V{"foo", "\xc2\xa0" "bar"}));
  EXPECT_EQ(splits("ab\xe3\x80\x80\xe3\x80\x80" "cd"), (V{"ab", "\xe3\x80\x80", "\xe3\x80\x80" "cd"}));
  // U+180E is not White_Space (Unicode 6.3 on), as in tiktoken; PCRE2's own \s would say it is.
  EXPECT_EQ(splits("x\xe1\xa0\x8ey"), (V{"x", "\xe1\xa0\x8ey"}));
  // Contractions match in any case; U+017F (long s) folds to s.
  EXPECT_EQ(splits("'\xc5\xbfx"), (V{"'\xc5\xbf", "x"}));
  EXPECT_EQ(splits(""), V{});
  // Bytes that are not UTF-8 never match; they become pieces of their own.
  EXPECT_EQ(splits("ab\xff\xfe" "cd"), (V{"ab", "\xff\xfe", "cd"}));
}

TEST_F(BpeTest, SpecialTokenTextIsOrdinaryText) {
  // As tiktoken's encode(text, disallowed_special=()): special-token text is never a special id.
  const std::string s = "<|begin_of_text|>hello<|eot_id|><|end_of_text|>";
  for (const BpeTokenizer* t : {tik_, hf_}) {
    const auto ids = t->encode(s);
    for (int32_t id : ids) EXPECT_FALSE(t->is_special(id)) << id;
    EXPECT_EQ(t->decode(ids.data(), ids.size()), s);
    // A special id decodes to its text.
    std::vector<int32_t> with{t->bos_id()};
    with.insert(with.end(), ids.begin(), ids.end());
    with.push_back(t->eos_id());
    EXPECT_EQ(t->decode(with.data(), with.size()), "<|begin_of_text|>" + s + "<|end_of_text|>");
  }
}

TEST_F(BpeTest, RoundTripsAnyBytes) {
  const std::vector<std::string> cases = {
      "",
      "int main(void)\r\n{\r\n\treturn 0;\r\n}\r\n",
      "  leading, trailing  \n\n\n   \t \t\n",
      std::string(5000, ' ') + "x" + std::string(3000, '\n') + std::string(2000, '\t'),
      "emoji \xf0\x9f\x98\x80\xf0\x9f\xa6\x84 \xe4\xb8\xad\xe6\x96\x87 \xd0\xbf\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82 caf\xc3\xa9",
      "e\xcc\x81\xcc\x81\xcc\x81 \xe0\xa4\xa8\xe0\xa4\xae\xe0\xa4\xb8\xe0\xa5\x8d\xe0\xa4\xa4\xe0\xa5\x87",  // combining marks
      std::string("nul\0byte", 8),
      "\xff\xfe invalid \xc3( utf-8 \xe2\x82",
      "\xed\xa0\x80 surrogate \xf4\x90\x80\x80 \xc0\x80",
      "1234567890123 DON'T We'Re i'M",
  };
  for (const BpeTokenizer* t : {tik_, hf_})
    for (const auto& c : cases) {
      const auto ids = t->encode(c);
      for (int32_t id : ids) ASSERT_TRUE(id >= 0 && id < t->vocab_size() && !t->is_special(id));
      EXPECT_TRUE(t->decode(ids.data(), ids.size()) == c) << ::testing::PrintToString(c.substr(0, 60));
    }
  std::mt19937 rng(7);
  for (int k = 0; k < 400; ++k) {
    std::string s;
    const size_t n = rng() % 300;
    for (size_t i = 0; i < n; ++i) {
      if (k % 2 == 0) {
        s += static_cast<char>(rng() & 0xff);  // any bytes
      } else {
        // random code points (valid UTF-8), surrogates skipped
        uint32_t c = rng() % 4 == 0 ? rng() % 0x110000 : rng() % 0x3000;
        if (c >= 0xD800 && c < 0xE000) c = 'q';
        if (c < 0x80) s += static_cast<char>(c);
        else if (c < 0x800) s += {static_cast<char>(0xC0 | c >> 6), static_cast<char>(0x80 | (c & 63))};
        else if (c < 0x10000) s += {static_cast<char>(0xE0 | c >> 12), static_cast<char>(0x80 | ((c >> 6) & 63)), static_cast<char>(0x80 | (c & 63))};
        else s += {static_cast<char>(0xF0 | c >> 18), static_cast<char>(0x80 | ((c >> 12) & 63)), static_cast<char>(0x80 | ((c >> 6) & 63)), static_cast<char>(0x80 | (c & 63))};
      }
    }
    const auto ids = tik_->encode(s);
    ASSERT_TRUE(tik_->decode(ids.data(), ids.size()) == s) << k;
    ASSERT_EQ(hf_->encode(s), ids) << k;
  }
}

TEST_F(BpeTest, DecodeRejectsIdsOutsideTheVocabulary) {
  for (const BpeTokenizer* t : {tik_, hf_}) {
    const int32_t v = t->vocab_size();
    for (int32_t bad : {v, -1, v + 1000}) {
      const std::vector<int32_t> ids{5, bad};
      try {
        t->decode(ids.data(), ids.size());
        FAIL() << "no error for id " << bad;
      } catch (const std::invalid_argument& e) {
        EXPECT_NE(std::string(e.what()).find("id " + std::to_string(bad)), std::string::npos) << e.what();
      }
      EXPECT_THROW(t->piece_bytes(bad), std::invalid_argument);
    }
  }
}

TEST_F(BpeTest, TokenizerLoadTellsFormatsByContent) {
  // Meta names its rank file tokenizer.model, like a SentencePiece model: the content decides.
  const std::string rank_path = write("tokenizer.model", rank_file(all_tokens()));
  const std::string json_path = write("tok.bin", hf_json(all_tokens()));
  const Tokenizer a = Tokenizer::load(rank_path), b = Tokenizer::load(json_path);
  const auto n = static_cast<int32_t>(all_tokens().size());
  EXPECT_EQ(a.format(), Tokenizer::Format::Tiktoken);
  EXPECT_STREQ(a.format_name(), "tiktoken");
  EXPECT_EQ(b.format(), Tokenizer::Format::HuggingFace);
  EXPECT_EQ(a.vocab_size(), n + 256);
  EXPECT_EQ(b.vocab_size(), n + 2);
  EXPECT_EQ(a.bos_id(), n);
  EXPECT_EQ(b.bos_id(), n);
  EXPECT_EQ(a.eos_id(), n + 1);
  EXPECT_EQ(a.fingerprint(), ttt::data::fnv1a64(ttt::data::read_file(rank_path)));
  EXPECT_NE(a.fingerprint(), b.fingerprint());
  const std::string text = "hello world, xyz abc 123456\r\n\t\xe4\xb8\xad\xf0\x9f\x98\x80";
  EXPECT_EQ(a.encode(text), tik_->encode(text));
  EXPECT_EQ(b.encode(text), a.encode(text));
  EXPECT_EQ(a.decode(a.encode(text)), text);
  EXPECT_EQ(a.piece_bytes(id_of("hello")), "hello");
  EXPECT_EQ(a.piece(id_of(" hello")), "\xc4\xa0hello");
  EXPECT_EQ(a.piece_bytes(n + 9), "<|eot_id|>");
  std::vector<int32_t> ids{a.bos_id()};
  a.encode_append("hi", ids);
  EXPECT_EQ(a.decode(ids), "<|begin_of_text|>hi");
  EXPECT_THROW(a.decode(std::vector<int32_t>{a.vocab_size()}), std::invalid_argument);
  // A file that is neither: the SentencePiece error names all three formats.
  const std::string junk = write("junk", "not a model at all");
  try {
    Tokenizer::load(junk);
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("is not a SentencePiece model, a tiktoken rank file or a tokenizer.json"), std::string::npos)
        << e.what();
  }
}

// Corrupt, truncated and unsupported files: a one-line std::runtime_error naming the file and
// the problem.
TEST_F(BpeTest, BadFilesGiveOneLineErrors) {
  auto expect_error = [&](const std::string& name, const std::string& content, const std::string& part) {
    const std::string path = write(name, content);
    try {
      Tokenizer::load(path);
      ADD_FAILURE() << name << ": no error, expected: " << part;
    } catch (const std::runtime_error& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find(part), std::string::npos) << name << ": " << m;
      EXPECT_NE(m.find(path), std::string::npos) << name << ": " << m;
      EXPECT_EQ(m.find('\n'), std::string::npos) << name << ": " << m;
    } catch (const std::exception& e) {
      ADD_FAILURE() << name << ": not a runtime_error: " << e.what();
    }
  };
  const std::string good = rank_file(all_tokens());
  expect_error("b64", "IQ== 0\nI@== 1\n", "line 2: bad base64");
  expect_error("b64len", "IQ== 0\nIQ= 1\n", "line 2: bad base64");
  expect_error("rank_word", "IQ== 0\nIg== one\n", "line 2: the rank \"one\" is not a non-negative integer");
  expect_error("rank_neg", "IQ== 0\nIg== -1\n", "line 2: the rank \"-1\" is not a non-negative integer");
  expect_error("rank_huge", "IQ== 0\nIg== 99999999999999999999999\n", "is not a non-negative integer");
  expect_error("dup_rank", "IQ== 0\nIg== 0\n", "line 2: duplicate rank 0");
  expect_error("gap", "IQ== 0\nIg== 2\n", "line 2: rank 2 is out of range: 2 tokens need ranks 0..1 without gaps");
  expect_error("fields", "IQ== 0\nIg== 1 2\n", "line 2: expected \"<base64 token> <rank>\"");
  expect_error("dup_bytes", "IQ== 0\nIQ== 1\n", "ranks 0 and 1 have the same bytes");
  expect_error("no_bytes", "IQ== 0\nIg== 1\n", "no token for the byte 0x00");
  expect_error("truncated", good.substr(0, good.find('\n', good.size() / 2) + 3), "expected \"<base64 token> <rank>\"");
  expect_error("truncated_line", good.substr(0, good.size() - 3), "line " + std::to_string(all_tokens().size()));

  const std::string json = hf_json(all_tokens());
  expect_error("json_trunc", json.substr(0, json.size() / 2), "tokenizer.json");
  expect_error("json_bad", "{ not json", "invalid JSON");
  expect_error("json_empty", "{}", "missing field model");
  expect_error("json_wordpiece", R"({"model": {"type": "WordPiece", "vocab": {}}})", "unsupported model type \"WordPiece\"");
  expect_error("json_unigram", R"({"model": {"type": "Unigram", "vocab": []}})", "unsupported model type \"Unigram\"");
  auto replace = [](std::string s, const std::string& from, const std::string& to) {
    const size_t at = s.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    if (at != std::string::npos) s.replace(at, from.size(), to);
    return s;
  };
  expect_error("json_no_vocab", replace(json, "\"vocab\":", "\"vocab_\":"), "missing field vocab");
  expect_error("json_no_merges", replace(json, "\"merges\":", "\"merges_\":"), "missing field merges");
  expect_error("json_no_pre", replace(json, "\"pre_tokenizer\": {", "\"pre_tokenizer\": null, \"x\": {"), "missing pre_tokenizer");
  expect_error("json_byte_fallback", replace(json, "\"byte_fallback\": false", "\"byte_fallback\": true"), "byte_fallback");
  expect_error("json_normalizer", replace(json, "\"normalizer\": null", "\"normalizer\": {\"type\": \"NFC\"}"), "unsupported normalizer \"NFC\"");
  expect_error("json_regex", replace(json, "\"Regex\": \"", "\"Regex\": \"(?<"), "the pre-tokenizer regex does not compile");
  expect_error("json_behavior", replace(json, "\"Isolated\"", "\"MergedWithNext\""), "unsupported Split behavior");
  expect_error("json_merge_oov", replace(json, "\"merges\": [", "\"merges\": [\"q \\u20ac\", "), "is not a byte-level string");
  expect_error("json_merge_missing", replace(json, "\"merges\": [", "\"merges\": [\"q z\", "), "the merged token is not in model.vocab");
  expect_error("json_merge_shape", replace(json, "\"merges\": [", "\"merges\": [\"qz\", "), "is not two tokens separated by a space");
  expect_error("json_vocab_type", replace(json, "\"vocab\": {\"", "\"vocab\": {\"zzzz\": \"1\", \""), "expected an integer");
  expect_error("json_vocab_gap", replace(json, "\"vocab\": {\"", "\"vocab\": {\"zzzz\": 100000, \""), "id 100000 is out of range");
  expect_error("json_vocab_dup", replace(json, "\"vocab\": {\"", "\"vocab\": {\"zzzz\": 5, \""), "appears twice in model.vocab");
  expect_error("json_dup_key", replace(json, "\"vocab\": {\"", "\"vocab\": {\"a\": 97, \""), "duplicate key");
  expect_error("json_added_id", replace(json, "\"content\": \"<|end_of_text|>\"", "\"content\": 7"), "expected a string");
}

// Mutated and truncated files load or throw std::runtime_error; never crash, and whatever loads
// still round-trips (run under the sanitizer build too).
TEST_F(BpeTest, MutatedFilesNeverCrash) {
  const std::string files[2] = {rank_file(all_tokens()), hf_json(all_tokens())};
  std::mt19937 rng(11);
  int loaded = 0, refused = 0;
  for (int k = 0; k < 300; ++k) {
    std::string f = files[k % 2];
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      const size_t at = rng() % f.size();
      switch (rng() % 4) {
        case 0: f[at] = static_cast<char>(rng() & 0xff); break;
        case 1: f.erase(at, 1 + rng() % 8); break;
        case 2: f.insert(at, 1, " 0\n\"{}[],:\\"[rng() % 11]); break;
        default: f.resize(at); break;
      }
      if (f.empty()) f.push_back('{');
    }
    try {
      const auto t = BpeTokenizer::looks_like_json(f) ? BpeTokenizer::from_hf_json(f, "mutant") : BpeTokenizer::from_tiktoken(f, "mutant");
      ++loaded;
      const std::string s = "hello xyz 123 \xe4\xb8\xad\xff";
      const auto ids = t.encode(s);
      EXPECT_EQ(t.decode(ids.data(), ids.size()), s);
    } catch (const std::runtime_error& e) {
      ++refused;
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
    }
  }
  EXPECT_GT(refused, 0);
  EXPECT_EQ(loaded + refused, 300);
}

}  // namespace
