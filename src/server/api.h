// What the route files of `ttt serve` share (internal to src/server): the request context, the
// server's state and helpers (Api), and the route table's entry type.
//
// Every route is one Route in one table (routes_*.cpp, gathered by all_routes()); from that
// table come the router (http_server.cpp), the 405 answers with their Allow field, and the
// /openapi.json document (each entry carries its operation's schemas, next to its handler).
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "data/tokenizer.h"
#include "inference/generation.h"
#include "inference/recall.h"
#include "model/model.h"
#include "server/auth.h"
#include "server/http.h"
#include "server/metrics.h"
#include "server/server.h"
#include "server/session_store.h"

namespace ttt::server {

using json = nlohmann::json;

// Thrown inside a generation whose client went away: the mutation is abandoned.
struct Cancelled : std::runtime_error {
  Cancelled() : std::runtime_error("the client disconnected") {}
};

std::string error_body(const std::string& type, const std::string& msg);
void send_json(http::Response& res, int status, const json& j);
int64_t unix_time(double t);
json session_json(const SessionInfo& i);
json snapshot_json(const SnapshotInfo& s);
size_t utf8_safe_end(const std::string& s);

// A request body parsed in one pass (issue 25): token arrays under the keys the route names
// ("tokens", "prompt", "stop_tokens") go straight into int32 vectors, checked against the
// vocabulary and the length limit while they are read; everything else becomes a small JSON
// tree. In the tree such an array is an empty array; ints() gives its ids.
struct Body {
  json j = json::object();
  std::map<std::string, std::vector<int32_t>> ints;  // top-level key -> its ids
  std::set<std::string> nested;  // keys whose ids came in the one-element batch form [[ids]]
};

// Typed access to a request object. strict: fields outside `known` are an error (the session
// API); otherwise they are ignored (the OpenAI API, whose clients send fields we do not use).
// A null value counts as absent, as OpenAI clients send it for unset options.
class Fields {
 public:
  Fields(Body&&, std::set<std::string>, bool) = delete;
  Fields(const Body& b, std::set<std::string> known, bool strict);
  bool has(const std::string& k) const { return j_.contains(k) && !j_.at(k).is_null(); }
  const json& at(const std::string& k) const { return j_.at(k); }
  const Body& body() const { return b_; }
  std::optional<int64_t> integer(const std::string& k, int64_t lo, int64_t hi) const;
  std::optional<double> number(const std::string& k, double lo, double hi) const;
  std::optional<bool> boolean(const std::string& k) const;
  std::optional<std::string> string(const std::string& k) const;

 private:
  const Body& b_;
  const json& j_;
};

// A prompt or ingest payload: text (encoded later, when the session's position is known) or ids.
struct Input {
  bool is_text = false;
  std::string text;
  std::vector<int32_t> tokens;
};

struct Ctx {
  http::Request& req;
  http::Response& res;
  std::string tenant;
  std::shared_ptr<void> slot;  // the tenant's concurrency slot, released when the last holder goes
  const std::string& param(size_t i) const { return req.params.at(i); }
};

class Api {
 public:
  explicit Api(ServerOptions o);

  ServerOptions o_;
  ApiKeys keys_;
  Metrics metrics_;
  std::string model_id_;
  double created_ = 0;
  std::unique_ptr<model::Model> model_;
  std::optional<data::Tokenizer> tok_;
  std::unique_ptr<SessionStore> store_;
  std::atomic<bool> ready_{false};
  std::atomic<int64_t> in_flight_{0};

  void load();
  std::shared_ptr<void> acquire_slot(const std::string& tenant);
  // The body as JSON; token_keys: the keys whose integer arrays are read as token ids.
  Body body(const http::Request& req, const std::set<std::string>& token_keys = {}) const;
  std::optional<int64_t> if_match(const http::Request& req) const;
  // openai_batch: also the OpenAI completions' one-element batch forms ["text"] and [[ids]].
  Input input(const Fields& f, const std::string& key, bool allow_text = true, bool openai_batch = false) const;
  std::vector<int32_t> token_array(const Fields& f, const std::string& key, int64_t max_len) const;
  std::vector<int32_t> resolve(const Input& in, bool new_document) const;
  inference::GenerateOptions gen_options(const Fields& f, const std::string& max_key, int64_t default_max) const;
  inference::RecallOptions recall_options(const Fields& f) const;
  std::string detok(const std::vector<int32_t>& ids, size_t from) const;
  Metrics::Gauges gauges();

 private:
  std::mutex tenant_mu_;
  std::map<std::string, int64_t> tenant_busy_;
};

json recall_json(const inference::RecallResult& rr);

// Writes SSE events; false once the client is gone.
struct SseWriter {
  http::Sink& sink;
  bool ok = true;
  bool event(const json& j) { return raw("data: " + j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n"); }
  bool raw(const std::string& s) {
    if (ok) ok = sink.write(s);
    return ok;
  }
};

struct Route {
  const char* method;   // GET, POST, PUT, DELETE
  const char* pattern;  // "/v1/sessions/{id}/ingest": {id} matches [A-Za-z0-9_-]{1,64}
  const char* name;     // metrics label
  bool needs_model;     // 503 while the model loads
  bool has_body;        // reads a body (413 documented)
  std::function<void(Api&, Ctx&)> fn;
  // The OpenAPI operation (operationId, requestBody, the responses other than errors) and the
  // error statuses it documents (each with the Error schema; 405 is added to every route).
  const char* openapi;
  std::vector<int> errors;
};

std::vector<Route> health_routes();      // routes_health.cpp: /health, /metrics, /openapi.json
std::vector<Route> model_routes();       // routes_models.cpp
std::vector<Route> completion_routes();  // routes_completions.cpp
std::vector<Route> session_routes();     // routes_sessions.cpp: create, list, get, delete, fork, reset
std::vector<Route> ingest_routes();      // routes_ingest.cpp: ingest, generate, recall
std::vector<Route> snapshot_routes();    // routes_snapshots.cpp
std::vector<Route> state_routes();       // routes_state.cpp: state and exact store export/import
const std::vector<Route>& all_routes();
// What is decided on a request's head (http_server.cpp): the route and its captures, the method
// (404, 405 with Allow), readiness (503), the API key (401), the tenant's slot (429); or the
// handler to run once the body is read, and what to record when the request is done.
http::Admission admit_request(Api& api, http::Request& req);
// Whether a status is one the route's table entry documents (its OpenAPI responses).
bool documented_status(const Route& r, int status);
const Route* find_route(const std::string& method, const std::string& path);
// /openapi.json, built from all_routes().
const std::string& openapi_document();

}  // namespace ttt::server
