#include "server/metrics.h"

#include <cstdio>

namespace ttt::server {

Metrics::Metrics() : bounds_{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120} {}

void Metrics::request(const std::string& route, int status, double seconds) {
  std::lock_guard<std::mutex> l(mu_);
  ++requests_[{route, status}];
  auto& h = latency_[route];
  if (h.counts.empty()) h.counts.assign(bounds_.size(), 0);
  for (size_t i = 0; i < bounds_.size(); ++i)
    if (seconds <= bounds_[i]) {
      ++h.counts[i];
      break;
    }
  h.sum += seconds;
  ++h.n;
}

std::string Metrics::render(const Gauges& g) {
  std::lock_guard<std::mutex> l(mu_);
  std::string out;
  char buf[512];
  auto line = [&](const char* fmt, auto... args) {
    std::snprintf(buf, sizeof buf, fmt, args...);
    out += buf;
  };
  out += "# HELP ttt_requests_total HTTP requests by route and status.\n# TYPE ttt_requests_total counter\n";
  for (auto& [k, n] : requests_)
    line("ttt_requests_total{route=\"%s\",status=\"%d\"} %llu\n", k.first.c_str(), k.second,
         static_cast<unsigned long long>(n));
  auto counter = [&](const char* name, const char* help, int64_t v) {
    line("# HELP %s %s\n# TYPE %s counter\n%s %lld\n", name, help, name, name, static_cast<long long>(v));
  };
  counter("ttt_tokens_ingested_total", "Tokens read by ingest requests.", tokens_ingested_);
  counter("ttt_prompt_tokens_total", "Prompt tokens read by generate and completion requests.", prompt_tokens_);
  counter("ttt_tokens_generated_total", "Tokens generated.", tokens_generated_);
  counter("ttt_ttt_steps_total", "Test-time training steps taken.", ttt_steps_);
  out += "# HELP ttt_request_duration_seconds Request latency by route.\n# TYPE ttt_request_duration_seconds histogram\n";
  for (auto& [route, h] : latency_) {
    uint64_t cum = 0;
    for (size_t i = 0; i < bounds_.size(); ++i) {
      cum += h.counts[i];
      line("ttt_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} %llu\n", route.c_str(), bounds_[i],
           static_cast<unsigned long long>(cum));
    }
    line("ttt_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %llu\n", route.c_str(),
         static_cast<unsigned long long>(h.n));
    line("ttt_request_duration_seconds_sum{route=\"%s\"} %.6f\n", route.c_str(), h.sum);
    line("ttt_request_duration_seconds_count{route=\"%s\"} %llu\n", route.c_str(), static_cast<unsigned long long>(h.n));
  }
  auto gauge = [&](const char* name, const char* help, int64_t v) {
    line("# HELP %s %s\n# TYPE %s gauge\n%s %lld\n", name, help, name, name, static_cast<long long>(v));
  };
  gauge("ttt_sessions_resident", "Sessions whose state is in memory.", g.resident);
  gauge("ttt_sessions_stored", "Sessions held (in memory or on disk).", g.stored);
  gauge("ttt_resident_state_bytes", "Bytes of the state tensors of resident sessions.", g.resident_bytes);
  gauge("ttt_state_bytes", "Bytes of the state tensors of all sessions.", g.state_bytes);
  gauge("ttt_requests_in_flight", "Requests being served.", g.in_flight);
  return out;
}

}  // namespace ttt::server
