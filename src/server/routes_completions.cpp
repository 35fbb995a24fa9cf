// Route: POST /v1/completions (OpenAI), optionally on a session.
#include <algorithm>
#include <chrono>

#include "server/api.h"

namespace ttt::server {

namespace {

void completions(Api& a, Ctx& c) {
  const Body body = a.body(c.req, {"prompt", "stop_tokens"});
  Fields f(body, {}, false);
  if (!f.has("prompt")) throw bad_request("field 'prompt' is required");
  const Input in = a.input(f, "prompt", /*allow_text=*/true, /*openai_batch=*/true);
  inference::GenerateOptions go = a.gen_options(f, "max_tokens", 16);
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
  const inference::RecallOptions ro = a.recall_options(f);
  if (ro.k > 0 && !session) throw bad_request("field 'recall' needs a 'session' (its exact store is what is recalled)");
  const auto ifm = a.if_match(c.req);
  const std::string tenant = c.tenant;
  if (session) a.store_->check_exists(tenant, *session);
  go.feed_last = session.has_value();
  size_t hold = 0;
  for (auto& s : stops) hold = std::max(hold, s.size() - 1);
  const std::string cid = "cmpl-" + std::to_string(std::chrono::steady_clock::now().time_since_epoch().count());
  const int64_t created = unix_time(std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count());

  // on_text(delta, final): the text to send so far; stop strings end generation (the text is cut
  // before the stop string, as OpenAI does).
  using OnText = std::function<void(const std::string&)>;
  auto run = [&a, in, go, ro, session, ifm, tenant, stops, hold](const OnText& on_text) {
    inference::GenerateResult r;
    std::optional<inference::RecallResult> rr;
    std::string text;
    bool stopped = false;
    auto work = [&](inference::Session& s, const memory::ExactStore* ex) {
      const auto prompt = a.resolve(in, s.position() == 0);
      std::vector<int32_t> sofar;
      size_t emitted = 0;
      if (ro.k > 0) rr.emplace();
      r = inference::generate_with_recall(s, ex, prompt, go, ro, [&](int32_t t, int64_t) {
        sofar.push_back(t);
        text = a.detok(sofar, 0);
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
      a.metrics_.prompt(r.prompt_tokens);
      a.metrics_.generated(static_cast<int64_t>(r.tokens.size()));
      a.metrics_.ttt_steps(r.ttt_steps);
      return r.prompt_tokens + static_cast<int64_t>(r.tokens.size());
    };
    json extra;
    if (session) {
      extra = session_json(a.store_->mutate(tenant, *session, ifm, "completion", work));
    } else {
      inference::Session s(*a.model_);
      work(s, nullptr);
    }
    if (rr) extra["recall"] = recall_json(*rr);
    const std::string reason = stopped || r.stop == inference::StopReason::kStopToken ? "stop" : "length";
    return std::make_tuple(text, reason, r, extra);
  };
  const std::string model_id = a.model_id_;
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
  c.res.content_type = "text/event-stream";
  c.res.stream = [run, cid, created, model_id](http::Sink& sink) {
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
  };
}

}  // namespace

std::vector<Route> completion_routes() {
  return {
      {"POST", "/v1/completions", "completions", true, true, completions, R"json({"operationId":"createCompletion","requestBody":{"required":true,"content":{"application/json":{"schema":{"type":"object","required":["prompt"],"properties":{"model":{"type":"string","nullable":true},"prompt":{"oneOf":[{"type":"string"},{"type":"array","items":{"type":"integer","minimum":0}}]},"max_tokens":{"type":"integer","minimum":0,"maximum":4096,"nullable":true},"temperature":{"type":"number","minimum":0,"nullable":true},"top_p":{"type":"number","maximum":1,"minimum":0,"exclusiveMinimum":true,"nullable":true},"top_k":{"type":"integer","minimum":0,"nullable":true},"seed":{"type":"integer","nullable":true},"stream":{"type":"boolean","nullable":true},"stop":{"oneOf":[{"type":"string"},{"type":"array","items":{"type":"string"},"maxItems":4}],"nullable":true},"session":{"type":"string","nullable":true},"recall":{"$ref":"#/components/schemas/Recall"}}}}}},"responses":{"200":{"description":"ok","content":{"application/json":{"schema":{"type":"object","required":["id","object","choices"],"properties":{"id":{"type":"string"},"object":{"type":"string"},"created":{"type":"integer"},"model":{"type":"string"},"choices":{"type":"array","items":{"type":"object"}},"usage":{"type":"object"}}}},"text/event-stream":{"schema":{"description":"SSE events: JSON objects, then [DONE]"}}}}}})json",
       {400, 401, 404, 412, 413, 429, 500, 503, 409}},
  };
}

}  // namespace ttt::server
