// `ttt import`: an official TTT-E2E checkpoint (orbax) to a model directory of this engine.
//
// The checkpoint is an OCDBT store of zarr arrays; reading it is the job of the format's own
// library (tensorstore, PyPI), so scripts/ttt_import.py does the reading and renaming, in the
// Python environment `scripts/install-deps.sh --import` makes. This command picks the config
// (an official size or a given file), runs the converter, then checks every tensor against the
// config exactly as loading a model does, and writes the model directory atomically.
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "model/families/family.h"
#include "io/messages.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "model/presets.h"

extern char** environ;

namespace ttt::cli {
namespace {
namespace fs = std::filesystem;

struct ImportArgs {
  std::string from, out, size, config, python, converter, dtype = "f32";
} g_imp;

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

// Runs argv, returns (exit status, stderr text); stdout is passed through.
std::pair<int, std::string> run(const std::vector<std::string>& argv) {
  int err_pipe[2];
  if (pipe(err_pipe) != 0) throw std::runtime_error(std::string("pipe: ") + std::strerror(errno));
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, err_pipe[1], 2);
  posix_spawn_file_actions_addclose(&fa, err_pipe[0]);
  posix_spawn_file_actions_addclose(&fa, err_pipe[1]);
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  const int rc = posix_spawnp(&pid, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  close(err_pipe[1]);
  if (rc != 0) {
    close(err_pipe[0]);
    throw std::runtime_error("cannot run " + argv[0] + ": " + std::strerror(rc) +
                             " (run scripts/install-deps.sh --import, or give --python)");
  }
  std::string err;
  char buf[4096];
  for (ssize_t n; (n = read(err_pipe[0], buf, sizeof buf)) != 0;) {
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (err.size() < (1u << 20)) err.append(buf, static_cast<size_t>(n));
  }
  close(err_pipe[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), err};
}

std::string last_line(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  const size_t nl = s.rfind('\n');
  return nl == std::string::npos ? s : s.substr(nl + 1);
}

int run_import() {
  const auto& a = g_imp;
  if (a.size.empty() == a.config.empty()) throw std::runtime_error("give exactly one of --size and --config");
  const model::ModelConfig cfg = a.size.empty() ? model::load_config(a.config) : model::official_config(a.size);
  if (!cfg.family().attention_only())
    throw std::runtime_error("official checkpoints hold attention models; the config says " + cfg.seq_modeling_block);
  const fs::path out(a.out);
  std::error_code ec;
  if (fs::exists(out / "model.safetensors", ec))
    throw std::runtime_error(a.out + " already holds a model (remove it first; nothing was changed)");
  fs::create_directories(out, ec);
  if (ec) throw std::runtime_error("cannot create " + a.out + ": " + ec.message());

  const std::string converter = find_converter(), python = find_python(converter);
  const fs::path tmp = out / ("import.tmp." + std::to_string(getpid()) + ".safetensors");
  std::fprintf(stderr, "import: reading %s with %s\n", a.from.c_str(), converter.c_str());
  const auto [status, err] = run({python, converter, "--from", a.from, "--out", tmp.string(), "--layers",
                                  std::to_string(cfg.num_hidden_layers), "--suffix-len",
                                  std::to_string(cfg.prime ? cfg.suffix_len : 0), "--tied",
                                  cfg.tie_word_embeddings ? "true" : "false"});
  if (status != 0) {
    fs::remove(tmp, ec);
    std::string why = last_line(err);
    const std::string prefix = "ttt_import: ";
    if (why.rfind(prefix, 0) == 0) why = why.substr(prefix.size());
    throw std::runtime_error("import from " + a.from + " failed: " + (why.empty() ? "converter exited with " + std::to_string(status) : why));
  }
  io::TensorFile file;
  try {
    file = io::read_safetensors(tmp.string());
  } catch (...) {
    fs::remove(tmp, ec);
    throw;
  }
  fs::remove(tmp, ec);
  // from_tensors checks that the names and shapes are exactly those the config needs.
  const model::Model m = [&] {
    try {
      return model::Model::from_tensors(cfg, std::move(file.tensors));
    } catch (const std::exception& e) {
      throw std::runtime_error("import from " + a.from + ": the checkpoint does not fit the config: " + e.what());
    }
  }();
  m.save(a.out, a.dtype == "bf16" ? model::Storage::BF16 : model::Storage::F32);
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
