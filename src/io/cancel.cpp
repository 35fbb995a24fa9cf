#include "io/cancel.h"

namespace ttt::io {
namespace {
thread_local const std::function<bool()>* t_check = nullptr;
}

void check_cancelled() {
  if (t_check && (*t_check)()) throw Cancelled();
}

CancelScope::CancelScope(std::function<bool()> check) : check_(std::move(check)), prev_(t_check) { t_check = &check_; }
CancelScope::~CancelScope() { t_check = prev_; }

}  // namespace ttt::io
