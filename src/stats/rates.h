// Requests per second over the last 1, 10 and 60 seconds, and the status classes of each of the
// last 60 seconds (the dashboard's "status codes over time").
//
//   auto ring = registry.add_rate_ring();       // one per worker (metrics.h), or standalone
//   ring->record(now_s, status);                 // worker thread, once per exchange
//
//   RateSeries s = ring->series(now_s);          // any thread; sum workers with s.add(other)
//   Rates r = s.rates();                         // {rps_1s, rps_10s, rps_60s}
//
// Time is whole seconds of one clock shared by writers and readers (steady_clock in practice);
// `now_s` must be above INT64_MIN + 64. Second S covers [S, S + 1). The windows are made of
// *complete* seconds only, never the one in progress: at now_s = S, rps_1s is the count of second
// S - 1, rps_10s the count of seconds S - 10 .. S - 1 divided by 10, rps_60s that of S - 60 ..
// S - 1 divided by 60. So a reading lags by up to one second and never shows a partial second as a
// drop in traffic.
//
// Storage: a ring of 61 one-cache-line slots (3904 bytes): the 60 complete seconds plus the one
// being written. A slot is reused 61 seconds later; the writer marks it while clearing it and the
// reader checks the mark before and after reading (a seqlock), so a reader never mixes two seconds.
// Records for a second whose slot already holds a newer second (more than 60 s late) are dropped.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>

#include "stats/counter.h"
#include "stats/labels.h"

namespace sluice::stats {

struct Rates {
  double rps_1s = 0;
  double rps_10s = 0;
  double rps_60s = 0;
};

struct SecondCounts {
  int64_t second = 0;
  std::array<uint64_t, kStatusClasses> by_class{};  // index: status_index(), labels kStatusLabels
  uint64_t total() const;
};

// The 60 complete seconds before `now_s`, oldest first: seconds[i].second == now_s - 60 + i.
struct RateSeries {
  static constexpr size_t kSeconds = 60;
  std::array<SecondCounts, kSeconds> seconds{};

  // The seconds before `now_s`, every count 0.
  static RateSeries at(int64_t now_s);

  // Adds another series of the same now_s (another worker's), second by second.
  void add(const RateSeries& other);
  Rates rates() const;
};

class RateRing {
 public:
  static constexpr size_t kSlots = RateSeries::kSeconds + 1;

  // Writer thread only. Counts one exchange that ended in second `now_s` with `status` (0 or
  // anything outside 100..599: class "none"). Cost: one compare, one counter add; a slot clear
  // (7 stores) at the first record of each second.
  void record(int64_t now_s, int status = 0) noexcept {
    Slot& s = slots_[slot_of(now_s)];
    if (s.second.load(std::memory_order_relaxed) != now_s && !roll(s, now_s)) return;
    s.by_class[status_index(status)].add(1);
  }

  // Any thread.
  RateSeries series(int64_t now_s) const;
  Rates rates(int64_t now_s) const { return series(now_s).rates(); }

 private:
  static constexpr int64_t kNever = INT64_MIN;  // a slot never written
  static constexpr int64_t kClearing = INT64_MIN + 1;

  struct alignas(64) Slot {
    std::atomic<int64_t> second{kNever};
    std::array<Counter, kStatusClasses> by_class;
  };

  static size_t slot_of(int64_t s) {
    const int64_t m = s % static_cast<int64_t>(kSlots);
    return static_cast<size_t>(m < 0 ? m + static_cast<int64_t>(kSlots) : m);
  }
  // Makes `slot` the empty slot of second `now_s`; false (and no change) when it holds a newer
  // second.
  static bool roll(Slot& slot, int64_t now_s) noexcept;

  std::array<Slot, kSlots> slots_;
};

}  // namespace sluice::stats
