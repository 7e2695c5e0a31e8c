#include "upstream/target_state.h"

#include <algorithm>
#include <chrono>

namespace sluice::upstream {

int64_t steady_now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::shared_ptr<TargetState> StateRegistry::target(const std::string& upstream,
                                                   const std::string& address) {
  std::lock_guard lock(mu_);
  auto& slot = targets_[{upstream, address}];
  if (!slot) slot = std::make_shared<TargetState>();
  return slot;
}

std::shared_ptr<UpstreamCounters> StateRegistry::counters(const std::string& upstream) {
  std::lock_guard lock(mu_);
  auto& slot = counters_[upstream];
  if (!slot) slot = std::make_shared<UpstreamCounters>();
  return slot;
}

bool StateRegistry::set_drained(const std::string& upstream, const std::string& address,
                                bool drained) {
  std::lock_guard lock(mu_);
  auto it = targets_.find({upstream, address});
  if (it == targets_.end()) return false;
  it->second->drained.store(drained, std::memory_order_relaxed);
  return true;
}

void StateRegistry::collect() {
  std::lock_guard lock(mu_);
  std::erase_if(targets_, [](const auto& kv) { return kv.second.use_count() == 1; });
  std::erase_if(counters_, [](const auto& kv) { return kv.second.use_count() == 1; });
}

bool record_outcome(TargetState& t, const std::vector<TargetState*>& all,
                    const OutlierPolicy& policy, bool failure, int64_t now_ms) {
  if (!failure) {
    t.consecutive_failures.store(0, std::memory_order_relaxed);
    return false;
  }
  if (policy.consecutive_failures <= 0) return false;
  int n = t.consecutive_failures.fetch_add(1, std::memory_order_relaxed) + 1;
  if (n < policy.consecutive_failures || t.ejected(now_ms)) return false;

  // max_ejected: never eject more than this share of the upstream (at least one target may go).
  int64_t allowed =
      std::max<int64_t>(1, static_cast<int64_t>(all.size()) * policy.max_ejected_percent / 100);
  int64_t ejected_now = 0;
  for (const TargetState* other : all) ejected_now += other->ejected(now_ms) ? 1 : 0;
  if (ejected_now >= allowed) return false;

  // Repeat offenders stay out longer: base * 2^k, where k decays by one for each quiet period
  // of `ejection_time` since the last ejection ended. Capped at 2^6.
  int k = t.ejections.load(std::memory_order_relaxed);
  int64_t last_end = t.last_ejection_end_ms.load(std::memory_order_relaxed);
  if (last_end > 0 && policy.ejection_time_ms > 0) {
    int64_t quiet = (now_ms - last_end) / policy.ejection_time_ms;
    k = static_cast<int>(std::max<int64_t>(0, k - quiet));
  }
  int64_t duration = policy.ejection_time_ms << std::min(k, 6);
  t.ejected_until_ms.store(now_ms + duration, std::memory_order_relaxed);
  t.last_ejection_end_ms.store(now_ms + duration, std::memory_order_relaxed);
  t.ejections.store(k + 1, std::memory_order_relaxed);
  t.consecutive_failures.store(0, std::memory_order_relaxed);
  return true;
}

}  // namespace sluice::upstream
