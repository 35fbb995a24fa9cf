#include <cstdio>

#include "backend/blas.h"
#include "backend/thread_pool.h"
#include "cli/commands.h"

namespace ttt::cli {

void register_info(CLI::App& app, Registry& reg) {
  auto* sub = app.add_subcommand("info", "Show the compute setup: BLAS library and kernel, threads");
  reg.push_back({sub, [] {
                   const auto& b = blas::info();
                   std::printf("threads      %d (TTT_NUM_THREADS overrides)\n", num_threads());
                   std::printf("blas library %s\n", b.library.c_str());
                   std::printf("blas kernel  %s\n", b.core.c_str());
                   std::printf("chosen by    %s\n", b.how.c_str());
                   return 0;
                 }});
}

}  // namespace ttt::cli
