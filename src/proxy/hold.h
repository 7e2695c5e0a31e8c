// Small pieces shared by the gateway's two ways of talking to upstreams: client exchanges
// (http_session.cpp, streamed) and the bridges' own requests (upstream_call.cpp, buffered).
//
//   Hold in_flight(counters.requests);   // +1 now, -1 when it goes out of scope
#pragma once

#include <atomic>
#include <string_view>
#include <utility>

namespace sluice::proxy {

// Counts one unit in an atomic for as long as it lives (in-flight requests, retries...). A
// pointer, not a std::function: four of these live on every proxied request.
template <typename T>
class Hold {
 public:
  Hold() = default;
  explicit Hold(std::atomic<T>& counter) : counter_(&counter) {
    counter.fetch_add(1, std::memory_order_relaxed);
  }
  static Hold adopt(std::atomic<T>& counter) {  // takes over a unit the caller already added
    Hold h;
    h.counter_ = &counter;
    return h;
  }
  Hold(Hold&& o) noexcept : counter_(std::exchange(o.counter_, nullptr)) {}
  Hold& operator=(Hold&& o) noexcept {
    if (this != &o) {
      reset();
      counter_ = std::exchange(o.counter_, nullptr);
    }
    return *this;
  }
  Hold(const Hold&) = delete;
  Hold& operator=(const Hold&) = delete;
  ~Hold() { reset(); }
  void reset() {
    if (counter_ != nullptr) counter_->fetch_sub(1, std::memory_order_relaxed);
    counter_ = nullptr;
  }

 private:
  std::atomic<T>* counter_ = nullptr;
};

// RFC 9110 9.2.2: a request that may be sent again (retries).
inline bool idempotent(std::string_view method) {
  return method == "GET" || method == "HEAD" || method == "OPTIONS" || method == "PUT" ||
         method == "DELETE" || method == "TRACE";
}

}  // namespace sluice::proxy
