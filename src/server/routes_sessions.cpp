// Routes: the sessions themselves (create, list, get, delete, fork, reset).
#include "server/api.h"

namespace ttt::server {

std::vector<Route> session_routes() {
  return {
      {"POST", "/v1/sessions", "sessions.create", true, true,
       [](Api& a, Ctx& c) {
         const Body body = a.body(c.req);
         Fields f(body, {"metadata"}, true);
         std::string meta = "{}";
         if (f.has("metadata")) {
           if (!f.at("metadata").is_object()) throw bad_request("field 'metadata' must be an object");
           meta = f.at("metadata").dump();
           if (meta.size() > 65536) throw bad_request("field 'metadata' is larger than 64 KiB");
         }
         send_json(c.res, 201, session_json(a.store_->create(c.tenant, meta)));
       },
       R"json({"operationId":"createSession","requestBody":{"required":false,"content":{"application/json":{"schema":{"type":"object","properties":{"metadata":{"type":"object","nullable":true}},"additionalProperties":false}}}},"responses":{"201":{"description":"ok","content":{"application/json":{"schema":{"$ref":"#/components/schemas/Session"}}}}}})json",
       {400, 401, 413, 429, 503}},
      {"GET", "/v1/sessions", "sessions.list", true, false,
       [](Api& a, Ctx& c) {
         json data = json::array();
         for (auto& s : a.store_->list(c.tenant)) data.push_back(session_json(s));
         send_json(c.res, 200, {{"object", "list"}, {"data", data}});
       },
       R"json({"operationId":"listSessions","responses":{"200":{"description":"ok","content":{"application/json":{"schema":{"type":"object","required":["data"],"properties":{"object":{"type":"string"},"data":{"type":"array","items":{"$ref":"#/components/schemas/Session"}}}}}}}}})json",
       {401, 429, 503}},
      {"GET", "/v1/sessions/{id}", "sessions.get", true, false,
       [](Api& a, Ctx& c) {
         const auto info = a.store_->get(c.tenant, c.param(0));
         send_json(c.res, 200, session_json(info));
         std::string etag = "\"";  // built by appends: GCC 12 warns falsely (-Wrestrict) on "\"" + s
         etag += std::to_string(info.version);
         etag += '"';
         c.res.set_header("ETag", etag);
       },
       R"json({"operationId":"getSession","responses":{"200":{"description":"ok","content":{"application/json":{"schema":{"$ref":"#/components/schemas/Session"}}}}}})json",
       {401, 404, 429, 503}},
      {"DELETE", "/v1/sessions/{id}", "sessions.delete", true, false,
       [](Api& a, Ctx& c) {
         a.store_->remove(c.tenant, c.param(0), a.if_match(c.req));
         c.res.status = 204;
         c.res.content_type.clear();
       },
       R"json({"operationId":"deleteSession","parameters":[{"name":"If-Match","in":"header","required":false,"schema":{"type":"string","pattern":"^(\\*|(W/)?\"?[0-9]{1,18}\"?)$"}}],"responses":{"204":{"description":"deleted"}}})json",
       {400, 401, 404, 412, 429, 503}},
      {"POST", "/v1/sessions/{id}/fork", "sessions.fork", true, true,
       [](Api& a, Ctx& c) {
         const Body body = a.body(c.req);
         Fields(body, {}, true);  // validates: no fields allowed
         send_json(c.res, 201, session_json(a.store_->fork(c.tenant, c.param(0))));
       },
       R"json({"operationId":"fork","responses":{"201":{"description":"ok","content":{"application/json":{"schema":{"$ref":"#/components/schemas/Session"}}}}}})json",
       {400, 401, 404, 429, 503}},
      {"POST", "/v1/sessions/{id}/reset", "sessions.reset", true, true,
       [](Api& a, Ctx& c) {
         const Body body = a.body(c.req);
         Fields(body, {}, true);  // validates: no fields allowed
         send_json(c.res, 200, session_json(a.store_->reset(c.tenant, c.param(0), a.if_match(c.req))));
       },
       R"json({"operationId":"reset","parameters":[{"name":"If-Match","in":"header","required":false,"schema":{"type":"string","pattern":"^(\\*|(W/)?\"?[0-9]{1,18}\"?)$"}}],"responses":{"200":{"description":"ok","content":{"application/json":{"schema":{"$ref":"#/components/schemas/Session"}}}}}})json",
       {400, 401, 404, 412, 429, 503}},
  };
}

}  // namespace ttt::server
