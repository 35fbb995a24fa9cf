// Routes: GET /v1/models, GET /v1/models/{id} (the OpenAI client's models.list and retrieve).
#include "server/api.h"

namespace ttt::server {

namespace {
json model_json(const Api& a) {
  return {{"id", a.model_id_}, {"object", "model"}, {"created", unix_time(a.created_)}, {"owned_by", "ttt"}};
}
}  // namespace

std::vector<Route> model_routes() {
  return {
      {"GET", "/v1/models", "models", true, false,
       [](Api& a, Ctx& c) { send_json(c.res, 200, {{"object", "list"}, {"data", json::array({model_json(a)})}}); },
       R"json({"operationId":"listModels","responses":{"200":{"description":"ok","content":{"application/json":{"schema":{"type":"object","required":["object","data"],"properties":{"object":{"type":"string"},"data":{"type":"array","items":{"type":"object"}}}}}}}}})json",
       {401, 429, 503}},
      {"GET", "/v1/models/{model}", "models.get", true, false,
       [](Api& a, Ctx& c) {
         if (c.param(0) != a.model_id_) throw not_found("model '" + c.param(0) + "'");
         send_json(c.res, 200, model_json(a));
       },
       R"json({"operationId":"getModel","responses":{"200":{"description":"ok","content":{"application/json":{"schema":{"type":"object","required":["id","object"],"properties":{"id":{"type":"string"},"object":{"type":"string"},"created":{"type":"integer"},"owned_by":{"type":"string"}}}}}}}})json",
       {401, 404, 429, 503}},
  };
}

}  // namespace ttt::server
