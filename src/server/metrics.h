// Counters and latency histograms of `ttt serve`, written as Prometheus text (GET /metrics).
// Thread-safe: one mutex around a few maps (a request touches it a handful of times).
#pragma once
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace ttt::server {

class Metrics {
 public:
  Metrics();
  void request(const std::string& route, int status, double seconds);
  void ingested(int64_t tokens) { add(tokens_ingested_, tokens); }
  void generated(int64_t tokens) { add(tokens_generated_, tokens); }
  void prompt(int64_t tokens) { add(prompt_tokens_, tokens); }
  void ttt_steps(int64_t n) { add(ttt_steps_, n); }
  // Gauges filled by the caller at scrape time.
  struct Gauges {
    int64_t resident = 0, stored = 0, resident_bytes = 0, state_bytes = 0, in_flight = 0;
  };
  std::string render(const Gauges& g);

 private:
  void add(int64_t& c, int64_t n) {
    std::lock_guard<std::mutex> l(mu_);
    c += n;
  }
  struct Histogram {
    std::vector<uint64_t> counts;  // per bucket (cumulative when rendered)
    double sum = 0;
    uint64_t n = 0;
  };
  std::mutex mu_;
  std::vector<double> bounds_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;
  std::map<std::string, Histogram> latency_;
  int64_t tokens_ingested_ = 0, tokens_generated_ = 0, prompt_tokens_ = 0, ttt_steps_ = 0;
};

}  // namespace ttt::server
