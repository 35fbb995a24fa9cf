// `ttt serve`: the HTTP server of SPEC section 8, a thin layer over the inference API
// (inference/generation.h) and the session store (session_store.h).
//
// Files: http.* (the event-driven HTTP/1.1 layer: parser, sockets, timeouts, worker pool),
// http_server.cpp (the router, 405s and /openapi.json, all derived from the route table),
// api.* (what routes share: bodies, fields, options), routes_*.cpp (one file per resource, each
// route with its OpenAPI schemas), session_store.* (sessions, locking, residency, persistence),
// database.* (SQLite catalogue and audit), auth.* (API keys per tenant), metrics.* (Prometheus).
#pragma once
#include <cstdint>
#include <functional>
#include <string>

#include "model/sequence_memory.h"
#include "tensor/device.h"

namespace ttt::server {

struct ServerOptions {
  std::string model_dir, tokenizer, host = "127.0.0.1", state_dir, api_keys, model_name;
  int port = 8080;                      // 0: any free port (printed when listening)
  int threads = 16;                     // compute workers (a request holds one only once it is read)
  int64_t max_connections = 1024;       // open connections (idle ones closed first, then 503)
  int header_timeout_s = 10;            // first byte of a request to the end of its head (408)
  int idle_timeout_s = 60;              // a kept-alive connection waiting for its next request
  int64_t max_resident_sessions = 0;    // 0: no limit
  int64_t max_snapshots = 0;            // per session; 0: no limit
  uint64_t max_body_bytes = 256ull << 20;  // request bodies (a PUT state file is the largest)
  int64_t max_input_tokens = 1 << 20;   // per ingest or prompt
  int64_t max_new_tokens = 4096;        // per generation
  int64_t max_tenant_requests = 8;      // concurrent requests per tenant (429 beyond)
  int read_timeout_s = 30;              // longest pause in a body's upload or a response's download
  // The exact store of every session (issue 13): "all" keeps every token, "surprising" the
  // highest-loss spans within store_budget bytes, "off" none (recall then finds nothing).
  std::string store_policy = "all";
  int64_t store_budget = 0;
  int64_t store_span = 64;
  bool compute_bf16 = false;  // --compute bf16 (the CLI checks the CPU; the model's bf16 products)
  // --kv-dtype: how every session this server makes keeps attention's window cache (a state
  // imported or restored with the other dtype is refused in one line).
  model::KvDtype kv_dtype = model::KvDtype::F32;
  Device device = Device::cpu();  // --device: where the model and its sessions compute
};

// Binds, loads the model (GET /health answers 503 meanwhile), serves until SIGTERM or SIGINT,
// drains the requests in flight and returns 0. Prints "ttt serve: listening on http://HOST:PORT"
// on stderr once bound. Throws std::runtime_error for options it cannot serve with.
int run_server(const ServerOptions& o);

}  // namespace ttt::server
