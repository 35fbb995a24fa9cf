// The HTTP/1.1 layer of `ttt serve` (issue 25): one event-driven I/O thread (epoll) owns every
// socket, and a pool of compute workers runs the handlers. A connection costs a socket and its
// buffers while it sends its request, however slowly; a worker is taken only once a request is
// complete. The checks that need no body (route, method, authentication, the body's announced
// size) run on the head, before any byte of the body is read; the body limit holds for sized and
// chunked bodies alike (413 as soon as it is passed, nothing buffered beyond it).
//
// - RequestParser: the incremental parser (request line, headers, Content-Length and chunked
//   framing), pure and fuzzable (fuzz/fuzz_http_request.cpp).
// - HttpServer: sockets, timeouts (head, body, idle, write), the connection cap (503 beyond it,
//   once no idle keep-alive connection can be closed instead), TCP_NODELAY, keep-alive and
//   pipelining, 100-continue, and streamed (chunked) responses with backpressure.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ttt::server::http {

struct Header {
  std::string name;  // lower case
  std::string value;
};

struct Request {
  std::string method, target, path, query;  // path: percent-decoded
  int minor = 1;                            // HTTP/1.minor
  std::vector<Header> headers;
  std::string body;
  std::vector<std::string> params;  // the route's captures
  // The value of a header (name in lower case); null when absent. A repeated header: the first.
  const std::string* header(std::string_view lower_name) const;
  std::string header_value(std::string_view lower_name) const {
    const std::string* v = header(lower_name);
    return v ? *v : std::string();
  }
};

// A streamed body: write() sends one chunk, blocking while much is unsent; false once the
// client is gone (the caller then stops).
class Sink {
 public:
  virtual ~Sink() = default;
  virtual bool write(std::string_view data) = 0;
};

struct Response {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<Header> headers;
  std::function<void(Sink&)> stream;  // set: the body is this function's writes (chunked)
  void set_header(const std::string& name, const std::string& value) { headers.push_back({name, value}); }
  void set_content(std::string b, std::string type) {
    body = std::move(b);
    content_type = std::move(type);
  }
};

const char* reason_phrase(int status);

struct ParserLimits {
  size_t max_head_bytes = 16 * 1024;  // request line and headers (431 beyond)
  size_t max_headers = 100;
};

class RequestParser {
 public:
  enum class State {
    kHead,         // reading the request line and headers
    kHeadDone,     // the head is parsed: the caller decides, then start_body() or reject
    kBody,         // reading the body
    kDone,         // the request is complete
    kError,        // error_status() / error_message() say why
  };
  explicit RequestParser(ParserLimits l = {}) : lim_(l) {}

  // Consumes bytes from the front of [p, p+n); returns how many. Stops after the head (kHeadDone)
  // and at the end of the request (kDone): the rest belongs to what follows.
  size_t feed(const char* p, size_t n);
  // kHeadDone -> kBody (kDone when there is no body). A Content-Length over max_body is an
  // error (413) at once; a chunked body becomes one as soon as its chunks pass max_body.
  void start_body(uint64_t max_body);
  void reset();  // for the next request of the connection

  State state() const { return state_; }
  int error_status() const { return err_status_; }
  const std::string& error_message() const { return err_msg_; }
  Request& request() { return req_; }
  bool has_body() const { return chunked_ || length_ > 0; }
  bool keep_alive() const { return keep_alive_; }
  bool expect_continue() const { return expect_continue_; }
  bool head_started() const { return !head_.empty() || state_ != State::kHead; }

 private:
  void fail(int status, std::string msg);
  void parse_head();
  size_t feed_chunked(const char* p, size_t n);

  ParserLimits lim_;
  State state_ = State::kHead;
  int err_status_ = 0;
  std::string err_msg_;
  Request req_;
  std::string head_;
  bool chunked_ = false, keep_alive_ = true, expect_continue_ = false;
  uint64_t length_ = 0, max_body_ = 0;
  // Chunked framing.
  enum class Chunk { kSize, kData, kDataEnd, kTrailer } cstate_ = Chunk::kSize;
  std::string line_;
  uint64_t chunk_left_ = 0;
  size_t trailer_bytes_ = 0;
};

struct ServerConfig {
  std::string host = "127.0.0.1";
  int port = 8080;                 // 0: any free port
  int workers = 16;                // compute threads
  size_t max_connections = 1024;   // open connections (503 beyond, after closing idle ones)
  uint64_t max_body_bytes = 256ull << 20;
  int head_timeout_s = 10;         // from the first byte of a request to the end of its head
  int body_timeout_s = 30;         // longest pause between two reads of a body
  int idle_timeout_s = 60;         // a kept-alive connection waiting for its next request
  int write_timeout_s = 60;        // longest pause in the client's reading of a response
  ParserLimits limits;
};

// What the application decides from a request's head (on the I/O thread, before its body).
struct Admission {
  std::optional<Response> reject;  // answered at once, the body unread (then the connection closes)
  std::function<void(Request&, Response&)> handler;  // runs on a worker once the body is read
  std::function<void(const Response&)> done;  // after the response (metrics); on the worker
  std::shared_ptr<void> hold;  // a tenant's slot: released before the response's last bytes go out
};
using Admit = std::function<Admission(Request&)>;

class HttpServer {
 public:
  HttpServer(ServerConfig c, Admit admit);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  int bind();   // listens; returns the port (throws std::runtime_error when it cannot)
  void run();   // serves until stop(); then drains the requests in flight and returns
  void stop();  // thread-safe, also from a signal-handling thread; idempotent

  // A response for errors of the layer itself (JSON body set by the application's formatter).
  static std::function<std::string(int status, const std::string& msg)> error_body;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ttt::server::http
