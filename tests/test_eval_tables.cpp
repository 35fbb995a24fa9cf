// The evaluation tables of `ttt eval-long`, `ttt probe` and the main job (eval/report_tables.h)
// against direct prefills: the losses they report are the token-weighted means a prefill of
// each document gives, their intervals bracket them, the TTT-off ablation is a prefill with
// TTT off, and a model compared with itself differs by exactly zero. Run for an attention model,
// TTT-E2E and each recurrent mixer.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "data/corpus.h"
#include "data/dataset.h"
#include "eval/report_tables.h"
#include "model/model.h"
#include "ttt/inner_loop.h"

namespace {

namespace fs = std::filesystem;
using namespace ttt;

class EvalTablesTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = fs::path(::testing::TempDir()) / ("ttt_eval_tables_" + std::to_string(::getpid()));
    fs::remove_all(root_);
    std::mt19937 rng(5);
    for (int d = 0; d < 14; ++d) {
      fs::create_directories(root_ / "src" / ("dir" + std::to_string(d)));
      std::ofstream f(root_ / "src" / ("dir" + std::to_string(d)) / "a.c");
      for (int i = 0; i < (d % 2 ? 40 + 5 * d : 4 + d); ++i)  // odd: long documents, even: short ones
        f << "static int f" << rng() % 1000 << "(int x)\n{\n\treturn x * " << rng() % 100 << ";\n}\n";
    }
    data::TokenizerTrainOptions o;
    o.vocab_size = 300;
    o.num_threads = 2;
    data::Tokenizer::train_files({(root_ / "src").string()}, (root_ / "tok").string(), o);
    data::CorpusOptions c;
    c.source = (root_ / "src").string();
    c.tokenizer = (root_ / "tok.model").string();
    c.out = (root_ / "corpus").string();
    c.val_fraction = 0.6;
    c.min_val_doc_tokens = 400;
    c.threads = 2;
    c.progress = false;
    data::build_corpus(c);
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    fs::remove_all(root_, ec);
  }
  static model::ModelConfig config(const std::string& kind, int64_t vocab) {
    model::ModelConfig c;
    c.vocab_size = vocab;
    c.hidden_size = 16;
    c.num_hidden_layers = 4;
    c.num_attention_heads = 2;
    c.intermediate_size = 24;
    c.sliding_window_size = 24;
    c.mini_batch_size = 16;
    c.rope_theta = 10000;
    c.initializer_range = 0.1;
    c.seq_modeling_block = "SWA";
    if (kind == "ttt-e2e") {
      c.prime = true;
      c.suffix_len = 1;
    } else if (kind == "mamba2") {
      c.seq_modeling_block = "mamba2";
      c.swa_every = 4;
      c.chunk_size = 16;
      c.mamba2.d_state = 8;
      c.mamba2.headdim = 8;
    } else if (kind == "gated_deltanet") {
      c.seq_modeling_block = "gated_deltanet";
      c.swa_every = 4;
      c.chunk_size = 16;
    } else if (kind == "ttt_kvb") {
      c.seq_modeling_block = "ttt_kvb";
      c.ttt_kvb.num_lact_heads = 2;
      c.ttt_kvb.lact_chunk_size = 24;
    }
    return c;
  }
  static inline fs::path root_;
};

TEST_F(EvalTablesTest, TablesAgreeWithDirectPrefills) {
  const auto ds = data::Dataset::open((root_ / "corpus").string());
  ASSERT_GE(ds.split("val-long").documents.size(), 2u);
  ASSERT_GE(ds.split("val").documents.size(), 1u);
  std::vector<model::Model> ms;
  const std::vector<std::string> kinds = {"SWA", "ttt-e2e", "mamba2", "gated_deltanet", "ttt_kvb"};
  for (auto& k : kinds) ms.push_back(model::Model::init(config(k, ds.vocab_size()), 3));
  std::vector<eval::NamedModel> named;
  for (size_t i = 0; i < kinds.size(); ++i) named.push_back({kinds[i], &ms[i]});
  named.push_back({"ttt-e2e (TTT off)", &ms[1], false});

  const std::vector<int64_t> lengths = {64, 128};
  const auto le = eval::long_context_eval(named, ds, lengths, 3, nullptr);
  ASSERT_GE(le.documents, 2);
  std::vector<std::vector<int32_t>> docs;
  for (size_t i = 0; i < ds.split("val-long").documents.size() && static_cast<int64_t>(docs.size()) < le.documents; ++i)
    if (ds.split("val-long").documents[i].length >= 129) docs.push_back(ds.document("val-long", i));
  ASSERT_EQ(static_cast<int64_t>(docs.size()), le.documents);
  for (size_t m = 0; m < named.size(); ++m) {
    e2e::TTTOptions opt;
    opt.ttt = named[m].ttt;
    for (size_t j = 0; j < lengths.size(); ++j) {
      // Loss over [0, L): the token-weighted mean of prefills of length L.
      const int64_t L = lengths[j];
      double s = 0, n = 0, s_late = 0, n_late = 0;
      for (auto& d : docs) {
        std::vector<int32_t> in(d.begin(), d.begin() + L), tg(d.begin() + 1, d.begin() + L + 1);
        const auto r = e2e::prefill(*named[m].model, in, tg, opt);
        for (int64_t i = 0; i < L; ++i)
          if (tg[i] != 0) {
            s += r.nll[i];
            n += 1;
            if (i >= L / 2) {
              s_late += r.nll[i];
              n_late += 1;
            }
          }
      }
      EXPECT_NEAR(le.loss_upto[m][j], s / n, 1e-5) << named[m].name << " L " << L;
      EXPECT_NEAR(le.loss_late[m][j], s_late / n_late, 1e-5) << named[m].name << " L " << L;
      const auto& iv = le.ci_upto[m][j];
      EXPECT_EQ(iv.value, le.loss_upto[m][j]);
      EXPECT_LE(iv.lo, iv.value);
      EXPECT_GE(iv.hi, iv.value);
      EXPECT_EQ(iv.units, le.documents);
      const auto self = le.late_difference(m, j, m, j);
      EXPECT_EQ(self.value, 0.0);
      EXPECT_EQ(self.lo, 0.0);
      EXPECT_EQ(self.hi, 0.0);
    }
  }
  // The ablation really differs from TTT-E2E with its inner steps.
  EXPECT_NE(le.loss_upto[1][1], le.loss_upto[5][1]);
  const auto d = le.late_difference(1, 1, 5, 1);
  EXPECT_NEAR(d.value, le.loss_late[1][1] - le.loss_late[5][1], 1e-12);

  // Held-out loss over whole documents.
  const auto held = eval::split_loss_eval(named, ds, "val", 100, 1 << 20, 400, nullptr);
  ASSERT_GE(held.documents, 1);
  for (size_t m = 0; m < named.size(); ++m) {
    e2e::TTTOptions opt;
    opt.ttt = named[m].ttt;
    double s = 0, n = 0;
    for (size_t i = 0; i < static_cast<size_t>(held.documents); ++i) {
      auto doc = ds.document("val", i);
      if (doc.size() > 401) doc.resize(401);
      std::vector<int32_t> in(doc.begin(), doc.end() - 1), tg(doc.begin() + 1, doc.end());
      const auto r = e2e::prefill(*named[m].model, in, tg, opt);
      for (size_t k = 0; k < tg.size(); ++k)
        if (tg[k] != 0) {
          s += r.nll[k];
          n += 1;
        }
    }
    EXPECT_NEAR(held.loss[m].value, s / n, 1e-5) << named[m].name;
    EXPECT_EQ(held.difference(m, m).value, 0.0);
  }

  // Recall probe: per-trial values average to the table's means.
  const auto sp = eval::span_probe_eval(named, ds, {8, 40}, 6, 3, nullptr);
  for (size_t m = 0; m < named.size(); ++m)
    for (auto& p : sp.probes[m]) {
      ASSERT_EQ(p.repeat_trials.size(), 3u);
      double a = 0, b = 0;
      for (int t = 0; t < 3; ++t) {
        a += p.repeat_trials[t] / 3;
        b += p.control_trials[t] / 3;
      }
      EXPECT_NEAR(p.repeat_nll, a, 1e-9);
      EXPECT_NEAR(p.control_nll, b, 1e-9);
    }
  char* buf = nullptr;
  size_t len = 0;
  std::FILE* f = open_memstream(&buf, &len);
  eval::print_long_eval(le, f);
  eval::print_span_probe(sp, f);
  std::fclose(f);
  const std::string text(buf, len);
  std::free(buf);
  for (auto& nm : named) EXPECT_NE(text.find("| " + nm.name + " | "), std::string::npos) << nm.name;
}

}  // namespace
