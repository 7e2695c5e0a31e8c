#include "stats/rates.h"

namespace sluice::stats {

uint64_t SecondCounts::total() const {
  uint64_t n = 0;
  for (uint64_t c : by_class) n += c;
  return n;
}

RateSeries RateSeries::at(int64_t now_s) {
  RateSeries out;
  for (size_t i = 0; i < kSeconds; ++i) {
    out.seconds[i].second = now_s - static_cast<int64_t>(kSeconds) + static_cast<int64_t>(i);
  }
  return out;
}

void RateSeries::add(const RateSeries& other) {
  for (size_t i = 0; i < kSeconds; ++i) {
    for (size_t c = 0; c < kStatusClasses; ++c) {
      seconds[i].by_class[c] += other.seconds[i].by_class[c];
    }
  }
}

Rates RateSeries::rates() const {
  uint64_t last10 = 0, last60 = 0;
  for (size_t i = 0; i < kSeconds; ++i) {
    const uint64_t n = seconds[i].total();
    last60 += n;
    if (i >= kSeconds - 10) last10 += n;
  }
  return Rates{.rps_1s = static_cast<double>(seconds[kSeconds - 1].total()),
               .rps_10s = static_cast<double>(last10) / 10.0,
               .rps_60s = static_cast<double>(last60) / 60.0};
}

bool RateRing::roll(Slot& slot, int64_t now_s) noexcept {
  const int64_t held = slot.second.load(std::memory_order_relaxed);
  if (held != kNever && held > now_s) return false;  // now_s is over 60 s late
  // Seqlock write: mark, clear, publish. The release fence orders the mark before the clears, so
  // a reader that saw any cleared value also sees the mark on its second check.
  slot.second.store(kClearing, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
  for (Counter& c : slot.by_class) c.reset();
  slot.second.store(now_s, std::memory_order_release);
  return true;
}

RateSeries RateRing::series(int64_t now_s) const {
  RateSeries out = RateSeries::at(now_s);
  for (SecondCounts& sc : out.seconds) {
    const Slot& slot = slots_[slot_of(sc.second)];
    if (slot.second.load(std::memory_order_acquire) != sc.second) continue;
    for (size_t c = 0; c < kStatusClasses; ++c) sc.by_class[c] = slot.by_class[c].get();
    std::atomic_thread_fence(std::memory_order_acquire);
    if (slot.second.load(std::memory_order_relaxed) != sc.second) sc.by_class = {};  // reused
  }
  return out;
}

}  // namespace sluice::stats
