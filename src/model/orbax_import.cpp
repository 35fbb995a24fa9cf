#include "model/orbax_import.h"

#include "model/families/family.h"

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

#include "io/safetensors.h"
#include "model/presets.h"

extern char** environ;

namespace ttt::model {
namespace {
namespace fs = std::filesystem;

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

}  // namespace

Model import_orbax(const OrbaxImport& a) {
  if (a.size.empty() == a.config.empty()) throw std::runtime_error("give exactly one of --size and --config");
  const ModelConfig cfg = a.size.empty() ? load_config(a.config) : official_config(a.size);
  if (!cfg.family().attention_only())
    throw std::runtime_error("official checkpoints hold attention models; the config says " + cfg.seq_modeling_block);
  const fs::path out(a.out);
  std::error_code ec;
  if (fs::exists(out / "model.safetensors", ec))
    throw std::runtime_error(a.out + " already holds a model (remove it first; nothing was changed)");
  fs::create_directories(out, ec);
  if (ec) throw std::runtime_error("cannot create " + a.out + ": " + ec.message());

  const std::string& converter = a.converter;
  const std::string& python = a.python;
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
  Model m = [&] {
    try {
      return Model::from_tensors(cfg, std::move(file.tensors));
    } catch (const std::exception& e) {
      throw std::runtime_error("import from " + a.from + ": the checkpoint does not fit the config: " + e.what());
    }
  }();
  m.save(a.out, a.dtype == "bf16" ? Storage::BF16 : Storage::F32);
  return m;
}

}  // namespace ttt::model
