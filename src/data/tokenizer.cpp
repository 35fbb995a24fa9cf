#include "data/tokenizer.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <algorithm>
#include <cstdio>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <unordered_map>

#include "data/bpe_tokenizer.h"
#include "data/text.h"
#include "io/atomic_file.h"

namespace ttt::data {
namespace {

constexpr char kSpaceMark[] = "\xE2\x96\x81";  // U+2581, SentencePiece's space
constexpr char kTabMark[] = "\xE2\x90\x89";    // U+2409, the wrapper's tab
constexpr size_t kSegmentBytes = 4 << 10;      // encode: cut after a newline past this size
constexpr size_t kHardSegmentBytes = 1 << 20;  // encode: cut anywhere (char boundary) past this

std::string one_line(std::string s) {
  for (char& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  return s;
}

// What the wrapper does with the character at p: 0 = escape its `len` bytes to byte pieces;
// 1 = pass to SentencePiece as is; 2 = tab (substituted).
struct CharClass {
  size_t len;
  int kind;
};
inline CharClass classify(const unsigned char* p, size_t n) {
  const size_t l = utf8_sequence_length(p, n);
  if (l == 0) return {1, 0};
  if (l == 1) {
    if (p[0] == 0) return {1, 0};
    if (p[0] == '\t') return {1, 2};
    return {1, 1};
  }
  if (l == 3 && p[0] == 0xE2 &&
      ((p[1] == 0x96 && (p[2] == 0x81 || p[2] == 0x85)) || (p[1] == 0x90 && p[2] == 0x89)))
    return {3, 0};
  return {l, 1};
}

// Splits text into the runs SentencePiece sees (tabs substituted), calling run(text) for each
// run and byte(b) for each escaped byte, in order. Runs are cut after a newline once they pass
// kSegmentBytes (anywhere on a character boundary past kHardSegmentBytes).
template <class RunFn, class ByteFn>
void segment(std::string_view text, RunFn&& run, ByteFn&& byte) {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  std::string buf;
  buf.reserve(std::min(n + n / 8 + 16, kHardSegmentBytes + 16));
  auto flush = [&] {
    if (!buf.empty()) run(std::string_view(buf));
    buf.clear();
  };
  size_t i = 0;
  while (i < n) {
    const CharClass c = classify(p + i, n - i);
    if (c.kind == 0) {
      flush();
      for (size_t k = 0; k < c.len; ++k) byte(p[i + k]);
    } else if (c.kind == 2) {
      buf.append(kTabMark, 3);
    } else {
      buf.append(text.data() + i, c.len);
    }
    i += c.len;
    if ((buf.size() >= kSegmentBytes && p[i - 1] == '\n') || buf.size() >= kHardSegmentBytes) flush();
  }
  flush();
}

class VectorIterator : public sentencepiece::SentenceIterator {
 public:
  explicit VectorIterator(const std::vector<std::string>& v) : v_(v) {}
  bool done() const override { return i_ >= v_.size(); }
  void Next() override { ++i_; }
  const std::string& value() const override { return v_[i_]; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  const std::vector<std::string>& v_;
  size_t i_ = 0;
};

// Training sentences of one text: its runs (as SentencePiece sees them), cut into whole lines of
// up to max_bytes (a longer line is cut on character boundaries).
void add_sentences(std::string_view text, size_t max_bytes, std::vector<std::string>& out) {
  segment(
      text,
      [&](std::string_view run) {
        std::string cur;
        size_t i = 0;
        while (i < run.size()) {
          size_t e = run.find('\n', i);
          e = e == std::string_view::npos ? run.size() : e + 1;
          std::string_view line = run.substr(i, e - i);
          i = e;
          if (!cur.empty() && cur.size() + line.size() > max_bytes) {
            out.push_back(std::move(cur));
            cur.clear();
          }
          while (line.size() > max_bytes) {
            size_t cut = max_bytes;
            while (cut > 0 && (static_cast<unsigned char>(line[cut]) & 0xC0) == 0x80) --cut;
            if (cut == 0) cut = max_bytes;
            out.emplace_back(line.substr(0, cut));
            line.remove_prefix(cut);
          }
          cur.append(line);
        }
        if (!cur.empty()) out.push_back(std::move(cur));
      },
      [](unsigned char) {});
}

std::string escape_piece(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '\t': o += "\\t"; break;
      case '\n': o += "\\n"; break;
      case '\r': o += "\\r"; break;
      case '\\': o += "\\\\"; break;
      default: o += c;
    }
  }
  return o;
}

}  // namespace

struct Tokenizer::Impl {
  std::unique_ptr<BpeTokenizer> bpe;  // set for tiktoken / tokenizer.json files; sp unused then
  sentencepiece::SentencePieceProcessor sp;
  std::vector<std::string> bytes;  // id -> decoded bytes
  std::string path;
  uint64_t fingerprint = 0;
  int32_t vocab = 0;
};

Tokenizer::Tokenizer() : impl_(std::make_unique<Impl>()) {}
Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;

void Tokenizer::train(const std::vector<std::string>& texts, const std::string& model_prefix,
                      const TokenizerTrainOptions& opt) {
  if (model_prefix.empty()) throw std::runtime_error("tokenizer: the output prefix is empty");
  if (opt.vocab_size < 259 + 1)
    throw std::runtime_error("tokenizer: --vocab-size must be at least 260 (3 special ids + 256 byte pieces + 1), got " +
                             std::to_string(opt.vocab_size));
  if (opt.sentence_bytes < 16) throw std::runtime_error("tokenizer: sentence_bytes must be >= 16");
  std::vector<std::string> sentences;
  for (const auto& t : texts) add_sentences(t, static_cast<size_t>(opt.sentence_bytes), sentences);
  if (sentences.empty()) throw std::runtime_error("tokenizer: no training text (the inputs are empty or binary)");

  const int threads = opt.num_threads > 0 ? opt.num_threads : std::max(1u, std::thread::hardware_concurrency());
  char cov[32];
  std::snprintf(cov, sizeof cov, "%.6f", opt.character_coverage);
  const std::unordered_map<std::string, std::string> kw = {
      {"model_type", "bpe"},
      {"vocab_size", std::to_string(opt.vocab_size)},
      {"byte_fallback", "true"},
      {"character_coverage", cov},
      {"split_digits", "true"},
      {"normalization_rule_name", "identity"},
      {"remove_extra_whitespaces", "false"},
      {"add_dummy_prefix", "false"},
      {"allow_whitespace_only_pieces", "true"},
      {"split_by_whitespace", "true"},
      {"max_sentence_length", std::to_string(3 * opt.sentence_bytes + 16)},
      {"input_sentence_size", std::to_string(std::max<int64_t>(0, opt.input_sentence_size))},
      {"shuffle_input_sentence", "true"},
      {"bos_id", std::to_string(kBosId)},
      {"unk_id", std::to_string(kUnkId)},
      {"eos_id", std::to_string(kEosId)},
      {"pad_id", "-1"},
      {"hard_vocab_limit", "true"},
      {"num_threads", std::to_string(threads)},
      {"minloglevel", opt.verbose ? "0" : "2"},
  };
  sentencepiece::SetRandomGeneratorSeed(static_cast<unsigned>(opt.seed ^ (opt.seed >> 32)) + 1u);
  VectorIterator it(sentences);
  std::string model;
  const auto st = sentencepiece::SentencePieceTrainer::Train(kw, &it, &model);
  if (!st.ok()) throw std::runtime_error("tokenizer training failed: " + one_line(st.ToString()));

  sentencepiece::SentencePieceProcessor sp;
  const auto ls = sp.LoadFromSerializedProto(model);
  if (!ls.ok()) throw std::runtime_error("tokenizer training produced an unreadable model: " + one_line(ls.ToString()));
  io::write_file_atomic(model_prefix + ".model", model.data(), model.size());
  io::write_file_atomic(model_prefix + ".vocab", [&](std::ostream& os) {
    for (int i = 0; i < sp.GetPieceSize(); ++i) os << escape_piece(sp.IdToPiece(i)) << '\t' << sp.GetScore(i) << '\n';
  });
}

uint64_t Tokenizer::train_files(const std::vector<std::string>& inputs, const std::string& model_prefix,
                                const TokenizerTrainOptions& opt, uint64_t sample_bytes) {
  if (inputs.empty()) throw std::runtime_error("tokenizer: no --input given");
  std::vector<FileEntry> files;
  for (const auto& in : inputs) {
    auto f = list_files(in);
    files.insert(files.end(), f.begin(), f.end());
  }
  // Deterministic sample: files in seeded-hash order of their paths until the budget is met.
  std::vector<std::pair<uint64_t, size_t>> order;
  for (size_t i = 0; i < files.size(); ++i) order.push_back({seeded_hash(files[i].path, opt.seed), i});
  std::sort(order.begin(), order.end());
  std::vector<std::string> texts;
  uint64_t total = 0;
  for (const auto& [h, i] : order) {
    if (total >= sample_bytes) break;
    if (files[i].size == 0 || files[i].size > (16u << 20)) continue;
    std::string t = read_file(files[i].path);
    if (!binary_reason(t).empty()) continue;
    total += t.size();
    texts.push_back(std::move(t));
  }
  if (texts.empty()) throw std::runtime_error("tokenizer: no text files found in the inputs");
  train(texts, model_prefix, opt);
  return total;
}

Tokenizer Tokenizer::load(const std::string& model_path) {
  Tokenizer t;
  auto& im = *t.impl_;
  std::string bytes;
  try {
    bytes = read_file(model_path);
  } catch (const std::exception& e) {
    // read_file names the problem: missing, a FIFO or device, over the size limit
    std::string why = e.what();
    const auto colon = why.rfind(": ");
    throw std::runtime_error("cannot open tokenizer model " + one_line(model_path) +
                             (colon == std::string::npos ? "" : why.substr(colon)));
  }
  im.path = model_path;
  im.fingerprint = fnv1a64(bytes);
  // By content, not name: Meta ships its tiktoken rank file as `tokenizer.model`, the name
  // SentencePiece models have, and corpora copy any tokenizer to `tokenizer.model`.
  const bool json = BpeTokenizer::looks_like_json(bytes), tiktoken = !json && BpeTokenizer::looks_like_tiktoken(bytes);
  if (json || tiktoken) {
    im.bpe = std::make_unique<BpeTokenizer>(json ? BpeTokenizer::from_hf_json(bytes, model_path)
                                                 : BpeTokenizer::from_tiktoken(bytes, model_path));
    im.vocab = im.bpe->vocab_size();
    return t;
  }
  const auto st = im.sp.LoadFromSerializedProto(bytes);
  if (!st.ok() || im.sp.GetPieceSize() <= 0)
    throw std::runtime_error("tokenizer model " + one_line(model_path) +
                             " is not a SentencePiece model, a tiktoken rank file or a tokenizer.json (" +
                             one_line(st.ToString()) + ")");
  im.vocab = im.sp.GetPieceSize();
  if (im.sp.bos_id() != kBosId || im.sp.unk_id() != kUnkId || im.vocab < kFirstByteId + 256)
    throw std::runtime_error("tokenizer model " + one_line(model_path) + " does not follow this project's id convention (BOS 0, UNK 1, EOS 2, bytes 3..258): BOS is " +
                             std::to_string(im.sp.bos_id()) + "; train it with `ttt tokenizer train`");
  for (int b = 0; b < 256; ++b) {
    char want[8];
    std::snprintf(want, sizeof want, "<0x%02X>", b);
    if (!im.sp.IsByte(kFirstByteId + b) || im.sp.IdToPiece(kFirstByteId + b) != want)
      throw std::runtime_error("tokenizer model " + model_path + " has no byte piece " + want + " at id " +
                               std::to_string(kFirstByteId + b) + " (byte fallback off?); train it with `ttt tokenizer train`");
  }
  im.bytes.resize(static_cast<size_t>(im.vocab));
  for (int32_t i = 0; i < im.vocab; ++i) {
    std::string& o = im.bytes[static_cast<size_t>(i)];
    if (im.sp.IsControl(i) || im.sp.IsUnused(i)) continue;
    if (im.sp.IsUnknown(i)) {
      o = "\xEF\xBF\xBD";
      continue;
    }
    if (im.sp.IsByte(i)) {
      o = std::string(1, static_cast<char>(i - kFirstByteId));
      continue;
    }
    const std::string p = im.sp.IdToPiece(i);
    // SentencePiece matches a piece only up to a NUL, and never matches invalid UTF-8: such a
    // piece would decode to bytes that were never read.
    if (p.empty() || p.find('\0') != std::string::npos || count_invalid_utf8(p) > 0)
      throw std::runtime_error("tokenizer model " + one_line(model_path) + " has piece " + std::to_string(i) +
                               " that is empty, holds a NUL byte or is not valid UTF-8; train it with `ttt tokenizer train`");
    for (size_t k = 0; k < p.size();) {
      if (p.compare(k, 3, kSpaceMark) == 0) {
        o += ' ';
        k += 3;
      } else if (p.compare(k, 3, kTabMark) == 0) {
        o += '\t';
        k += 3;
      } else {
        o += p[k++];
      }
    }
  }
  // A model file can carry its own normalization and whitespace rules (NFKC, a dummy prefix,
  // collapsed spaces) that would silently change text: the engine's promise is that any bytes
  // round-trip, so a model that does not keep it on a probe of the risky cases is refused.
  static const std::string kProbes[] = {
      "  leading, double  and trailing spaces  ",
      "\ttab\t\tindent\n\r\nCRLF\r\n\n\n",
      std::string("nul\0byte", 8),
      "\xff\xfe invalid \xc3( utf-8 \xe2\x82",
      "caf\xc3\xa9 \xe2\x96\x81 \xe2\x90\x89 \xf0\x9f\x98\x80 \xef\xbc\xa6\xef\xbd\x95\xef\xbd\x8c\xef\xbd\x8c "
      "\xef\xac\x81 \xe2\x91\xa0 A\xcc\x8a \xe3\x80\x80 12,345.67",
      "int main(void) {\n\treturn 0;\n}\n<s> </s> <unk>",
  };
  for (const auto& probe : kProbes)
    if (t.decode(t.encode(probe)) != probe)
      throw std::runtime_error("tokenizer model " + one_line(model_path) +
                               " does not round-trip text (its normalization or whitespace rules differ from "
                               "`ttt tokenizer train`'s); train it with `ttt tokenizer train`");
  return t;
}

void Tokenizer::encode_append(std::string_view text, std::vector<int32_t>& out, size_t max_out) const {
  if (impl_->bpe) return impl_->bpe->encode_append(text, out, max_out);
  const auto& sp = impl_->sp;
  std::vector<int> ids;
  segment(
      text,
      [&](std::string_view run) {
        ids.clear();
        const auto st = sp.Encode(run, &ids);
        if (!st.ok()) throw std::runtime_error("tokenizer: encoding failed: " + one_line(st.ToString()));
        // SentencePiece's byte fallback of U+2581 / U+2409 stands for ' ' / '\t' here (the run
        // holds no literal U+2581 or U+2409), so byte pieces keep meaning raw bytes.
        constexpr int B = kFirstByteId;
        for (size_t k = 0; k < ids.size(); ++k) {
          if (ids[k] == B + 0xE2 && k + 2 < ids.size()) {
            if (ids[k + 1] == B + 0x96 && ids[k + 2] == B + 0x81) {
              out.push_back(B + ' ');
              k += 2;
              continue;
            }
            if (ids[k + 1] == B + 0x90 && ids[k + 2] == B + 0x89) {
              out.push_back(B + '\t');
              k += 2;
              continue;
            }
          }
          out.push_back(ids[k]);
        }
        if (out.size() > max_out)
          throw std::length_error("the text encodes to more than " + std::to_string(max_out) + " tokens");
      },
      [&](unsigned char b) {
        out.push_back(kFirstByteId + b);
        if (out.size() > max_out)
          throw std::length_error("the text encodes to more than " + std::to_string(max_out) + " tokens");
      });
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  encode_append(text, out);
  return out;
}

std::string Tokenizer::decode(const int32_t* ids, size_t n) const {
  if (impl_->bpe) return impl_->bpe->decode(ids, n);
  std::string o;
  for (size_t i = 0; i < n; ++i) {
    if (ids[i] < 0 || ids[i] >= impl_->vocab)
      throw std::runtime_error("token " + std::to_string(i) + " has id " + std::to_string(ids[i]) +
                               ", outside the tokenizer's vocabulary [0, " + std::to_string(impl_->vocab) + ")");
    o += impl_->bytes[static_cast<size_t>(ids[i])];
  }
  return o;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const { return decode(ids.data(), ids.size()); }

Tokenizer::Format Tokenizer::format() const {
  if (!impl_->bpe) return Format::SentencePiece;
  return impl_->bpe->format() == BpeTokenizer::Format::Tiktoken ? Format::Tiktoken : Format::HuggingFace;
}
const char* Tokenizer::format_name() const {
  switch (format()) {
    case Format::Tiktoken: return "tiktoken";
    case Format::HuggingFace: return "tokenizer.json";
    default: return "SentencePiece";
  }
}
int32_t Tokenizer::vocab_size() const { return impl_->vocab; }
int32_t Tokenizer::bos_id() const { return impl_->bpe ? impl_->bpe->bos_id() : kBosId; }
int32_t Tokenizer::eos_id() const { return impl_->bpe ? impl_->bpe->eos_id() : kEosId; }
const std::string& Tokenizer::piece_bytes(int32_t id) const {
  if (impl_->bpe) return impl_->bpe->piece_bytes(id);
  if (id < 0 || id >= impl_->vocab) throw std::runtime_error("token id " + std::to_string(id) + " is outside the vocabulary");
  return impl_->bytes[static_cast<size_t>(id)];
}
std::string Tokenizer::piece(int32_t id) const {
  if (impl_->bpe) return impl_->bpe->piece(id);
  if (id < 0 || id >= impl_->vocab) throw std::runtime_error("token id " + std::to_string(id) + " is outside the vocabulary");
  return impl_->sp.IdToPiece(id);
}
uint64_t Tokenizer::fingerprint() const { return impl_->fingerprint; }
const std::string& Tokenizer::path() const { return impl_->path; }

}  // namespace ttt::data
