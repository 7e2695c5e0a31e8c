// One rate limit's budget for every key (client IP, consumer, header value ...) of the process.
//
//   // Once per limit, kept across reloads (set_limit() applies a new rate/burst):
//   auto limiter = std::make_shared<ratelimit::Limiter>(
//       ratelimit::Limit{.rate = 100, .period = std::chrono::minutes(1), .burst = 20}, 1'000'000);
//
//   // Per request, on any worker thread, with the worker's clock reading in ns:
//   ratelimit::Decision d = limiter->decide(client_ip, now_ns);
//   if (!d.allowed) ...  // 429, Retry-After: d.retry_after_ns rounded up to seconds
//   // RateLimit-Limit: d.limit, RateLimit-Remaining: d.remaining, RateLimit-Reset: d.reset_ns
//
// Algorithm: GCRA (the generic cell rate algorithm of ATM networks, as in redis-cell/throttled).
// Each key has one integer, its TAT ("theoretical arrival time"): the instant at which its bucket
// is full again if no more requests come. With the emission interval T = period / rate and the
// tolerance tau = (burst - 1) * T, a request at `now` is
//
//   tat = max(TAT, now);  allowed iff tat - now <= tau;  if allowed, TAT = tat + T.
//
// This is exactly a token bucket of capacity `burst` refilled with one token every T: such a
// bucket holds burst - (tat - now) / T tokens, and "take one if at least one is there" is
// (tat - now) / T <= burst - 1, i.e. tat - now <= tau. But GCRA keeps one int64 per key instead of
// (tokens, last refill), needs no refill timer and no fractional tokens: the refill is implicit in
// `now`. An entry with TAT <= now is a full bucket, the same as no entry at all, so idle keys
// expire by themselves and an entry may be dropped whenever that is convenient.
//
// Arithmetic is in integer nanoseconds. T is period / rate rounded *up*, so the limiter never
// admits more than configured; it is exact when the rate divides the period (10/s, 6000/min, 1/h,
// 1000000/s ...); otherwise the sustained rate is below the configured one by less than one
// nanosecond per T (3/s admits one request per 333'333'334 ns). T and tau are capped at 2^61 ns
// (73 years): a longer period is clamped, and burst is capped at 1 + 2^61 / T (640'512 for 1/h),
// beyond which a bucket would never visibly refill. `now_ns` may be any clock within +-2^62 ns of
// its epoch (steady_clock, or system_clock until the year 2116); all sums saturate, so even
// out-of-range clock values cost accuracy, never undefined behaviour.
//
// State: keys are hashed to 64 bits (seeded per limiter at random, so a client cannot pick a key
// offline that shares another client's budget); two live keys whose hashes collide share one
// budget, with probability about n^2 / 2^65 for n live keys (3e-8 for a million). The entries
// live in up to 64 shards chosen by the hash, each an open-addressing table (linear probing) of
// 16-byte {hash, TAT} slots behind its own std::mutex, held for one probe and a few integer
// operations, or for a cleanup (below). Each shard holds at most its share of `max_keys` (the
// shares add up to max_keys).
//
// When a new key finds its shard full, the shard first drops every expired entry (TAT <= now);
// if that frees less than 1/16 of the shard, it evicts the live entries with the smallest TAT
// (the buckets closest to full) until 1/16 is free. An evicted key comes back with a full
// bucket, so it may be over-admitted by at most the budget it had used when evicted
// ((TAT - now) / T requests, rounded up); evictions() counts them for a metric. Freeing a batch
// keeps a flood of new keys at O(1) amortised work per request (~0.5 us per new key at -O2)
// instead of a full scan each, but a cleanup holds its shard's lock for one pass over the shard:
// ~30 us at max_keys = 100'000, ~0.4 ms at 1'000'000. Cleanups are rare unless more keys are
// live than max_keys: one that finds idle keys drops all of them at once.
//
// Thread safety: every member may be called from any number of threads at once. decide() is
// exact across threads: one key's decisions are serialised by its shard's mutex, so concurrent
// requests never share out or overspend one budget.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string_view>

namespace sluice::ratelimit {

struct Limit {
  uint64_t rate = 1;  // requests per `period`; 0 is treated as 1
  std::chrono::nanoseconds period{std::chrono::seconds(1)};  // 1s, 1min or 1h in practice
  uint64_t burst = 1;  // how many may come at once (bucket capacity); 0 is treated as 1
};

struct Decision {
  bool allowed = false;
  uint64_t limit = 0;      // RateLimit-Limit: the capacity (burst, after the cap above)
  uint64_t remaining = 0;  // RateLimit-Remaining: requests still allowed right now after this one
  int64_t reset_ns = 0;    // RateLimit-Reset: time until the bucket is full again (0 if it is)
  int64_t retry_after_ns = 0;  // denied: time until one request would be allowed (> 0); else 0
};

class Limiter {
 public:
  // `max_keys` bounds the entries kept (a value of 0 is treated as 1); the tables grow on demand
  // up to max_keys * kBytesPerKey bytes (plus 16 bytes when max_keys < 4). Fixed cost: 128 bytes
  // per shard with glibc (8 KB with 64 shards, from max_keys = 4096 on).
  Limiter(Limit limit, size_t max_keys);
  ~Limiter();
  Limiter(const Limiter&) = delete;
  Limiter& operator=(const Limiter&) = delete;

  // Charges one request of `key` at `now_ns` if its budget allows it. An empty key is a key.
  Decision decide(std::string_view key, int64_t now_ns);

  // What decide() would answer at `now_ns`, without charging anything (the admin's explain).
  Decision peek(std::string_view key, int64_t now_ns) const;

  // Makes `key`'s bucket at least as full as a TAT learned elsewhere (the global state of a
  // `sync: <interval>` limit): TAT = max(TAT, tat_ns). `now_ns` as for decide().
  void raise(std::string_view key, int64_t tat_ns, int64_t now_ns);

  // A reload's new rate/burst/period. Every key keeps its TAT (the instant its bucket is full
  // again), so what it spent still counts and is re-read under the new limit. Decisions running
  // at the same time see the old or the new limit.
  void set_limit(Limit limit);
  Limit limit() const;  // as last given (before clamping)

  // Entries stored, including expired ones not dropped yet (they are dropped when their shard is
  // full, or by sweep()).
  size_t keys() const;
  // Drops every expired entry (TAT <= now_ns) now; returns how many. Optional: e.g. from a timer
  // to keep keys() meaningful as a metric; correctness never depends on it.
  size_t sweep(int64_t now_ns);
  // Live (not yet expired) entries evicted because their shard was full: each may have been
  // over-admitted once its key returned.
  uint64_t evictions() const;
  // Bytes currently reserved by the tables (grows on demand, never beyond the bound above).
  size_t memory_bytes() const;

  // One {hash, TAT} slot of 16 bytes at the tables' maximum load factor of 4/5. (Besides, each
  // thread that has cleaned a full shard keeps a scratch heap of 1/16 of a shard's TATs: half a
  // byte per key of the largest such shard, shared by all limiters.)
  static constexpr size_t kBytesPerKey = 20;

 private:
  struct Shard;

  uint64_t hash(std::string_view key) const;

  const uint64_t seed_;
  size_t shard_mask_ = 0;
  std::unique_ptr<Shard[]> shards_;
  mutable std::mutex limit_mu_;  // guards limit_ only; each shard has its own compiled copy
  Limit limit_;
};

}  // namespace sluice::ratelimit
