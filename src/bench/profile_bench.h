// `ttt bench profile`: where the time of a workload goes, by backend op (backend/profiler.h), on
// the bench model: TTT-E2E prefill, TTT-E2E decoding, a TTT-E2E meta-gradient step and an SWA
// pretraining step; or on a model directory (the official shapes). Each runs once unprofiled
// (warm-up), then once profiled.
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace ttt::bench {

struct ProfileOptions {
  std::vector<std::string> workloads = {"prefill", "decode", "meta", "pretrain"};
  int64_t prefill_len = 8192;
  int64_t train_len = 4096;     // meta and pretrain sequences
  int64_t decode_context = 8192;
  int decode_tokens = 256;  // one chunk of the bench model: one inner step, as in steady decoding
  uint64_t seed = 1;
  bool by_shape = false;  // matrix products one row per shape
  int top = 0;            // print only the first N rows (0: all)
  // A model directory instead of the built-in bench models: prefill and decode read with it; meta
  // and pretrain train it (meta for a model with prime blocks, pretrain otherwise).
  std::string model_dir;
  std::string weights = "auto";  // f32, bf16, auto (as in the file)
  bool bf16_products = false;    // --compute bf16: bf16 weights, bf16 x bf16 products (prefill, decode)
  std::string kv_dtype = "f32";  // attention's window cache in prefill and decode: f32 or bf16
};

void run_profile_bench(const ProfileOptions& o, std::FILE* out, std::FILE* progress);

}  // namespace ttt::bench
