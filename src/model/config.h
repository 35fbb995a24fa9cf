// The model configuration (SPEC section 2), its strict JSON form, and the checkpoint's
// parameter list (SPEC section 5).
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "io/safetensors.h"

namespace ttt::model {

class MixerFamily;  // model/families/family.h

struct ModelConfig {
  int64_t vocab_size = 0, hidden_size = 0, num_hidden_layers = 0, num_attention_heads = 0,
          intermediate_size = 0;
  // The model family (src/model/families): "self_attention", "SWA", or a recurrent baseline:
  // "mamba2", "gated_deltanet", "ttt_kvb". Its own fields sit in its section below.
  std::string seq_modeling_block = "SWA";
  int64_t full_attention_every = 0;         // hybrid: with SWA, blocks with (l+1) % k == 0 use full attention
  int64_t sliding_window_size = 0;          // W
  int64_t mini_batch_size = 1024;           // b
  bool prime = false;
  int64_t suffix_len = 0;                   // S
  double rope_theta = 500000, rms_norm_eps = 1e-6;
  bool qk_norm = true, pre_norm = true, post_norm = true, tie_word_embeddings = true;
  int64_t bos_token_id = 0;
  double initializer_range = 0.02;
  // Recurrent baselines (SPEC section 9): with a recurrent seq_modeling_block, blocks with
  // (l+1) % swa_every == 0 are SWA blocks (window sliding_window_size) and the others use the
  // recurrent mixer (swa_every 0: every block). chunk_size: the chunked scan's chunk.
  int64_t swa_every = 0, chunk_size = 64;
  // Per-family sections: each family's own fields, read, written (under the JSON names of its
  // reference code, at the top level of config.json) and validated by its file in
  // src/model/families/.
  struct Mamba2Section {  // mamba2.cpp; named as in state-spaces/mamba (modules/mamba2.py)
    int64_t d_state = 64, d_conv = 4, expand = 2, headdim = 64, ngroups = 1;
  } mamba2;
  // gated_deltanet.cpp; named as in fla (layers/gated_deltanet.py): num_attention_heads heads of
  // key size head_dim() and value size expand_v * head_dim(); short convolutions of conv_size.
  struct GatedDeltaNetSection {
    int64_t expand_v = 2, conv_size = 4;
  } gated_deltanet;
  // ttt_kvb.cpp; named as in LaCT (lact_llm): window attention (sliding_window_size) beside
  // per-head SwiGLU fast weights (num_lact_heads heads, hidden inter_multi x head size) updated
  // once per lact_chunk_size tokens from a key-to-value dot-product loss with learned rates.
  struct TttKvbSection {
    int64_t num_lact_heads = 4, lact_chunk_size = 2048;
    double inter_multi = 1.0;
  } ttt_kvb;
  int64_t lact_head_dim() const { return ttt_kvb.num_lact_heads > 0 ? hidden_size / ttt_kvb.num_lact_heads : 0; }
  int64_t lact_hidden() const { return static_cast<int64_t>(static_cast<double>(lact_head_dim()) * ttt_kvb.inter_multi); }

  int64_t head_dim() const;                 // hidden_size / num_attention_heads
  bool has_prime(int64_t layer) const;      // prime && layer >= L - suffix_len
  int64_t first_prime_layer() const;        // L - S if prime else L
  int64_t window_of(int64_t layer) const;   // 0 = full causal; W for SWA blocks (hybrid rule applied)
  bool is_recurrent(int64_t layer) const;   // a block of the recurrent mixer (not attention)
  bool recurrent_model() const;             // a recurrent baseline's family (false for an unknown name)
  const MixerFamily& family() const;        // throws std::runtime_error for an unknown seq_modeling_block
  int64_t mamba_d_inner() const { return mamba2.expand * hidden_size; }
  int64_t mamba_heads() const { return mamba2.headdim > 0 ? mamba_d_inner() / mamba2.headdim : 0; }
  int64_t mamba_conv_dim() const { return mamba_d_inner() + 2 * mamba2.ngroups * mamba2.d_state; }
};

// Throws std::runtime_error ("config: <field> ...", one line) unless `c` is a valid config.
// Rules: the five shape fields positive; hidden_size divisible by num_attention_heads with an even
// head_dim; seq_modeling_block a registered family, whose own rules apply (SWA needs
// sliding_window_size >= 1, ...);
// full_attention_every, sliding_window_size >= 0; mini_batch_size >= 1; suffix_len in [0, L] and
// >= 1 when prime; bos_token_id in [0, vocab_size); rope_theta, rms_norm_eps,
// initializer_range positive and finite; qk_norm, pre_norm, post_norm true (the only variant this
// engine implements, as in the paper); sizes below 2^31, num_hidden_layers <= 100000, and a
// parameter count that fits int64.
void validate_config(const ModelConfig& c);

// Strict parse: required fields vocab_size, hidden_size, num_hidden_layers, num_attention_heads,
// intermediate_size; the others default as above. Wrong JSON types, duplicate fields and invalid
// values throw std::runtime_error naming the field. Unknown fields are ignored.
ModelConfig config_from_json(const std::string& text);
std::string config_to_json(const ModelConfig& c);  // pretty-printed, every field
ModelConfig load_config(const std::string& path);  // errors name the file
void save_config(const ModelConfig& c, const std::string& path);  // validates, then writes atomically

// Name -> shape of every parameter of SPEC section 5, in a fixed order: embed.weight; then for
// each block l: attn_norm.weight, attn.wq, attn.wk, attn.wv, attn.wo, attn.q_norm.weight,
// attn.k_norm.weight, attn_post_norm.weight, mlp_norm.weight, mlp.w1, mlp.w3, mlp.w2,
// mlp_post_norm.weight and, in prime blocks, prime_norm.weight, prime.w1, prime.w3, prime.w2,
// prime_post_norm.weight; then final_norm.weight; then lm_head when embeddings are untied.
std::vector<std::pair<std::string, std::vector<int64_t>>> parameter_shapes(const ModelConfig& c);

// Checks that a loaded checkpoint holds exactly the parameters of parameter_shapes(c) with exactly
// those shapes; throws std::runtime_error naming `path` and the first missing tensor, wrong shape
// ("blocks.3.mlp.w1 has shape [256, 700], config says [256, 704]") or unexpected tensor.
void check_checkpoint(const ModelConfig& c, const io::TensorFile& file, const std::string& path);

}  // namespace ttt::model
