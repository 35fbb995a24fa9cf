// Error-message helpers shared by the parsers: untrusted text quoted in a message is cut short
// and loses its control characters, so every error stays one line.
#pragma once
#include <string>

namespace ttt::io {

inline std::string one_line(const std::string& s, size_t max_len = 200) {
  std::string out;
  for (char c : s) {
    if (out.size() >= max_len) {
      out += "...";
      break;
    }
    out += (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) ? ' ' : c;
  }
  return out;
}

}  // namespace ttt::io
