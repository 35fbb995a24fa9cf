// API keys per tenant (`ttt serve --api-keys FILE`): lines "KEY TENANT"; blank lines and lines
// starting with '#' are ignored. With keys loaded, every /v1/ request must carry
// "Authorization: Bearer KEY"; the key names the tenant whose sessions the request may see.
#pragma once
#include <map>
#include <optional>
#include <string>

namespace ttt::server {

class ApiKeys {
 public:
  ApiKeys() = default;  // no keys: authentication off, every request is tenant ""
  // Throws std::runtime_error (one line, naming the line number, never the key) for a file that
  // cannot be read, a malformed line, a duplicate key or no keys at all.
  static ApiKeys load(const std::string& path);
  static ApiKeys parse(const std::string& text, const std::string& what);

  bool enabled() const { return !keys_.empty(); }
  size_t size() const { return keys_.size(); }
  // The tenant of an Authorization header value; nullopt when it is missing, not a Bearer
  // token or an unknown key. Without keys: always "".
  std::optional<std::string> tenant(const std::string& authorization) const;

 private:
  std::map<std::string, std::string> keys_;
};

}  // namespace ttt::server
