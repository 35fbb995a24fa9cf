// `ttt tokenizer train`, `ttt tokenize`, `ttt detokenize`, `ttt data build`, `ttt data info`:
// the tokenizer and the corpus pipeline (src/data).
#include <chrono>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "data/corpus.h"
#include "data/dataset.h"
#include "data/text.h"
#include "data/tokenizer.h"
#include "io/atomic_file.h"
#include "io/tokens.h"

namespace ttt::cli {
namespace {

struct TokTrainArgs {
  std::vector<std::string> inputs;
  std::string out;
  data::TokenizerTrainOptions opt;
  uint64_t sample_bytes = 64ull << 20;
} g_tt;

struct TokenizeArgs {
  std::string tokenizer, in, out;
  bool bos = false;
} g_tok, g_detok;

struct DataBuildArgs {
  data::CorpusOptions c;
  std::string mode = "auto";
  bool linux_recipe = false, quiet = false, val_fraction_given = false;
  data::LinuxRecipeOptions linux;
} g_db;

struct DataInfoArgs {
  std::string dir;
  bool no_verify = false;
} g_di;

int run_tokenizer_train() {
  const auto t0 = std::chrono::steady_clock::now();
  const uint64_t bytes = data::Tokenizer::train_files(g_tt.inputs, g_tt.out, g_tt.opt, g_tt.sample_bytes);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const auto tok = data::Tokenizer::load(g_tt.out + ".model");
  std::printf("wrote %s.model and %s.vocab: vocab %d (BOS 0, UNK 1, EOS 2, bytes 3..258), trained on %.1f MB in %.1f s\n",
              g_tt.out.c_str(), g_tt.out.c_str(), tok.vocab_size(), static_cast<double>(bytes) / 1e6, s);
  return 0;
}

int run_tokenize() {
  const auto tok = data::Tokenizer::load(g_tok.tokenizer);
  const std::string text = data::read_file(g_tok.in);
  std::vector<int32_t> ids;
  if (g_tok.bos) {
    if (tok.bos_id() < 0) throw std::runtime_error("--bos: tokenizer " + g_tok.tokenizer + " has no BOS token");
    ids.push_back(tok.bos_id());
  }
  tok.encode_append(text, ids);
  io::write_tokens(g_tok.out, ids);
  std::fprintf(stderr, "%zu bytes -> %zu tokens (%.2f bytes/token)\n", text.size(), ids.size(),
               ids.empty() ? 0.0 : static_cast<double>(text.size()) / static_cast<double>(ids.size()));
  return 0;
}

int run_detokenize() {
  const auto tok = data::Tokenizer::load(g_detok.tokenizer);
  const auto ids = io::read_tokens(g_detok.in);
  std::string text;
  try {
    text = tok.decode(ids);
  } catch (const std::exception& e) {
    throw std::runtime_error(g_detok.in + ": " + e.what());
  }
  if (g_detok.out.empty()) {
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
  } else {
    io::write_file_atomic(g_detok.out, text.data(), text.size());
  }
  return 0;
}

int run_data_build() {
  auto& a = g_db;
  a.c.progress = !a.quiet;
  data::CorpusSummary s;
  if (a.linux_recipe) {
    if (!a.c.source.empty()) throw std::runtime_error("--linux builds from the linux-source tarball; drop --source");
    if (!a.val_fraction_given) a.c.val_fraction = data::recipe_corpus_defaults().val_fraction;
    a.linux.corpus = a.c;
    if (!a.c.out.empty()) a.linux.out = a.c.out;
    a.linux.tokenizer = a.c.tokenizer;
    s = data::build_linux_corpus(a.linux);
    std::printf("corpus %s\n", a.linux.out.c_str());
  } else {
    if (a.c.source.empty()) throw std::runtime_error("data build: give --source DIR (or --linux for the default recipe)");
    if (a.c.tokenizer.empty()) throw std::runtime_error("data build: give --tokenizer PREFIX.model (train one with `ttt tokenizer train`)");
    if (a.c.out.empty()) throw std::runtime_error("data build: give --out DIR");
    a.c.mode = data::parse_group_mode(a.mode);
    s = data::build_corpus(a.c);
    std::printf("corpus %s\n", a.c.out.c_str());
  }
  std::printf("%s\n", data::format_summary(s).c_str());
  return 0;
}

int run_data_info() {
  const auto t0 = std::chrono::steady_clock::now();
  const auto ds = data::Dataset::open(g_di.dir, !g_di.no_verify);
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%s\n", ds.describe().c_str());
  for (const char* name : {"train", "val", "val-long"}) {
    const auto& sp = ds.split(name);
    int64_t longest = 0;
    for (const auto& d : sp.documents) longest = std::max(longest, d.length);
    std::printf("%-8s %6zu documents %12lld tokens %3zu shards, longest document %lld tokens\n", name, sp.documents.size(),
                static_cast<long long>(sp.tokens), sp.shards.size(), static_cast<long long>(longest));
  }
  std::printf("%s in %.2f s\n", g_di.no_verify ? "opened" : "verified", sec);
  return 0;
}

}  // namespace

void register_data_commands(CLI::App& app, Registry& reg) {
  auto* tk = app.add_subcommand("tokenizer", "Tokenizer (SentencePiece BPE with byte fallback)");
  tk->require_subcommand(1);
  auto* tt = tk->add_subcommand("train", "Train a tokenizer on text files: writes PREFIX.model and PREFIX.vocab");
  tt->add_option("--input", g_tt.inputs, "text files or directories (searched recursively; binary files skipped)")->required();
  tt->add_option("--vocab-size", g_tt.opt.vocab_size, "vocabulary size (>= 260)")->capture_default_str();
  tt->add_option("--out", g_tt.out, "output prefix")->required();
  tt->add_option("--sample-bytes", g_tt.sample_bytes, "train on a deterministic sample of files of about this many bytes")
      ->capture_default_str();
  tt->add_option("--character-coverage", g_tt.opt.character_coverage, "share of characters that get pieces (rest: byte pieces)")
      ->capture_default_str();
  tt->add_option("--input-sentence-size", g_tt.opt.input_sentence_size, "sentences SentencePiece samples (0 = all)")
      ->capture_default_str();
  tt->add_option("--seed", g_tt.opt.seed, "sampling seed")->capture_default_str();
  tt->add_option("--threads", g_tt.opt.num_threads, "training threads (0 = all cores)")->capture_default_str();
  tt->add_flag("--verbose", g_tt.opt.verbose, "SentencePiece's own log on stderr");
  reg.push_back({tt, run_tokenizer_train});

  auto* te = app.add_subcommand("tokenize", "Text file -> int32 little-endian token file");
  te->add_option("--tokenizer", g_tok.tokenizer, "SentencePiece .model, tiktoken rank file or tokenizer.json")->required();
  te->add_option("--in", g_tok.in, "text file")->required();
  te->add_option("--out", g_tok.out, "token file")->required();
  te->add_flag("--bos", g_tok.bos, "start with the tokenizer's BOS (ours: 0, Llama 3: 128000), as every corpus document does");
  reg.push_back({te, run_tokenize});

  auto* td = app.add_subcommand("detokenize", "int32 token file -> text (stdout unless --out)");
  td->add_option("--tokenizer", g_detok.tokenizer, "SentencePiece .model, tiktoken rank file or tokenizer.json")->required();
  td->add_option("--in", g_detok.in, "token file")->required();
  td->add_option("--out", g_detok.out, "text file (default: stdout)");
  reg.push_back({td, run_detokenize});

  auto* d = app.add_subcommand("data", "Corpus pipeline: text tree -> tokenized document shards");
  d->require_subcommand(1);
  auto* b = d->add_subcommand("build", "Build a corpus (shards + index.json) from a tree of text files, or the Linux recipe");
  b->add_option("--source", g_db.c.source, "directory of text files");
  b->add_option("--tokenizer", g_db.c.tokenizer, "SentencePiece .model, tiktoken rank file or tokenizer.json (with --linux: optional, trained if absent)");
  b->add_option("--out", g_db.c.out, "output directory (with --linux default data/linux-6.1)");
  b->add_option("--shard-tokens", g_db.c.shard_tokens, "tokens per shard (documents are never split)")->capture_default_str();
  b->add_option("--val-fraction", g_db.c.val_fraction, "share of documents held out, by hash of name and seed (--linux: 0.025)")
      ->capture_default_str()
      ->each([](const std::string&) { g_db.val_fraction_given = true; });
  b->add_option("--seed", g_db.c.seed, "split and order seed")->capture_default_str();
  b->add_option("--min-val-doc-tokens", g_db.c.min_val_doc_tokens, "validation documents at least this long go to val-long")
      ->capture_default_str();
  b->add_option("--mode", g_db.mode, "code (a document per directory), prose (per file) or auto (by extension)")->capture_default_str();
  b->add_option("--max-tokens", g_db.c.max_tokens, "cap on the training split in tokens (0 = none); held-out documents are always kept")->capture_default_str();
  b->add_option("--max-file-bytes", g_db.c.max_file_bytes, "skip larger files")->capture_default_str();
  b->add_option("--threads", g_db.c.threads, "tokenizer threads (0 = all cores)")->capture_default_str();
  b->add_flag("--quiet", g_db.quiet, "no progress lines on stderr");
  b->add_flag("--linux", g_db.linux_recipe, "default recipe: Debian's linux-source-6.1 (code by directory, Documentation/ as prose)");
  b->add_option("--tarball", g_db.linux.tarball, "with --linux: the source tarball")->capture_default_str();
  b->add_option("--cache-dir", g_db.linux.cache_dir, "with --linux: where the tree is extracted")->capture_default_str();
  b->add_option("--vocab-size", g_db.linux.vocab_size, "with --linux and no --tokenizer: vocabulary of the trained tokenizer")
      ->capture_default_str();
  b->add_option("--tokenizer-sample-bytes", g_db.linux.tokenizer_sample_bytes, "with --linux: tokenizer training sample")
      ->capture_default_str();
  reg.push_back({b, run_data_build});

  auto* i = d->add_subcommand("info", "Open and verify a corpus; print its splits");
  i->add_option("dir", g_di.dir, "corpus directory")->required();
  i->add_flag("--no-verify", g_di.no_verify, "skip checksums and token range checks");
  reg.push_back({i, run_data_info});
}

}  // namespace ttt::cli
