#include "backend/cpu/amx.h"

#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <string>

#include "backend/cpu/bf16_gemm.h"

namespace ttt::kernels {
namespace {

// CPUID (AMX-TILE, AMX-BF16), the OS's saved state (XCR0 bits 17-18) and the permission asked of
// the kernel once per process.
bool amx_available() {
  static const bool ok = [] {
    if (const char* no = std::getenv("TTT_NO_AMX"); no && *no && std::string(no) != "0") return false;
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    const bool tile = d & (1u << 24), bf16 = d & (1u << 22);
    if (!tile || !bf16) return false;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return false;  // OSXSAVE
    unsigned xlo, xhi;
    __asm__("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
    if ((xlo & (3u << 17)) != (3u << 17)) return false;
    constexpr long kReqXcompPerm = 0x1023, kXtileData = 18;
    return syscall(SYS_arch_prctl, kReqXcompPerm, kXtileData) == 0;
  }();
  return ok;
}

std::atomic<bool> g_no_amx{false};  // tests: the AVX512_BF16 kernels on an AMX CPU

constexpr AmxTileConfig all_tiles() {
  AmxTileConfig cfg;
  for (int t = 0; t < 8; ++t) {
    cfg.colsb[t] = 64;
    cfg.rows[t] = 16;
  }
  return cfg;
}

}  // namespace

alignas(64) const AmxTileConfig kAmxTiles = all_tiles();

bool amx_in_use() { return !g_no_amx.load(std::memory_order_relaxed) && amx_available(); }

void set_bf16_dot_no_amx(bool no_amx) { g_no_amx.store(no_amx, std::memory_order_relaxed); }

}  // namespace ttt::kernels
