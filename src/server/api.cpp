// The helpers every route of `ttt serve` uses (api.h): request bodies, fields, inputs, options.
#include "server/api.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "io/json_read.h"
#include "io/messages.h"

namespace ttt::server {

namespace fs = std::filesystem;

std::string error_body(const std::string& type, const std::string& msg) {
  // Messages may quote the request's bytes: invalid UTF-8 is replaced, never a throw.
  return json{{"error", {{"message", io::one_line(msg, 2000)}, {"type", type}}}}.dump(-1, ' ', false,
                                                                                     json::error_handler_t::replace);
}

void send_json(http::Response& res, int status, const json& j) {
  res.status = status;
  res.set_content(j.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
}

int64_t unix_time(double t) { return static_cast<int64_t>(std::floor(t)); }

json session_json(const SessionInfo& i) {
  json meta = json::object();
  try {
    meta = json::parse(i.metadata);
  } catch (...) {
  }
  return {{"id", i.id},
          {"object", "session"},
          {"position", i.position},
          {"version", i.version},
          {"ttt_steps", i.ttt_steps},
          {"pending_tokens", i.pending_tokens},
          {"state_bytes", i.state_bytes},
          {"created", unix_time(i.created)},
          {"updated", unix_time(i.updated)},
          {"metadata", meta}};
}

json snapshot_json(const SnapshotInfo& s) {
  return {{"version", s.version}, {"label", s.label}, {"created", unix_time(s.created)}, {"position", s.position}};
}

json recall_json(const inference::RecallResult& rr) {
  json spans = json::array();
  for (const auto& sp : rr.spans)
    spans.push_back({{"start", sp.start}, {"length", static_cast<int64_t>(sp.tokens.size())}, {"score", sp.score}});
  return {{"spans", spans}, {"tokens", rr.tokens}, {"seconds", rr.seconds}};
}

// Length of the prefix of `s` that ends on a whole UTF-8 character (a stream never splits one).
size_t utf8_safe_end(const std::string& s) {
  size_t n = s.size(), back = 0;
  while (back < 4 && back < n && (static_cast<unsigned char>(s[n - 1 - back]) & 0xC0) == 0x80) ++back;
  if (back < n) {
    const unsigned char lead = static_cast<unsigned char>(s[n - 1 - back]);
    const size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
    if (need > back + 1) return n - back - 1;
  }
  return n;
}

// ---- Bodies: one SAX pass, token arrays straight into int32 ----

namespace {

constexpr int kMaxDepth = 64;
constexpr size_t kMaxTreeValues = 200000;  // JSON values outside token arrays

class BodySax {
 public:
  BodySax(Body& b, const std::map<std::string, int64_t>& limits, int64_t vocab, size_t bytes)
      : b_(b), limits_(limits), vocab_(vocab), bytes_(bytes) {}

  bool null() { return scalar(json(nullptr), "null"); }
  bool boolean(bool v) { return scalar(json(v), "a boolean"); }
  bool number_integer(json::number_integer_t v) {
    if (tok_) return token(v < 0 ? -1 : v, std::to_string(v));
    return value(json(v));
  }
  bool number_unsigned(json::number_unsigned_t v) {
    if (tok_) return token(v > static_cast<uint64_t>(INT64_MAX) ? INT64_MAX : static_cast<int64_t>(v), std::to_string(v));
    return value(json(v));
  }
  bool number_float(json::number_float_t v, const std::string&) { return scalar(json(v), "a number"); }
  bool string(std::string& v) {
    if (tok_ && level_ == 1 && count_ == 0) {
      // ["text"]: the batch form of a prompt; built as a tree from here on.
      b_.ints.erase(key_top_);
      tok_ = false;
      stack_.push_back(placeholder_);
      ++depth_;
      return value(json(std::move(v)));
    }
    return scalar(json(std::move(v)), "a string");
  }
  bool binary(json::binary_t&) { throw bad_request("request body: invalid JSON"); }
  bool start_object(std::size_t) {
    if (tok_) not_int();
    return open(json::object());
  }
  bool end_object() { return close(); }
  bool start_array(std::size_t) {
    if (tok_) {
      if (level_ == 1 && count_ == 0) {  // [[ids]]: the batch form
        level_ = 2;
        b_.nested.insert(key_top_);
        return true;
      }
      not_int();
    }
    if (stack_.size() == 1 && depth_ == 1) {
      auto it = limits_.find(key_);
      if (it != limits_.end()) {
        json* p = place(json::array());
        placeholder_ = p;
        key_top_ = key_;
        tok_ = true;
        level_ = 1;
        count_ = 0;
        limit_ = it->second;
        ids_ = &b_.ints[key_];
        ids_->clear();
        // At most one id per two bytes of the body: reserved, but only the pages written count.
        ids_->reserve(static_cast<size_t>(std::min<int64_t>(limit_, static_cast<int64_t>(bytes_ / 2 + 1))));
        return true;
      }
    }
    return open(json::array());
  }
  bool end_array() {
    if (tok_) {
      if (level_ == 2) {
        level_ = 1;
        count_ = 1;
        return true;
      }
      tok_ = false;
      return true;
    }
    return close();
  }
  bool key(std::string& k) {
    json& obj = *stack_.back();
    if (obj.contains(k))
      throw bad_request("request body: duplicate key \"" + io::one_line(k, 80) + "\" at depth " + std::to_string(depth_));
    key_ = std::move(k);
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& ex) {
    throw bad_request("request body: invalid JSON: " + io::one_line(ex.what()));
  }

 private:
  [[noreturn]] void not_int() const {
    throw bad_request("field '" + key_top_ + "': element " + std::to_string(level_ == 2 ? ids_->size() : count_) +
                      " is not an integer");
  }
  bool token(int64_t id, const std::string& text) {
    if (level_ == 1 && b_.nested.count(key_top_)) not_int();  // [[ids], 5]
    const size_t i = ids_->size();
    if (static_cast<int64_t>(i) >= limit_)
      throw bad_request("field '" + key_top_ + "' holds more than the limit of " + std::to_string(limit_) + " tokens");
    if (id < 0 || id >= vocab_)
      throw bad_request("field '" + key_top_ + "': token " + std::to_string(i) + " has id " + text +
                        ", outside the vocabulary [0, " + std::to_string(vocab_) + ")");
    ids_->push_back(static_cast<int32_t>(id));
    if (level_ == 1) ++count_;
    return true;
  }
  bool scalar(json&& v, const char*) {
    if (tok_) not_int();
    return value(std::move(v));
  }
  json* place(json&& v) {
    if (++values_ > kMaxTreeValues)
      throw bad_request("the request body holds more than " + std::to_string(kMaxTreeValues) + " JSON values");
    if (stack_.empty()) root_set_ = true;
    return io::place_json_value(stack_, key_, b_.j, std::move(v));
  }
  bool value(json&& v) {
    place(std::move(v));
    return true;
  }
  bool open(json&& v) {
    if (depth_ >= kMaxDepth)
      throw bad_request("request body: nested deeper than " + std::to_string(kMaxDepth) + " levels");
    json* p = place(std::move(v));
    stack_.push_back(p);
    ++depth_;
    return true;
  }
  bool close() {
    stack_.pop_back();
    --depth_;
    return true;
  }

  Body& b_;
  const std::map<std::string, int64_t>& limits_;
  int64_t vocab_;
  size_t bytes_;
  std::vector<json*> stack_;
  int depth_ = 0;
  size_t values_ = 0;
  bool root_set_ = false;
  std::string key_, key_top_;
  // Token mode: inside the array of a token key.
  bool tok_ = false;
  int level_ = 0;      // 1: in the array, 2: in its one nested array
  size_t count_ = 0;   // elements of the outer array so far
  int64_t limit_ = 0;
  std::vector<int32_t>* ids_ = nullptr;
  json* placeholder_ = nullptr;
};

}  // namespace

Body Api::body(const http::Request& req, const std::set<std::string>& token_keys) const {
  Body b;
  if (req.body.empty()) return b;
  std::map<std::string, int64_t> limits;
  for (const auto& k : token_keys) limits[k] = k == "stop_tokens" ? 64 : o_.max_input_tokens;
  const int64_t vocab = model_ ? model_->config().vocab_size : 0;
  BodySax sax(b, limits, vocab, req.body.size());
  const char* p = req.body.data();
  json::sax_parse(p, p + req.body.size(), &sax, json::input_format_t::json, true, false);
  return b;
}

// ---- Fields ----

Fields::Fields(const Body& b, std::set<std::string> known, bool strict) : b_(b), j_(b.j) {
  if (!j_.is_object()) throw bad_request("the request body must be a JSON object");
  if (strict)
    for (auto& [k, v] : j_.items())
      if (!known.count(k)) throw bad_request("unknown field '" + io::one_line(k, 80) + "'");
}

namespace {
std::string fmt(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%g", v);
  return b;
}
[[noreturn]] void range(const std::string& k, int64_t lo, int64_t hi) {
  throw bad_request("field '" + k + "' must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
}
}  // namespace

std::optional<int64_t> Fields::integer(const std::string& k, int64_t lo, int64_t hi) const {
  if (!has(k)) return std::nullopt;
  const json& v = j_.at(k);
  int64_t x;
  if (v.is_number_unsigned()) {
    if (v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) range(k, lo, hi);
    x = static_cast<int64_t>(v.get<uint64_t>());
  } else if (v.is_number_integer()) {
    x = v.get<int64_t>();
  } else {
    throw bad_request("field '" + k + "' must be an integer");
  }
  if (x < lo || x > hi) range(k, lo, hi);
  return x;
}

std::optional<double> Fields::number(const std::string& k, double lo, double hi) const {
  if (!has(k)) return std::nullopt;
  const json& v = j_.at(k);
  if (!v.is_number()) throw bad_request("field '" + k + "' must be a number");
  const double x = v.get<double>();
  if (!std::isfinite(x) || x < lo || x > hi) throw bad_request("field '" + k + "' must be in [" + fmt(lo) + ", " + fmt(hi) + "]");
  return x;
}

std::optional<bool> Fields::boolean(const std::string& k) const {
  if (!has(k)) return std::nullopt;
  if (!j_.at(k).is_boolean()) throw bad_request("field '" + k + "' must be true or false");
  return j_.at(k).get<bool>();
}

std::optional<std::string> Fields::string(const std::string& k) const {
  if (!has(k)) return std::nullopt;
  if (!j_.at(k).is_string()) throw bad_request("field '" + k + "' must be a string");
  return j_.at(k).get<std::string>();
}

// ---- Api ----

Api::Api(ServerOptions o) : o_(std::move(o)) {
  if (!o_.api_keys.empty()) keys_ = ApiKeys::load(o_.api_keys);
  if (o_.threads < 1) throw std::invalid_argument("--threads must be >= 1");
  if (o_.max_tenant_requests < 1) throw std::invalid_argument("--max-tenant-requests must be >= 1");
  if (o_.max_new_tokens < 0 || o_.max_input_tokens < 1) throw std::invalid_argument("token limits must be positive");
  if (o_.store_policy != "off") {
    memory::StoreOptions eo;
    eo.policy = memory::parse_keep_policy(o_.store_policy);  // "all", "surprising"
    eo.budget_bytes = o_.store_budget;
    eo.span_tokens = o_.store_span;
    memory::ExactStore check("", eo);  // throws for a bad budget or span
  }
  model_id_ = o_.model_name.empty() ? fs::path(o_.model_dir).lexically_normal().filename().string() : o_.model_name;
  if (model_id_.empty() || model_id_ == ".") model_id_ = "ttt";
}

std::shared_ptr<void> Api::acquire_slot(const std::string& tenant) {
  std::lock_guard<std::mutex> g(tenant_mu_);
  int64_t& n = tenant_busy_[tenant];
  if (n >= o_.max_tenant_requests)
    throw ApiError(429, "rate_limit_error",
                   "too many concurrent requests for this tenant (limit " + std::to_string(o_.max_tenant_requests) + ")");
  ++n;
  return std::shared_ptr<void>(nullptr, [this, tenant](void*) {
    std::lock_guard<std::mutex> g2(tenant_mu_);
    --tenant_busy_[tenant];
  });
}

std::optional<int64_t> Api::if_match(const http::Request& req) const {
  const std::string* h = req.header("if-match");
  if (!h) return std::nullopt;
  std::string v = *h;
  if (v == "*") return std::nullopt;  // RFC 9110: any current version
  if (v.rfind("W/", 0) == 0) v = v.substr(2);
  if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
  int64_t x = 0;
  // An empty If-Match is a malformed precondition, not an absent one (issue 25).
  if (v.empty() || v.size() > 18) throw bad_request("If-Match must be a session version (an integer)");
  for (char c : v) {
    if (c < '0' || c > '9') throw bad_request("If-Match must be a session version (an integer)");
    x = x * 10 + (c - '0');
  }
  return x;
}

std::vector<int32_t> Api::token_array(const Fields& f, const std::string& key, int64_t max_len) const {
  auto it = f.body().ints.find(key);
  if (it != f.body().ints.end()) {
    if (f.body().nested.count(key)) throw bad_request("field '" + key + "': element 0 is not an integer");
    return it->second;
  }
  const json& v = f.at(key);
  if (!v.is_array()) throw bad_request("field '" + key + "' must be an array of token ids");
  if (static_cast<int64_t>(v.size()) > max_len)
    throw bad_request("field '" + key + "' holds more than the limit of " + std::to_string(max_len) + " tokens");
  const int64_t vocab = model_->config().vocab_size;
  std::vector<int32_t> out;
  for (size_t i = 0; i < v.size(); ++i) {
    const json& t = v[i];
    if (!t.is_number_integer() && !t.is_number_unsigned())
      throw bad_request("field '" + key + "': element " + std::to_string(i) + " is not an integer");
    const bool neg = t.is_number_integer() && !t.is_number_unsigned() && t.get<int64_t>() < 0;
    const uint64_t u = neg ? 0 : t.get<uint64_t>();
    if (neg || u >= static_cast<uint64_t>(vocab))
      throw bad_request("field '" + key + "': token " + std::to_string(i) + " has id " + t.dump() +
                        ", outside the vocabulary [0, " + std::to_string(vocab) + ")");
    out.push_back(static_cast<int32_t>(u));
  }
  return out;
}

Input Api::input(const Fields& f, const std::string& key, bool allow_text, bool openai_batch) const {
  Input in;
  const json& v = f.at(key);
  const bool batch_ids = f.body().nested.count(key) > 0;
  if (v.is_string() || (openai_batch && v.is_array() && v.size() == 1 && v[0].is_string())) {
    if (!allow_text || (!v.is_string() && !openai_batch))
      throw bad_request("field '" + key + "' must be an array of token ids");
    if (!tok_) throw bad_request("text needs a tokenizer (start the server with --tokenizer): send token ids instead");
    in.is_text = true;
    in.text = v.is_string() ? v.get<std::string>() : v[0].get<std::string>();
  } else if (batch_ids && openai_batch) {
    in.tokens = f.body().ints.at(key);  // [[ids]]
  } else {
    in.tokens = token_array(f, key, o_.max_input_tokens);
  }
  return in;
}

std::vector<int32_t> Api::resolve(const Input& in, bool new_document) const {
  if (!in.is_text) return in.tokens;
  // Encoded with the limit checked piece by piece: a text far over it costs little (issue 25).
  std::vector<int32_t> ids;
  if (new_document) ids.push_back(tok_->bos_id());  // as inference::encode_prompt
  try {
    tok_->encode_append(in.text, ids, static_cast<size_t>(o_.max_input_tokens));
  } catch (const std::length_error&) {
    throw bad_request("the text encodes to more than the limit of " + std::to_string(o_.max_input_tokens) + " tokens");
  }
  return ids;
}

inference::GenerateOptions Api::gen_options(const Fields& f, const std::string& max_key, int64_t default_max) const {
  inference::GenerateOptions g;
  g.max_new_tokens = f.integer(max_key, 0, o_.max_new_tokens).value_or(default_max);
  g.sampling.temperature = f.number("temperature", 0, 1e6).value_or(1.0);
  g.sampling.top_k = f.integer("top_k", 0, INT32_MAX).value_or(0);
  g.sampling.top_p = f.number("top_p", 0, 1).value_or(1.0);
  if (!(g.sampling.top_p > 0)) throw bad_request("field 'top_p' must be in (0, 1]");
  g.sampling.repetition_penalty = f.number("repetition_penalty", 1e-6, 1e6).value_or(1.0);
  g.sampling.seed = static_cast<uint64_t>(f.integer("seed", INT64_MIN, INT64_MAX).value_or(0));
  if (f.has("stop_tokens")) g.stop_ids = token_array(f, "stop_tokens", 64);
  return g;
}

inference::RecallOptions Api::recall_options(const Fields& f) const {
  inference::RecallOptions r;
  if (!f.has("recall")) return r;
  const json& v = f.at("recall");
  if (v.is_null()) return r;
  if (!v.is_object()) throw bad_request("field 'recall' must be an object {\"k\", \"mode\", \"query_tokens\"}");
  Body rb;
  rb.j = v;
  Fields rf(rb, {"k", "mode", "query_tokens"}, true);
  r.k = static_cast<int>(rf.integer("k", 0, 64).value_or(4));
  if (auto m = rf.string("mode")) {
    try {
      r.mode = inference::parse_recall_mode(*m);
    } catch (const std::invalid_argument& e) {
      throw bad_request(std::string("field 'recall.mode': ") + e.what());
    }
  }
  r.query_tokens = rf.integer("query_tokens", 1, 65536).value_or(256);
  if (r.k > 0 && !store_->exact_enabled()) throw exact_store_off();
  return r;
}

// Text of ids[from..]; without a tokenizer, the ids in decimal (space-separated, as `ttt generate`).
std::string Api::detok(const std::vector<int32_t>& ids, size_t from) const {
  if (tok_) return tok_->decode(ids.data() + from, ids.size() - from);
  std::string s;
  for (size_t i = from; i < ids.size(); ++i) {
    if (i) s += ' ';
    s += std::to_string(ids[i]);
  }
  return s;
}

Metrics::Gauges Api::gauges() {
  Metrics::Gauges g;
  if (store_ && ready_) {
    const auto st = store_->stats();
    g.resident = st.resident;
    g.stored = st.stored;
    g.resident_bytes = st.resident_bytes;
    g.state_bytes = st.state_bytes;
  }
  g.in_flight = in_flight_.load();
  return g;
}

void Api::load() {
  model::Model m = model::Model::load(o_.model_dir, o_.compute_bf16 ? model::Weights::BF16 : model::Weights::Auto);
  m.set_bf16_products(o_.compute_bf16);  // --compute bf16: a property of this model's weights
  model_ = std::make_unique<model::Model>(m.to(o_.device));
  std::string tp = o_.tokenizer;
  if (tp.empty())
    for (const char* name : {"tokenizer.model", "tokenizer.json"})
      if (fs::is_regular_file(fs::path(o_.model_dir) / name)) {
        tp = (fs::path(o_.model_dir) / name).string();
        break;
      }
  if (!tp.empty()) {
    tok_ = data::Tokenizer::load(tp);
    inference::check_tokenizer(*tok_, model_->config(), tp);
  }
  StoreOptions so;
  so.state_dir = o_.state_dir;
  so.max_resident = o_.max_resident_sessions;
  so.max_snapshots = o_.max_snapshots;
  so.kv_dtype = o_.kv_dtype;
  so.exact_store = o_.store_policy != "off";
  if (so.exact_store) {
    so.exact.policy = memory::parse_keep_policy(o_.store_policy);
    so.exact.budget_bytes = o_.store_budget;
    so.exact.span_tokens = o_.store_span;
    memory::ExactStore check("", so.exact);  // the options are checked before any session uses them
  }
  store_ = std::make_unique<SessionStore>(*model_, so);
  created_ = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace ttt::server
