// Cooperative cancellation of long engine calls (prefill, meta-gradients, training, the
// evaluation suite): the loops call check_cancelled() between chunks or steps, where stopping
// leaves nothing half-written. An embedding program (the Python module: Ctrl-C) installs a check
// for the calling thread with CancelScope; without one, check_cancelled() costs one
// thread-local load. When the check answers true, check_cancelled() throws Cancelled.
#pragma once
#include <functional>
#include <stdexcept>

namespace ttt::io {

struct Cancelled : std::runtime_error {
  Cancelled() : std::runtime_error("interrupted") {}
};

void check_cancelled();

// Installs `check` for the calling thread while it lives (scopes nest: the inner one wins).
class CancelScope {
 public:
  explicit CancelScope(std::function<bool()> check);
  ~CancelScope();
  CancelScope(const CancelScope&) = delete;
  CancelScope& operator=(const CancelScope&) = delete;

 private:
  std::function<bool()> check_;
  const std::function<bool()>* prev_;
};

}  // namespace ttt::io
