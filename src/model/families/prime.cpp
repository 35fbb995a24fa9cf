// The prime MLPs of TTT-E2E (SPEC section 2): in the last suffix_len blocks of any family, a
// second SwiGLU MLP whose weights are the fast weights the inner step updates.
#include "model/config.h"
#include "model/families/family.h"

namespace ttt::model {

void prime_parameter_shapes(const ModelConfig& c, const std::string& p, ParamShapes& out) {
  const int64_t d = c.hidden_size, f = c.intermediate_size;
  out.push_back({p + "prime_norm.weight", {d}});
  out.push_back({p + "prime.w1", {d, f}});
  out.push_back({p + "prime.w3", {d, f}});
  out.push_back({p + "prime.w2", {f, d}});
  out.push_back({p + "prime_post_norm.weight", {d}});
}

std::string describe_prime(const ModelConfig& c) {
  return "SWA (window " + std::to_string(c.sliding_window_size) + ") + prime MLP in the last block, inner step every " +
         std::to_string(c.mini_batch_size) + " tokens";
}

}  // namespace ttt::model
