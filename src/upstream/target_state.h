// What every worker knows about a target right now: health, ejection, drain, load.
//
//   auto st = registry.get("api", "127.0.0.1:9001");   // main thread, at snapshot compile
//   if (st->available(now_ms)) ...                       // any worker, lock-free
//   st->in_flight.fetch_add(1, std::memory_order_relaxed);
//
// Shared by all workers and the health checker; every field is an atomic read or written with
// relaxed ordering (each is an independent fact; nothing is derived from two of them at once
// except the advisory `available()`). Carried across reloads by the registry, keyed by upstream
// name and target address as written, so a reload keeps health, ejections and drains.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace sluice::upstream {

int64_t steady_now_ms();

struct TargetState {
  // Active health checks: targets start healthy (SPEC.md) and flip after thresholds.
  std::atomic<bool> healthy{true};
  std::atomic<int> check_successes{0};  // consecutive
  std::atomic<int> check_failures{0};   // consecutive
  std::atomic<int64_t> last_check_ms{0};
  // Passive outlier detection from real traffic.
  std::atomic<int> consecutive_failures{0};
  std::atomic<int64_t> ejected_until_ms{0};
  std::atomic<int> ejections{0};  // times ejected; the next ejection lasts base * 2^(ejections)
  std::atomic<int64_t> last_ejection_end_ms{0};
  // Operator drain: no new requests, in-flight ones finish.
  std::atomic<bool> drained{false};
  // Load, across all workers.
  std::atomic<uint32_t> in_flight{0};
  // DNS: 0 while a hostname target has never resolved (then it takes no traffic).
  std::atomic<bool> resolved{true};

 private:
  mutable std::mutex ip_mu_;
  std::string ip_;

 public:
  // Current IP of a hostname target (DNS refreshes it); thread-safe.
  std::string ip() const {
    std::lock_guard lock(ip_mu_);
    return ip_;
  }
  void set_ip(std::string ip) {
    std::lock_guard lock(ip_mu_);
    ip_ = std::move(ip);
    resolved.store(!ip_.empty(), std::memory_order_relaxed);
  }

  bool ejected(int64_t now_ms) const {
    return ejected_until_ms.load(std::memory_order_relaxed) > now_ms;
  }
  // May a new request go to this target?
  bool available(int64_t now_ms) const {
    return healthy.load(std::memory_order_relaxed) && !drained.load(std::memory_order_relaxed) &&
           resolved.load(std::memory_order_relaxed) && !ejected(now_ms);
  }
};

// Upstream-wide counters for the circuit breaker and the retry budget.
struct UpstreamCounters {
  std::atomic<int64_t> active{0};    // requests holding an upstream connection
  std::atomic<int64_t> pending{0};   // requests waiting for a connection slot
  std::atomic<int64_t> requests{0};  // requests in flight (first attempts and retries)
  std::atomic<int64_t> retries{0};   // retries in flight
};

// Owns the shared state objects across config reloads. Thread-safe (a mutex: it is only used
// at compile time and by the admin/internal calls, never per request).
class StateRegistry {
 public:
  std::shared_ptr<TargetState> target(const std::string& upstream, const std::string& address);
  std::shared_ptr<UpstreamCounters> counters(const std::string& upstream);
  // Internal drain call (the admin API exposes it): false when no such target exists.
  bool set_drained(const std::string& upstream, const std::string& address, bool drained);
  // Drops state for targets/upstreams no longer referenced by any snapshot.
  void collect();

 private:
  std::mutex mu_;
  std::map<std::pair<std::string, std::string>, std::shared_ptr<TargetState>> targets_;
  std::map<std::string, std::shared_ptr<UpstreamCounters>> counters_;
};

// Outlier bookkeeping after one attempt against a target. `failure` = a connect failure, a
// reset or a 5xx. Returns true when this call ejected the target.
struct OutlierPolicy {
  int consecutive_failures = 5;  // 0 = disabled
  int64_t ejection_time_ms = 30000;
  int max_ejected_percent = 50;
};
// `all` = the states of every target of the upstream (for max_ejected).
bool record_outcome(TargetState& t, const std::vector<TargetState*>& all,
                    const OutlierPolicy& policy, bool failure, int64_t now_ms);

}  // namespace sluice::upstream
