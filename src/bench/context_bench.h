// `ttt bench context`: prefill and decode cost per 1K tokens as the context grows, for several
// models side by side (llama-bench style tables). TTT-E2E should stay flat; full attention grows
// linearly per token.
//
// Prefill: e2e::prefill over T random tokens, timed per (model, T) (best of --repeats runs,
// interleaved over the models); seconds per 1K tokens = time / (T / 1024). The head's share is
// the same head work timed apart on random hidden states: every chunk's NLL (final norm, [b, V]
// logits in blocks, cross-entropy) and, for each chunk that takes a TTT step, the first-order
// backward to the head's input. Model FLOPs count the forward pass (matmuls and visible attention
// pairs) and, for TTT-E2E, what its inner steps must compute (prefill_inner_flops); the MFU
// column credits both. Decode: a Session is fed T tokens through its bulk path, then
// `decode_tokens` more are decoded one at a time and timed (the best of --repeats such rounds);
// state bytes are the session's memory after feeding. The
// default, 256 tokens, is one TTT chunk of the bench model: the one inner step a TTT-E2E session
// takes per chunk while decoding is then amortized as in a steady state (with 32 tokens it was
// counted eight times over).
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "model/model.h"

namespace ttt::bench {

struct NamedModel {
  std::string name;
  model::Model model;
};

// The bench model of the issues (vocab 4096, d 256, 8 layers, 4 heads, f 704, W 1024, b 256) as
// TTT-E2E (suffix 2), SWA and full attention, randomly initialized with `seed`; all_types adds
// the SWA/full hybrid and the recurrent baselines (Mamba 2, Gated DeltaNet, TTT-KVB), each hybrid
// with SWA every 4th block.
std::vector<NamedModel> builtin_context_models(uint64_t seed, bool all_types = false);

struct ContextBenchOptions {
  std::vector<int64_t> prefill_lengths = {1024, 2048, 4096, 8192, 16384, 32768};
  std::vector<int64_t> decode_lengths = {8192, 65536};
  int decode_tokens = 256;
  int64_t full_attention_max = 32768;  // longer contexts are skipped for full-attention models
  bool warm_up = false;  // one untimed prefill of each length first (pool and page faults warmed)
  // Timed runs per cell, best kept (a shared machine's neighbours only ever add time): prefills
  // interleaved over the models for each length; decoding as that many rounds of decode_tokens in
  // one session (the context grows by decode_tokens per round).
  int repeats = 1;
  uint64_t seed = 1;
  model::KvDtype kv_dtype = model::KvDtype::F32;  // attention caches of prefill and the sessions
};

struct ContextRow {
  std::string model, mode;  // mode: "prefill" or "decode"
  int64_t context = 0;
  bool skipped = false;
  double seconds = 0;        // prefill: whole run; decode: per token, every timed step
  // decode only: per token over the steps that took no TTT step (what the bandwidth bound is
  // about), and the extra seconds of a step that took one (a TTT-E2E session steps on a chunk once
  // the token after it arrives: after a context of whole chunks, the first decode step; 0 when no
  // timed step took one); chunk: tokens per TTT step (0 without TTT).
  double plain_seconds = 0;
  double ttt_step_seconds = 0;
  int64_t chunk = 0;
  double s_per_1k = 0;
  double flops = 0;          // prefill forward FLOPs
  double inner_flops = 0;    // prefill inner-step FLOPs (TTT-E2E)
  double head_seconds = 0;   // prefill: the head's share of `seconds` (final norm, head, loss; see below)
  double state_bytes = 0;    // decode only
  // decode only: the most tensor memory the session held above what was in use before it was
  // created (the pool's peak while it read the context and decoded), and the bytes one decode
  // step must read at least (the weights it touches: every matrix but the embedding table, which
  // gives one row, plus the state): the bandwidth bound is read_bandwidth / step_bytes tokens/s.
  double peak_bytes = 0;
  double step_bytes = 0;
};

struct ContextReport {
  double peak_gflops = 0;
  double read_gbps = 0;  // measured memory read bandwidth (GB/s, all threads)
  std::vector<ContextRow> rows;
};

// Forward FLOPs of block l's sequence mixer over T tokens: matmuls and visible attention pairs;
// for the recurrent mixers, the matmuls of their chunked forms.
double mixer_forward_flops(const model::ModelConfig& c, int64_t l, int64_t t);
// Forward FLOPs of a prefill of T tokens (mixers, MLPs, head).
double prefill_forward_flops(const model::ModelConfig& c, int64_t t);
// FLOPs of the inner steps a TTT-E2E prefill of T tokens also takes: per updated chunk, the
// backward through the head (input gradient) and the prime blocks (input gradients, attention
// backward, weight gradients of phi). Zero for models without prime blocks.
double prefill_inner_flops(const model::ModelConfig& c, int64_t t);

ContextReport run_context_bench(const std::vector<NamedModel>& models, const ContextBenchOptions& opt,
                                std::FILE* progress);
void print_context_bench(const ContextReport& r, const std::vector<NamedModel>& models, std::FILE* out);

}  // namespace ttt::bench
