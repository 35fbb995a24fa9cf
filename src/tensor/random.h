// Deterministic random numbers: the same seed gives the same tensors on every platform
// (std::normal_distribution is implementation-defined, so we do Box-Muller ourselves).
#pragma once
#include <cstdint>

namespace ttt {

class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull) {}
  uint64_t next_u64();        // splitmix64
  double uniform();           // [0, 1)
  double normal();            // standard normal
  uint64_t state() const { return state_; }
  void set_state(uint64_t s) { state_ = s; }

 private:
  uint64_t state_;
};

}  // namespace ttt
