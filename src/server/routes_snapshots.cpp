// Routes: snapshots of a session (make, list, restore).
#include "server/api.h"

namespace ttt::server {

std::vector<Route> snapshot_routes() {
  return {
      {"POST", "/v1/sessions/{id}/snapshots", "sessions.snapshot", true, true,
       [](Api& a, Ctx& c) {
         const Body body = a.body(c.req);
         Fields f(body, {"label"}, true);
         const std::string label = f.string("label").value_or("");
         if (label.size() > 1024) throw bad_request("field 'label' is longer than 1024 bytes");
         send_json(c.res, 201, snapshot_json(a.store_->snapshot(c.tenant, c.param(0), label)));
       },
       R"json({"operationId":"snapshot","requestBody":{"required":false,"content":{"application/json":{"schema":{"type":"object","properties":{"label":{"type":"string","maxLength":1024,"nullable":true}},"additionalProperties":false}}}},"responses":{"201":{"description":"ok","content":{"application/json":{"schema":{"$ref":"#/components/schemas/Snapshot"}}}}}})json",
       {400, 401, 404, 429, 503}},
      {"GET", "/v1/sessions/{id}/snapshots", "sessions.snapshots", true, false,
       [](Api& a, Ctx& c) {
         json data = json::array();
         for (auto& s : a.store_->snapshots(c.tenant, c.param(0))) data.push_back(snapshot_json(s));
         send_json(c.res, 200, {{"object", "list"}, {"data", data}});
       },
       R"json({"operationId":"listSnapshots","responses":{"200":{"description":"ok","content":{"application/json":{"schema":{"type":"object","required":["data"],"properties":{"object":{"type":"string"},"data":{"type":"array","items":{"$ref":"#/components/schemas/Snapshot"}}}}}}}}})json",
       {401, 404, 429, 503}},
      {"POST", "/v1/sessions/{id}/restore", "sessions.restore", true, true,
       [](Api& a, Ctx& c) {
         const Body body = a.body(c.req);
         Fields f(body, {"version"}, true);
         const auto v = f.integer("version", 0, INT64_MAX);
         if (!v) throw bad_request("field 'version' is required");
         send_json(c.res, 200, session_json(a.store_->restore(c.tenant, c.param(0), *v, a.if_match(c.req))));
       },
       R"json({"operationId":"restore","parameters":[{"name":"If-Match","in":"header","required":false,"schema":{"type":"string","pattern":"^(\\*|(W/)?\"?[0-9]{1,18}\"?)$"}}],"requestBody":{"required":true,"content":{"application/json":{"schema":{"type":"object","required":["version"],"properties":{"version":{"type":"integer","minimum":0}},"additionalProperties":false}}}},"responses":{"200":{"description":"ok","content":{"application/json":{"schema":{"$ref":"#/components/schemas/Session"}}}}}})json",
       {400, 401, 404, 412, 429, 503}},
  };
}

}  // namespace ttt::server
