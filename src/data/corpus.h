// The corpus builder: a tree of text files -> tokenized documents in int32 shards.
//
// Output directory layout (all written atomically; index.json last, so a directory without
// index.json is not a corpus):
//   index.json               the manifest: tokenizer (vocab size, BOS id, fingerprint), build
//                            settings, statistics, and per split its shards (file, tokens,
//                            checksum) and documents [name, shard, offset, length, files]
//   tokenizer.model          a copy of the tokenizer the corpus was built with
//   train-NNNNN.bin          training documents
//   val-NNNNN.bin            validation documents shorter than min_val_doc_tokens
//   val-long-NNNNN.bin       validation documents of at least min_val_doc_tokens tokens
// Shards are raw little-endian int32. Every document starts with BOS (id 0) and lies whole in
// one shard; documents follow each other directly.
//
// Documents:
// - code: the files directly in one directory (not its subdirectories), sorted by name,
//   concatenated: a repository-level document named after the directory ("." for the root).
// - prose: one document per file, named after the file's path.
// - auto: prose for .txt .rst .md .markdown .adoc .tex and README*/COPYING*/CREDITS*/MAINTAINERS
//   files, code for everything else.
// `prose_prefixes` (paths relative to the source) force prose below them (the Linux recipe:
// Documentation). Inside a document every file is preceded by a header line "==> PATH <==" and
// followed by a newline if it does not end with one.
// Skipped: names starting with '.', symbolic links, empty files, files larger than
// max_file_bytes, binary files (a NUL byte, or more than 1% of the bytes not valid UTF-8).
//
// Split and order: a document is in validation iff seeded_hash(name) / 2^64 < val_fraction, a
// function of the name and seed only (adding files elsewhere changes nothing). Documents are
// written in the order of another seeded hash of their names (a deterministic shuffle, also
// what max_tokens keeps: training documents are taken in that order, and one that would pass
// the cap is left out). max_tokens caps the training split only: every validation document is
// kept, so the held-out sets do not shrink with the cap (the Linux recipe relies on it for its
// long validation documents). The same inputs give byte-identical outputs, whatever the thread
// count.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data/tokenizer.h"

namespace ttt::data {

enum class GroupMode { Code, Prose, Auto };
GroupMode parse_group_mode(const std::string& s);  // "code" | "prose" | "auto"
const char* group_mode_name(GroupMode m);

struct CorpusOptions {
  std::string source;     // directory (or one file)
  std::string tokenizer;  // PREFIX.model
  std::string out;        // output directory
  int64_t shard_tokens = int64_t{1} << 24;
  double val_fraction = 0.01;
  uint64_t seed = 0;
  int64_t min_val_doc_tokens = 32768;
  GroupMode mode = GroupMode::Auto;
  std::vector<std::string> prose_prefixes;
  int64_t max_tokens = 0;                 // cap on training tokens; 0 = no cap
  uint64_t max_file_bytes = 1ull << 20;   // larger files are skipped
  int threads = 0;                        // 0 = hardware concurrency
  bool progress = true;                   // progress lines on stderr
};

struct SplitSummary {
  int64_t documents = 0, tokens = 0, shards = 0;
};

struct CorpusSummary {
  SplitSummary train, val, val_long;
  int64_t files_scanned = 0, files_used = 0, skipped_binary = 0, skipped_large = 0, skipped_empty = 0;
  int64_t documents_capped = 0;  // left out by max_tokens
  uint64_t bytes_used = 0;
  double seconds = 0;
};

// Throws std::runtime_error (one line) on bad input: missing or empty source, no text files,
// missing tokenizer, output directory inside the source, unwritable output.
CorpusSummary build_corpus(const CorpusOptions& opt);

// The default recipe: Debian's linux-source-6.1 tarball -> extracted into cache_dir ->
// tokenizer (trained on a sample of the tree unless one is given) -> corpus with code grouped
// by directory and Documentation/ as prose.
inline CorpusOptions recipe_corpus_defaults() {
  CorpusOptions c;
  c.val_fraction = 0.025;
  return c;
}

struct LinuxRecipeOptions {
  std::string tarball = "/usr/src/linux-source-6.1.tar.xz";
  std::string cache_dir = "data";
  std::string out = "data/linux-6.1";
  std::string tokenizer;          // empty: train one, OUT/../linux-6.1-tokenizer-vV.model
  int vocab_size = 4096;
  uint64_t tokenizer_sample_bytes = 32ull << 20;
  // source, tokenizer, out, mode and prose_prefixes are set here. The recipe holds out 2.5% of
  // the documents (about 30 of at least 32K tokens and 300 shorter ones, 7M tokens in all).
  CorpusOptions corpus = recipe_corpus_defaults();
};
CorpusSummary build_linux_corpus(LinuxRecipeOptions opt);

std::string format_summary(const CorpusSummary& s);

}  // namespace ttt::data
