// Intel AMX (Advanced Matrix Extensions: AMX-TILE and AMX-BF16, Sapphire Rapids and later) for
// the bf16 kernels of `--compute bf16`: whether it may be used, and the one tile configuration
// they share (eight tiles of 16 rows x 64 bytes). One tdpbf16ps multiplies a 16 x 32 bf16 tile by
// 16 pairs x 16 columns of bf16 (the right operand's rows hold pairs of k side by side) into a
// 16 x 16 float32 tile: 16K flops. GCC's tile intrinsics spell the tile number into the
// instruction, so tile numbers are literals in the kernels.
#pragma once
#include <immintrin.h>

#include <cstdint>

#define TTT_AMX __attribute__((target("amx-tile,amx-bf16")))

namespace ttt::kernels {

// True where the CPU has AMX-TILE and AMX-BF16, the OS saves the tile state and the kernel lets
// this process use it (arch_prctl ARCH_REQ_XCOMP_PERM, Linux 5.16+), unless TTT_NO_AMX is set
// or a test turned it off (set_bf16_dot_no_amx, bf16_gemm.h).
bool amx_in_use();

struct AmxTileConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};
// In static storage: GCC's _tile_loadconfig tells the compiler it reads 8 bytes, so the stores
// that fill a local config were optimized away.
extern const AmxTileConfig kAmxTiles;

// Per thread, around a run of tile instructions (the configuration is thread state).
TTT_AMX inline void amx_begin() { _tile_loadconfig(&kAmxTiles); }
TTT_AMX inline void amx_end() { _tile_release(); }

// out[i * ld_out + j] = in[j * ld_in + i] for i, j < 16, in registers (unpacks of 32 and 64
// bits, then 128-bit lane shuffles): moves bits only, so it serves any 32-bit element.
// (GCC 12's headers hand the unpack builtins an undefined vector, which it then warns about.)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
__attribute__((target("avx512f"))) inline void transpose16x16(const float* in, int64_t ld_in, float* out,
                                                              int64_t ld_out) {
  __m512 r[16], t[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(in + i * ld_in);
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
    r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
    r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
    r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
  }
  for (int h = 0; h < 16; h += 8)
    for (int i = 0; i < 4; ++i) {
      t[h + i] = _mm512_shuffle_f32x4(r[h + i], r[h + i + 4], 0x88);
      t[h + i + 4] = _mm512_shuffle_f32x4(r[h + i], r[h + i + 4], 0xdd);
    }
  for (int i = 0; i < 8; ++i) {
    _mm512_storeu_ps(out + i * ld_out, _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88));
    _mm512_storeu_ps(out + (i + 8) * ld_out, _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd));
  }
}
#pragma GCC diagnostic pop

}  // namespace ttt::kernels
