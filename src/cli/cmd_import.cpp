// `ttt import`: an official TTT-E2E checkpoint (orbax) to a model directory of this engine
// (model/orbax_import.h does the work). This command finds the converter (scripts/ttt_import.py)
// and the Python that runs it, in the environment `scripts/install-deps.sh --import` makes.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>

#include "cli/commands.h"
#include "model/model.h"
#include "model/orbax_import.h"
#include "model/presets.h"

namespace ttt::cli {
namespace {
namespace fs = std::filesystem;

model::OrbaxImport g_imp;

fs::path exe_dir() {
  std::error_code ec;
  const fs::path p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::current_path() : p.parent_path();
}

// The converter: --converter, else scripts/ttt_import.py of the source tree the binary was built
// in (build/ttt -> ../scripts), else of the working directory.
std::string find_converter() {
  if (!g_imp.converter.empty()) return g_imp.converter;
  for (const fs::path& p : {exe_dir() / ".." / "scripts" / "ttt_import.py", fs::current_path() / "scripts" / "ttt_import.py"})
    if (fs::is_regular_file(p)) return fs::weakly_canonical(p).string();
  throw std::runtime_error("cannot find scripts/ttt_import.py (give --converter PATH)");
}

// The Python: --python, else $TTT_PYTHON, else the import environment next to the converter
// (.venv-import at the repository root), else python3 from PATH.
std::string find_python(const std::string& converter) {
  if (!g_imp.python.empty()) return g_imp.python;
  if (const char* e = std::getenv("TTT_PYTHON"); e && *e) return e;
  const fs::path venv = fs::path(converter).parent_path().parent_path() / ".venv-import" / "bin" / "python3";
  if (fs::exists(venv)) return venv.string();
  return "python3";
}

int run_import() {
  model::OrbaxImport a = g_imp;
  if (a.size.empty() == a.config.empty()) throw std::runtime_error("give exactly one of --size and --config");
  a.converter = find_converter();
  a.python = find_python(a.converter);
  const model::Model m = model::import_orbax(a);
  const auto& cfg = m.config();
  int64_t n = 0;
  for (auto& [name, t] : m.named_parameters()) n += t.numel();
  std::printf("imported %s: %lld parameters, %lld layers (last %lld with prime MLPs), d %lld, vocab %lld -> %s\n",
              a.from.c_str(), static_cast<long long>(n), static_cast<long long>(cfg.num_hidden_layers),
              static_cast<long long>(cfg.prime ? cfg.suffix_len : 0), static_cast<long long>(cfg.hidden_size),
              static_cast<long long>(cfg.vocab_size), a.out.c_str());
  return 0;
}

}  // namespace

void register_import(CLI::App& app, Registry& reg) {
  auto* c = app.add_subcommand("import", "Import an official TTT-E2E checkpoint (orbax) as a model directory");
  std::string sizes;
  for (auto& s : model::official_sizes()) sizes += (sizes.empty() ? "" : "|") + s;
  c->add_option("--from", g_imp.from, "checkpoint root (its latest step), a step directory, or its model_weights directory")
      ->required();
  c->add_option("--out", g_imp.out, "model directory to write (config.json, model.safetensors)")->required();
  c->add_option("--size", g_imp.size, "the official config of this size (" + sizes + ")");
  c->add_option("--config", g_imp.config, "or a config.json of our format (SPEC section 2)");
  c->add_option("--python", g_imp.python, "Python with tensorstore (default: $TTT_PYTHON, .venv-import, python3)");
  c->add_option("--converter", g_imp.converter, "path of scripts/ttt_import.py");
  c->add_option("--dtype", g_imp.dtype,
                "storage of model.safetensors: f32, or bf16 for the matrices (half the size; inference commands then "
                "keep the large ones bf16 in memory)")
      ->capture_default_str()
      ->check(CLI::IsMember({"f32", "bf16"}));
  reg.push_back({c, run_import});
}

}  // namespace ttt::cli
