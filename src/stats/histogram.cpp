#include "stats/histogram.h"

namespace sluice::stats {

void HistogramCounts::record(std::chrono::nanoseconds d) {
  const int64_t ns = std::max<int64_t>(d.count(), 0);
  ++buckets[bucket_index(ns)];
  sum_ns += static_cast<uint64_t>(ns);
}

void HistogramCounts::add(const HistogramCounts& other) {
  for (size_t i = 0; i < kBuckets; ++i) buckets[i] += other.buckets[i];
  sum_ns += other.sum_ns;
}

uint64_t HistogramCounts::count() const {
  uint64_t n = 0;
  for (uint64_t b : buckets) n += b;
  return n;
}

double HistogramCounts::sum_seconds() const { return static_cast<double>(sum_ns) / 1e9; }

std::array<uint64_t, kBuckets> HistogramCounts::cumulative() const {
  std::array<uint64_t, kBuckets> out{};
  uint64_t running = 0;
  for (size_t i = 0; i < kBuckets; ++i) out[i] = running += buckets[i];
  return out;
}

double HistogramCounts::quantile(double q) const {
  const uint64_t n = count();
  if (n == 0) return 0;
  q = q > 0 ? std::min(q, 1.0) : 0.0;  // NaN too becomes 0
  const double rank = q * static_cast<double>(n);
  uint64_t below = 0;  // durations in the buckets before i
  for (size_t i = 0; i < kBuckets; ++i) {
    // The first non-empty bucket whose cumulative count reaches the rank (for q = 0: the
    // first non-empty bucket, whose lower bound is then the answer).
    if (buckets[i] == 0 || static_cast<double>(below + buckets[i]) < rank) {
      below += buckets[i];
      continue;
    }
    if (i == kFiniteBuckets) break;  // +Inf: report the last finite bound
    const double lo = i == 0 ? 0.0 : static_cast<double>(kBucketBoundsNs[i - 1]);
    const double hi = static_cast<double>(kBucketBoundsNs[i]);
    const double within =
        std::max(rank - static_cast<double>(below), 0.0) / static_cast<double>(buckets[i]);
    return (lo + (hi - lo) * within) / 1e9;
  }
  return static_cast<double>(kBucketBoundsNs.back()) / 1e9;
}

HistogramCounts Histogram::read() const {
  HistogramCounts c;
  for (size_t i = 0; i < kBuckets; ++i) c.buckets[i] = buckets_[i].get();
  c.sum_ns = sum_ns_.get();
  return c;
}

}  // namespace sluice::stats
