#include <cstdio>

#include "backend/backend.h"
#include "backend/cpu/bf16_gemm.h"
#include "backend/cpu/blas.h"
#include "backend/cpu/tile_gemm.h"
#include "backend/thread_pool.h"
#include "cli/commands.h"
#include "dist/communicator.h"

namespace ttt::cli {

void register_info(CLI::App& app, Registry& reg) {
  auto* sub = app.add_subcommand("info", "Show the compute setup: backends and devices, BLAS library and kernel, threads");
  reg.push_back({sub, [] {
                   for (const auto& be : backends()) {
                     std::string devs;
                     for (Device d : be.devices) devs += (devs.empty() ? "" : ", ") + d.str();
                     std::printf("backend      %-12s %-9s devices: %-12s %s\n", be.name.c_str(), be.built ? "built" : "not built",
                                 devs.empty() ? "none" : devs.c_str(), be.note.c_str());
                   }
                   const auto& b = blas::info();
                   std::printf("threads      %d (TTT_NUM_THREADS overrides)\n", num_threads());
                   std::printf("blas library %s\n", b.library.c_str());
                   std::printf("blas kernel  %s\n", b.core.c_str());
                   std::printf("chosen by    %s\n", b.how.c_str());
                   std::printf("f32 gemm     %s (float32 products of 16+ rows and attention's; TTT_NO_TILE_GEMM=1 keeps OpenBLAS)\n",
                               kernels::f32_gemm_kernel());
                   std::printf("bf16 gemv    %s (float32 x bf16 weights, one row)\n", kernels::bf16_gemv_kernel());
                   std::printf("bf16 gemm    %s (--compute bf16 products; TTT_NO_AMX=1 keeps AVX512_BF16)\n",
                               kernels::bf16_dot_kernel());
                   std::printf("mpi          %s\n", dist::have_mpi() ? "MPI (data-parallel `mpirun -np N ttt train`)"
                                                                   : "not built (install libopenmpi-dev and rebuild)");
                   std::printf("nccl         %s\n", dist::have_nccl() ? "built (for a CUDA backend)" : "not built (-DTTT_NCCL=ON)");
                   return 0;
                 }});
}

}  // namespace ttt::cli
