#include "data/dataset.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cinttypes>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include "data/format.h"
#include "data/text.h"
#include "io/file_read.h"
#include "io/json_read.h"
#include "io/messages.h"

namespace ttt::data {
namespace fs = std::filesystem;
using json = nlohmann::json;
using io::one_line;

uint64_t SequenceSampler::next_u64() { return splitmix64(splitmix64(seed_) ^ (counter_++ * 0xD1B54A32D192ED03ull)); }

std::string SequenceSampler::state() const { return std::to_string(seed_) + " " + std::to_string(counter_); }

void SequenceSampler::restore(const std::string& state) {
  // Strict: two unsigned decimal integers and one space ("-5" or 2^64 is not a state).
  uint64_t v[2] = {0, 0};
  const char* p = state.data();
  const char* end = state.data() + state.size();
  for (int i = 0; i < 2; ++i) {
    const auto [q, ec] = std::from_chars(p, end, v[i]);
    if (ec != std::errc() || q == p || (i == 0 ? (q == end || *q != ' ') : q != end))
      throw std::runtime_error("sampler state '" + one_line(state, 60) + "' is not \"seed counter\"");
    p = q + 1;
  }
  seed_ = v[0];
  counter_ = v[1];
}

namespace {

__extension__ typedef unsigned __int128 u128;

// A read-only memory map of one shard.
struct Mapped {
  const int32_t* data = nullptr;
  size_t bytes = 0;
  Mapped() = default;
  Mapped(const Mapped&) = delete;
  Mapped& operator=(const Mapped&) = delete;
  ~Mapped() {
    if (data && bytes) munmap(const_cast<int32_t*>(data), bytes);
  }
};

}  // namespace

struct Dataset::Impl {
  std::string dir;
  int32_t vocab = 0, bos = 0;
  SplitInfo splits[3];
  std::vector<std::unique_ptr<Mapped>> maps[3];

  size_t split_index(std::string_view name) const {
    for (size_t i = 0; i < 3; ++i)
      if (name == format::kSplits[i]) return i;
    throw std::runtime_error("unknown split '" + std::string(name) + "' (train, val or val-long)");
  }
};

Dataset::Dataset() : impl_(std::make_unique<Impl>()) {}
Dataset::~Dataset() = default;
Dataset::Dataset(Dataset&&) noexcept = default;
Dataset& Dataset::operator=(Dataset&&) noexcept = default;

CorpusIndex parse_corpus_index(std::string_view text, const std::string& index_path) {
  const std::string where = one_line(index_path) + ": ";
  json idx;
  try {
    idx = io::parse_json(text, one_line(index_path));
  } catch (const io::JsonError& e) {
    if (e.problem.rfind("invalid JSON", 0) == 0)
      throw std::runtime_error(one_line(index_path) + " is truncated or not valid JSON (" + e.problem + ")");
    throw;
  }
  CorpusIndex ci;
  CorpusIndex& im = ci;
  // Token counts stay below 2^61 so that byte sizes (x4) and sums cannot wrap.
  constexpr int64_t kMaxTokens = int64_t{1} << 61;
  try {
    if (!idx.is_object() || idx.value("format", std::string()) != format::kFormatName)
      throw std::runtime_error(where + "not a ttt corpus index (format is not \"" + format::kFormatName + "\")");
    const json& ver = io::json_field(idx, "version", where + "version");
    if (!ver.is_number_integer() || ver != format::kFormatVersion)
      throw std::runtime_error(where + "format version " + one_line(ver.dump(), 40) + ", this build reads version " +
                               std::to_string(format::kFormatVersion));
    const auto& t = io::json_field(idx, "tokenizer", where + "tokenizer");
    im.vocab = static_cast<int32_t>(io::json_int(io::json_field(t, "vocab_size", where + "tokenizer"), 1, INT32_MAX,
                                                 where + "tokenizer vocab_size"));
    im.bos = static_cast<int32_t>(io::json_int(io::json_field(t, "bos_id", where + "tokenizer"), 0, im.vocab - 1,
                                               where + "tokenizer bos_id"));
    int64_t total = 0;
    for (size_t s = 0; s < 3; ++s) {
      SplitInfo& sp = im.splits[s];
      sp.name = format::kSplits[s];
      const std::string sw = where + "split " + sp.name;
      const auto& js = io::json_field(io::json_field(idx, "splits", where + "splits"), sp.name, where + "splits");
      sp.tokens = io::json_int(io::json_field(js, "tokens", sw), 0, kMaxTokens, sw + " tokens");
      int64_t shard_sum = 0;
      const auto& shards = io::json_field(js, "shards", sw);
      if (!shards.is_array()) throw std::runtime_error(sw + ": shards is not an array");
      for (const auto& sh : shards) {
        ShardRef r;
        r.file = io::json_string(io::json_field(sh, "file", sw + " shard"), sw + " shard file");
        const std::string shw = sw + " shard '" + one_line(r.file) + "'";
        r.tokens = io::json_int(io::json_field(sh, "tokens", shw), 1, kMaxTokens, shw + " tokens");
        const std::string cs = io::json_string(io::json_field(sh, "checksum", shw), shw + " checksum");
        char* end = nullptr;
        r.checksum = std::strtoull(cs.c_str(), &end, 16);
        if (cs.size() != 16 || *end != '\0') throw std::runtime_error(shw + " has a malformed checksum");
        if (r.file.find('/') != std::string::npos || r.file.empty() || r.file == "." || r.file == ".." ||
            r.file.find('\0') != std::string::npos)
          throw std::runtime_error(where + "invalid shard entry '" + one_line(r.file) + "'");
        if (__builtin_add_overflow(shard_sum, r.tokens, &shard_sum) || shard_sum > kMaxTokens)
          throw std::runtime_error(sw + ": shard token counts add up to more than 2^61");
        sp.shards.push_back(r);
      }
      if (shard_sum != sp.tokens)
        throw std::runtime_error(where + sp.name + " holds " + std::to_string(sp.tokens) + " tokens but its shards add up to " +
                                 std::to_string(shard_sum));
      const auto& docs = io::json_field(js, "documents", sw);
      if (!docs.is_array()) throw std::runtime_error(sw + ": documents is not an array");
      for (const auto& d : docs) {
        if (!d.is_array() || d.size() != 5)
          throw std::runtime_error(sw + ": a document entry is not [name, shard, offset, length, files]");
        DocumentRef r;
        r.name = io::json_string(d[0], sw + " document name");
        const std::string dw = sw + " document '" + one_line(r.name) + "'";
        r.shard = io::json_int(d[1], 0, static_cast<int64_t>(sp.shards.size()) - 1, dw + " shard");
        const int64_t shard_tokens = sp.shards[static_cast<size_t>(r.shard)].tokens;
        r.offset = io::json_int(d[2], 0, kMaxTokens, dw + " offset");
        r.length = io::json_int(d[3], 1, kMaxTokens, dw + " length");
        r.files = io::json_int(d[4], 0, INT64_MAX, dw + " files");
        if (r.offset >= shard_tokens || r.length > shard_tokens - r.offset)  // no overflow: both below 2^61
          throw std::runtime_error(where + "document '" + one_line(r.name) + "' lies outside its shard");
        sp.documents.push_back(std::move(r));
      }
      total += sp.tokens;
    }
    if (total == 0) throw std::runtime_error(where + "the corpus is empty (no documents)");
  } catch (const json::exception& e) {
    throw std::runtime_error(where + "missing or invalid field (" + one_line(e.what()) + ")");
  }
  return ci;
}

Dataset Dataset::open(const std::string& dir, bool verify) {
  Dataset ds;
  Impl& im = *ds.impl_;
  im.dir = dir;
  const std::string index_path = (fs::path(dir) / format::kIndexFile).string();
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw std::runtime_error("corpus " + dir + " does not exist");
  if (!fs::exists(index_path, ec))
    throw std::runtime_error("corpus " + dir + " has no index.json (not a corpus, or its build did not finish; build it with `ttt data build`)");
  const std::string text = io::read_regular_file(index_path, "corpus index", io::kMaxJsonFileBytes);
  CorpusIndex ci = parse_corpus_index(text, index_path);
  im.vocab = ci.vocab;
  im.bos = ci.bos;
  for (size_t i = 0; i < 3; ++i) im.splits[i] = std::move(ci.splits[i]);

  // Map the shards.
  for (size_t s = 0; s < 3; ++s) {
    for (const auto& sh : im.splits[s].shards) {
      const std::string path = (fs::path(dir) / sh.file).string();
      const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);  // a FIFO must not block
      if (fd < 0) throw std::runtime_error("corpus " + dir + ": shard " + sh.file + " is missing");
      struct stat st {};
      if (fstat(fd, &st) != 0) {
        ::close(fd);
        throw std::runtime_error("corpus " + dir + ": cannot stat shard " + sh.file);
      }
      if (!S_ISREG(st.st_mode)) {
        ::close(fd);
        throw std::runtime_error("corpus " + one_line(dir) + ": shard " + sh.file + " is not a regular file");
      }
      const auto want = static_cast<uint64_t>(sh.tokens) * 4;
      if (static_cast<uint64_t>(st.st_size) != want) {
        ::close(fd);
        throw std::runtime_error("corpus " + dir + ": shard " + sh.file + " has " + std::to_string(st.st_size) +
                                 " bytes, the index says " + std::to_string(want) + " (truncated or corrupt)");
      }
      auto m = std::make_unique<Mapped>();
      void* p = mmap(nullptr, want, PROT_READ, MAP_PRIVATE, fd, 0);
      ::close(fd);
      if (p == MAP_FAILED) throw std::runtime_error("corpus " + dir + ": cannot map shard " + sh.file);
      m->data = static_cast<const int32_t*>(p);
      m->bytes = want;
      if (verify) {
        if (format::checksum(m->data, want) != sh.checksum)
          throw std::runtime_error("corpus " + dir + ": shard " + sh.file + " is corrupt (checksum mismatch)");
        for (int64_t i = 0; i < sh.tokens; ++i) {
          const int32_t v = m->data[i];
          if (v < 0 || v >= im.vocab)
            throw std::runtime_error("corpus " + dir + ": shard " + sh.file + " holds token id " + std::to_string(v) + " at " +
                                     std::to_string(i) + ", outside the vocabulary [0, " + std::to_string(im.vocab) + ")");
        }
      }
      im.maps[s].push_back(std::move(m));
    }
    if (verify)
      for (const auto& d : im.splits[s].documents)
        if (im.maps[s][static_cast<size_t>(d.shard)]->data[d.offset] != im.bos)
          throw std::runtime_error("corpus " + one_line(dir) + ": document '" + one_line(d.name) + "' does not start with BOS");
  }
  return ds;
}

const std::string& Dataset::dir() const { return impl_->dir; }
int32_t Dataset::vocab_size() const { return impl_->vocab; }
int32_t Dataset::bos_id() const { return impl_->bos; }
std::string Dataset::tokenizer_path() const { return (fs::path(impl_->dir) / format::kTokenizerFile).string(); }

void Dataset::check_model(int64_t model_vocab_size, int64_t model_bos_token_id) const {
  if (model_vocab_size != impl_->vocab)
    throw std::runtime_error("corpus " + impl_->dir + " was built with a tokenizer of vocab_size " + std::to_string(impl_->vocab) +
                             ", the model has vocab_size " + std::to_string(model_vocab_size));
  if (model_bos_token_id != impl_->bos)
    throw std::runtime_error("corpus " + impl_->dir + " uses BOS id " + std::to_string(impl_->bos) +
                             ", the model has bos_token_id " + std::to_string(model_bos_token_id));
}

const SplitInfo& Dataset::split(std::string_view name) const { return impl_->splits[impl_->split_index(name)]; }

const int32_t* Dataset::shard_data(std::string_view split, size_t shard) const {
  const size_t s = impl_->split_index(split);
  if (shard >= impl_->maps[s].size()) throw std::runtime_error("shard index out of range");
  return impl_->maps[s][shard]->data;
}

std::vector<int32_t> Dataset::sample_train(int64_t len, SequenceSampler& rng) const {
  if (len < 2) throw std::runtime_error("training sequences need at least 2 tokens, got " + std::to_string(len));
  const SplitInfo& sp = impl_->splits[0];
  uint64_t total = 0;
  for (const auto& sh : sp.shards)
    if (sh.tokens >= len) total += static_cast<uint64_t>(sh.tokens - len + 1);
  if (total == 0)
    throw std::runtime_error("corpus " + impl_->dir + ": no training shard holds a sequence of " + std::to_string(len) + " tokens (train holds " +
                             std::to_string(sp.tokens) + ")");
  uint64_t r = static_cast<uint64_t>((static_cast<u128>(rng.next_u64()) * total) >> 64);
  for (size_t s = 0; s < sp.shards.size(); ++s) {
    const int64_t t = sp.shards[s].tokens;
    if (t < len) continue;
    const auto n = static_cast<uint64_t>(t - len + 1);
    if (r < n) {
      const int32_t* p = impl_->maps[0][s]->data + r;
      return std::vector<int32_t>(p, p + len);
    }
    r -= n;
  }
  throw std::logic_error("sample_train: unreachable");
}

int64_t Dataset::num_sequences(std::string_view split, int64_t len) const {
  if (len < 2) throw std::runtime_error("sequences need at least 2 tokens, got " + std::to_string(len));
  int64_t n = 0;
  for (const auto& sh : this->split(split).shards)
    if (sh.tokens >= len) n += (sh.tokens - len) / (len - 1) + 1;
  return n;
}

std::vector<int32_t> Dataset::sequence(std::string_view split, int64_t len, int64_t i) const {
  const size_t si = impl_->split_index(split);
  const SplitInfo& sp = impl_->splits[si];
  if (len < 2) throw std::runtime_error("sequences need at least 2 tokens, got " + std::to_string(len));
  if (i < 0) throw std::runtime_error("sequence index out of range");
  for (size_t s = 0; s < sp.shards.size(); ++s) {
    const int64_t t = sp.shards[s].tokens;
    if (t < len) continue;
    const int64_t n = (t - len) / (len - 1) + 1;
    if (i < n) {
      const int32_t* p = impl_->maps[si][s]->data + i * (len - 1);
      return std::vector<int32_t>(p, p + len);
    }
    i -= n;
  }
  throw std::runtime_error("sequence index out of range for split " + std::string(split));
}

std::vector<int32_t> Dataset::document(std::string_view split, size_t i) const {
  const size_t si = impl_->split_index(split);
  const SplitInfo& sp = impl_->splits[si];
  if (i >= sp.documents.size())
    throw std::runtime_error("document " + std::to_string(i) + " out of range: " + std::string(split) + " has " +
                             std::to_string(sp.documents.size()));
  const auto& d = sp.documents[i];
  const int32_t* p = impl_->maps[si][static_cast<size_t>(d.shard)]->data + d.offset;
  return std::vector<int32_t>(p, p + d.length);
}

std::string Dataset::describe() const {
  const auto& s = impl_->splits;
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "corpus %s: vocab %d, train %zu documents / %" PRId64 " tokens, val %zu / %" PRId64 ", val-long %zu / %" PRId64,
                impl_->dir.c_str(), impl_->vocab, s[0].documents.size(), s[0].tokens, s[1].documents.size(), s[1].tokens,
                s[2].documents.size(), s[2].tokens);
  return buf;
}

}  // namespace ttt::data
