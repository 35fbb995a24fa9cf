// Routes of `ttt serve` (SPEC section 8). Every handler runs inside handle(): authentication,
// the per-tenant request limit, and the conversion of every exception into a JSON error with a
// 4xx/5xx status; the work itself is the inference API's and the session store's.
#include <httplib.h>
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <thread>

#include "data/tokenizer.h"
#include "inference/generation.h"
#include "inference/recall.h"
#include "io/json_read.h"
#include "io/messages.h"
#include "model/model.h"
#include "server/auth.h"
#include "server/metrics.h"
#include "server/server.h"
#include "server/session_store.h"

namespace ttt::server {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

// Thrown inside a generation whose client went away: the mutation is abandoned.
struct Cancelled : std::runtime_error {
  Cancelled() : std::runtime_error("the client disconnected") {}
};

std::string error_body(const std::string& type, const std::string& msg) {
  // Messages may quote the request's bytes: invalid UTF-8 is replaced, never a throw.
  return json{{"error", {{"message", io::one_line(msg, 2000)}, {"type", type}}}}.dump(-1, ' ', false,
                                                                                     json::error_handler_t::replace);
}

void send_json(httplib::Response& res, int status, const json& j) {
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

// Typed access to a request object. strict: fields outside `known` are an error (the session
// API); otherwise they are ignored (the OpenAI API, whose clients send fields we do not use).
// A null value counts as absent, as OpenAI clients send it for unset options.
class Fields {
 public:
  // Keeps a reference to j: a temporary would dangle (the rvalue overload is deleted).
  Fields(json&&, std::set<std::string>, bool) = delete;
  Fields(const json& j, std::set<std::string> known, bool strict) : j_(j) {
    if (!j.is_object()) throw bad_request("the request body must be a JSON object");
    if (strict)
      for (auto& [k, v] : j.items())
        if (!known.count(k)) throw bad_request("unknown field '" + io::one_line(k, 80) + "'");
  }
  bool has(const std::string& k) const { return j_.contains(k) && !j_.at(k).is_null(); }
  const json& at(const std::string& k) const { return j_.at(k); }
  std::optional<int64_t> integer(const std::string& k, int64_t lo, int64_t hi) const {
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
  std::optional<double> number(const std::string& k, double lo, double hi) const {
    if (!has(k)) return std::nullopt;
    const json& v = j_.at(k);
    if (!v.is_number()) throw bad_request("field '" + k + "' must be a number");
    const double x = v.get<double>();
    if (!std::isfinite(x) || x < lo || x > hi)
      throw bad_request("field '" + k + "' must be in [" + fmt(lo) + ", " + fmt(hi) + "]");
    return x;
  }
  std::optional<bool> boolean(const std::string& k) const {
    if (!has(k)) return std::nullopt;
    if (!j_.at(k).is_boolean()) throw bad_request("field '" + k + "' must be true or false");
    return j_.at(k).get<bool>();
  }
  std::optional<std::string> string(const std::string& k) const {
    if (!has(k)) return std::nullopt;
    if (!j_.at(k).is_string()) throw bad_request("field '" + k + "' must be a string");
    return j_.at(k).get<std::string>();
  }

 private:
  static std::string fmt(double v) {
    char b[32];
    std::snprintf(b, sizeof b, "%g", v);
    return b;
  }
  [[noreturn]] static void range(const std::string& k, int64_t lo, int64_t hi) {
    throw bad_request("field '" + k + "' must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }
  const json& j_;
};

// A prompt or ingest payload: text (encoded later, when the session's position is known) or ids.
struct Input {
  bool is_text = false;
  std::string text;
  std::vector<int32_t> tokens;
};

std::vector<int32_t> token_array(const json& v, const std::string& field, int64_t vocab, int64_t max_len) {
  if (!v.is_array()) throw bad_request("field '" + field + "' must be an array of token ids");
  if (static_cast<int64_t>(v.size()) > max_len)
    throw bad_request("field '" + field + "' holds " + std::to_string(v.size()) + " tokens, more than the limit " +
                      std::to_string(max_len));
  std::vector<int32_t> out;
  out.reserve(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    const json& t = v[i];
    if (!t.is_number_integer() && !t.is_number_unsigned())
      throw bad_request("field '" + field + "': element " + std::to_string(i) + " is not an integer");
    const bool neg = t.is_number_integer() && !t.is_number_unsigned() && t.get<int64_t>() < 0;
    const uint64_t u = neg ? 0 : t.get<uint64_t>();
    if (neg || u >= static_cast<uint64_t>(vocab))
      throw bad_request("field '" + field + "': token " + std::to_string(i) + " has id " + t.dump() +
                        ", outside the vocabulary [0, " + std::to_string(vocab) + ")");
    out.push_back(static_cast<int32_t>(u));
  }
  return out;
}

class Server {
 public:
  explicit Server(ServerOptions o) : o_(std::move(o)) {
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
    routes();
  }

  int run();

 private:
  struct Ctx {
    const httplib::Request& req;
    httplib::Response& res;
    std::string tenant;
    std::shared_ptr<void> slot;  // the tenant's concurrency slot, released when the last holder goes
  };
  using Fn = std::function<void(Ctx&)>;

  void routes();
  void load();
  void handle(const std::string& route, const httplib::Request& req, httplib::Response& res, const Fn& fn,
              bool needs_model = true);
  std::shared_ptr<void> acquire_slot(const std::string& tenant);
  json body_json(const httplib::Request& req) const;
  std::optional<int64_t> if_match(const httplib::Request& req) const;
  // openai_batch: also the OpenAI completions' one-element batch forms ["text"] and [[ids]].
  Input input(const Fields& f, const std::string& key, bool allow_text = true, bool openai_batch = false) const;
  std::vector<int32_t> resolve(const Input& in, bool new_document) const;
  inference::GenerateOptions gen_options(const Fields& f, const std::string& max_key, int64_t default_max) const;
  // The "recall" field of generate and completions: {"k", "mode", "query_tokens"} (k 0: off).
  inference::RecallOptions recall_options(const Fields& f) const;
  std::string detok(const std::vector<int32_t>& ids, size_t from) const;
  Metrics::Gauges gauges();

  // Handlers.
  void completions(Ctx& c);
  void ingest(Ctx& c, const std::string& id);
  void generate(Ctx& c, const std::string& id);

  ServerOptions o_;
  ApiKeys keys_;
  Metrics metrics_;
  httplib::Server http_;
  std::string model_id_;
  double created_ = 0;
  std::unique_ptr<model::Model> model_;
  std::optional<data::Tokenizer> tok_;
  std::unique_ptr<SessionStore> store_;
  std::atomic<bool> ready_{false};
  std::atomic<int64_t> in_flight_{0};
  std::mutex tenant_mu_;
  std::map<std::string, int64_t> tenant_busy_;
};

std::shared_ptr<void> Server::acquire_slot(const std::string& tenant) {
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

void Server::handle(const std::string& route, const httplib::Request& req, httplib::Response& res, const Fn& fn,
                    bool needs_model) {
  const auto t0 = std::chrono::steady_clock::now();
  ++in_flight_;
  try {
    if (needs_model && !ready_) throw ApiError(503, "unavailable", "the model is loading");
    std::string tenant;
    if (req.path.rfind("/v1/", 0) == 0) {
      auto t = keys_.tenant(req.get_header_value("Authorization"));
      if (!t) throw ApiError(401, "authentication_error", "missing or unknown API key (Authorization: Bearer KEY)");
      tenant = *t;
    }
    Ctx c{req, res, tenant, acquire_slot(tenant)};
    fn(c);
  } catch (const ApiError& e) {
    res.set_content(error_body(e.type, e.what()), "application/json");
    res.status = e.status;
  } catch (const json::exception& e) {
    res.set_content(error_body("invalid_request_error", e.what()), "application/json");
    res.status = 400;
  } catch (const std::invalid_argument& e) {
    res.set_content(error_body("invalid_request_error", e.what()), "application/json");
    res.status = 400;
  } catch (const std::bad_alloc&) {
    res.set_content(error_body("server_error", "out of memory"), "application/json");
    res.status = 507;
  } catch (const std::exception& e) {
    res.set_content(error_body("server_error", e.what()), "application/json");
    res.status = 500;
  }
  --in_flight_;
  metrics_.request(route, res.status, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
}

json Server::body_json(const httplib::Request& req) const {
  if (req.body.empty()) return json::object();
  try {
    return io::parse_json(req.body, "request body");
  } catch (const std::runtime_error& e) {
    throw bad_request(e.what());
  }
}

std::optional<int64_t> Server::if_match(const httplib::Request& req) const {
  if (!req.has_header("If-Match")) return std::nullopt;
  std::string v = req.get_header_value("If-Match");
  if (v == "*") return std::nullopt;  // RFC 9110: any current version
  if (v.rfind("W/", 0) == 0) v = v.substr(2);
  if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
  int64_t x = 0;
  size_t i = 0;
  if (v.empty() || v.size() > 18) throw bad_request("If-Match must be a session version (an integer)");
  for (; i < v.size(); ++i) {
    if (v[i] < '0' || v[i] > '9') throw bad_request("If-Match must be a session version (an integer)");
    x = x * 10 + (v[i] - '0');
  }
  return x;
}

Input Server::input(const Fields& f, const std::string& key, bool allow_text, bool openai_batch) const {
  Input in;
  const json& v = f.at(key);
  const int64_t V = model_->config().vocab_size;
  if (v.is_string()) {
    if (!allow_text) throw bad_request("field '" + key + "' must be an array of token ids");
    if (!tok_) throw bad_request("text needs a tokenizer (start the server with --tokenizer): send token ids instead");
    in.is_text = true;
    in.text = v.get<std::string>();
  } else if (openai_batch && v.is_array() && v.size() == 1 && (v[0].is_string() || v[0].is_array())) {
    // OpenAI batch forms with one element: ["text"] or [[ids]].
    const json wrapped{{key, v[0]}};  // named: Fields keeps a reference to it
    Fields inner(wrapped, {key}, true);
    return input(inner, key, allow_text, /*openai_batch=*/false);
  } else {
    in.tokens = token_array(v, key, V, o_.max_input_tokens);
  }
  return in;
}

std::vector<int32_t> Server::resolve(const Input& in, bool new_document) const {
  if (!in.is_text) return in.tokens;
  auto ids = inference::encode_prompt(*tok_, in.text, new_document);
  if (static_cast<int64_t>(ids.size()) > o_.max_input_tokens)
    throw bad_request("the text encodes to " + std::to_string(ids.size()) + " tokens, more than the limit " +
                      std::to_string(o_.max_input_tokens));
  return ids;
}

inference::GenerateOptions Server::gen_options(const Fields& f, const std::string& max_key, int64_t default_max) const {
  inference::GenerateOptions g;
  g.max_new_tokens = f.integer(max_key, 0, o_.max_new_tokens).value_or(default_max);
  g.sampling.temperature = f.number("temperature", 0, 1e6).value_or(1.0);
  g.sampling.top_k = f.integer("top_k", 0, INT32_MAX).value_or(0);
  g.sampling.top_p = f.number("top_p", 0, 1).value_or(1.0);
  if (!(g.sampling.top_p > 0)) throw bad_request("field 'top_p' must be in (0, 1]");
  g.sampling.repetition_penalty = f.number("repetition_penalty", 1e-6, 1e6).value_or(1.0);
  g.sampling.seed = static_cast<uint64_t>(f.integer("seed", INT64_MIN, INT64_MAX).value_or(0));
  if (f.has("stop_tokens")) g.stop_ids = token_array(f.at("stop_tokens"), "stop_tokens", model_->config().vocab_size, 64);
  return g;
}

inference::RecallOptions Server::recall_options(const Fields& f) const {
  inference::RecallOptions r;
  if (!f.has("recall")) return r;
  const json& v = f.at("recall");
  if (v.is_null()) return r;
  if (!v.is_object()) throw bad_request("field 'recall' must be an object {\"k\", \"mode\", \"query_tokens\"}");
  Fields rf(v, {"k", "mode", "query_tokens"}, true);
  r.k = static_cast<int>(rf.integer("k", 0, 64).value_or(4));
  if (auto m = rf.string("mode")) {
    try {
      r.mode = inference::parse_recall_mode(*m);
    } catch (const std::invalid_argument& e) {
      throw bad_request(std::string("field 'recall.mode': ") + e.what());
    }
  }
  r.query_tokens = rf.integer("query_tokens", 1, 65536).value_or(256);
  if (r.k > 0 && !store_->exact_enabled())
    throw exact_store_off();
  return r;
}

json recall_json(const inference::RecallResult& rr) {
  json spans = json::array();
  for (const auto& sp : rr.spans)
    spans.push_back({{"start", sp.start}, {"length", static_cast<int64_t>(sp.tokens.size())}, {"score", sp.score}});
  return {{"spans", spans}, {"tokens", rr.tokens}, {"seconds", rr.seconds}};
}

// Text of ids[from..]; without a tokenizer, the ids in decimal (space-separated, as `ttt generate`).
std::string Server::detok(const std::vector<int32_t>& ids, size_t from) const {
  if (tok_) return tok_->decode(ids.data() + from, ids.size() - from);
  std::string s;
  for (size_t i = from; i < ids.size(); ++i) {
    if (i) s += ' ';
    s += std::to_string(ids[i]);
  }
  return s;
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

Metrics::Gauges Server::gauges() {
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

// Writes SSE events; false once the client is gone.
struct SseWriter {
  httplib::DataSink& sink;
  bool ok = true;
  bool event(const json& j) { return raw("data: " + j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n"); }
  bool raw(const std::string& s) {
    if (ok) ok = sink.write(s.data(), s.size());
    return ok;
  }
};

void Server::ingest(Ctx& c, const std::string& id) {
  const json body = body_json(c.req);
  Fields f(body, {"text", "tokens", "stream"}, true);
  if (f.has("text") == f.has("tokens")) throw bad_request("give exactly one of 'text' and 'tokens'");
  const std::string key = f.has("text") ? "text" : "tokens";
  const Input in = input(f, key, /*allow_text=*/key == "text");
  if (f.has("text") && !in.is_text) throw bad_request("field 'text' must be a string");
  if (!in.is_text && in.tokens.empty()) throw bad_request("field 'tokens' is empty");
  const bool stream = f.boolean("stream").value_or(false);
  const auto ifm = if_match(c.req);
  const std::string tenant = c.tenant;
  // The work, shared by the plain and the streamed answer; progress gets each chunk's loss.
  auto run = [this, in, ifm, tenant, id](const std::function<void(int64_t, double)>& progress) {
    std::vector<double> losses;
    int64_t steps = 0, n = 0;
    SessionInfo info = store_->mutate(tenant, id, ifm, "ingest", [&](inference::Session& s, const memory::ExactStore*) {
      const auto ids = resolve(in, s.position() == 0);
      const int64_t s0 = s.ttt_steps();
      losses = inference::ingest(s, ids, progress);
      steps = s.ttt_steps() - s0;
      n = static_cast<int64_t>(ids.size());
      return n;
    });
    metrics_.ingested(n);
    metrics_.ttt_steps(steps);
    json j = session_json(info);
    j["chunk_losses"] = losses;
    j["tokens_ingested"] = n;
    return j;
  };
  if (!stream) {
    send_json(c.res, 200, run({}));
    return;
  }
  store_->check_exists(tenant, id);  // the status line goes out before the work
  auto slot = c.slot;
  c.res.set_chunked_content_provider("text/event-stream", [run, slot](size_t, httplib::DataSink& sink) {
    SseWriter w{sink};
    try {
      json j = run([&](int64_t chunk, double loss) {
        if (!w.event({{"object", "ingest.progress"}, {"chunk", chunk}, {"loss", loss}})) throw Cancelled();
      });
      j["object"] = "session";
      w.event(j);
    } catch (const Cancelled&) {
    } catch (const ApiError& e) {
      w.raw("data: " + error_body(e.type, e.what()) + "\n\n");
    } catch (const std::exception& e) {
      w.raw("data: " + error_body("invalid_request_error", e.what()) + "\n\n");
    }
    w.raw("data: [DONE]\n\n");
    sink.done();
    return true;
  });
}

void Server::generate(Ctx& c, const std::string& id) {
  const json body = body_json(c.req);
  Fields f(body,
           {"prompt", "max_tokens", "temperature", "top_k", "top_p", "seed", "repetition_penalty", "stop_tokens",
            "commit", "stream", "recall"},
           true);
  const Input in = f.has("prompt") ? input(f, "prompt") : Input{};
  inference::GenerateOptions go = gen_options(f, "max_tokens", 16);
  const inference::RecallOptions ro = recall_options(f);
  const bool commit = f.boolean("commit").value_or(true);
  const bool stream = f.boolean("stream").value_or(false);
  go.feed_last = commit;  // a kept session has read its whole answer (as `ttt generate --state-out`)
  const auto ifm = if_match(c.req);
  const std::string tenant = c.tenant;
  using OnToken = std::function<void(const std::vector<int32_t>&)>;
  auto run = [this, in, go, ro, commit, ifm, tenant, id](const OnToken& on_token) {
    inference::GenerateResult r;
    std::optional<inference::RecallResult> rr;
    auto work = [&](inference::Session& s, const memory::ExactStore* ex) {
      const auto prompt = resolve(in, s.position() == 0);
      std::vector<int32_t> sofar;
      auto cb = [&](int32_t t, int64_t) {
        sofar.push_back(t);
        if (on_token) on_token(sofar);
        return true;
      };
      if (ro.k > 0) rr.emplace();
      r = inference::generate_with_recall(s, ex, prompt, go, ro, cb, rr ? &*rr : nullptr);
      metrics_.prompt(r.prompt_tokens);
      metrics_.generated(static_cast<int64_t>(r.tokens.size()));
      metrics_.ttt_steps(r.ttt_steps);
      return r.prompt_tokens + static_cast<int64_t>(r.tokens.size());
    };
    SessionInfo info;
    if (commit) {
      info = store_->mutate(tenant, id, ifm, "generate", work);
    } else {
      store_->read(tenant, id, [&](const inference::Session& cur, const SessionInfo& i, const memory::ExactStore* ex) {
        if (ifm && *ifm != i.version)
          throw ApiError(412, "precondition_failed", "If-Match: version " + std::to_string(*ifm) +
                                                         " is stale, the session is at version " + std::to_string(i.version));
        inference::Session s = cur.fork();  // the session itself is left exactly as it was
        work(s, ex);
        info = i;
      }, /*with_exact=*/ro.k > 0);
    }
    json j = {{"tokens", r.tokens}, {"finish_reason", inference::stop_reason_name(r.stop)}, {"session", session_json(info)}};
    if (rr) j["recall"] = recall_json(*rr);
    if (tok_) j["text"] = detok(r.tokens, 0);
    return j;
  };
  if (!stream) {
    send_json(c.res, 200, run({}));
    return;
  }
  store_->check_exists(tenant, id);
  auto slot = c.slot;
  c.res.set_chunked_content_provider("text/event-stream", [this, run, slot](size_t, httplib::DataSink& sink) {
    SseWriter w{sink};
    size_t emitted = 0;
    try {
      json j = run([&](const std::vector<int32_t>& sofar) {
        json ev = {{"object", "generate.token"}, {"token", sofar.back()}};
        if (tok_) {
          const std::string text = detok(sofar, 0);
          const size_t end = utf8_safe_end(text);
          ev["text"] = end > emitted ? text.substr(emitted, end - emitted) : std::string();
          emitted = std::max(emitted, end);
        }
        if (!w.event(ev)) throw Cancelled();
      });
      j["object"] = "generate.result";
      w.event(j);
    } catch (const Cancelled&) {
    } catch (const ApiError& e) {
      w.raw("data: " + error_body(e.type, e.what()) + "\n\n");
    } catch (const std::exception& e) {
      w.raw("data: " + error_body("invalid_request_error", e.what()) + "\n\n");
    }
    w.raw("data: [DONE]\n\n");
    sink.done();
    return true;
  });
}

void Server::completions(Ctx& c) {
  const json body = body_json(c.req);
  Fields f(body, {}, false);
  if (!f.has("prompt")) throw bad_request("field 'prompt' is required");
  const Input in = input(f, "prompt", /*allow_text=*/true, /*openai_batch=*/true);
  inference::GenerateOptions go = gen_options(f, "max_tokens", 16);
  if (auto n = f.integer("n", 1, 1); n && *n != 1) throw bad_request("field 'n' must be 1");
  if (f.has("model") && !f.at("model").is_string()) throw bad_request("field 'model' must be a string");
  if (f.boolean("echo").value_or(false)) throw bad_request("field 'echo' is not supported");
  if (f.has("logprobs")) throw bad_request("field 'logprobs' is not supported");
  if (f.has("best_of")) f.integer("best_of", 1, 1);
  for (const char* k : {"frequency_penalty", "presence_penalty"}) f.number(k, -2, 2);
  if (f.has("user")) f.string("user");
  std::vector<std::string> stops;
  if (f.has("stop")) {
    const json& s = f.at("stop");
    if (s.is_string()) stops.push_back(s.get<std::string>());
    else if (s.is_array() && s.size() <= 4) {
      for (auto& x : s) {
        if (!x.is_string()) throw bad_request("field 'stop' must be a string or an array of up to 4 strings");
        stops.push_back(x.get<std::string>());
      }
    } else {
      throw bad_request("field 'stop' must be a string or an array of up to 4 strings");
    }
    stops.erase(std::remove(stops.begin(), stops.end(), std::string()), stops.end());
  }
  const bool stream = f.boolean("stream").value_or(false);
  const std::optional<std::string> session = f.string("session");
  const inference::RecallOptions ro = recall_options(f);
  if (ro.k > 0 && !session) throw bad_request("field 'recall' needs a 'session' (its exact store is what is recalled)");
  const auto ifm = if_match(c.req);
  const std::string tenant = c.tenant;
  if (session) store_->check_exists(tenant, *session);
  go.feed_last = session.has_value();
  size_t hold = 0;
  for (auto& s : stops) hold = std::max(hold, s.size() - 1);
  const std::string cid = "cmpl-" + std::to_string(std::chrono::steady_clock::now().time_since_epoch().count());
  const int64_t created = unix_time(std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count());

  // on_text(delta, final): the text to send so far; stop strings end generation (the text is cut
  // before the stop string, as OpenAI does).
  using OnText = std::function<void(const std::string&)>;
  auto run = [this, in, go, ro, session, ifm, tenant, stops, hold](const OnText& on_text) {
    inference::GenerateResult r;
    std::optional<inference::RecallResult> rr;
    std::string text;
    bool stopped = false;
    auto work = [&](inference::Session& s, const memory::ExactStore* ex) {
      const auto prompt = resolve(in, s.position() == 0);
      std::vector<int32_t> sofar;
      size_t emitted = 0;
      if (ro.k > 0) rr.emplace();
      r = inference::generate_with_recall(s, ex, prompt, go, ro, [&](int32_t t, int64_t) {
        sofar.push_back(t);
        text = detok(sofar, 0);
        for (auto& st : stops) {
          const size_t p = text.find(st);
          if (p != std::string::npos) {
            text.resize(p);
            stopped = true;
          }
        }
        size_t end = stopped ? text.size() : utf8_safe_end(text);
        if (!stopped) end = end > hold ? end - hold : 0;
        if (on_text && end > emitted) {
          on_text(text.substr(emitted, end - emitted));
          emitted = end;
        }
        return !stopped;
      }, rr ? &*rr : nullptr);
      if (on_text && text.size() > emitted) on_text(text.substr(emitted));
      metrics_.prompt(r.prompt_tokens);
      metrics_.generated(static_cast<int64_t>(r.tokens.size()));
      metrics_.ttt_steps(r.ttt_steps);
      return r.prompt_tokens + static_cast<int64_t>(r.tokens.size());
    };
    json extra;
    if (session) {
      extra = session_json(store_->mutate(tenant, *session, ifm, "completion", work));
    } else {
      inference::Session s(*model_);
      work(s, nullptr);
    }
    if (rr) extra["recall"] = recall_json(*rr);
    const std::string reason = stopped || r.stop == inference::StopReason::kStopToken ? "stop" : "length";
    return std::make_tuple(text, reason, r, extra);
  };
  const std::string model_id = model_id_;
  if (!stream) {
    auto [text, reason, r, extra] = run({});
    json j = {{"id", cid},
              {"object", "text_completion"},
              {"created", created},
              {"model", model_id},
              {"choices", json::array({{{"text", text}, {"index", 0}, {"logprobs", nullptr}, {"finish_reason", reason}}})},
              {"usage",
               {{"prompt_tokens", r.prompt_tokens},
                {"completion_tokens", r.tokens.size()},
                {"total_tokens", r.prompt_tokens + static_cast<int64_t>(r.tokens.size())}}}};
    if (session) {
      if (extra.contains("recall")) {
        j["recall"] = extra["recall"];
        extra.erase("recall");
      }
      j["session"] = extra;
    }
    send_json(c.res, 200, j);
    return;
  }
  auto slot = c.slot;
  c.res.set_chunked_content_provider("text/event-stream", [run, slot, cid, created, model_id](size_t, httplib::DataSink& sink) {
    SseWriter w{sink};
    auto chunk = [&](const std::string& text, const json& reason) {
      return json{{"id", cid},
                  {"object", "text_completion"},
                  {"created", created},
                  {"model", model_id},
                  {"choices", json::array({{{"text", text}, {"index", 0}, {"logprobs", nullptr}, {"finish_reason", reason}}})}};
    };
    try {
      auto [text, reason, r, extra] = run([&](const std::string& delta) {
        if (!w.event(chunk(delta, nullptr))) throw Cancelled();
      });
      w.event(chunk("", reason));
    } catch (const Cancelled&) {
    } catch (const ApiError& e) {
      w.raw("data: " + error_body(e.type, e.what()) + "\n\n");
    } catch (const std::exception& e) {
      w.raw("data: " + error_body("invalid_request_error", e.what()) + "\n\n");
    }
    w.raw("data: [DONE]\n\n");
    sink.done();
    return true;
  });
}

void Server::routes() {
  using Req = httplib::Request;
  using Res = httplib::Response;
  http_.Get("/health", [this](const Req&, Res& res) {
    if (ready_) send_json(res, 200, {{"status", "ok"}});
    else send_json(res, 503, {{"status", "loading"}});
  });
  http_.Get("/metrics", [this](const Req& req, Res& res) {
    handle("metrics", req, res, [this](Ctx& c) { c.res.set_content(metrics_.render(gauges()), "text/plain; version=0.0.4"); }, false);
  });
  http_.Get("/openapi.json", [](const Req&, Res& res) { res.set_content(openapi_json(), "application/json"); });
  http_.Get("/v1/models", [this](const Req& req, Res& res) {
    handle("models", req, res, [this](Ctx& c) {
      send_json(c.res, 200,
                {{"object", "list"},
                 {"data", json::array({{{"id", model_id_}, {"object", "model"}, {"created", unix_time(created_)}, {"owned_by", "ttt"}}})}});
    });
  });
  http_.Post("/v1/completions", [this](const Req& req, Res& res) { handle("completions", req, res, [this](Ctx& c) { completions(c); }); });
  http_.Post("/v1/sessions", [this](const Req& req, Res& res) {
    handle("sessions.create", req, res, [this](Ctx& c) {
      const json body = body_json(c.req);
      Fields f(body, {"metadata"}, true);
      std::string meta = "{}";
      if (f.has("metadata")) {
        if (!f.at("metadata").is_object()) throw bad_request("field 'metadata' must be an object");
        meta = f.at("metadata").dump();
        if (meta.size() > 65536) throw bad_request("field 'metadata' is larger than 64 KiB");
      }
      send_json(c.res, 201, session_json(store_->create(c.tenant, meta)));
    });
  });
  http_.Get("/v1/sessions", [this](const Req& req, Res& res) {
    handle("sessions.list", req, res, [this](Ctx& c) {
      json data = json::array();
      for (auto& s : store_->list(c.tenant)) data.push_back(session_json(s));
      send_json(c.res, 200, {{"object", "list"}, {"data", data}});
    });
  });
  const std::string sid = "/v1/sessions/([A-Za-z0-9_-]{1,64})";
  http_.Get(sid, [this](const Req& req, Res& res) {
    handle("sessions.get", req, res, [this](Ctx& c) {
      const auto info = store_->get(c.tenant, c.req.matches[1]);
      send_json(c.res, 200, session_json(info));
      std::string etag = "\"";
      etag += std::to_string(info.version);
      etag += '"';
      c.res.set_header("ETag", etag);
    });
  });
  http_.Delete(sid, [this](const Req& req, Res& res) {
    handle("sessions.delete", req, res, [this](Ctx& c) {
      store_->remove(c.tenant, c.req.matches[1], if_match(c.req));
      c.res.status = 204;
    });
  });
  http_.Post(sid + "/ingest", [this](const Req& req, Res& res) {
    handle("sessions.ingest", req, res, [this](Ctx& c) { ingest(c, c.req.matches[1]); });
  });
  http_.Post(sid + "/generate", [this](const Req& req, Res& res) {
    handle("sessions.generate", req, res, [this](Ctx& c) { generate(c, c.req.matches[1]); });
  });
  http_.Post(sid + "/fork", [this](const Req& req, Res& res) {
    handle("sessions.fork", req, res, [this](Ctx& c) {
      const json body = body_json(c.req);
      Fields(body, {}, true);  // validates: no fields allowed
      send_json(c.res, 201, session_json(store_->fork(c.tenant, c.req.matches[1])));
    });
  });
  http_.Post(sid + "/reset", [this](const Req& req, Res& res) {
    handle("sessions.reset", req, res, [this](Ctx& c) {
      const json body = body_json(c.req);
      Fields(body, {}, true);  // validates: no fields allowed
      send_json(c.res, 200, session_json(store_->reset(c.tenant, c.req.matches[1], if_match(c.req))));
    });
  });
  http_.Post(sid + "/snapshots", [this](const Req& req, Res& res) {
    handle("sessions.snapshot", req, res, [this](Ctx& c) {
      const json body = body_json(c.req);
      Fields f(body, {"label"}, true);
      const std::string label = f.string("label").value_or("");
      if (label.size() > 1024) throw bad_request("field 'label' is longer than 1024 bytes");
      send_json(c.res, 201, snapshot_json(store_->snapshot(c.tenant, c.req.matches[1], label)));
    });
  });
  http_.Get(sid + "/snapshots", [this](const Req& req, Res& res) {
    handle("sessions.snapshots", req, res, [this](Ctx& c) {
      json data = json::array();
      for (auto& s : store_->snapshots(c.tenant, c.req.matches[1])) data.push_back(snapshot_json(s));
      send_json(c.res, 200, {{"object", "list"}, {"data", data}});
    });
  });
  http_.Post(sid + "/restore", [this](const Req& req, Res& res) {
    handle("sessions.restore", req, res, [this](Ctx& c) {
      const json body = body_json(c.req);
      Fields f(body, {"version"}, true);
      const auto v = f.integer("version", 0, INT64_MAX);
      if (!v) throw bad_request("field 'version' is required");
      send_json(c.res, 200, session_json(store_->restore(c.tenant, c.req.matches[1], *v, if_match(c.req))));
    });
  });
  http_.Get(sid + "/state", [this](const Req& req, Res& res) {
    handle("sessions.export", req, res, [this](Ctx& c) {
      c.res.set_content(store_->export_state(c.tenant, c.req.matches[1]), "application/octet-stream");
    });
  });
  http_.Put(sid + "/state", [this](const Req& req, Res& res) {
    handle("sessions.import", req, res, [this](Ctx& c) {
      if (c.req.body.empty()) throw bad_request("the body must be a session state file");
      send_json(c.res, 200, session_json(store_->import_state(c.tenant, c.req.matches[1], c.req.body, if_match(c.req))));
    });
  });
  http_.Get(sid + "/store", [this](const Req& req, Res& res) {
    handle("sessions.store_export", req, res, [this](Ctx& c) {
      c.res.set_content(store_->export_exact(c.tenant, c.req.matches[1]), "application/vnd.sqlite3");
    });
  });
  http_.Put(sid + "/store", [this](const Req& req, Res& res) {
    handle("sessions.store_import", req, res, [this](Ctx& c) {
      if (c.req.body.empty()) throw bad_request("the body must be an exact store (GET .../store gives one)");
      send_json(c.res, 200, session_json(store_->import_exact(c.tenant, c.req.matches[1], c.req.body, if_match(c.req))));
    });
  });
  // What recall would bring back for a prompt, without generating (the session is not changed).
  http_.Post(sid + "/recall", [this](const Req& req, Res& res) {
    handle("sessions.recall", req, res, [this](Ctx& c) {
      const json body = body_json(c.req);
      Fields f(body, {"prompt", "k", "query_tokens"}, true);
      if (!f.has("prompt")) throw bad_request("field 'prompt' is required");
      const Input in = input(f, "prompt");
      const int k = static_cast<int>(f.integer("k", 1, 64).value_or(4));
      const int64_t qt = f.integer("query_tokens", 1, 65536).value_or(256);
      if (!store_->exact_enabled())
        throw exact_store_off();
      json data = json::array();
      store_->read(c.tenant, c.req.matches[1], [&](const inference::Session& s, const SessionInfo&, const memory::ExactStore* ex) {
        const auto prompt = resolve(in, s.position() == 0);
        if (prompt.empty()) throw bad_request("field 'prompt' is empty");
        for (const auto& sp : ex->retrieve(prompt, k, inference::recall_horizon(s), qt)) {
          json j = {{"start", sp.start}, {"length", static_cast<int64_t>(sp.tokens.size())}, {"score", sp.score}, {"tokens", sp.tokens}};
          if (tok_) j["text"] = detok(sp.tokens, 0);
          data.push_back(j);
        }
      }, /*with_exact=*/true);
      send_json(c.res, 200, {{"object", "list"}, {"data", data}});
    });
  });
  // Errors httplib raises itself (no route, body too large, bad request line) in the same form.
  http_.set_error_handler(httplib::Server::HandlerWithResponse([](const Req&, Res& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    const char* type = res.status == 404 ? "not_found_error"
                       : res.status == 413 ? "request_too_large"
                       : res.status >= 500 ? "server_error"
                                           : "invalid_request_error";
    const std::string msg = res.status == 404   ? "no such route"
                            : res.status == 413 ? "the request body is larger than --max-body-bytes"
                            : res.status == 405 ? "method not allowed"
                                                : "bad request (HTTP " + std::to_string(res.status) + ")";
    res.set_content(error_body(type, msg), "application/json");
    // The request may not have been read to its end (an unrouted method with a body): the
    // connection cannot be reused safely.
    res.set_header("Connection", "close");
    return httplib::Server::HandlerResponse::Handled;
  }));
  http_.set_exception_handler([](const Req&, Res& res, std::exception_ptr) {
    res.status = 500;
    res.set_content(error_body("server_error", "internal error"), "application/json");
  });
}

void Server::load() {
  model::Model m = model::Model::load(o_.model_dir, o_.compute_bf16 ? model::Weights::BF16 : model::Weights::Auto);
  m.set_bf16_products(o_.compute_bf16);
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

int Server::run() {
  // SIGTERM/SIGINT are taken by one thread (sigwait) that stops the listener; blocked here
  // first so that every thread started later inherits the mask.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  ::signal(SIGPIPE, SIG_IGN);  // a client that goes away is a failed write, not a dead server

  const size_t threads = static_cast<size_t>(o_.threads);
  http_.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  http_.set_payload_max_length(o_.max_body_bytes);
  http_.set_read_timeout(o_.read_timeout_s);
  http_.set_write_timeout(o_.read_timeout_s);
  int port = o_.port;
  if (port == 0) port = http_.bind_to_any_port(o_.host);
  else if (!http_.bind_to_port(o_.host, port)) port = -1;
  if (port <= 0) throw std::runtime_error("cannot listen on " + o_.host + ":" + std::to_string(o_.port));
  std::fprintf(stderr, "ttt serve: listening on http://%s:%d\n", o_.host.c_str(), port);
  std::fflush(stderr);

  std::atomic<bool> failed{false};
  std::string load_error;
  std::thread loader([&] {
    try {
      load();
      ready_ = true;
      std::fprintf(stderr, "ttt serve: ready (model %s%s%s)\n", model_id_.c_str(), tok_ ? ", tokenizer " : "",
                   tok_ ? tok_->path().c_str() : "");
    } catch (const std::exception& e) {
      load_error = e.what();
      failed = true;
      http_.stop();
    }
  });
  std::atomic<bool> stopping{false};
  std::thread sig([&] {
    int s = 0;
    sigwait(&set, &s);
    if (!stopping) {
      std::fprintf(stderr, "ttt serve: signal %d, draining requests in flight\n", s);
      // stop() may come before listen has started: keep asking until it has.
      while (!failed && !http_.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
      http_.stop();
    }
  });
  http_.listen_after_bind();  // returns when stopped, after the worker threads have finished
  loader.join();
  stopping = true;
  pthread_kill(sig.native_handle(), SIGTERM);
  sig.join();
  if (failed) throw std::runtime_error(load_error);
  std::fprintf(stderr, "ttt serve: stopped\n");
  return 0;
}

}  // namespace

int run_server(const ServerOptions& o) {
  Server s(o);
  return s.run();
}

}  // namespace ttt::server
