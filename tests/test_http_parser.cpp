// The request parser of `ttt serve` (src/server/http.h, issue 25): framing, limits, errors.
#include <gtest/gtest.h>

#include <string>

#include "server/http.h"

namespace ttt::test {
namespace {

using server::http::RequestParser;
using State = RequestParser::State;

// Feeds `bytes` in pieces of `piece`; returns the state and how much was left unconsumed.
struct Fed {
  State state;
  size_t left;
};
Fed feed(RequestParser& p, const std::string& bytes, size_t piece, uint64_t max_body = 1000) {
  std::string in;
  size_t off = 0;
  while (off < bytes.size() || !in.empty()) {
    if (off < bytes.size()) {
      in += bytes.substr(off, piece);
      off += piece;
    }
    const size_t used = p.feed(in.data(), in.size());
    in.erase(0, used);
    if (p.state() == State::kHeadDone) {
      p.start_body(max_body);
      continue;
    }
    if (p.state() == State::kDone || p.state() == State::kError) break;
    if (used == 0 && off >= bytes.size()) break;
  }
  return {p.state(), in.size() + (off < bytes.size() ? bytes.size() - off : 0)};
}

TEST(HttpParser, SizedChunkedAndNoBodyInAnyPieces) {
  for (size_t piece : {1, 2, 7, 64, 4096}) {
    RequestParser a;
    auto r = feed(a, "POST /v1/x%2Dy?q=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhelloGET", piece);
    ASSERT_EQ(r.state, State::kDone) << piece;
    EXPECT_EQ(a.request().body, "hello");
    EXPECT_EQ(a.request().path, "/v1/x-y");
    EXPECT_EQ(a.request().query, "q=1");
    EXPECT_EQ(a.request().header_value("host"), "h");
    EXPECT_TRUE(a.keep_alive());

    RequestParser b;
    r = feed(b, "POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n", piece);
    ASSERT_EQ(r.state, State::kDone) << piece;
    EXPECT_EQ(b.request().body, "abcde");

    RequestParser c;  // no Content-Length, no Transfer-Encoding: an empty body (RFC 9112 6.3)
    r = feed(c, "POST /fork HTTP/1.1\nHost: h\n\n", piece);
    ASSERT_EQ(r.state, State::kDone) << piece;
    EXPECT_TRUE(c.request().body.empty());
  }
}

TEST(HttpParser, BodyLimitHoldsForSizedAndChunkedBodies) {
  RequestParser a;
  EXPECT_EQ(feed(a, "POST / HTTP/1.1\r\nContent-Length: 1001\r\n\r\n", 4096).state, State::kError);
  EXPECT_EQ(a.error_status(), 413);
  // Chunked: refused at the chunk size line that passes the limit, before its data.
  RequestParser b;
  std::string body = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (int i = 0; i < 5; ++i) body += "100\r\n" + std::string(256, 'x') + "\r\n";
  auto r = feed(b, body + "0\r\n\r\n", 4096);
  EXPECT_EQ(r.state, State::kError);
  EXPECT_EQ(b.error_status(), 413);
  EXPECT_LE(b.request().body.size(), 1000u);
}

TEST(HttpParser, MalformedRequestsAreErrorsWithTheirStatus) {
  struct Case {
    std::string bytes;
    int status;
  };
  const Case cases[] = {
      {"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501},
      {"GET / HTTP/2.0\r\n\r\n", 505},
      {"GET /a b HTTP/1.1\r\n\r\n", 400},
      {"GET http://x/ HTTP/1.1\r\n\r\n", 400},
      {"GET /%zz HTTP/1.1\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\n folded: x\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nX: a\x01" "b\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nX: " + std::string(20000, 'a') + "\r\n\r\n", 431},
      {"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400},
      {"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\naXY", 400},
      {"GET / HTTP/1.1\r\nExpect: magic\r\n\r\n", 417},
  };
  for (const auto& c : cases) {
    RequestParser p;
    EXPECT_EQ(feed(p, c.bytes, 4096).state, State::kError) << c.bytes.substr(0, 60);
    EXPECT_EQ(p.error_status(), c.status) << c.bytes.substr(0, 60);
  }
}

TEST(HttpParser, KeepAliveByVersionAndConnection) {
  RequestParser a;
  feed(a, "GET / HTTP/1.0\r\n\r\n", 4096);
  EXPECT_FALSE(a.keep_alive());
  RequestParser b;
  feed(b, "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 4096);
  EXPECT_TRUE(b.keep_alive());
  RequestParser c;
  feed(c, "GET / HTTP/1.1\r\nConnection: Close\r\n\r\n", 4096);
  EXPECT_FALSE(c.keep_alive());
}

}  // namespace
}  // namespace ttt::test
