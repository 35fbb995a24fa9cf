// Routes: a session's state file and exact store, exported and imported.
#include "server/api.h"

namespace ttt::server {

std::vector<Route> state_routes() {
  return {
      {"GET", "/v1/sessions/{id}/state", "sessions.export", true, false,
       [](Api& a, Ctx& c) { c.res.set_content(a.store_->export_state(c.tenant, c.param(0)), "application/octet-stream"); },
       R"json({"operationId":"exportState","responses":{"200":{"description":"ok","content":{"application/octet-stream":{"schema":{"type":"string","format":"binary"}}}}}})json",
       {401, 404, 429, 503}},
      {"PUT", "/v1/sessions/{id}/state", "sessions.import", true, true,
       [](Api& a, Ctx& c) {
         if (c.req.body.empty()) throw bad_request("the body must be a session state file");
         send_json(c.res, 200, session_json(a.store_->import_state(c.tenant, c.param(0), c.req.body, a.if_match(c.req))));
       },
       R"json({"operationId":"importState","parameters":[{"name":"If-Match","in":"header","required":false,"schema":{"type":"string","pattern":"^(\\*|(W/)?\"?[0-9]{1,18}\"?)$"}}],"requestBody":{"required":true,"content":{"application/octet-stream":{"schema":{"type":"string","format":"binary"}}}},"responses":{"200":{"description":"ok","content":{"application/json":{"schema":{"$ref":"#/components/schemas/Session"}}}}}})json",
       {400, 401, 404, 412, 413, 429, 503}},
      {"GET", "/v1/sessions/{id}/store", "sessions.store_export", true, false,
       [](Api& a, Ctx& c) { c.res.set_content(a.store_->export_exact(c.tenant, c.param(0)), "application/vnd.sqlite3"); },
       R"json({"operationId":"exportStore","responses":{"200":{"description":"the session's exact store (an SQLite database)","content":{"application/vnd.sqlite3":{"schema":{"type":"string","format":"binary"}}}}}})json",
       {401, 404, 409, 429, 503}},
      {"PUT", "/v1/sessions/{id}/store", "sessions.store_import", true, true,
       [](Api& a, Ctx& c) {
         if (c.req.body.empty()) throw bad_request("the body must be an exact store (GET .../store gives one)");
         send_json(c.res, 200, session_json(a.store_->import_exact(c.tenant, c.param(0), c.req.body, a.if_match(c.req))));
       },
       R"json({"operationId":"importStore","parameters":[{"name":"If-Match","in":"header","required":false,"schema":{"type":"string","pattern":"^(\\*|(W/)?\"?[0-9]{1,18}\"?)$"}}],"requestBody":{"required":true,"content":{"application/octet-stream":{"schema":{"type":"string","format":"binary"}}}},"responses":{"200":{"description":"ok","content":{"application/json":{"schema":{"$ref":"#/components/schemas/Session"}}}}}})json",
       {400, 401, 404, 409, 412, 413, 429, 503}},
  };
}

}  // namespace ttt::server
