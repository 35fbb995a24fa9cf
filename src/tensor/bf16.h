// bfloat16 <-> float32: the upper half of a float32. Rounding to nearest even keeps a value's
// error within half a bf16 ulp (2^-9 relative); NaN stays a (quiet) NaN instead of rounding to
// infinity. Widening is exact.
#pragma once
#include <bit>
#include <cstdint>

namespace ttt {

inline uint16_t float_to_bf16(float f) {
  uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);  // NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

inline float bf16_to_float(uint16_t b) { return std::bit_cast<float>(static_cast<uint32_t>(b) << 16); }

}  // namespace ttt
