// `ttt serve` (SPEC section 8): the route table's router, its 405s and its /openapi.json, over
// the event-driven HTTP layer (http.h). What no body is needed for is decided on the request's
// head, on the I/O thread: the route, the method (405 with Allow), the model's readiness, the
// API key (401) and the tenant's request slot (429); the handler then runs on a worker with the
// body read. Every exception becomes a JSON error with a 4xx/5xx status.
#include <malloc.h>
#include <pthread.h>
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include "io/messages.h"
#include "server/api.h"

namespace ttt::server {

const std::vector<Route>& all_routes() {
  static const std::vector<Route> routes = [] {
    std::vector<Route> r;
    for (auto part : {health_routes(), model_routes(), completion_routes(), session_routes(), ingest_routes(),
                      snapshot_routes(), state_routes()})
      for (auto& x : part) r.push_back(std::move(x));
    return r;
  }();
  return routes;
}

namespace {

// Schemas several routes share (their operations, in routes_*.cpp, refer to them).
const char* kComponents = R"json({"schemas":{"Session":{"type":"object","required":["id","position","version","ttt_steps","pending_tokens","state_bytes","created","updated","metadata"],"properties":{"id":{"type":"string"},"object":{"type":"string"},"position":{"type":"integer"},"version":{"type":"integer"},"ttt_steps":{"type":"integer"},"pending_tokens":{"type":"integer"},"state_bytes":{"type":"integer"},"created":{"type":"integer"},"updated":{"type":"integer"},"metadata":{"type":"object"}}},"Ingest":{"allOf":[{"$ref":"#/components/schemas/Session"},{"type":"object","required":["chunk_losses"],"properties":{"chunk_losses":{"type":"array","items":{"type":"number"}},"tokens_ingested":{"type":"integer"}}}]},"Snapshot":{"type":"object","required":["version","label","created"],"properties":{"version":{"type":"integer"},"label":{"type":"string"},"created":{"type":"integer"},"position":{"type":"integer"}}},"Error":{"type":"object","required":["error"],"properties":{"error":{"type":"object","required":["message","type"],"properties":{"message":{"type":"string"},"type":{"type":"string"}}}}},"Recall":{"type":"object","nullable":true,"description":"Recall from the session's exact store before answering (issue 13)","properties":{"k":{"type":"integer","minimum":0,"maximum":64,"nullable":true},"mode":{"type":"string","enum":["window","review","both"],"nullable":true},"query_tokens":{"type":"integer","minimum":1,"maximum":65536,"nullable":true}},"additionalProperties":false},"RecallResult":{"type":"object","properties":{"spans":{"type":"array","items":{"type":"object"}},"tokens":{"type":"integer"},"seconds":{"type":"number"}}}},"securitySchemes":{"bearer":{"type":"http","scheme":"bearer"}}})json";
const char* kInfo = R"json({"title":"ttt serve","version":"1","description":"Sessions of a TTT-E2E model that learns while it reads (SPEC section 8)."})json";

std::vector<std::string> split_path(const std::string& p) {
  std::vector<std::string> out;
  size_t i = 1;
  while (i <= p.size()) {
    const size_t j = p.find('/', i);
    out.push_back(p.substr(i, j == std::string::npos ? std::string::npos : j - i));
    if (j == std::string::npos) break;
    i = j + 1;
  }
  return out;
}

bool id_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-'; }

// Whether `path` matches `pattern`; the captures go to `params`.
bool match(const std::string& pattern, const std::string& path, std::vector<std::string>* params) {
  if (path.empty() || path[0] != '/') return false;
  const auto ps = split_path(pattern), xs = split_path(path);
  if (ps.size() != xs.size()) return false;
  std::vector<std::string> caps;
  for (size_t i = 0; i < ps.size(); ++i) {
    const std::string& p = ps[i];
    const std::string& x = xs[i];
    if (!p.empty() && p.front() == '{') {
      if (x.empty() || x.size() > 256) return false;
      if (p == "{id}") {
        if (x.size() > 64) return false;
        for (char c : x)
          if (!id_char(c)) return false;
      }
      caps.push_back(x);
    } else if (p != x) {
      return false;
    }
  }
  if (params) *params = std::move(caps);
  return true;
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

const std::string& openapi_document() {
  static const std::string doc = [] {
    json d = {{"openapi", "3.0.3"}, {"info", json::parse(kInfo)}, {"servers", json::array({{{"url", "/"}}})}};
    json paths = json::object();
    const json err = {{"description", "error"},
                      {"content", {{"application/json", {{"schema", {{"$ref", "#/components/schemas/Error"}}}}}}}};
    for (const Route& r : all_routes()) {
      json op = json::parse(r.openapi);
      for (int s : r.errors) op["responses"][std::to_string(s)] = err;
      op["responses"]["405"] = err;
      if (r.has_body) op["responses"]["413"] = err;
      json& p = paths[r.pattern];
      std::vector<std::string> names;
      for (const auto& seg : split_path(r.pattern))
        if (!seg.empty() && seg.front() == '{') names.push_back(seg.substr(1, seg.size() - 2));
      if (!names.empty() && !p.contains("parameters")) {
        json params = json::array();
        for (const auto& n : names) {
          json schema = {{"type", "string"}};
          if (n == "id") schema["pattern"] = "^[A-Za-z0-9_-]{1,64}$";
          params.push_back({{"name", n}, {"in", "path"}, {"required", true}, {"schema", schema}});
        }
        p["parameters"] = params;
      }
      p[lower(r.method)] = op;
    }
    d["paths"] = paths;
    d["components"] = json::parse(kComponents);
    d["security"] = json::array({{{"bearer", json::array()}}, json::object()});
    return d.dump();
  }();
  return doc;
}

bool documented_status(const Route& r, int status) {
  if (status == 405 || (r.has_body && status == 413)) return true;
  for (int e : r.errors)
    if (e == status) return true;
  return json::parse(r.openapi)["responses"].contains(std::to_string(status));
}

const Route* find_route(const std::string& method, const std::string& path) {
  for (const Route& r : all_routes())
    if (method == r.method && match(r.pattern, path, nullptr)) return &r;
  return nullptr;
}

namespace {

class Server {
 public:
  explicit Server(ServerOptions o) : api_(std::move(o)) {
    http::ServerConfig c;
    c.host = api_.o_.host;
    c.port = api_.o_.port;
    c.workers = api_.o_.threads;
    c.max_connections = static_cast<size_t>(api_.o_.max_connections);
    c.max_body_bytes = api_.o_.max_body_bytes;
    c.head_timeout_s = api_.o_.header_timeout_s;
    c.body_timeout_s = api_.o_.read_timeout_s;
    c.idle_timeout_s = api_.o_.idle_timeout_s;
    c.write_timeout_s = api_.o_.read_timeout_s;
    http::HttpServer::error_body = [](int status, const std::string& msg) {
      const char* type = status == 404 ? "not_found_error"
                         : status == 413 ? "request_too_large"
                         : status == 503 ? "unavailable"
                         : status >= 500 ? "server_error"
                                         : "invalid_request_error";
      return error_body(type, msg);
    };
    http_ = std::make_unique<http::HttpServer>(c, [this](http::Request& r) { return admit(r); });
  }
  int run();

 private:
  http::Admission admit(http::Request& req) { return admit_request(api_, req); }
  Api api_;
  std::unique_ptr<http::HttpServer> http_;
};

}  // namespace

namespace {

http::Response json_error(int status, const std::string& type, const std::string& msg) {
  http::Response r;
  r.status = status;
  r.body = error_body(type, msg);
  return r;
}

// Requests with bodies this large return their memory to the system once answered.
constexpr size_t kTrimAbove = size_t{8} << 20;

}  // namespace

http::Admission admit_request(Api& api_, http::Request& req) {
  http::Admission a;
  const auto t0 = std::chrono::steady_clock::now();
  const Route* route = nullptr;
  std::string allow;
  for (const Route& r : all_routes()) {
    if (!match(r.pattern, req.path, nullptr)) continue;
    if (req.method == r.method) {
      route = &r;
      break;
    }
    allow += allow.empty() ? "" : ", ";
    allow += r.method;
  }
  const std::string name = route ? route->name : "unrouted";
  auto reject = [&](http::Response res) {
    api_.metrics_.request(name, res.status, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    a.reject = std::move(res);
    return a;
  };
  if (!route && allow.empty()) return reject(json_error(404, "not_found_error", "no such route"));
  if (!route) {
    auto res = json_error(405, "invalid_request_error", "method " + io::one_line(req.method, 32) + " is not allowed here (allowed: " + allow + ")");
    res.set_header("Allow", allow);
    return reject(std::move(res));
  }
  match(route->pattern, req.path, &req.params);
  std::string tenant;
  std::shared_ptr<void> slot;
  try {
    if (route->needs_model && !api_.ready_) throw ApiError(503, "unavailable", "the model is loading");
    if (req.path.rfind("/v1/", 0) == 0) {
      auto t = api_.keys_.tenant(req.header_value("authorization"));
      if (!t) throw ApiError(401, "authentication_error", "missing or unknown API key (Authorization: Bearer KEY)");
      tenant = *t;
      slot = api_.acquire_slot(tenant);
    }
  } catch (const ApiError& e) {
    return reject(json_error(e.status, e.type, e.what()));
  }
  a.hold = slot;
  ++api_.in_flight_;
  auto big = std::make_shared<bool>(false);  // a large body: memory trimmed once answered
  a.handler = [&api_, route, tenant, slot, big](http::Request& rq, http::Response& res) {
    *big = rq.body.size() > kTrimAbove;
    Ctx c{rq, res, tenant, slot};
    try {
      route->fn(api_, c);
    } catch (const ApiError& e) {
      res = json_error(e.status, e.type, e.what());
    } catch (const json::exception& e) {
      res = json_error(400, "invalid_request_error", e.what());
    } catch (const std::invalid_argument& e) {
      res = json_error(400, "invalid_request_error", e.what());
    } catch (const std::bad_alloc&) {
      res = json_error(507, "server_error", "out of memory");
    } catch (const std::exception& e) {
      res = json_error(500, "server_error", e.what());
    }
  };
  a.done = [&api_, name, t0, big](const http::Response& res) {
    --api_.in_flight_;
    api_.metrics_.request(name, res.status, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    // Memory after large requests (issue 25): the free pages of every arena go back to the system.
    if (*big) ::malloc_trim(0);
  };
  return a;
}

namespace {

int Server::run() {
  // SIGTERM/SIGINT are taken by one thread (sigwait) that stops the server; blocked here
  // first so that every thread started later inherits the mask.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  ::signal(SIGPIPE, SIG_IGN);  // a client that goes away is a failed write, not a dead server
  // Worker threads each get an arena otherwise; a few arenas keep the memory of large requests
  // from staying spread over many (issue 25).
  ::mallopt(M_ARENA_MAX, 4);

  const int port = http_->bind();
  std::fprintf(stderr, "ttt serve: listening on http://%s:%d\n", api_.o_.host.c_str(), port);
  std::fflush(stderr);

  std::atomic<bool> failed{false};
  std::string load_error;
  std::thread loader([&] {
    try {
      api_.load();
      api_.ready_ = true;
      std::fprintf(stderr, "ttt serve: ready (model %s%s%s)\n", api_.model_id_.c_str(), api_.tok_ ? ", tokenizer " : "",
                   api_.tok_ ? api_.tok_->path().c_str() : "");
    } catch (const std::exception& e) {
      load_error = e.what();
      failed = true;
      http_->stop();
    }
  });
  std::atomic<bool> stopping{false};
  std::thread sig([&] {
    int s = 0;
    sigwait(&set, &s);
    if (!stopping) {
      std::fprintf(stderr, "ttt serve: signal %d, draining requests in flight\n", s);
      http_->stop();
    }
  });
  http_->run();  // returns when stopped, after the requests in flight have been answered
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
