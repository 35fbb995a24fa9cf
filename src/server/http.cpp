#include "server/http.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <unordered_map>

namespace ttt::server::http {

std::function<std::string(int, const std::string&)> HttpServer::error_body = [](int, const std::string& msg) {
  return "{\"error\":{\"message\":\"" + msg + "\",\"type\":\"invalid_request_error\"}}";
};

const std::string* Request::header(std::string_view lower_name) const {
  for (const auto& h : headers)
    if (h.name == lower_name) return &h.value;
  return nullptr;
}

const char* reason_phrase(int s) {
  switch (s) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 417: return "Expectation Failed";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    case 507: return "Insufficient Storage";
    default: return s < 300 ? "OK" : s < 500 ? "Bad Request" : "Internal Server Error";
  }
}

// ---------------------------------------------------------------------------------------------
// RequestParser

namespace {

bool is_tchar(unsigned char c) {
  return std::isalnum(c) || std::strchr("!#$%&'*+-.^_`|~", c) != nullptr;
}

std::string lower(std::string_view s) {
  std::string o(s);
  for (char& c : o) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return o;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Whether a comma-separated header value lists `token` (case-insensitive).
bool lists_token(std::string_view v, std::string_view token) {
  while (!v.empty()) {
    const size_t c = v.find(',');
    if (lower(trim(v.substr(0, c))) == token) return true;
    if (c == std::string_view::npos) break;
    v.remove_prefix(c + 1);
  }
  return false;
}

}  // namespace

void RequestParser::fail(int status, std::string msg) {
  state_ = State::kError;
  err_status_ = status;
  err_msg_ = std::move(msg);
}

void RequestParser::reset() {
  const ParserLimits l = lim_;
  *this = RequestParser(l);
}

size_t RequestParser::feed(const char* p, size_t n) {
  size_t used = 0;
  if (state_ == State::kHead) {
    // Empty lines before a request line are ignored (RFC 9112 2.2).
    if (head_.empty())
      while (used < n && (p[used] == '\r' || p[used] == '\n')) ++used;
    if (used == n) return used;
    const size_t before = head_.size();
    const size_t room = lim_.max_head_bytes + 4 - std::min(before, lim_.max_head_bytes + 4);
    const size_t take = std::min(n - used, room);
    head_.append(p + used, take);
    // The end of the head: the first empty line (CRLF CRLF, or bare LF LF).
    const size_t from = before >= 3 ? before - 3 : 0;
    size_t end = std::string::npos, term = 0;
    for (size_t i = from; i < head_.size(); ++i) {
      if (head_[i] != '\n') continue;
      if (i >= 1 && head_[i - 1] == '\n') {
        end = i - 1;
        term = 2;
        break;
      }
      if (i >= 3 && head_[i - 1] == '\r' && head_[i - 2] == '\n' && head_[i - 3] == '\r') {
        end = i - 3;
        term = 4;
        break;
      }
      if (i >= 2 && head_[i - 1] == '\r' && head_[i - 2] == '\n') {  // LF CR LF
        end = i - 2;
        term = 3;
        break;
      }
    }
    if (end == std::string::npos) {
      if (head_.size() > lim_.max_head_bytes) fail(431, "the request head is larger than " + std::to_string(lim_.max_head_bytes) + " bytes");
      return used + take;
    }
    const size_t head_len = end + term;  // bytes of head_ that belong to the head
    if (end > lim_.max_head_bytes) {
      fail(431, "the request head is larger than " + std::to_string(lim_.max_head_bytes) + " bytes");
      return used + take;
    }
    const size_t consumed = head_len - before;  // of this call's bytes
    head_.resize(end);
    parse_head();
    head_.clear();
    head_.shrink_to_fit();
    return used + consumed;
  }
  if (state_ != State::kBody) return 0;
  if (chunked_) return feed_chunked(p, n);
  const uint64_t left = length_ - req_.body.size();
  const size_t take = static_cast<size_t>(std::min<uint64_t>(left, n));
  req_.body.append(p, take);
  if (req_.body.size() == length_) state_ = State::kDone;
  return take;
}

void RequestParser::parse_head() {
  std::vector<std::string_view> lines;
  std::string_view h(head_);
  while (true) {
    const size_t nl = h.find('\n');
    std::string_view line = h.substr(0, nl);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    lines.push_back(line);
    if (nl == std::string_view::npos) break;
    h.remove_prefix(nl + 1);
  }
  // Request line: METHOD SP target SP HTTP/1.x
  const std::string_view rl = lines[0];
  const size_t s1 = rl.find(' ');
  const size_t s2 = s1 == std::string_view::npos ? s1 : rl.find(' ', s1 + 1);
  if (s1 == std::string_view::npos || s2 == std::string_view::npos || rl.find(' ', s2 + 1) != std::string_view::npos)
    return fail(400, "malformed request line");
  const std::string_view method = rl.substr(0, s1), target = rl.substr(s1 + 1, s2 - s1 - 1),
                         version = rl.substr(s2 + 1);
  if (method.empty() || method.size() > 32) return fail(400, "malformed request method");
  for (unsigned char c : method)
    if (!is_tchar(c)) return fail(400, "malformed request method");
  if (version.size() != 8 || version.substr(0, 5) != "HTTP/" || version[6] != '.' || !std::isdigit(static_cast<unsigned char>(version[5])) ||
      !std::isdigit(static_cast<unsigned char>(version[7])))
    return fail(400, "malformed HTTP version");
  if (version[5] != '1') return fail(505, "only HTTP/1.0 and HTTP/1.1 are served");
  req_.minor = version[7] - '0';
  if (target.empty() || target.size() > 8192) return fail(400, "malformed request target");
  for (unsigned char c : target)
    if (c <= 0x20 || c >= 0x7f) return fail(400, "malformed request target");
  if (target[0] != '/') return fail(400, "the request target must be a path (origin form)");
  req_.method = std::string(method);
  req_.target = std::string(target);
  const size_t q = target.find('?');
  const std::string_view raw_path = target.substr(0, q);
  req_.query = q == std::string_view::npos ? "" : std::string(target.substr(q + 1));
  for (size_t i = 0; i < raw_path.size(); ++i) {
    if (raw_path[i] == '%') {
      const int a = i + 2 < raw_path.size() ? hexval(raw_path[i + 1]) : -1;
      const int b = a >= 0 ? hexval(raw_path[i + 2]) : -1;
      if (a < 0 || b < 0 || (a == 0 && b == 0)) return fail(400, "malformed percent-encoding in the path");
      req_.path += static_cast<char>(a * 16 + b);
      i += 2;
    } else {
      req_.path += raw_path[i];
    }
  }
  // Headers.
  if (lines.size() - 1 > lim_.max_headers) return fail(431, "more than " + std::to_string(lim_.max_headers) + " header fields");
  for (size_t i = 1; i < lines.size(); ++i) {
    const std::string_view l = lines[i];
    if (l.empty()) continue;
    if (l[0] == ' ' || l[0] == '\t') return fail(400, "obsolete line folding in a header field");
    const size_t c = l.find(':');
    if (c == std::string_view::npos || c == 0) return fail(400, "malformed header field");
    for (unsigned char ch : l.substr(0, c))
      if (!is_tchar(ch)) return fail(400, "malformed header field name");
    const std::string_view v = trim(l.substr(c + 1));
    for (unsigned char ch : v)
      if ((ch < 0x20 && ch != '\t') || ch == 0x7f) return fail(400, "control character in a header field value");
    req_.headers.push_back({lower(l.substr(0, c)), std::string(v)});
  }
  // Framing (RFC 9112 6): Transfer-Encoding chunked, or one Content-Length, or no body.
  std::optional<uint64_t> len;
  bool te = false;
  for (const auto& hd : req_.headers) {
    if (hd.name == "content-length") {
      const std::string_view v = hd.value;
      uint64_t x = 0;
      if (v.empty() || v.size() > 18) return fail(400, "malformed Content-Length");
      for (char ch : v) {
        if (ch < '0' || ch > '9') return fail(400, "malformed Content-Length");
        x = x * 10 + static_cast<uint64_t>(ch - '0');
      }
      if (len && *len != x) return fail(400, "conflicting Content-Length fields");
      len = x;
    } else if (hd.name == "transfer-encoding") {
      if (te) return fail(400, "repeated Transfer-Encoding field");
      te = true;
      if (lower(trim(hd.value)) != "chunked") return fail(501, "only the chunked transfer coding is supported");
    } else if (hd.name == "connection") {
      if (lists_token(hd.value, "close")) keep_alive_ = false;
      else if (lists_token(hd.value, "keep-alive") && req_.minor == 0) keep_alive_ = true;
    } else if (hd.name == "expect") {
      if (lower(trim(hd.value)) != "100-continue") return fail(417, "unsupported Expect field");
      expect_continue_ = req_.minor >= 1;
    }
  }
  if (req_.minor == 0) {
    const std::string* c = req_.header("connection");
    keep_alive_ = c && lists_token(*c, "keep-alive");
    if (te) return fail(400, "Transfer-Encoding in an HTTP/1.0 request");
  }
  if (te && len) return fail(400, "both Transfer-Encoding and Content-Length");
  chunked_ = te;
  length_ = len.value_or(0);
  state_ = State::kHeadDone;
}

void RequestParser::start_body(uint64_t max_body) {
  if (state_ != State::kHeadDone) return;
  max_body_ = max_body;
  if (!chunked_ && length_ > max_body)
    return fail(413, "the request body (" + std::to_string(length_) + " bytes) is larger than the limit of " +
                         std::to_string(max_body) + " bytes");
  if (!chunked_) req_.body.reserve(static_cast<size_t>(std::min<uint64_t>(length_, uint64_t{64} << 20)));
  state_ = has_body() ? State::kBody : State::kDone;
}

size_t RequestParser::feed_chunked(const char* p, size_t n) {
  size_t i = 0;
  while (i < n && state_ == State::kBody) {
    switch (cstate_) {
      case Chunk::kSize: {
        const char c = p[i++];
        if (c != '\n') {
          if (line_.size() >= 1024) {
            fail(400, "malformed chunk size line");
            return i;
          }
          line_ += c;
          break;
        }
        if (!line_.empty() && line_.back() == '\r') line_.pop_back();
        // hex digits, then optional extensions after ';' (ignored).
        size_t k = 0;
        uint64_t size = 0;
        while (k < line_.size() && hexval(line_[k]) >= 0) {
          if (k >= 15) {
            fail(400, "chunk size too large");
            return i;
          }
          size = size * 16 + static_cast<uint64_t>(hexval(line_[k]));
          ++k;
        }
        std::string_view rest = trim(std::string_view(line_).substr(k));
        if (k == 0 || (!rest.empty() && rest[0] != ';')) {
          fail(400, "malformed chunk size line");
          return i;
        }
        line_.clear();
        if (size == 0) {
          cstate_ = Chunk::kTrailer;
          break;
        }
        if (size > max_body_ || req_.body.size() + size > max_body_) {
          fail(413, "the request body is larger than the limit of " + std::to_string(max_body_) + " bytes");
          return i;
        }
        chunk_left_ = size;
        cstate_ = Chunk::kData;
        break;
      }
      case Chunk::kData: {
        const size_t take = static_cast<size_t>(std::min<uint64_t>(chunk_left_, n - i));
        req_.body.append(p + i, take);
        i += take;
        chunk_left_ -= take;
        if (chunk_left_ == 0) cstate_ = Chunk::kDataEnd;
        break;
      }
      case Chunk::kDataEnd: {
        const char c = p[i++];
        if (c == '\r' && line_.empty()) {
          line_ = "\r";
          break;
        }
        if (c != '\n') {
          fail(400, "missing CRLF after chunk data");
          return i;
        }
        line_.clear();
        cstate_ = Chunk::kSize;
        break;
      }
      case Chunk::kTrailer: {
        const char c = p[i++];
        if (++trailer_bytes_ > lim_.max_head_bytes) {
          fail(431, "the chunked trailer is too large");
          return i;
        }
        if (c != '\n') {
          line_ += c;
          break;
        }
        if (!line_.empty() && line_.back() == '\r') line_.pop_back();
        if (line_.empty()) {
          state_ = State::kDone;  // trailer fields are read and dropped
          return i;
        }
        line_.clear();
        break;
      }
    }
  }
  return i;
}

// ---------------------------------------------------------------------------------------------
// HttpServer

namespace {

using Clock = std::chrono::steady_clock;

std::string serialize_head(const Response& r, bool keep_alive, bool chunked, size_t length) {
  std::string h = "HTTP/1.1 " + std::to_string(r.status) + " " + reason_phrase(r.status) + "\r\n";
  if (r.status != 204) {
    if (!r.content_type.empty()) h += "Content-Type: " + r.content_type + "\r\n";
    if (chunked) h += "Transfer-Encoding: chunked\r\n";
    else h += "Content-Length: " + std::to_string(length) + "\r\n";
  }
  for (const auto& x : r.headers) h += x.name + ": " + x.value + "\r\n";
  h += keep_alive ? "Connection: keep-alive\r\n" : "Connection: close\r\n";
  h += "\r\n";
  return h;
}

Response error_response(int status, const std::string& msg) {
  Response r;
  r.status = status;
  r.body = HttpServer::error_body(status, msg);
  return r;
}

}  // namespace

struct HttpServer::Impl {
  struct Conn {
    int fd = -1;
    uint64_t id = 0;
    // I/O thread only.
    enum Phase { kIdle, kRead, kBusy, kDraining } phase = kIdle;
    RequestParser parser;
    std::string in;           // bytes read, not yet parsed
    Clock::time_point since;  // start of the current wait (idle, head) or last body progress
    Clock::time_point drain_until;
    bool keep_alive = true;
    bool close_after = false;  // close once the current response is out
    bool watching_in = false, watching_out = false, in_epoll = false, peer_eof = false;
    Admission adm;
    // Shared with the worker, under mu.
    std::mutex mu;
    std::condition_variable cv;
    std::string out;
    size_t out_off = 0;
    bool response_done = false;  // the worker has queued the whole response
    bool gone = false;           // the client went away: writes fail
    Clock::time_point last_write;
  };
  using ConnPtr = std::shared_ptr<Conn>;

  ServerConfig cfg;
  Admit admit;
  int listen_fd = -1, ep = -1, wake_fd = -1;
  // By id, never by descriptor: a stale event of a closed connection must not reach a new one
  // that got the same descriptor number (ids are never reused; 0 and 1 are the wake and listen
  // descriptors).
  std::unordered_map<uint64_t, ConnPtr> conns;
  uint64_t next_id = 2;
  static constexpr uint64_t kWakeId = 0, kListenId = 1;
  std::atomic<bool> stopping{false};
  Clock::time_point accept_paused_until{};
  bool listening_in_epoll = false;

  // Worker pool.
  struct Job {
    ConnPtr c;
    Request req;
    Admission adm;
  };
  std::mutex jmu;
  std::condition_variable jcv;
  std::deque<Job> jobs;
  bool jobs_closed = false;
  std::vector<std::thread> workers;
  // Connections with output from workers, for the I/O thread.
  std::mutex dmu;
  std::vector<ConnPtr> dirty;

  static constexpr size_t kHighWater = size_t{1} << 20;  // a stream waits above this much unsent

  void wake() {
    const uint64_t one = 1;
    ssize_t r = ::write(wake_fd, &one, sizeof one);
    (void)r;
  }

  void mark_dirty(ConnPtr c) {
    {
      std::lock_guard<std::mutex> g(dmu);
      dirty.push_back(std::move(c));
    }
    wake();
  }

  // Queues bytes of a response (worker side); false when the client is gone.
  bool push(const ConnPtr& c, std::string_view data, bool wait_room) {
    {
      std::unique_lock<std::mutex> l(c->mu);
      if (wait_room)
        c->cv.wait(l, [&] { return c->gone || c->out.size() - c->out_off < kHighWater || stopping_hard; });
      if (c->gone) return false;
      // The write timeout counts from when output is waiting, not from the last write before.
      if (c->out_off == c->out.size()) c->last_write = Clock::now();
      c->out.append(data);
    }
    mark_dirty(c);
    return true;
  }
  std::atomic<bool> stopping_hard{false};

  class StreamSink : public Sink {
   public:
    StreamSink(Impl& s, const ConnPtr& c) : s_(s), c_(c) {}
    bool write(std::string_view d) override {
      if (d.empty()) return true;
      char hex[24];
      std::snprintf(hex, sizeof hex, "%zx\r\n", d.size());
      std::string chunk = hex;
      chunk.append(d);
      chunk += "\r\n";
      return s_.push(c_, chunk, true);
    }

   private:
    Impl& s_;
    ConnPtr c_;
  };

  void worker_loop() {
    for (;;) {
      Job j;
      {
        std::unique_lock<std::mutex> l(jmu);
        jcv.wait(l, [&] { return jobs_closed || !jobs.empty(); });
        if (jobs.empty()) return;
        j = std::move(jobs.front());
        jobs.pop_front();
      }
      run_job(j);
    }
  }

  void run_job(Job& j) {
    Response res;
    try {
      j.adm.handler(j.req, res);
    } catch (const std::exception& e) {
      res = error_response(500, "internal error");
      res.stream = nullptr;
    } catch (...) {
      res = error_response(500, "internal error");
    }
    j.req.body.clear();
    j.req.body.shrink_to_fit();
    const bool ka = j.c->keep_alive && !stopping;
    // Metrics, memory trimmed after a large request, and the hold (a tenant's slot) released, all
    // before the client hears the end: a client that sends its next request at once must find
    // the slot free.
    auto done = [&] {
      if (j.adm.done) {
        try {
          j.adm.done(res);
        } catch (...) {
        }
      }
      j.adm = Admission();
    };
    if (!res.stream) {
      std::string head = serialize_head(res, ka, false, res.status == 204 ? 0 : res.body.size());
      if (res.status != 204) head += res.body;
      res.body.clear();
      res.body.shrink_to_fit();
      done();
      push(j.c, head, false);
    } else {
      push(j.c, serialize_head(res, ka, true, 0), false);
      StreamSink sink(*this, j.c);
      try {
        res.stream(sink);
      } catch (...) {
      }
      res.stream = nullptr;
      done();
      push(j.c, "0\r\n\r\n", false);
    }
    res = Response();
    {
      std::lock_guard<std::mutex> g(j.c->mu);
      j.c->response_done = true;
    }
    // The worker's last reference goes to the I/O thread: a connection is always destroyed
    // there, never under a worker (whose writes to it would race with the I/O thread's).
    mark_dirty(std::move(j.c));
  }

  // ---- I/O thread ----

  void ctl(Conn& c, bool want_in, bool want_out) {
    if (c.fd < 0) return;
    if (c.in_epoll && want_in == c.watching_in && want_out == c.watching_out) return;
    epoll_event ev{};
    ev.events = (want_in ? EPOLLIN | EPOLLRDHUP : 0u) | (want_out ? EPOLLOUT : 0u);
    ev.data.u64 = c.id;
    if (!c.in_epoll) {
      if (::epoll_ctl(ep, EPOLL_CTL_ADD, c.fd, &ev) == 0) c.in_epoll = true;
    } else {
      ::epoll_ctl(ep, EPOLL_CTL_MOD, c.fd, &ev);
    }
    c.watching_in = want_in;
    c.watching_out = want_out;
  }

  void close_conn(const ConnPtr& c) {
    if (c->fd < 0) return;
    bool done;
    {
      std::lock_guard<std::mutex> g(c->mu);
      c->gone = true;
      done = c->response_done;
    }
    c->cv.notify_all();
    if (c->phase != Conn::kBusy) abandon(*c, 499);  // a request cut off while it was read
    if (c->phase == Conn::kBusy && !done) {
      // The worker still has the request: the socket stays open (its number must not be
      // reused under the worker) but is no longer watched; closed when the worker is done.
      if (c->in_epoll) ::epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, nullptr);
      c->in_epoll = false;
      c->close_after = true;
      ::shutdown(c->fd, SHUT_RDWR);
      return;
    }
    if (c->in_epoll) ::epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, nullptr);
    ::close(c->fd);
    conns.erase(c->id);
    c->fd = -1;
  }

  // Writes what is queued; false when the connection was closed.
  bool flush(const ConnPtr& c) {
    bool pending = false, done = false;
    {
      std::lock_guard<std::mutex> g(c->mu);
      while (c->out_off < c->out.size() && !c->gone) {
        const ssize_t w = ::send(c->fd, c->out.data() + c->out_off, c->out.size() - c->out_off, MSG_NOSIGNAL);
        if (w > 0) {
          c->out_off += static_cast<size_t>(w);
          c->last_write = Clock::now();
        } else if (w < 0 && errno == EINTR) {
          continue;
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
          break;
        } else {
          c->gone = true;
        }
      }
      if (c->out_off == c->out.size() || c->gone) {
        c->out.clear();
        c->out_off = 0;
        if (c->out.capacity() > 65536) c->out.shrink_to_fit();
      } else if (c->out_off > (size_t{1} << 20)) {
        c->out.erase(0, c->out_off);
        c->out_off = 0;
      }
      pending = c->out_off < c->out.size();
      done = c->response_done;
      if (c->gone) pending = false;
    }
    c->cv.notify_all();
    bool gone;
    {
      std::lock_guard<std::mutex> g(c->mu);
      gone = c->gone;
    }
    if (gone) {
      if (c->phase == Conn::kBusy && !done) {
        close_conn(c);  // keeps the fd until the worker is done
        return false;
      }
      c->phase = Conn::kIdle;
      close_conn(c);
      return false;
    }
    if (c->phase == Conn::kBusy && done && !pending) {
      // The response is out.
      {
        std::lock_guard<std::mutex> g(c->mu);
        c->response_done = false;
      }
      c->adm = Admission();
      if (c->close_after || !c->keep_alive || stopping) {
        c->phase = Conn::kIdle;
        close_conn(c);
        return false;
      }
      c->parser.reset();
      c->phase = Conn::kIdle;
      c->since = Clock::now();
      ctl(*c, true, false);
      return process(c);  // a pipelined request may be waiting already
    }
    if (c->phase == Conn::kDraining && !pending && !c->close_after) {
      // An early answer is out: the client may still be sending the body it announced; read and
      // drop it for a moment so that it sees the answer rather than a reset.
      ::shutdown(c->fd, SHUT_WR);
      c->close_after = true;
    }
    ctl(*c, c->phase != Conn::kBusy, pending);
    return true;
  }

  // An admitted request that ends before a worker takes it (body over the limit, malformed
  // framing, timeout, client gone): the application hears of it once, with this status.
  static void abandon(Conn& c, int status) {
    if (c.adm.done) {
      Response r;
      r.status = status;
      try {
        c.adm.done(r);
      } catch (...) {
      }
    }
    c.adm = Admission();
  }

  // An answer from the I/O thread itself (errors, rejections): the body is not read.
  void answer_now(const ConnPtr& c, Response r, bool body_pending) {
    abandon(*c, r.status);
    const bool ka = c->keep_alive && !body_pending && !stopping && r.status < 500 && r.status != 408;
    std::string s = serialize_head(r, ka, false, r.body.size()) + r.body;
    {
      std::lock_guard<std::mutex> g(c->mu);
      if (c->out_off == c->out.size()) c->last_write = Clock::now();
      c->out.append(s);
    }
    if (ka) {
      c->parser.reset();
      c->phase = Conn::kIdle;
      c->since = Clock::now();
      flush(c);
      return;
    }
    c->in.clear();
    c->phase = Conn::kDraining;
    c->drain_until = Clock::now() + std::chrono::seconds(2);
    c->close_after = false;
    flush(c);
  }

  // Parses what has been read; false when the connection was closed.
  bool process(const ConnPtr& c) {
    while (c->fd >= 0 && (c->phase == Conn::kIdle || c->phase == Conn::kRead) && !c->in.empty()) {
      if (c->phase == Conn::kIdle) {
        c->phase = Conn::kRead;
        c->since = Clock::now();
      }
      const size_t used = c->parser.feed(c->in.data(), c->in.size());
      c->in.erase(0, used);
      const auto st = c->parser.state();
      if (st == RequestParser::State::kError) {
        answer_now(c, error_response(c->parser.error_status(), c->parser.error_message()), true);
        return c->fd >= 0;
      }
      if (st == RequestParser::State::kHeadDone) {
        c->keep_alive = c->parser.keep_alive();
        Request& req = c->parser.request();
        Admission a;
        try {
          a = admit(req);
        } catch (const std::exception& e) {
          a.reject = error_response(500, "internal error");
        }
        if (a.reject) {
          answer_now(c, std::move(*a.reject), c->parser.has_body());
          if (c->fd >= 0 && c->phase == Conn::kIdle) continue;  // kept alive: a pipelined request may follow
          return c->fd >= 0;
        }
        c->adm = std::move(a);
        c->parser.start_body(cfg.max_body_bytes);
        if (c->parser.state() == RequestParser::State::kError) {
          answer_now(c, error_response(c->parser.error_status(), c->parser.error_message()), true);
          return c->fd >= 0;
        }
        if (c->parser.expect_continue() && c->parser.has_body()) {
          std::lock_guard<std::mutex> g(c->mu);
          if (c->out_off == c->out.size()) c->last_write = Clock::now();
          c->out.append("HTTP/1.1 100 Continue\r\n\r\n");
        }
        c->since = Clock::now();
        continue;
      }
      if (st == RequestParser::State::kDone) {
        dispatch(c);
        return true;
      }
      if (used == 0) break;
    }
    if (c->fd >= 0 && c->parser.state() == RequestParser::State::kDone && c->phase == Conn::kRead) {
      dispatch(c);
      return true;
    }
    if (c->fd >= 0) flush(c);
    return c->fd >= 0;
  }

  void dispatch(const ConnPtr& c) {
    c->phase = Conn::kBusy;
    Job j{c, std::move(c->parser.request()), std::move(c->adm)};
    c->adm = Admission();
    {
      std::lock_guard<std::mutex> g(c->mu);
      c->response_done = false;
    }
    ctl(*c, false, false);
    flush(c);  // a 100 Continue may be pending
    {
      std::lock_guard<std::mutex> g(jmu);
      jobs.push_back(std::move(j));
    }
    jcv.notify_one();
  }

  void on_readable(const ConnPtr& c) {
    char buf[65536];
    for (int rounds = 0; rounds < 16 && c->fd >= 0; ++rounds) {
      const ssize_t r = ::recv(c->fd, buf, sizeof buf, 0);
      if (r > 0) {
        if (c->phase == Conn::kDraining) continue;  // dropped
        c->in.append(buf, static_cast<size_t>(r));
        if (c->phase == Conn::kRead && c->parser.state() == RequestParser::State::kBody) c->since = Clock::now();
        if (!process(c)) return;
        if (c->phase == Conn::kBusy) return;  // the rest waits in the kernel until the response is out
        continue;
      }
      if (r < 0 && errno == EINTR) continue;
      if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
      // EOF or error: the client is done sending.
      c->peer_eof = true;
      if (c->phase != Conn::kBusy) {
        c->phase = Conn::kIdle;
        close_conn(c);
      } else {
        ctl(*c, false, c->watching_out);
      }
      return;
    }
  }

  void accept_all() {
    for (;;) {
      const int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EINTR) continue;
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
          // Out of descriptors: stop accepting for a moment rather than spin.
          accept_paused_until = Clock::now() + std::chrono::milliseconds(200);
          if (listening_in_epoll) ::epoll_ctl(ep, EPOLL_CTL_DEL, listen_fd, nullptr);
          listening_in_epoll = false;
        }
        return;
      }
      const int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      if (conns.size() >= cfg.max_connections && !evict_idle()) {
        // Full: a short 503 (best effort, non-blocking) and close.
        const std::string body = error_body(503, "the server has too many open connections, retry later");
        Response r;
        r.status = 503;
        r.body = body;
        r.set_header("Retry-After", "1");
        const std::string s = serialize_head(r, false, false, body.size()) + body;
        ssize_t w = ::send(fd, s.data(), s.size(), MSG_NOSIGNAL);
        (void)w;
        ::close(fd);
        continue;
      }
      auto c = std::make_shared<Conn>();
      c->fd = fd;
      c->id = next_id++;
      c->since = c->last_write = Clock::now();
      conns[c->id] = c;
      ctl(*c, true, false);
    }
  }

  // Closes the kept-alive connection idle the longest (no request under way); false if none.
  // A connection whose bytes are in the kernel but not read yet is not idle (a peek says).
  bool evict_idle() {
    std::vector<ConnPtr> idle;
    for (auto& [id, c] : conns)
      if (c->phase == Conn::kIdle && c->in.empty()) idle.push_back(c);
    std::sort(idle.begin(), idle.end(), [](const ConnPtr& a, const ConnPtr& b) { return a->since < b->since; });
    for (auto& c : idle) {
      char b;
      const ssize_t r = ::recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
      if (r > 0) continue;  // a request is arriving
      close_conn(c);
      return true;
    }
    return false;
  }

  void check_timers() {
    const auto now = Clock::now();
    std::vector<ConnPtr> expired;
    for (auto& [id, c] : conns) {
      bool exp = false;
      switch (c->phase) {
        case Conn::kIdle: exp = now - c->since > std::chrono::seconds(cfg.idle_timeout_s); break;
        case Conn::kRead: {
          const bool body = c->parser.state() == RequestParser::State::kBody;
          exp = now - c->since > std::chrono::seconds(body ? cfg.body_timeout_s : cfg.head_timeout_s);
          break;
        }
        case Conn::kDraining: exp = now > c->drain_until; break;
        case Conn::kBusy: {
          std::lock_guard<std::mutex> g(c->mu);
          exp = c->out_off < c->out.size() && now - c->last_write > std::chrono::seconds(cfg.write_timeout_s);
          break;
        }
      }
      if (exp) expired.push_back(c);
    }
    for (auto& c : expired) {
      if (c->fd < 0) continue;
      if (c->phase == Conn::kRead) {
        answer_now(c, error_response(408, "the request was not received in time"), true);
        if (c->fd >= 0) c->drain_until = now + std::chrono::milliseconds(500);
      } else {
        if (c->phase != Conn::kBusy) c->phase = Conn::kIdle;
        close_conn(c);
      }
    }
  }

  void handle_dirty() {
    std::vector<ConnPtr> d;
    {
      std::lock_guard<std::mutex> g(dmu);
      d.swap(dirty);
    }
    for (auto& c : d) {
      if (c->fd < 0) continue;
      bool gone;
      {
        std::lock_guard<std::mutex> g(c->mu);
        gone = c->gone;
      }
      if (gone && c->close_after && c->phase == Conn::kBusy) {
        bool done;
        {
          std::lock_guard<std::mutex> g(c->mu);
          done = c->response_done;
        }
        if (done) {
          c->phase = Conn::kIdle;
          ::close(c->fd);
          conns.erase(c->id);
          c->fd = -1;
        }
        continue;
      }
      flush(c);
    }
  }

  bool busy_left() const {
    for (auto& [id, c] : conns)
      if (c->phase == Conn::kBusy) return true;
    return false;
  }

  void loop() {
    epoll_event evs[256];
    Clock::time_point last_timers = Clock::now();
    Clock::time_point stop_deadline{};
    bool stop_seen = false;
    for (;;) {
      if (stopping && !stop_seen) {
        stop_seen = true;
        stop_deadline = Clock::now() + std::chrono::seconds(60);
        if (listen_fd >= 0) {
          if (listening_in_epoll) ::epoll_ctl(ep, EPOLL_CTL_DEL, listen_fd, nullptr);
          ::close(listen_fd);
          listen_fd = -1;
        }
        // Requests not yet read whole are dropped with the idle connections; those a worker
        // holds are answered (then their connections close).
        std::vector<ConnPtr> idle;
        for (auto& [id, c] : conns)
          if (c->phase != Conn::kBusy) idle.push_back(c);
        for (auto& c : idle) {
          c->phase = Conn::kIdle;
          close_conn(c);
        }
      }
      if (stop_seen && (!busy_left() || Clock::now() > stop_deadline)) break;
      if (!listening_in_epoll && listen_fd >= 0 && Clock::now() >= accept_paused_until) {
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.u64 = kListenId;
        if (::epoll_ctl(ep, EPOLL_CTL_ADD, listen_fd, &ev) == 0) listening_in_epoll = true;
      }
      const int n = ::epoll_wait(ep, evs, 256, 100);
      for (int i = 0; i < n; ++i) {
        const uint64_t id = evs[i].data.u64;
        if (id == kWakeId) {
          uint64_t v;
          ssize_t r = ::read(wake_fd, &v, sizeof v);
          (void)r;
          continue;
        }
        if (id == kListenId) {
          if (!stopping && listen_fd >= 0) accept_all();
          continue;
        }
        auto it = conns.find(id);
        if (it == conns.end()) continue;
        ConnPtr c = it->second;
        const uint32_t e = evs[i].events;
        if (e & (EPOLLERR | EPOLLHUP)) {
          {
            std::lock_guard<std::mutex> g(c->mu);
            c->gone = true;
          }
          if (c->phase != Conn::kBusy) c->phase = Conn::kIdle;
          close_conn(c);
          continue;
        }
        if (e & EPOLLOUT) {
          if (!flush(c)) continue;
        }
        if (e & (EPOLLIN | EPOLLRDHUP)) on_readable(c);
      }
      handle_dirty();
      if (Clock::now() - last_timers > std::chrono::milliseconds(200)) {
        check_timers();
        last_timers = Clock::now();
      }
    }
    // Workers finish what they hold, then stop.
    stopping_hard = true;
    for (auto& [id, c] : conns) c->cv.notify_all();
    {
      std::lock_guard<std::mutex> g(jmu);
      jobs_closed = true;
    }
    jcv.notify_all();
    for (auto& t : workers) t.join();
    workers.clear();
    handle_dirty();
    std::vector<ConnPtr> all;
    for (auto& [id, c] : conns) all.push_back(c);
    for (auto& c : all) {
      c->phase = Conn::kIdle;
      close_conn(c);
    }
  }
};

HttpServer::HttpServer(ServerConfig c, Admit admit) : impl_(std::make_unique<Impl>()) {
  impl_->cfg = std::move(c);
  impl_->admit = std::move(admit);
  if (impl_->cfg.workers < 1) throw std::invalid_argument("--threads must be >= 1");
  if (impl_->cfg.max_connections < 1) throw std::invalid_argument("--max-connections must be >= 1");
}

HttpServer::~HttpServer() {
  if (impl_->listen_fd >= 0) ::close(impl_->listen_fd);
  if (impl_->ep >= 0) ::close(impl_->ep);
  if (impl_->wake_fd >= 0) ::close(impl_->wake_fd);
}

int HttpServer::bind() {
  auto& s = *impl_;
  // Room for the connection cap: the soft descriptor limit raised to the hard one.
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
  }
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur > 256 &&
      s.cfg.max_connections > rl.rlim_cur - 128)
    s.cfg.max_connections = static_cast<size_t>(rl.rlim_cur - 128);
  addrinfo hints{}, *res = nullptr;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  const std::string port = std::to_string(s.cfg.port);
  const std::string host = s.cfg.host == "localhost" ? "127.0.0.1" : s.cfg.host;
  if (::getaddrinfo(host.c_str(), port.c_str(), &hints, &res) != 0 || !res)
    throw std::runtime_error("cannot listen on " + s.cfg.host + ":" + port + ": unknown address");
  int fd = -1;
  for (addrinfo* a = res; a; a = a->ai_next) {
    fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd, a->ai_addr, a->ai_addrlen) == 0 && ::listen(fd, 1024) == 0) break;
    ::close(fd);
    fd = -1;
  }
  ::freeaddrinfo(res);
  if (fd < 0) throw std::runtime_error("cannot listen on " + s.cfg.host + ":" + port + ": " + std::strerror(errno));
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  const int bound = ss.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port)
                                             : ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  s.listen_fd = fd;
  s.ep = ::epoll_create1(EPOLL_CLOEXEC);
  s.wake_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (s.ep < 0 || s.wake_fd < 0) throw std::runtime_error(std::string("epoll: ") + std::strerror(errno));
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = Impl::kWakeId;
  ::epoll_ctl(s.ep, EPOLL_CTL_ADD, s.wake_fd, &ev);
  return bound;
}

void HttpServer::run() {
  auto& s = *impl_;
  if (s.listen_fd < 0) bind();
  for (int i = 0; i < s.cfg.workers; ++i) s.workers.emplace_back([&s] { s.worker_loop(); });
  s.loop();
}

void HttpServer::stop() {
  impl_->stopping = true;
  if (impl_->wake_fd >= 0) impl_->wake();
}

}  // namespace ttt::server::http
