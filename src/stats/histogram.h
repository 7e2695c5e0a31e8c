// A fixed-bucket latency histogram in the shape Prometheus expects, and percentile estimates.
//
//   Histogram h;                                     // one writer thread (a worker's block)
//   h.record(std::chrono::steady_clock::now() - start);
//
//   HistogramCounts c = h.read();                    // any thread; sum several with add()
//   c.quantile(0.99);                                // seconds, e.g. 0.0412
//   c.cumulative()[i]                                // le=kBucketLabels[i] in the exposition
//
// Buckets (upper bounds, inclusive as Prometheus' `le`): 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250,
// 500 ms, 1, 2.5, 5, 10 s, +Inf. A duration is kept in integer nanoseconds: bucket i holds the
// durations d with bound[i-1] < d <= bound[i] (bound[-1] = 0, negative durations count as 0), and
// the sum is an exact integer (it wraps after 584 years of summed latency).
//
// Percentiles: quantile(q) finds the bucket holding the rank q * count and interpolates linearly
// between the bucket's bounds, as Prometheus' histogram_quantile() does. Error bound: the true
// q-quantile (the ceil(q * count)-th smallest duration) lies in that same bucket, so the estimate
// is off by at most the bucket's width (bound[i] - bound[i-1]: e.g. 15 ms between 10 and 25 ms;
// above 0.5 ms at most 60% of the bucket's upper bound), and by much less when durations spread
// evenly inside the bucket. In the +Inf bucket the estimate is 10 s, a lower bound only.
#pragma once

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "stats/counter.h"

namespace sluice::stats {

inline constexpr size_t kFiniteBuckets = 14;
inline constexpr size_t kBuckets = kFiniteBuckets + 1;  // ... and +Inf

inline constexpr std::array<int64_t, kFiniteBuckets> kBucketBoundsNs = {
    500'000,       1'000'000,     2'500'000,     5'000'000,     10'000'000,
    25'000'000,    50'000'000,    100'000'000,   250'000'000,   500'000'000,
    1'000'000'000, 2'500'000'000, 5'000'000'000, 10'000'000'000};

// The `le` label of each bucket, as written in the exposition.
inline constexpr std::array<std::string_view, kBuckets> kBucketLabels = {
    "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
    "0.25",   "0.5",   "1",      "2.5",   "5",    "10",    "+Inf"};

// The bucket of a duration in ns: the first bound >= ns, or kFiniteBuckets (+Inf) beyond 10 s.
// A binary search over 14 integers: four compares.
constexpr size_t bucket_index(int64_t ns) {
  return static_cast<size_t>(std::lower_bound(kBucketBoundsNs.begin(), kBucketBoundsNs.end(), ns) -
                             kBucketBoundsNs.begin());
}

// Plain counts: a reading of a Histogram, or a sum of several.
struct HistogramCounts {
  std::array<uint64_t, kBuckets> buckets{};  // per bucket, not cumulative
  uint64_t sum_ns = 0;

  void record(std::chrono::nanoseconds d);  // for single-threaded use (tests, aggregation)
  void add(const HistogramCounts& other);
  uint64_t count() const;
  double sum_seconds() const;
  // Entry i counts the durations <= bound i (the exposition's `_bucket{le=...}`); the last entry
  // is count().
  std::array<uint64_t, kBuckets> cumulative() const;
  // The q-quantile in seconds (q clamped to [0, 1]), within the error bound above; 0 when empty.
  double quantile(double q) const;
};

// One writer thread records; any thread reads. 128 bytes, two cache lines of its own.
class alignas(64) Histogram {
 public:
  // Writer thread only.
  void record(std::chrono::nanoseconds d) noexcept {
    const int64_t ns = std::max<int64_t>(d.count(), 0);
    buckets_[bucket_index(ns)].add(1);
    sum_ns_.add(static_cast<uint64_t>(ns));
  }
  // Any thread. Buckets and sum are read one by one while the writer may go on, so a reading
  // taken during a record() may hold its bucket but not yet its sum; count() always agrees with
  // the buckets.
  HistogramCounts read() const;

 private:
  std::array<Counter, kBuckets> buckets_;
  Counter sum_ns_;
};

}  // namespace sluice::stats
