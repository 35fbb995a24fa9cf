#include "io/json_read.h"

#include <cstdint>
#include <stdexcept>
#include <string>
#include <unordered_set>
#include <vector>
#include <cmath>

#include "io/messages.h"

namespace ttt::io {
namespace {

using json = nlohmann::json;

// Validates structure without building anything: depth and duplicate keys.
class Validator {
 public:
  explicit Validator(const JsonLimits& l) : limits_(l) {}
  std::string problem, duplicate_key;
  int duplicate_depth = 0;

  bool null() { return true; }
  bool boolean(bool) { return true; }
  bool number_integer(json::number_integer_t) { return true; }
  bool number_unsigned(json::number_unsigned_t) { return true; }
  bool number_float(json::number_float_t, const std::string&) { return true; }
  bool string(std::string&) { return true; }
  bool binary(json::binary_t&) { return true; }
  bool start_object(std::size_t) { return open(true); }
  bool end_object() { return close(); }
  bool start_array(std::size_t) { return open(false); }
  bool end_array() { return close(); }
  bool key(std::string& k) {
    if (!limits_.reject_duplicate_keys || stack_.empty()) return true;
    auto& keys = stack_.back();
    if (!keys.insert(k).second) {
      problem = "duplicate key \"" + one_line(k, 80) + "\" at depth " + std::to_string(stack_.size());
      duplicate_key = k;
      duplicate_depth = static_cast<int>(stack_.size());
      return false;
    }
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& ex) {
    problem = std::string("invalid JSON: ") + one_line(ex.what());
    return false;
  }

 private:
  bool open(bool object) {
    if (static_cast<int>(stack_.size()) >= limits_.max_depth) {
      problem = "nested deeper than " + std::to_string(limits_.max_depth) + " levels";
      return false;
    }
    stack_.emplace_back();
    (void)object;  // arrays get an (unused) empty set: one stack keeps the depth for both
    return true;
  }
  bool close() {
    if (!stack_.empty()) stack_.pop_back();
    return true;
  }
  const JsonLimits& limits_;
  std::vector<std::unordered_set<std::string>> stack_;
};

template <class J>
J parse_impl(std::string_view text, const std::string& what, const JsonLimits& limits) {
  Validator v(limits);
  const bool ok = json::sax_parse(text.begin(), text.end(), &v, json::input_format_t::json, true, false);
  if (!ok) {
    JsonError e(what, v.problem.empty() ? std::string("invalid JSON") : v.problem);
    e.duplicate_key = v.duplicate_key;
    e.duplicate_depth = v.duplicate_depth;
    throw e;
  }
  try {
    return J::parse(text.begin(), text.end());
  } catch (const std::exception& e) {
    throw JsonError(what, "invalid JSON: " + one_line(e.what()));
  }
}

[[noreturn]] void fail(const std::string& what, const std::string& problem) {
  throw std::runtime_error(what + ": " + problem);
}

const char* type_of(const json& v) {
  if (v.is_null()) return "null";
  if (v.is_boolean()) return "a boolean";
  if (v.is_number_integer()) return "an integer";
  if (v.is_number()) return "a number";
  if (v.is_string()) return "a string";
  if (v.is_array()) return "an array";
  return "an object";
}

}  // namespace

json parse_json(std::string_view text, const std::string& what, const JsonLimits& limits) {
  return parse_impl<json>(text, what, limits);
}

const json& json_field(const json& obj, const std::string& key, const std::string& what) {
  if (!obj.is_object()) fail(what, "expected an object, got " + std::string(type_of(obj)));
  auto it = obj.find(key);
  if (it == obj.end()) fail(what, "missing field " + key);
  return *it;
}

int64_t json_int(const json& v, int64_t lo, int64_t hi, const std::string& what) {
  if (!v.is_number_integer()) fail(what, std::string("expected an integer, got ") + type_of(v));
  const std::string range = " is out of range [" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
  if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
    fail(what, std::to_string(v.get<uint64_t>()) + range);
  const int64_t x = v.get<int64_t>();
  if (x < lo || x > hi) fail(what, std::to_string(x) + range);
  return x;
}

double json_finite(const json& v, const std::string& what) {
  if (!v.is_number()) fail(what, std::string("expected a number, got ") + type_of(v));
  const double x = v.get<double>();
  if (!std::isfinite(x)) fail(what, "not a finite number");
  return x;
}

std::string json_string(const json& v, const std::string& what) {
  if (!v.is_string()) fail(what, std::string("expected a string, got ") + type_of(v));
  return v.get<std::string>();
}

json* place_json_value(std::vector<json*>& open, const std::string& key, json& root, json&& v) {
  if (open.empty()) {
    root = std::move(v);
    return &root;
  }
  json& c = *open.back();
  if (c.is_array()) {
    c.push_back(std::move(v));
    return &c.back();
  }
  json& slot = c[key];
  slot = std::move(v);
  return &slot;
}

}  // namespace ttt::io
