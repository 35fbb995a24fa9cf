#include "data/corpus.h"

#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>
#include <system_error>
#include <thread>

#include "data/format.h"
#include "data/text.h"
#include "io/atomic_file.h"

namespace ttt::data {
namespace fs = std::filesystem;
using json = nlohmann::ordered_json;
static_assert(std::endian::native == std::endian::little, "shards are written as host int32 (little-endian)");

GroupMode parse_group_mode(const std::string& s) {
  if (s == "code") return GroupMode::Code;
  if (s == "prose") return GroupMode::Prose;
  if (s == "auto") return GroupMode::Auto;
  throw std::runtime_error("--mode must be code, prose or auto, got '" + s + "'");
}

const char* group_mode_name(GroupMode m) {
  return m == GroupMode::Code ? "code" : m == GroupMode::Prose ? "prose" : "auto";
}

namespace {

bool is_prose_name(const std::string& rel) {
  const size_t slash = rel.rfind('/');
  const std::string name = slash == std::string::npos ? rel : rel.substr(slash + 1);
  const size_t dot = name.rfind('.');
  std::string ext = dot == std::string::npos ? "" : name.substr(dot + 1);
  for (auto& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  static const std::set<std::string> prose_ext = {"txt", "rst", "md", "markdown", "adoc", "tex"};
  if (prose_ext.count(ext)) return true;
  for (const char* p : {"README", "COPYING", "CREDITS", "MAINTAINERS"})
    if (name.rfind(p, 0) == 0) return true;
  return false;
}

bool under_prefix(const std::string& rel, const std::string& prefix) {
  std::string p = prefix;
  while (!p.empty() && p.back() == '/') p.pop_back();
  if (p.empty() || p == ".") return true;
  return rel == p || (rel.size() > p.size() && rel.compare(0, p.size(), p) == 0 && rel[p.size()] == '/');
}

struct Doc {
  std::string name;
  std::vector<size_t> files;  // indices into the file list, sorted by path
  uint64_t bytes = 0;
  uint64_t order = 0;
  bool val = false;
};

enum class FileStatus { Used, Binary, Large, Empty };

struct Encoded {
  std::vector<int32_t> tokens;  // BOS first; empty if no file was usable
  std::vector<FileStatus> status;
  uint64_t bytes = 0;
};

Encoded encode_doc(const Doc& d, const std::vector<FileEntry>& files, const Tokenizer& tok, uint64_t max_file_bytes) {
  Encoded e;
  std::string text;
  for (size_t fi : d.files) {
    const auto& f = files[fi];
    if (f.size == 0) {
      e.status.push_back(FileStatus::Empty);
      continue;
    }
    if (f.size > max_file_bytes) {
      e.status.push_back(FileStatus::Large);
      continue;
    }
    const std::string content = read_file(f.path);
    if (content.empty()) {
      e.status.push_back(FileStatus::Empty);
      continue;
    }
    if (content.size() > max_file_bytes) {
      e.status.push_back(FileStatus::Large);
      continue;
    }
    if (!binary_reason(content).empty()) {
      e.status.push_back(FileStatus::Binary);
      continue;
    }
    e.status.push_back(FileStatus::Used);
    if (e.tokens.empty()) e.tokens.push_back(tok.bos_id());
    text = "==> " + f.relative + " <==\n";
    text += content;
    if (text.back() != '\n') text += '\n';
    tok.encode_append(text, e.tokens);
    e.bytes += content.size();
  }
  return e;
}

class ShardWriter {
 public:
  ShardWriter(std::string dir, std::string split, int64_t shard_tokens)
      : dir_(std::move(dir)), split_(std::move(split)), shard_tokens_(shard_tokens) {}

  void add(const std::string& name, const std::vector<int32_t>& tokens, int64_t files) {
    const auto n = static_cast<int64_t>(tokens.size());
    if (!buf_.empty() && static_cast<int64_t>(buf_.size()) + n > shard_tokens_) flush();
    docs_.push_back(json::array({name, static_cast<int64_t>(shards_.size()), static_cast<int64_t>(buf_.size()), n, files}));
    buf_.insert(buf_.end(), tokens.begin(), tokens.end());
    summary_.documents += 1;
    summary_.tokens += n;
  }

  void flush() {
    if (buf_.empty()) return;
    const std::string file = format::shard_name(split_, static_cast<int64_t>(shards_.size()));
    const size_t bytes = buf_.size() * sizeof(int32_t);
    io::write_file_atomic((fs::path(dir_) / file).string(), buf_.data(), bytes);
    shards_.push_back(json{{"file", file},
                           {"tokens", static_cast<int64_t>(buf_.size())},
                           {"checksum", format::hex64(format::checksum(buf_.data(), bytes))}});
    written_.insert(file);
    buf_.clear();
    summary_.shards = static_cast<int64_t>(shards_.size());
  }

  json to_json() const { return json{{"tokens", summary_.tokens}, {"shards", shards_}, {"documents", docs_}}; }
  const SplitSummary& summary() const { return summary_; }
  const std::set<std::string>& written() const { return written_; }
  int64_t pending() const { return static_cast<int64_t>(buf_.size()); }

 private:
  std::string dir_, split_;
  int64_t shard_tokens_;
  std::vector<int32_t> buf_;
  json shards_ = json::array(), docs_ = json::array();
  SplitSummary summary_;
  std::set<std::string> written_;
};

std::string human_bytes(double b) {
  char buf[32];
  if (b >= 1e9) std::snprintf(buf, sizeof buf, "%.2f GB", b / 1e9);
  else if (b >= 1e6) std::snprintf(buf, sizeof buf, "%.1f MB", b / 1e6);
  else std::snprintf(buf, sizeof buf, "%.1f kB", b / 1e3);
  return buf;
}

std::string human_count(double n) {
  char buf[32];
  if (n >= 1e9) std::snprintf(buf, sizeof buf, "%.2fG", n / 1e9);
  else if (n >= 1e6) std::snprintf(buf, sizeof buf, "%.2fM", n / 1e6);
  else if (n >= 1e3) std::snprintf(buf, sizeof buf, "%.1fk", n / 1e3);
  else std::snprintf(buf, sizeof buf, "%.0f", n);
  return buf;
}

std::string human_seconds(double s) {
  char buf[32];
  if (s >= 3600) std::snprintf(buf, sizeof buf, "%dh%02dm", static_cast<int>(s / 3600), static_cast<int>(s / 60) % 60);
  else if (s >= 60) std::snprintf(buf, sizeof buf, "%dm%02ds", static_cast<int>(s / 60), static_cast<int>(s) % 60);
  else std::snprintf(buf, sizeof buf, "%.0fs", s);
  return buf;
}

}  // namespace

namespace {

using Clock = std::chrono::steady_clock;

void check_build_options(const CorpusOptions& opt) {
  if (opt.source.empty()) throw std::runtime_error("data build: --source is required");
  if (opt.out.empty()) throw std::runtime_error("data build: --out is required");
  if (opt.tokenizer.empty()) throw std::runtime_error("data build: --tokenizer is required");
  if (opt.shard_tokens < 1) throw std::runtime_error("--shard-tokens must be >= 1");
  if (!(opt.val_fraction >= 0 && opt.val_fraction <= 1)) throw std::runtime_error("--val-fraction must be in [0, 1]");
  if (opt.min_val_doc_tokens < 1) throw std::runtime_error("--min-val-doc-tokens must be >= 1");
  if (opt.max_tokens < 0) throw std::runtime_error("--max-tokens must be >= 0");
  std::error_code ec;
  if (!fs::exists(opt.source, ec)) throw std::runtime_error("source " + opt.source + " does not exist");
}

void check_out_not_in_source(const CorpusOptions& opt) {
  std::error_code ec;
  const auto src = fs::weakly_canonical(opt.source, ec);
  const auto out = fs::weakly_canonical(opt.out, ec);
  const std::string s = src.string(), o = out.string();
  if (fs::is_directory(src) && (o == s || (o.size() > s.size() && o.compare(0, s.size(), s) == 0 && o[s.size()] == '/')))
    throw std::runtime_error("output directory " + opt.out + " is inside the source " + opt.source);
}

// Files grouped into documents (a directory of code, or one prose file), each given its split
// and its place in the seeded order.
std::vector<Doc> group_documents(const std::vector<FileEntry>& files, const CorpusOptions& opt) {
  std::map<std::string, Doc> by_name;
  for (size_t i = 0; i < files.size(); ++i) {
    const std::string& rel = files[i].relative;
    bool prose = opt.mode == GroupMode::Prose || (opt.mode == GroupMode::Auto && is_prose_name(rel));
    for (const auto& p : opt.prose_prefixes)
      if (under_prefix(rel, p)) prose = true;
    std::string name;
    if (prose) {
      name = rel;
    } else {
      const size_t slash = rel.rfind('/');
      name = slash == std::string::npos ? "." : rel.substr(0, slash);
    }
    Doc& d = by_name[name];
    d.name = name;
    d.files.push_back(i);
    if (files[i].size <= opt.max_file_bytes) d.bytes += files[i].size;
  }
  std::vector<Doc> docs;
  docs.reserve(by_name.size());
  for (auto& [n, d] : by_name) {
    d.order = seeded_hash(n, opt.seed);
    const uint64_t split_hash = seeded_hash(n, opt.seed ^ 0x5EED5EED5EED5EEDull);
    d.val = static_cast<double>(split_hash >> 11) * 0x1.0p-53 < opt.val_fraction;
    docs.push_back(std::move(d));
  }
  std::sort(docs.begin(), docs.end(), [](const Doc& a, const Doc& b) { return a.order != b.order ? a.order < b.order : a.name < b.name; });
  return docs;
}

// The output directory with the old index dropped first (so an interrupted build never looks
// complete) and the tokenizer copied in.
fs::path prepare_output(const CorpusOptions& opt) {
  std::error_code ec;
  fs::create_directories(opt.out, ec);
  if (ec || !fs::is_directory(opt.out)) throw std::runtime_error("cannot create output directory " + opt.out);
  const fs::path outdir(opt.out);
  fs::remove(outdir / format::kIndexFile, ec);
  const std::string model = read_file(opt.tokenizer);
  io::write_file_atomic((outdir / format::kTokenizerFile).string(), model.data(), model.size());
  return outdir;
}

// Encodes the documents of `batch` on `threads` threads; the first error is rethrown.
std::vector<Encoded> encode_batch(const std::vector<size_t>& batch, const std::vector<Doc>& docs,
                                  const std::vector<FileEntry>& files, const Tokenizer& tok, const CorpusOptions& opt,
                                  unsigned threads) {
  std::vector<Encoded> results(batch.size());
  std::atomic<size_t> cursor{0};
  std::vector<std::string> errors(batch.size());
  auto work = [&] {
    for (size_t k; (k = cursor.fetch_add(1)) < batch.size();) {
      try {
        results[k] = encode_doc(docs[batch[k]], files, tok, opt.max_file_bytes);
      } catch (const std::exception& e) {
        errors[k] = e.what();
      }
    }
  };
  const unsigned nt = static_cast<unsigned>(std::min<size_t>(threads, batch.size()));
  std::vector<std::thread> pool;
  for (unsigned t = 1; t < nt; ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  for (const auto& e : errors)
    if (!e.empty()) throw std::runtime_error(e);
  return results;
}

// The documents read so far into the three splits' shards, with the counts of the summary and
// the progress line.
struct CorpusWriter {
  const CorpusOptions& opt;
  const std::vector<Doc>& docs;
  Clock::time_point t0;
  ShardWriter train, val, val_long;
  CorpusSummary sum;
  uint64_t total_bytes = 0, bytes_seen = 0, bytes_read = 0;  // documents passed (for the ETA) / actually read
  int64_t total_tokens = 0, train_tokens = 0;
  size_t docs_done = 0;

  CorpusWriter(const CorpusOptions& o, const std::vector<Doc>& d, Clock::time_point start)
      : opt(o), docs(d), t0(start), train(o.out, "train", o.shard_tokens), val(o.out, "val", o.shard_tokens),
        val_long(o.out, "val-long", o.shard_tokens) {
    for (const Doc& doc : docs) total_bytes += doc.bytes;
  }
  bool capped() const { return opt.max_tokens > 0; }

  // With a cap, a training document whose bytes alone clearly exceed what is left (more than 8
  // bytes per remaining token) is skipped unread.
  bool skip_unread(const Doc& d) {
    if (!(capped() && !d.val && d.bytes > 8 * static_cast<uint64_t>(opt.max_tokens - train_tokens))) return false;
    ++sum.documents_capped;
    bytes_seen += d.bytes;
    ++docs_done;
    return true;
  }

  void commit(const Doc& d, Encoded& e) {
    ++docs_done;
    bytes_seen += d.bytes;
    bytes_read += d.bytes;
    const auto n = static_cast<int64_t>(e.tokens.size());
    if (capped() && !d.val && train_tokens + n > opt.max_tokens) {
      ++sum.documents_capped;
      return;
    }
    int64_t used = 0;
    for (auto st : e.status) {
      if (st == FileStatus::Used) ++used;
      else if (st == FileStatus::Binary) ++sum.skipped_binary;
      else if (st == FileStatus::Large) ++sum.skipped_large;
      else ++sum.skipped_empty;
    }
    if (n == 0) return;
    sum.files_used += used;
    sum.bytes_used += e.bytes;
    total_tokens += n;
    ShardWriter& w = !d.val ? train : n >= opt.min_val_doc_tokens ? val_long : val;
    w.add(d.name, e.tokens, used);
    e.tokens = {};
    if (!d.val) train_tokens += n;
  }

  void report(bool final_line) const {
    const double el = std::chrono::duration<double>(Clock::now() - t0).count();
    double frac = total_bytes ? static_cast<double>(bytes_seen) / static_cast<double>(total_bytes) : 1.0;
    const double eta = frac > 0 ? el * (1 - frac) / frac : 0;
    std::fprintf(stderr, "data: %zu/%zu documents, %lld files, %s read, %s tokens (train %s, val %s, val-long %s), %s/s, %s %s\n",
                 docs_done, docs.size(), static_cast<long long>(sum.files_used), human_bytes(static_cast<double>(bytes_read)).c_str(),
                 human_count(static_cast<double>(total_tokens)).c_str(), human_count(static_cast<double>(train.summary().tokens)).c_str(),
                 human_count(static_cast<double>(val.summary().tokens)).c_str(),
                 human_count(static_cast<double>(val_long.summary().tokens)).c_str(),
                 human_bytes(el > 0 ? static_cast<double>(bytes_read) / el : 0).c_str(), final_line ? "done in" : "ETA",
                 human_seconds(final_line ? el : eta).c_str());
  }

  void flush() {
    train.flush();
    val.flush();
    val_long.flush();
    sum.train = train.summary();
    sum.val = val.summary();
    sum.val_long = val_long.summary();
  }
  bool wrote(const std::string& name) const {
    return train.written().count(name) || val.written().count(name) || val_long.written().count(name);
  }
};

// Documents are encoded in parallel batches and committed in order. With a cap, reading goes on
// after the training split is full: held-out documents are all kept (the cap is on training
// tokens), while training documents are then skipped unread.
void read_documents(CorpusWriter& w, const std::vector<FileEntry>& files, const Tokenizer& tok) {
  const CorpusOptions& opt = w.opt;
  const auto& docs = w.docs;
  const unsigned threads = opt.threads > 0 ? static_cast<unsigned>(opt.threads) : std::max(1u, std::thread::hardware_concurrency());
  const size_t batch_docs = std::max<size_t>(4 * threads, 16);
  const uint64_t batch_bytes = 64ull << 20;
  auto last_report = Clock::now();
  size_t next = 0;
  std::vector<size_t> batch;
  while (next < docs.size()) {
    batch.clear();
    uint64_t bb = 0;
    while (next < docs.size() && batch.size() < batch_docs && (batch.empty() || bb < batch_bytes)) {
      if (w.skip_unread(docs[next])) {
        ++next;
        continue;
      }
      batch.push_back(next++);
      bb += docs[batch.back()].bytes;
    }
    std::vector<Encoded> results = encode_batch(batch, docs, files, tok, opt, threads);
    for (size_t k = 0; k < batch.size(); ++k) w.commit(docs[batch[k]], results[k]);
    if (opt.progress && std::chrono::duration<double>(Clock::now() - last_report).count() >= 2.0) {
      w.report(false);
      last_report = Clock::now();
    }
  }
}

void write_index(const CorpusWriter& w, const Tokenizer& tok, const fs::path& outdir) {
  const CorpusOptions& opt = w.opt;
  const CorpusSummary& sum = w.sum;
  json idx;
  idx["format"] = format::kFormatName;
  idx["version"] = format::kFormatVersion;
  idx["tokenizer"] = json{{"file", format::kTokenizerFile},
                          {"vocab_size", tok.vocab_size()},
                          {"bos_id", tok.bos_id()},
                          {"fingerprint", format::hex64(tok.fingerprint())}};
  std::vector<std::string> prefixes = opt.prose_prefixes;
  idx["build"] = json{{"seed", opt.seed},
                      {"val_fraction", opt.val_fraction},
                      {"min_val_doc_tokens", opt.min_val_doc_tokens},
                      {"shard_tokens", opt.shard_tokens},
                      {"mode", group_mode_name(opt.mode)},
                      {"prose_prefixes", prefixes},
                      {"max_tokens", opt.max_tokens},
                      {"max_file_bytes", opt.max_file_bytes}};
  idx["stats"] = json{{"files_scanned", sum.files_scanned},   {"files_used", sum.files_used},
                      {"skipped_binary", sum.skipped_binary}, {"skipped_large", sum.skipped_large},
                      {"skipped_empty", sum.skipped_empty},   {"documents_capped", sum.documents_capped},
                      {"bytes_used", sum.bytes_used}};
  idx["splits"] = json{{"train", w.train.to_json()}, {"val", w.val.to_json()}, {"val-long", w.val_long.to_json()}};
  const std::string text = idx.dump(1) + "\n";
  io::write_file_atomic((outdir / format::kIndexFile).string(), text.data(), text.size());
}

// Removes shards of an earlier build that this one did not write.
void remove_stale_shards(const CorpusWriter& w, const fs::path& outdir) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(outdir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.size() < 5 || name.compare(name.size() - 4, 4, ".bin") != 0) continue;
    bool ours = false;
    for (const char* sp : format::kSplits) {
      const std::string p = std::string(sp) + "-";
      if (name.rfind(p, 0) == 0 && name.size() == p.size() + 9 &&
          std::all_of(name.begin() + static_cast<long>(p.size()), name.end() - 4, [](char c) { return c >= '0' && c <= '9'; }))
        ours = true;
    }
    if (ours && !w.wrote(name)) fs::remove(e.path(), ec);
  }
}

}  // namespace

CorpusSummary build_corpus(const CorpusOptions& opt) {
  const auto t0 = Clock::now();
  check_build_options(opt);
  const Tokenizer tok = Tokenizer::load(opt.tokenizer);
  if (tok.bos_id() < 0)
    throw std::runtime_error("tokenizer " + opt.tokenizer + " has no BOS token, which starts every corpus document");
  check_out_not_in_source(opt);
  const std::vector<FileEntry> files = list_files(opt.source);
  if (files.empty()) throw std::runtime_error("source " + opt.source + " holds no files");
  const std::vector<Doc> docs = group_documents(files, opt);

  const fs::path outdir = prepare_output(opt);
  CorpusWriter w(opt, docs, t0);
  w.sum.files_scanned = static_cast<int64_t>(files.size());
  read_documents(w, files, tok);
  w.flush();
  if (w.total_tokens == 0)
    throw std::runtime_error("source " + opt.source + " holds no usable text files (" + std::to_string(files.size()) +
                             " files: all empty, binary or larger than " + std::to_string(opt.max_file_bytes) + " bytes)");
  write_index(w, tok, outdir);
  remove_stale_shards(w, outdir);
  w.sum.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  if (opt.progress) w.report(true);
  return w.sum;
}

std::string format_summary(const CorpusSummary& s) {
  char buf[1024];
  std::snprintf(buf, sizeof buf,
                "train: %lld documents, %lld tokens, %lld shards\n"
                "val: %lld documents, %lld tokens, %lld shards\n"
                "val-long: %lld documents, %lld tokens, %lld shards\n"
                "files: %lld scanned, %lld used (%s), %lld binary, %lld too large, %lld empty skipped; %lld documents left out by --max-tokens\n"
                "time: %.1f s",
                static_cast<long long>(s.train.documents), static_cast<long long>(s.train.tokens), static_cast<long long>(s.train.shards),
                static_cast<long long>(s.val.documents), static_cast<long long>(s.val.tokens), static_cast<long long>(s.val.shards),
                static_cast<long long>(s.val_long.documents), static_cast<long long>(s.val_long.tokens),
                static_cast<long long>(s.val_long.shards), static_cast<long long>(s.files_scanned),
                static_cast<long long>(s.files_used), human_bytes(static_cast<double>(s.bytes_used)).c_str(),
                static_cast<long long>(s.skipped_binary), static_cast<long long>(s.skipped_large),
                static_cast<long long>(s.skipped_empty), static_cast<long long>(s.documents_capped), s.seconds);
  return buf;
}

CorpusSummary build_linux_corpus(LinuxRecipeOptions opt) {
  std::error_code ec;
  if (!fs::exists(opt.tarball, ec))
    throw std::runtime_error(opt.tarball + " not found: run `scripts/install-deps.sh --data` (installs Debian's linux-source-6.1)");
  const fs::path cache(opt.cache_dir);
  const fs::path tree = cache / "linux-source-6.1";
  const fs::path marker = cache / "linux-source-6.1.extracted";
  if (!fs::exists(marker, ec)) {
    fs::create_directories(cache, ec);
    if (ec) throw std::runtime_error("cannot create cache directory " + opt.cache_dir);
    const fs::path tmp = cache / "linux-source-6.1.extracting";
    fs::remove_all(tmp, ec);
    fs::remove_all(tree, ec);
    fs::create_directories(tmp, ec);
    std::fprintf(stderr, "data: extracting %s into %s (once; about 1.4 GB)\n", opt.tarball.c_str(), tree.string().c_str());
    auto quote = [](const std::string& s) {
      std::string o = "'";
      for (char c : s) o += c == '\'' ? std::string("'\\''") : std::string(1, c);
      return o + "'";
    };
    const std::string cmd = "tar -xJf " + quote(opt.tarball) + " -C " + quote(tmp.string());
    const int rc = std::system(cmd.c_str());
    if (rc != 0) throw std::runtime_error("extracting " + opt.tarball + " failed (`" + cmd + "` exited with " + std::to_string(rc) + ")");
    fs::path top = tmp / "linux-source-6.1";
    if (!fs::is_directory(top)) throw std::runtime_error(opt.tarball + " does not hold a linux-source-6.1/ directory");
    fs::rename(top, tree, ec);
    if (ec) throw std::runtime_error("cannot move the extracted tree to " + tree.string() + ": " + ec.message());
    fs::remove_all(tmp, ec);
    io::write_file_atomic(marker.string(), "ok\n", 3);
  } else {
    std::fprintf(stderr, "data: using the extracted tree %s\n", tree.string().c_str());
  }
  if (opt.tokenizer.empty()) {
    const fs::path model = cache / ("linux-6.1-tokenizer-v" + std::to_string(opt.vocab_size) + ".model");
    if (!fs::exists(model, ec)) {
      std::fprintf(stderr, "data: training a tokenizer (vocab %d) on a %s sample of the tree\n", opt.vocab_size,
                   human_bytes(static_cast<double>(opt.tokenizer_sample_bytes)).c_str());
      const auto t0 = std::chrono::steady_clock::now();
      TokenizerTrainOptions to;
      to.vocab_size = opt.vocab_size;
      to.seed = opt.corpus.seed;
      std::string prefix = model.string();
      prefix.resize(prefix.size() - 6);
      const uint64_t used = Tokenizer::train_files({tree.string()}, prefix, to, opt.tokenizer_sample_bytes);
      std::fprintf(stderr, "data: tokenizer %s trained on %s in %.1f s\n", model.string().c_str(),
                   human_bytes(static_cast<double>(used)).c_str(),
                   std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    } else {
      std::fprintf(stderr, "data: using the tokenizer %s\n", model.string().c_str());
    }
    opt.tokenizer = model.string();
  }
  CorpusOptions c = opt.corpus;
  c.source = tree.string();
  c.tokenizer = opt.tokenizer;
  c.out = opt.out;
  c.mode = GroupMode::Code;
  c.prose_prefixes = {"Documentation"};
  return build_corpus(c);
}

}  // namespace ttt::data
