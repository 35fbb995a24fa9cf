#include "train/convert.h"

#include <map>
#include <stdexcept>

#include "model/families/family.h"
#include "autodiff/ops.h"

namespace ttt::train {

model::Model convert_to_ttt(const model::Model& m, const ConvertOptions& opt) {
  model::ModelConfig c = m.config();
  if (c.prime) throw std::invalid_argument("convert: the model already has prime blocks");
  const int64_t L = c.num_hidden_layers;
  c.prime = true;
  c.suffix_len = opt.suffix_len > 0 ? opt.suffix_len : std::max<int64_t>(1, L / 4);
  if (c.suffix_len > L) throw std::invalid_argument("convert: suffix_len exceeds the number of layers");
  if (!c.family().windowed_attention() || c.full_attention_every != 0) {
    if (opt.window <= 0)
      throw std::invalid_argument("convert: the model uses full attention; give --window for the SWA of TTT-E2E");
    c.seq_modeling_block = "SWA";
    c.full_attention_every = 0;
  }
  if (opt.window > 0) c.sliding_window_size = opt.window;
  if (opt.mini_batch_size > 0) c.mini_batch_size = opt.mini_batch_size;
  model::validate_config(c);

  std::map<std::string, Tensor> t;
  for (auto& [n, v] : m.named_parameters()) t[n] = clone(v.detach());
  Rng rng(opt.seed);
  for (auto& [name, shape] : model::parameter_shapes(c)) {
    if (t.count(name)) continue;
    if (name.find("prime_post_norm") != std::string::npos)
      t[name] = zeros(shape);  // the prime branch contributes exactly zero at the start
    else if (name.find("norm") != std::string::npos)
      t[name] = ones(shape);
    else
      t[name] = randn(shape, rng, c.initializer_range);
  }
  return model::Model::from_tensors(c, std::move(t));
}

}  // namespace ttt::train
