// Routes: what a session reads and writes (ingest, generate) and what it recalls.
#include "server/api.h"

namespace ttt::server {

namespace {

// The SSE tail every stream ends with, whatever happened before.
template <class Fn>
void sse(http::Sink& sink, Fn&& body) {
  SseWriter w{sink};
  try {
    body(w);
  } catch (const Cancelled&) {
  } catch (const ApiError& e) {
    w.raw("data: " + error_body(e.type, e.what()) + "\n\n");
  } catch (const std::exception& e) {
    w.raw("data: " + error_body("invalid_request_error", e.what()) + "\n\n");
  }
  w.raw("data: [DONE]\n\n");
}

void ingest(Api& a, Ctx& c) {
  const std::string id = c.param(0);
  const Body body = a.body(c.req, {"tokens"});
  Fields f(body, {"text", "tokens", "stream"}, true);
  if (f.has("text") == f.has("tokens")) throw bad_request("give exactly one of 'text' and 'tokens'");
  const std::string key = f.has("text") ? "text" : "tokens";
  const Input in = a.input(f, key, /*allow_text=*/key == "text");
  if (f.has("text") && !in.is_text) throw bad_request("field 'text' must be a string");
  if (!in.is_text && in.tokens.empty()) throw bad_request("field 'tokens' is empty");
  const bool stream = f.boolean("stream").value_or(false);
  const auto ifm = a.if_match(c.req);
  const std::string tenant = c.tenant;
  // The work, shared by the plain and the streamed answer; progress gets each chunk's loss.
  auto run = [&a, in = std::move(in), ifm, tenant, id](const std::function<void(int64_t, double)>& progress) {
    std::vector<double> losses;
    int64_t steps = 0, n = 0;
    SessionInfo info = a.store_->mutate(tenant, id, ifm, "ingest", [&](inference::Session& s, const memory::ExactStore*) {
      const auto ids = a.resolve(in, s.position() == 0);
      const int64_t s0 = s.ttt_steps();
      losses = inference::ingest(s, ids, progress);
      steps = s.ttt_steps() - s0;
      n = static_cast<int64_t>(ids.size());
      return n;
    });
    a.metrics_.ingested(n);
    a.metrics_.ttt_steps(steps);
    json j = session_json(info);
    j["chunk_losses"] = losses;
    j["tokens_ingested"] = n;
    return j;
  };
  if (!stream) {
    send_json(c.res, 200, run({}));
    return;
  }
  a.store_->check_exists(tenant, id);  // the status line goes out before the work
  c.res.content_type = "text/event-stream";
  c.res.stream = [run](http::Sink& sink) {
    sse(sink, [&](SseWriter& w) {
      json j = run([&](int64_t chunk, double loss) {
        if (!w.event({{"object", "ingest.progress"}, {"chunk", chunk}, {"loss", loss}})) throw Cancelled();
      });
      j["object"] = "session";
      w.event(j);
    });
  };
}

void generate(Api& a, Ctx& c) {
  const std::string id = c.param(0);
  const Body body = a.body(c.req, {"prompt", "stop_tokens"});
  Fields f(body,
           {"prompt", "max_tokens", "temperature", "top_k", "top_p", "seed", "repetition_penalty", "stop_tokens",
            "commit", "stream", "recall"},
           true);
  const Input in = f.has("prompt") ? a.input(f, "prompt") : Input{};
  inference::GenerateOptions go = a.gen_options(f, "max_tokens", 16);
  const inference::RecallOptions ro = a.recall_options(f);
  const bool commit = f.boolean("commit").value_or(true);
  const bool stream = f.boolean("stream").value_or(false);
  go.feed_last = commit;  // a kept session has read its whole answer (as `ttt generate --state-out`)
  const auto ifm = a.if_match(c.req);
  const std::string tenant = c.tenant;
  using OnToken = std::function<void(const std::vector<int32_t>&)>;
  auto run = [&a, in, go, ro, commit, ifm, tenant, id](const OnToken& on_token) {
    inference::GenerateResult r;
    std::optional<inference::RecallResult> rr;
    auto work = [&](inference::Session& s, const memory::ExactStore* ex) {
      const auto prompt = a.resolve(in, s.position() == 0);
      std::vector<int32_t> sofar;
      auto cb = [&](int32_t t, int64_t) {
        sofar.push_back(t);
        if (on_token) on_token(sofar);
        return true;
      };
      if (ro.k > 0) rr.emplace();
      r = inference::generate_with_recall(s, ex, prompt, go, ro, cb, rr ? &*rr : nullptr);
      a.metrics_.prompt(r.prompt_tokens);
      a.metrics_.generated(static_cast<int64_t>(r.tokens.size()));
      a.metrics_.ttt_steps(r.ttt_steps);
      return r.prompt_tokens + static_cast<int64_t>(r.tokens.size());
    };
    SessionInfo info;
    if (commit) {
      info = a.store_->mutate(tenant, id, ifm, "generate", work);
    } else {
      a.store_->read(tenant, id, [&](const inference::Session& cur, const SessionInfo& i, const memory::ExactStore* ex) {
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
    if (a.tok_) j["text"] = a.detok(r.tokens, 0);
    return j;
  };
  if (!stream) {
    send_json(c.res, 200, run({}));
    return;
  }
  a.store_->check_exists(tenant, id);
  c.res.content_type = "text/event-stream";
  c.res.stream = [&a, run](http::Sink& sink) {
    size_t emitted = 0;
    sse(sink, [&](SseWriter& w) {
      json j = run([&](const std::vector<int32_t>& sofar) {
        json ev = {{"object", "generate.token"}, {"token", sofar.back()}};
        if (a.tok_) {
          const std::string text = a.detok(sofar, 0);
          const size_t end = utf8_safe_end(text);
          ev["text"] = end > emitted ? text.substr(emitted, end - emitted) : std::string();
          emitted = std::max(emitted, end);
        }
        if (!w.event(ev)) throw Cancelled();
      });
      j["object"] = "generate.result";
      w.event(j);
    });
  };
}

// What recall would bring back for a prompt, without generating (the session is not changed).
void recall(Api& a, Ctx& c) {
  const Body body = a.body(c.req, {"prompt"});
  Fields f(body, {"prompt", "k", "query_tokens"}, true);
  if (!f.has("prompt")) throw bad_request("field 'prompt' is required");
  const Input in = a.input(f, "prompt");
  const int k = static_cast<int>(f.integer("k", 1, 64).value_or(4));
  const int64_t qt = f.integer("query_tokens", 1, 65536).value_or(256);
  if (!a.store_->exact_enabled()) throw exact_store_off();
  json data = json::array();
  a.store_->read(c.tenant, c.param(0), [&](const inference::Session& s, const SessionInfo&, const memory::ExactStore* ex) {
    const auto prompt = a.resolve(in, s.position() == 0);
    if (prompt.empty()) throw bad_request("field 'prompt' is empty");
    for (const auto& sp : ex->retrieve(prompt, k, inference::recall_horizon(s), qt)) {
      json j = {{"start", sp.start}, {"length", static_cast<int64_t>(sp.tokens.size())}, {"score", sp.score}, {"tokens", sp.tokens}};
      if (a.tok_) j["text"] = a.detok(sp.tokens, 0);
      data.push_back(j);
    }
  }, /*with_exact=*/true);
  send_json(c.res, 200, {{"object", "list"}, {"data", data}});
}

}  // namespace

std::vector<Route> ingest_routes() {
  return {
      {"POST", "/v1/sessions/{id}/ingest", "sessions.ingest", true, true, ingest, R"json({"operationId":"ingest","parameters":[{"name":"If-Match","in":"header","required":false,"schema":{"type":"string","pattern":"^(\\*|(W/)?\"?[0-9]{1,18}\"?)$"}}],"requestBody":{"required":true,"content":{"application/json":{"schema":{"type":"object","properties":{"text":{"type":"string","nullable":true},"tokens":{"type":"array","items":{"type":"integer","minimum":0},"nullable":true},"stream":{"type":"boolean","nullable":true}},"additionalProperties":false}}}},"responses":{"200":{"description":"ok","content":{"application/json":{"schema":{"$ref":"#/components/schemas/Ingest"}},"text/event-stream":{"schema":{"description":"SSE events: JSON objects, then [DONE]"}}}}}})json",
       {400, 401, 404, 412, 413, 429, 500, 503}},
      {"POST", "/v1/sessions/{id}/generate", "sessions.generate", true, true, generate, R"json({"operationId":"generate","parameters":[{"name":"If-Match","in":"header","required":false,"schema":{"type":"string","pattern":"^(\\*|(W/)?\"?[0-9]{1,18}\"?)$"}}],"requestBody":{"required":false,"content":{"application/json":{"schema":{"type":"object","properties":{"prompt":{"oneOf":[{"type":"string"},{"type":"array","items":{"type":"integer","minimum":0}}],"nullable":true},"max_tokens":{"type":"integer","minimum":0,"maximum":4096,"nullable":true},"temperature":{"type":"number","minimum":0,"nullable":true},"top_k":{"type":"integer","minimum":0,"nullable":true},"top_p":{"type":"number","maximum":1,"minimum":0,"exclusiveMinimum":true,"nullable":true},"seed":{"type":"integer","nullable":true},"repetition_penalty":{"type":"number","minimum":0,"exclusiveMinimum":true,"nullable":true},"stop_tokens":{"type":"array","items":{"type":"integer","minimum":0},"nullable":true},"commit":{"type":"boolean","nullable":true},"stream":{"type":"boolean","nullable":true},"recall":{"$ref":"#/components/schemas/Recall"}},"additionalProperties":false}}}},"responses":{"200":{"description":"ok","content":{"application/json":{"schema":{"type":"object","required":["tokens","session"],"properties":{"text":{"type":"string"},"tokens":{"type":"array","items":{"type":"integer","minimum":0}},"finish_reason":{"type":"string"},"session":{"$ref":"#/components/schemas/Session"},"recall":{"$ref":"#/components/schemas/RecallResult"}}}},"text/event-stream":{"schema":{"description":"SSE events: JSON objects, then [DONE]"}}}}}})json",
       {400, 401, 404, 412, 413, 429, 500, 503, 409}},
      {"POST", "/v1/sessions/{id}/recall", "sessions.recall", true, true, recall, R"json({"operationId":"recall","requestBody":{"required":true,"content":{"application/json":{"schema":{"type":"object","required":["prompt"],"properties":{"prompt":{"oneOf":[{"type":"string"},{"type":"array","items":{"type":"integer","minimum":0}}]},"k":{"type":"integer","minimum":1,"maximum":64,"nullable":true},"query_tokens":{"type":"integer","minimum":1,"maximum":65536,"nullable":true}},"additionalProperties":false}}}},"responses":{"200":{"description":"the stretches recall would bring back","content":{"application/json":{"schema":{"type":"object","required":["data"],"properties":{"object":{"type":"string"},"data":{"type":"array","items":{"type":"object"}}}}}}}}})json",
       {400, 401, 404, 409, 413, 429, 503}},
  };
}

}  // namespace ttt::server
