// JSON from untrusted files in linear time and bounded depth: a validating SAX pass (nesting
// limit, duplicate keys per object with a hash set) runs before the DOM is built, so hostile
// inputs are refused before they cost memory, and nothing downstream recurses deeper than the
// limit. Strict typed getters never convert a float to an integer (1e30 as a version is an
// error, not undefined behaviour).
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace ttt::io {

struct JsonLimits {
  int max_depth = 64;  // objects and arrays nested deeper than this are refused
  bool reject_duplicate_keys = true;
};

// What parse_json throws. `problem` is the message without the `what` prefix; for a duplicate
// key, `duplicate_key` holds it and `duplicate_depth` its depth (1: the top-level object).
struct JsonError : std::runtime_error {
  JsonError(const std::string& what, const std::string& p) : std::runtime_error(what + ": " + p), problem(p) {}
  std::string problem, duplicate_key;
  int duplicate_depth = 0;
};

// Parses `text`; throws std::runtime_error "<what>: <problem>" (one line) for invalid JSON,
// nesting over the limit or a duplicate key (named, with its depth: 1 is the top level).
nlohmann::json parse_json(std::string_view text, const std::string& what, const JsonLimits& limits = {});

// Typed field access; every failure is "<what>: field <key> ..." on one line.
const nlohmann::json& json_field(const nlohmann::json& obj, const std::string& key, const std::string& what);
int64_t json_int(const nlohmann::json& v, int64_t lo, int64_t hi, const std::string& what);
double json_finite(const nlohmann::json& v, const std::string& what);
std::string json_string(const nlohmann::json& v, const std::string& what);

// For SAX handlers that build a tree under their own limits: puts v where the parse stands (in
// the array on top of `open`, under `key` in the object on top, or into `root` when nothing is
// open) and returns where it went, so an array or object can be pushed onto `open`.
nlohmann::json* place_json_value(std::vector<nlohmann::json*>& open, const std::string& key, nlohmann::json& root,
                                 nlohmann::json&& v);

}  // namespace ttt::io
