#include "cli/commands.h"

namespace ttt::cli {
void register_bench(CLI::App& app, Registry& reg) {}
}  // namespace ttt::cli
