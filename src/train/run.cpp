#include "train/run.h"

#include <filesystem>
#include <stdexcept>

#include "dist/communicator.h"
#include "model/model.h"
#include "train/sequence_source.h"
#include "ttt/meta_gradient.h"

namespace ttt::train {

TrainSummary run_training(TrainRequest a, std::FILE* progress) {
  if (a.model.empty() == a.config.empty()) throw std::invalid_argument("give exactly one of --model and --config");
  if (a.tokens.empty() == a.data.empty()) throw std::invalid_argument("give the training data with --data or --tokens");
  validate_options(a.o);  // before anything is read or created
  model::Model m = (a.model.empty() ? model::Model::init(model::load_config(a.config), a.seed)
                                    : model::Model::load(a.model, model::Weights::F32))  // trains: float32
                       .to(a.device);
  auto data = a.data.empty() ? token_file_source(a.tokens, a.val_fraction, a.seed) : corpus_source(a.data, a.seed);
  if (a.needle_mix > 0) {
    if (a.tokenizer.empty()) {
      if (a.data.empty()) throw std::invalid_argument("--needle-mix with --tokens needs --tokenizer PREFIX.model");
      a.tokenizer = (std::filesystem::path(a.data) / "tokenizer.model").string();
    }
    data = needle_mix_source(std::move(data), a.tokenizer, a.needle_mix, a.needle_pairs, a.seed);
  }
  if (a.no_remat) a.o.graph_budget_mb = INT64_MAX;
  if (a.o.graph_budget_mb < 0 && dist::local_ranks() > 1)  // ranks on one node share its memory
    a.o.graph_budget_mb = static_cast<int64_t>(e2e::GraphBudget::machine_default().bytes >> 20) / dist::local_ranks();
  a.o.seed = a.seed;
  const auto& c = m.config();
  if (progress)
    std::fprintf(progress, "training %s model (%s%s, L=%lld, d=%lld) on %s for %lld steps of %lld x %lld tokens -> %s\n",
                 c.prime ? "TTT-E2E (meta-learning)" : "a pretraining", c.seq_modeling_block.c_str(),
                 c.full_attention_every ? " hybrid" : "", static_cast<long long>(c.num_hidden_layers),
                 static_cast<long long>(c.hidden_size), data->describe().c_str(), static_cast<long long>(a.o.steps),
                 static_cast<long long>(a.o.batch), static_cast<long long>(a.o.seq_len), a.o.out_dir.c_str());
  return train(m, *data, a.o, progress);
}

}  // namespace ttt::train
