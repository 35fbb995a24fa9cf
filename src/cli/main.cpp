// `ttt`: the one command-line entry point. Subcommands live in cli/cmd_*.cpp.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>

#include "cli/commands.h"
#include "io/messages.h"

int main(int argc, char** argv) {
  CLI::App app{"ttt: End-to-End Test-Time Training (TTT-E2E) engine in C++.\n"
               "With no subcommand, runs the demonstration (`ttt demo`)."};
  app.require_subcommand(0, 1);
  ttt::cli::Registry reg;
  ttt::cli::register_info(app, reg);
  ttt::cli::register_demo(app, reg);
  ttt::cli::register_model_commands(app, reg);
  ttt::cli::register_train_commands(app, reg);
  ttt::cli::register_eval_commands(app, reg);
  ttt::cli::register_experiment(app, reg);
  ttt::cli::register_generate(app, reg);
  ttt::cli::register_data_commands(app, reg);
  ttt::cli::register_import(app, reg);
  ttt::cli::register_bench(app, reg);
  ttt::cli::register_serve(app, reg);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    for (auto& c : reg)
      if (c.app->parsed()) return c.run();
    return ttt::cli::run_demo_default();
  } catch (const std::exception& e) {
    // One line, always: messages may quote names and values from hostile files.
    std::fprintf(stderr, "ttt: error: %s\n", ttt::io::one_line(e.what(), 4000).c_str());
    return 1;
  }
}
