#include "server/auth.h"

#include <sstream>
#include <stdexcept>

#include "io/file_read.h"

namespace ttt::server {

ApiKeys ApiKeys::load(const std::string& path) {
  return parse(io::read_regular_file(path, "--api-keys", uint64_t{16} << 20), path);
}

ApiKeys ApiKeys::parse(const std::string& text, const std::string& what) {
  ApiKeys k;
  std::istringstream in(text);
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    std::istringstream ls(line);
    std::string key, tenant, extra;
    if (!(ls >> key) || key[0] == '#') continue;
    if (!(ls >> tenant) || (ls >> extra))
      throw std::runtime_error(what + ": line " + std::to_string(n) + " is not 'KEY TENANT'");
    for (char c : key + tenant)
      if (static_cast<unsigned char>(c) < 0x21 || static_cast<unsigned char>(c) > 0x7e)
        throw std::runtime_error(what + ": line " + std::to_string(n) + " holds a character that is not printable ASCII");
    if (!k.keys_.emplace(key, tenant).second)
      throw std::runtime_error(what + ": line " + std::to_string(n) + " repeats a key");
  }
  if (k.keys_.empty()) throw std::runtime_error(what + ": no keys (lines 'KEY TENANT')");
  return k;
}

std::optional<std::string> ApiKeys::tenant(const std::string& authorization) const {
  if (keys_.empty()) return std::string();
  static const std::string kBearer = "Bearer ";
  if (authorization.size() <= kBearer.size() || authorization.compare(0, kBearer.size(), kBearer) != 0)
    return std::nullopt;
  auto it = keys_.find(authorization.substr(kBearer.size()));
  if (it == keys_.end()) return std::nullopt;
  return it->second;
}

}  // namespace ttt::server
