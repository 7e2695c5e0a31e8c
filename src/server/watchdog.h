// A per-connection deadline that costs nothing to move.
//
//   Watchdog wd(executor);
//   wd.arm(10s, &socket);          // cancel socket's pending I/O when 10 s pass
//   co_await socket.async_read_some(...);   // fails with operation_aborted if it expired
//   if (wd.expired()) ...          // tell a timeout from a reset
//
// arm() only stores a time point; the one timer re-arms itself lazily when it fires early, so
// extending a deadline per read costs no system call. Runs on the owning worker thread only.
#pragma once

#include <chrono>
#include <memory>

#include "core/duration.h"
#include "server/asio.h"

namespace sluice::server {

class Watchdog {
 public:
  using Clock = std::chrono::steady_clock;

  explicit Watchdog(const asio::any_io_executor& ex) : state_(std::make_shared<State>(ex)) {}
  ~Watchdog() {
    state_->target = nullptr;
    state_->stopped = true;
    state_->timer.cancel();
  }
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  // `target`: anything with cancel(error_code&) - a socket, a Lane.
  template <class T>
  void arm(Duration d, T* target) {
    State& s = *state_;
    s.deadline = Clock::now() + d;
    s.target = target;
    s.cancel = [](void* p) {
      error_code ignored;
      static_cast<T*>(p)->cancel(ignored);
    };
    s.expired = false;
    if (!s.waiting) {
      start(state_);
    } else if (s.deadline < s.timer.expiry()) {
      s.timer.expires_at(s.deadline);  // wakes the pending wait, which re-waits at the new time
    }
  }
  void disarm() {
    state_->deadline = Clock::time_point::max();
    state_->target = nullptr;
  }
  bool expired() const { return state_->expired; }

 private:
  struct State {
    explicit State(const asio::any_io_executor& ex) : timer(ex) {}
    asio::steady_timer timer;
    Clock::time_point deadline = Clock::time_point::max();
    void* target = nullptr;
    void (*cancel)(void*) = nullptr;
    bool waiting = false;
    bool expired = false;
    bool stopped = false;
  };

  static void start(const std::shared_ptr<State>& st) {
    st->waiting = true;
    st->timer.expires_at(st->deadline);
    st->timer.async_wait([st](const error_code&) {
      st->waiting = false;
      if (st->stopped || st->deadline == Clock::time_point::max()) return;
      if (Clock::now() >= st->deadline) {
        st->expired = true;
        st->deadline = Clock::time_point::max();
        if (st->target != nullptr) st->cancel(st->target);
        return;
      }
      start(st);
    });
  }

  std::shared_ptr<State> state_;
};

}  // namespace sluice::server
