#include "backend/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace ttt {
namespace {

thread_local int tl_index = 0;
thread_local bool tl_in_parallel = false;

class Pool {
 public:
  explicit Pool(int n) { resize(n); }
  ~Pool() { stop(); }

  int size() const { return n_; }

  void resize(int n) {
    stop();
    n_ = std::max(1, n);
    quit_ = false;
    for (int i = 1; i < n_; ++i) workers_.emplace_back([this, i] { loop(i); });
  }

  void run(int64_t begin, int64_t end, int64_t grain,
           const std::function<void(int64_t, int64_t)>& fn) {
    const int64_t total = end - begin;
    if (total <= 0) return;
    grain = std::max<int64_t>(1, grain);
    int64_t pieces = std::min<int64_t>(n_ * 4, (total + grain - 1) / grain);
    if (n_ == 1 || pieces <= 1 || tl_in_parallel) {
      fn(begin, end);
      return;
    }
    std::unique_lock<std::mutex> job_lock(job_mu_);  // one parallel region at a time
    Job job;
    {
      std::lock_guard<std::mutex> g(mu_);
      job = {++generation_, &fn, begin, end, pieces};
      current_ = job;
      done_pieces_ = 0;
      error_ = nullptr;
      claim_.store(job.id << 32);
    }
    cv_.notify_all();
    work(job);
    std::unique_lock<std::mutex> g(mu_);
    done_cv_.wait(g, [&] { return done_pieces_ == pieces; });
    current_.fn = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

 private:
  // One parallel_for call. Pieces are claimed through `claim_`, which packs the job id with the
  // next piece index: a worker holding a stale snapshot of an earlier job fails to claim and
  // never touches a function whose caller has already returned.
  struct Job {
    uint64_t id = 0;
    const std::function<void(int64_t, int64_t)>* fn = nullptr;
    int64_t begin = 0, end = 0, pieces = 0;
  };

  bool claim(const Job& job, int64_t& piece) {
    uint64_t v = claim_.load();
    for (;;) {
      if ((v >> 32) != (job.id & 0xffffffffu)) return false;
      const int64_t p = static_cast<int64_t>(v & 0xffffffffu);
      if (p >= job.pieces) return false;
      if (claim_.compare_exchange_weak(v, v + 1)) {
        piece = p;
        return true;
      }
    }
  }

  void work(const Job& job) {
    tl_in_parallel = true;
    int64_t p = 0;
    while (claim(job, p)) {
      const int64_t total = job.end - job.begin;
      const int64_t lo = job.begin + total * p / job.pieces, hi = job.begin + total * (p + 1) / job.pieces;
      try {
        (*job.fn)(lo, hi);
      } catch (...) {
        std::lock_guard<std::mutex> g(mu_);
        if (!error_) error_ = std::current_exception();
      }
      std::lock_guard<std::mutex> g(mu_);
      if (++done_pieces_ == job.pieces) done_cv_.notify_all();
    }
    tl_in_parallel = false;
  }

  void loop(int index) {
    tl_index = index;
    uint64_t seen = 0;
    for (;;) {
      Job job;
      {
        std::unique_lock<std::mutex> g(mu_);
        cv_.wait(g, [&] { return quit_ || (generation_ != seen && current_.fn != nullptr); });
        if (quit_) return;
        seen = generation_;
        job = current_;  // a consistent snapshot, taken under the lock
      }
      work(job);
    }
  }

  void stop() {
    {
      std::lock_guard<std::mutex> g(mu_);
      quit_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
  }

  int n_ = 1;
  std::vector<std::thread> workers_;
  std::mutex job_mu_, mu_;
  std::condition_variable cv_, done_cv_;
  Job current_;
  int64_t done_pieces_ = 0;
  std::atomic<uint64_t> claim_{0};
  uint64_t generation_ = 0;
  bool quit_ = false;
  std::exception_ptr error_;
};

int default_threads() {
  if (const char* s = std::getenv("TTT_NUM_THREADS"); s && *s) {
    const int n = std::atoi(s);
    if (n >= 1) return n;
  }
  const unsigned hc = std::thread::hardware_concurrency();
  return hc == 0 ? 1 : static_cast<int>(hc);
}

Pool& pool() {
  static Pool p(default_threads());
  return p;
}

}  // namespace

int num_threads() { return pool().size(); }
void set_num_threads(int n) { pool().resize(n); }
int thread_index() { return tl_index; }
bool in_parallel_region() { return tl_in_parallel; }

void parallel_for(int64_t begin, int64_t end, int64_t grain,
                  const std::function<void(int64_t, int64_t)>& fn) {
  pool().run(begin, end, grain, fn);
}

}  // namespace ttt
