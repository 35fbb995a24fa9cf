// `ttt serve`: the HTTP server of SPEC section 8 (src/server/server.h).
#include "cli/commands.h"
#include "server/server.h"

namespace ttt::cli {
namespace {

server::ServerOptions g_serve;
std::string g_serve_compute = "f32", g_serve_device = "cpu", g_serve_kv = "f32";

}  // namespace

void register_serve(CLI::App& app, Registry& reg) {
  auto* s = app.add_subcommand("serve", "HTTP server: OpenAI-compatible completions and sessions that learn while they read");
  auto& o = g_serve;
  s->add_option("--model", o.model_dir, "model directory")->required();
  s->add_option("--tokenizer", o.tokenizer, "tokenizer file (default: tokenizer.model or tokenizer.json in the model directory)");
  s->add_option("--host", o.host, "address to bind")->capture_default_str();
  s->add_option("--port", o.port, "port (0: any free port, printed on stderr)")->capture_default_str();
  s->add_option("--state-dir", o.state_dir, "keep sessions, snapshots and the audit log here (SQLite + state files)");
  s->add_option("--api-keys", o.api_keys, "file of 'KEY TENANT' lines: require Authorization: Bearer KEY");
  s->add_option("--max-resident-sessions", o.max_resident_sessions, "states kept in memory, the rest spill to disk (0: no limit)")
      ->capture_default_str();
  s->add_option("--max-snapshots", o.max_snapshots, "snapshots kept per session, oldest dropped first (0: no limit)")
      ->capture_default_str();
  s->add_option("--threads", o.threads, "compute workers (a request takes one once it has been read)")->capture_default_str();
  s->add_option("--max-connections", o.max_connections, "open connections; beyond, idle ones are closed, then new ones get 503")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20))
      ->capture_default_str();
  s->add_option("--header-timeout", o.header_timeout_s, "seconds from a request's first byte to the end of its headers (408)")
      ->check(CLI::Range(1, 3600))
      ->capture_default_str();
  s->add_option("--read-timeout", o.read_timeout_s, "longest pause, in seconds, while a body is uploaded or a response read")
      ->check(CLI::Range(1, 3600))
      ->capture_default_str();
  s->add_option("--idle-timeout", o.idle_timeout_s, "seconds a kept-alive connection may wait for its next request")
      ->check(CLI::Range(1, 86400))
      ->capture_default_str();
  s->add_option("--max-body-bytes", o.max_body_bytes, "largest request body (413 beyond)")->capture_default_str();
  s->add_option("--max-input-tokens", o.max_input_tokens, "most tokens one ingest or prompt may hold")->capture_default_str();
  s->add_option("--max-new-tokens", o.max_new_tokens, "most tokens one generation may ask for")->capture_default_str();
  s->add_option("--max-tenant-requests", o.max_tenant_requests, "concurrent requests per tenant (429 beyond)")
      ->capture_default_str();
  s->add_option("--store-policy", o.store_policy,
                "each session's exact store (for recall): all (every token), surprising (the highest-loss spans within "
                "--store-budget), off")
      ->capture_default_str();
  s->add_option("--store-budget", o.store_budget, "bytes per session the surprising policy keeps")->capture_default_str();
  s->add_option("--store-span", o.store_span, "tokens per retrieval span (fixed when a store is created)")->capture_default_str();
  s->add_option("--model-name", o.model_name, "model id in /v1/models and completions (default: the directory name)");
  add_compute_option(s, g_serve_compute);
  add_device_option(s, g_serve_device);
  add_kv_dtype_option(s, g_serve_kv);
  reg.push_back({s, [] {
                   g_serve.kv_dtype = model::parse_kv_dtype(g_serve_kv);
                   apply_compute(g_serve_compute, model::Weights::Auto);  // checks the CPU
                   g_serve.compute_bf16 = g_serve_compute == "bf16";
                   g_serve.device = device_option(g_serve_device);
                   return server::run_server(g_serve);
                 }});
}

}  // namespace ttt::cli
