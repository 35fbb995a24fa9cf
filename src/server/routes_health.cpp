// Routes: GET /health, GET /metrics, GET /openapi.json.
#include "server/api.h"

namespace ttt::server {

std::vector<Route> health_routes() {
  return {
      {"GET", "/health", "health", false, false,
       [](Api& a, Ctx& c) {
         if (a.ready_) send_json(c.res, 200, {{"status", "ok"}});
         else send_json(c.res, 503, {{"status", "loading"}});
       },
       R"json({"operationId":"health","responses":{"200":{"description":"ok","content":{"application/json":{"schema":{"type":"object","properties":{"status":{"type":"string"}}}}}},"503":{"description":"loading","content":{"application/json":{"schema":{"type":"object"}}}}}})json",
       {}},
      {"GET", "/metrics", "metrics", false, false,
       [](Api& a, Ctx& c) { c.res.set_content(a.metrics_.render(a.gauges()), "text/plain; version=0.0.4"); },
       R"json({"operationId":"metrics","responses":{"200":{"description":"ok","content":{"text/plain":{"schema":{"type":"string"}}}}}})json",
       {}},
      {"GET", "/openapi.json", "openapi", false, false,
       [](Api&, Ctx& c) { c.res.set_content(openapi_document(), "application/json"); },
       R"json({"operationId":"openapi","responses":{"200":{"description":"this document","content":{"application/json":{"schema":{"type":"object"}}}}}})json",
       {}},
  };
}

}  // namespace ttt::server
