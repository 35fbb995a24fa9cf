// libFuzzer target: the request path of `ttt serve` without sockets. The input is the bytes a
// client sends on one connection; its first byte picks the size of the pieces they arrive in.
// Each piece goes to http::RequestParser (request line, headers, Content-Length or chunked
// framing, a 4 KB body limit); each complete head goes through admit_request (route, method,
// key, tenant slot) and, when admitted, its body through the route's handler (SAX body parse,
// fields, the session store in memory, the tiny model of tests/cli_test.sh, no tokenizer), as a
// connection would. Properties: the parser never consumes more than it is given nor accepts a
// body over the limit, and every handler's status is one its route's table entry documents
// (/openapi.json is derived from the same table); a streamed answer's writes are all
// `data: ...\n\n` events ending with `data: [DONE]`.
#include <cstddef>
#include <cstdint>
#include <exception>
#include <string>

#include "fuzz_common.h"
#include "model/config.h"
#include "model/model.h"
#include "server/api.h"

namespace {

using namespace ttt::server;

const char* kConfig = R"({"vocab_size": 40, "hidden_size": 16, "num_hidden_layers": 3, "num_attention_heads": 2,
 "intermediate_size": 24, "seq_modeling_block": "SWA", "sliding_window_size": 6, "mini_batch_size": 4,
 "prime": true, "suffix_len": 2, "rope_theta": 10000, "bos_token_id": 0, "initializer_range": 0.2})";

constexpr uint64_t kMaxBody = 4096;

Api& api() {
  static Api* a = [] {
    ServerOptions o;
    o.model_dir = "fuzz";
    o.max_input_tokens = 64;
    o.max_new_tokens = 8;
    o.max_tenant_requests = 1000000;
    o.store_policy = "off";
    auto* p = new Api(o);
    p->model_ = std::make_unique<ttt::model::Model>(ttt::model::Model::init(ttt::model::config_from_json(kConfig), 3));
    StoreOptions so;
    so.max_resident = 2;
    so.max_snapshots = 2;
    p->store_ = std::make_unique<SessionStore>(*p->model_, so);
    p->ready_ = true;
    // Session ids are random: inputs reach the {id} routes' body parsing and their 404s.
    return p;
  }();
  return *a;
}

class Collect : public ttt::server::http::Sink {
 public:
  bool write(std::string_view d) override {
    out.append(d);
    return true;
  }
  std::string out;
};

void run_request(http::Request& req, http::Admission& a) {
  http::Response res;
  a.handler(req, res);
  const Route* r = find_route(req.method, req.path);
  if (!r) ttt_fuzz::fail("an admitted request has no route");
  if (!documented_status(*r, res.status))
    ttt_fuzz::fail(("route " + std::string(r->method) + " " + r->pattern + " answered " + std::to_string(res.status) +
                    ", not in its table entry").c_str());
  if (res.stream) {
    Collect c;
    res.stream(c);
    const std::string& s = c.out;
    if (s.size() < 14 || s.compare(s.size() - 14, 14, "data: [DONE]\n\n") != 0) ttt_fuzz::fail("a stream does not end with [DONE]");
    for (size_t i = 0; i < s.size();) {
      if (s.compare(i, 6, "data: ") != 0) ttt_fuzz::fail("a stream write is not an SSE data event");
      const size_t e = s.find("\n\n", i);
      if (e == std::string::npos) ttt_fuzz::fail("an SSE event is not terminated");
      i = e + 2;
    }
  }
  if (a.done) a.done(res);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  Api& A = api();
  if (A.store_->stats().stored > 32) {  // sessions made by earlier inputs: a fresh store
    StoreOptions so;
    so.max_resident = 2;
    so.max_snapshots = 2;
    A.store_.reset();
    A.store_ = std::make_unique<SessionStore>(*A.model_, so);
  }
  const size_t piece = 1 + data[0] % 64 * (data[0] >= 128 ? 64 : 1);
  const char* p = reinterpret_cast<const char*>(data + 1);
  size_t n = size - 1;
  http::ParserLimits lim;
  lim.max_head_bytes = 2048;
  lim.max_headers = 32;
  http::RequestParser parser(lim);
  std::string in;
  size_t off = 0;
  http::Admission adm;
  int requests = 0;
  while ((off < n || !in.empty()) && requests < 8) {
    if (off < n) {
      const size_t take = std::min(piece, n - off);
      in.append(p + off, take);
      off += take;
    }
    bool progressed = true;
    while (progressed && !in.empty()) {
      progressed = false;
      const size_t used = parser.feed(in.data(), in.size());
      if (used > in.size()) ttt_fuzz::fail("the parser consumed more than it was given");
      in.erase(0, used);
      progressed = used > 0;
      switch (parser.state()) {
        case http::RequestParser::State::kError:
          if (parser.error_status() < 400 || parser.error_status() > 599) ttt_fuzz::fail("a parse error without a 4xx/5xx status");
          return 0;  // the connection closes
        case http::RequestParser::State::kHeadDone:
          adm = admit_request(A, parser.request());
          if (adm.reject) {
            if (parser.has_body()) return 0;  // answered, then closed
            parser.reset();
            ++requests;
            progressed = true;
            break;
          }
          parser.start_body(kMaxBody);
          progressed = true;
          if (parser.state() == http::RequestParser::State::kError) {
            adm.done(http::Response{});
            return 0;
          }
          break;
        case http::RequestParser::State::kDone: {
          http::Request req = std::move(parser.request());
          if (req.body.size() > kMaxBody) ttt_fuzz::fail("a body over the limit was accepted");
          run_request(req, adm);
          adm = http::Admission();
          parser.reset();
          ++requests;
          progressed = true;
          break;
        }
        default:
          break;
      }
    }
    if (off >= n) break;
  }
  if (adm.done) adm.done(http::Response{});
  return 0;
}
