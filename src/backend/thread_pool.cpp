#include "backend/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <chrono>
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

// Spinning before sleeping: waking a sleeping thread costs tens of microseconds on a virtual
// machine (the idle vCPU must be woken by the hypervisor), longer than many of the regions
// themselves (a decoded token runs ~150 of 10-50 us each). So a thread that finishes its piece
// polls for the next job (or for the last piece) for a short while before it blocks.
int64_t spin_ns_setting() {
  if (const char* s = std::getenv("TTT_SPIN_US"); s && *s) {
    char* e = nullptr;
    const long v = std::strtol(s, &e, 10);
    if (e != s && *e == '\0' && v >= 0) return static_cast<int64_t>(v) * 1000;
  }
  return 100 * 1000;
}

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Polls ready() for up to spin_ns; true as soon as it holds.
template <class Ready>
bool spin_until(int64_t spin_ns, const Ready& ready) {
  if (ready()) return true;
  if (spin_ns <= 0) return false;
  const int64_t t0 = now_ns();
  for (int i = 1;; ++i) {
    cpu_relax();
    if (ready()) return true;
    if ((i & 63) == 0 && now_ns() - t0 > spin_ns) return false;
  }
}

class Pool {
 public:
  explicit Pool(int n) : spin_ns_(spin_ns_setting()) { resize(n); }
  ~Pool() { stop(); }

  int size() const { return n_; }

  void resize(int n) {
    stop();
    n_ = std::max(1, n);
    quit_.store(false);
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
    bool wake = false;
    {
      std::lock_guard<std::mutex> g(mu_);
      job = {generation_.load() + 1, &fn, begin, end, pieces};
      current_ = job;
      done_pieces_.store(0);
      error_ = nullptr;
      claim_.store(job.id << 32);
      generation_.store(job.id, std::memory_order_release);  // spinning workers pick it up from here
      wake = sleepers_ > 0;
    }
    if (wake) cv_.notify_all();
    work(job);
    auto done = [&] { return done_pieces_.load(std::memory_order_acquire) == pieces; };
    std::unique_lock<std::mutex> g(mu_, std::defer_lock);
    if (!spin_until(spin_ns_, done)) {
      g.lock();
      done_cv_.wait(g, done);
    } else {
      g.lock();
    }
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
      if (done_pieces_.fetch_add(1, std::memory_order_acq_rel) + 1 == job.pieces) {
        // Under the lock, so a caller that has just decided to block cannot miss it.
        std::lock_guard<std::mutex> g(mu_);
        done_cv_.notify_all();
      }
    }
    tl_in_parallel = false;
  }

  void loop(int index) {
    tl_index = index;
    uint64_t seen = 0;
    for (;;) {
      spin_until(spin_ns_, [&] {
        return generation_.load(std::memory_order_acquire) != seen || quit_.load(std::memory_order_relaxed);
      });
      Job job;
      {
        std::unique_lock<std::mutex> g(mu_);
        if (!quit_.load() && generation_.load() == seen) {
          ++sleepers_;
          cv_.wait(g, [&] { return quit_.load() || generation_.load() != seen; });
          --sleepers_;
        }
        if (quit_.load()) return;
        seen = generation_.load();
        job = current_;  // a consistent snapshot, taken under the lock (fn is null once finished)
      }
      if (job.fn) work(job);
    }
  }

  void stop() {
    {
      std::lock_guard<std::mutex> g(mu_);
      quit_.store(true);
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
  }

  int n_ = 1;
  const int64_t spin_ns_;
  std::vector<std::thread> workers_;
  std::mutex job_mu_, mu_;
  std::condition_variable cv_, done_cv_;
  Job current_;
  int sleepers_ = 0;
  std::atomic<int64_t> done_pieces_{0};
  std::atomic<uint64_t> claim_{0};
  std::atomic<uint64_t> generation_{0};
  std::atomic<bool> quit_{false};
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
