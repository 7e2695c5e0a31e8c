#include "ratelimit/limiter.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <barrier>
#include <charconv>
#include <cstring>
#include <fstream>
#include <latch>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

using namespace sluice::ratelimit;
using namespace std::chrono_literals;

namespace {

constexpr int64_t kUs = 1'000;
constexpr int64_t kMs = 1'000'000;
constexpr int64_t kSec = 1'000'000'000;
constexpr int64_t kHour = 3600 * kSec;

Limit per(uint64_t rate, std::chrono::nanoseconds period, uint64_t burst) {
  Limit l;
  l.rate = rate;
  l.period = period;
  l.burst = burst;
  return l;
}

// One request of `key` every `step` ns at from, from + step, ... < to; how many were allowed.
uint64_t allowed_between(Limiter& limiter, std::string_view key, int64_t from, int64_t to,
                         int64_t step) {
  uint64_t n = 0;
  for (int64_t t = from; t < to; t += step) n += limiter.decide(key, t).allowed ? 1 : 0;
  return n;
}

// "client-<i>" in a caller's buffer, without allocating.
std::string_view client_key(char (&buf)[32], uint64_t i) {
  std::memcpy(buf, "client-", 7);
  char* end = std::to_chars(buf + 7, buf + sizeof buf, i).ptr;
  return {buf, static_cast<size_t>(end - buf)};
}

// Resident set size in bytes, or 0 where /proc is not available.
size_t rss_bytes() {
  std::ifstream statm("/proc/self/statm");
  size_t pages = 0, resident = 0;
  if (!(statm >> pages >> resident)) return 0;
  return resident * static_cast<size_t>(sysconf(_SC_PAGESIZE));
}

}  // namespace

// --- Exact counts over simulated time ---------------------------------------------------------

TEST(Gcra, TenPerSecondBurstTenAdmitsTheBurstThenOneEvery100ms) {
  Limiter l(per(10, 1s, 10), 1000);
  for (int i = 0; i < 10; ++i) EXPECT_TRUE(l.decide("k", 0).allowed) << i;
  Decision d = l.decide("k", 0);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.retry_after_ns, 100 * kMs);
  EXPECT_FALSE(l.decide("k", 100 * kMs - 1).allowed);
  EXPECT_TRUE(l.decide("k", 100 * kMs).allowed);  // exactly one more
  EXPECT_FALSE(l.decide("k", 100 * kMs).allowed);
}

TEST(Gcra, OneRequestPerMillisecondForTenSecondsAdmitsExactly109) {
  // T = 100 ms, tau = 900 ms: request n may go from n*T - tau on. n = 0..9 are due at once and
  // take the requests at 0..9 ms; n >= 10 goes when due, at 100n - 900 ms: 100, 200, ... 9900 ms.
  // So [0, 10 s) admits 10 + 99 = 109, and the request at exactly 10 s is the 110th.
  Limiter l(per(10, 1s, 10), 1000);
  EXPECT_EQ(allowed_between(l, "k", 0, 10 * kSec, kMs), 109u);
  EXPECT_TRUE(l.decide("k", 10 * kSec).allowed);
}

TEST(Gcra, BurstOneAdmitsEveryRequestSpacedExactlyOneIntervalApart) {
  Limiter l(per(10, 1s, 1), 1000);
  for (int64_t k = 0; k < 1000; ++k) {
    Decision d = l.decide("k", k * 100 * kMs);
    ASSERT_TRUE(d.allowed) << k;
    EXPECT_EQ(d.remaining, 0u);
    EXPECT_EQ(d.reset_ns, 100 * kMs);
  }
}

TEST(Gcra, BurstOneAlternatesWhenRequestsComeOneNanosecondEarly) {
  const int64_t t = 100 * kMs;
  Limiter l(per(10, 1s, 1), 1000);
  for (int64_t k = 0; k < 1000; ++k) {
    Decision d = l.decide("k", k * (t - 1));
    ASSERT_EQ(d.allowed, k % 2 == 0) << k;
    if (!d.allowed) {
      EXPECT_EQ(d.retry_after_ns, 1);  // the previous one set TAT = now + 1 ns
    }
  }
}

TEST(Gcra, SixThousandPerMinuteBurst100CountsExactly) {
  // T = 10 ms, tau = 990 ms. With one request per ms, n = 0..110 go at n ms (n = 110 is due at
  // 110 ms, just in time); later ones when due, at 10n - 990 ms; the last before 60 s is
  // n = 6098. So 6099 in the first minute, then exactly 6000 per minute.
  for (int64_t epoch :
       {int64_t{0}, -kHour, int64_t{1'700'000'000} * kSec}) {  // and wall-clock-sized
    Limiter l(per(6000, 1min, 100), 1000);
    EXPECT_EQ(allowed_between(l, "k", epoch, epoch + 60 * kSec, kMs), 6099u) << epoch;
    EXPECT_EQ(allowed_between(l, "k", epoch + 60 * kSec, epoch + 120 * kSec, kMs), 6000u) << epoch;
  }
}

TEST(Gcra, OnePerHourCountsExactly) {
  Limiter l(per(1, 1h, 1), 1000);
  EXPECT_TRUE(l.decide("k", 0).allowed);
  Decision d = l.decide("k", kSec);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.retry_after_ns, kHour - kSec);
  EXPECT_EQ(d.reset_ns, kHour - kSec);
  // One per second for ten hours: allowed at 0, 1 h, ... 9 h.
  Limiter fresh(per(1, 1h, 1), 1000);
  EXPECT_EQ(allowed_between(fresh, "k", 0, 10 * kHour, kSec), 10u);
  EXPECT_TRUE(fresh.decide("k", 10 * kHour).allowed);
}

TEST(Gcra, MillionPerSecondCountsExactly) {
  Limiter l(per(1'000'000, 1s, 1), 1000);  // T = 1 us
  EXPECT_EQ(allowed_between(l, "k", 0, kSec, kUs), 1'000'000u);
  EXPECT_EQ(allowed_between(l, "k", kSec, kSec + kMs, kUs / 2), 1000u);  // twice too fast
  // Burst 1000 (tau = 999 us), one request per 100 ns: n = 0..1110 go at 100n ns (the 1110th is
  // due at 111 us, just in time), later ones when due at n us - 999 us; the last before 1 ms
  // is n = 1998.
  Limiter burst(per(1'000'000, 1s, 1000), 1000);
  EXPECT_EQ(allowed_between(burst, "k", 0, kMs, 100), 1999u);
}

TEST(Gcra, HugeBurstIsCappedWithoutOverflow) {
  // 1/h: tau = (burst - 1) * 1 h would overflow; burst is capped at 1 + 2^61 / T.
  Limiter hourly(per(1, 1h, 1'000'000'000), 1000);
  const uint64_t cap = 1 + (uint64_t{1} << 61) / static_cast<uint64_t>(kHour);
  ASSERT_EQ(cap, 640'512u);
  Decision first = hourly.decide("k", 0);
  EXPECT_EQ(first.limit, cap);
  EXPECT_EQ(first.remaining, cap - 1);
  uint64_t allowed = 1;
  while (hourly.decide("k", 0).allowed) ++allowed;
  EXPECT_EQ(allowed, cap);
  Decision denied = hourly.decide("k", 0);
  EXPECT_EQ(denied.retry_after_ns, kHour);
  EXPECT_EQ(denied.reset_ns, static_cast<int64_t>(cap) * kHour);

  // 1e6/s with a burst of 1e9: tau = 1000 s, within range, so not capped.
  Limiter fast(per(1'000'000, 1s, 1'000'000'000), 1000);
  Decision d = fast.decide("k", 0);
  EXPECT_EQ(d.limit, 1'000'000'000u);
  EXPECT_EQ(d.remaining, 999'999'999u);
  EXPECT_EQ(d.reset_ns, kUs);
}

TEST(Gcra, RateThatDoesNotDivideThePeriodRoundsTheIntervalUp) {
  // 3/s: T = 333'333'333.3 ns, rounded up to ...334, so never more than 3 in a second.
  Limiter l(per(3, 1s, 3), 1000);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(l.decide("k", 0).allowed);
  Decision d = l.decide("k", 0);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.retry_after_ns, 333'333'334);
  EXPECT_EQ(d.reset_ns, 1'000'000'002);  // full again 2 ns after the second
  EXPECT_FALSE(l.decide("k", 333'333'333).allowed);
  EXPECT_TRUE(l.decide("k", 333'333'334).allowed);
}

TEST(Gcra, DegenerateLimitsAreClampedInsteadOfDividingByZero) {
  Limiter l(per(0, 0ns, 0), 0);  // rate 1, period 1 ns, burst 1, one key
  Decision d = l.decide("k", 0);
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.limit, 1u);
  EXPECT_EQ(d.reset_ns, 1);
  EXPECT_FALSE(l.decide("k", 0).allowed);
  EXPECT_TRUE(l.decide("k", 1).allowed);
  EXPECT_TRUE(l.decide("other", 1).allowed);
  EXPECT_EQ(l.keys(), 1u);  // max_keys 0 is 1

  Limiter faster_than_a_nanosecond(per(10'000'000'000, 1s, 1), 10);  // T = 1 ns
  EXPECT_TRUE(faster_than_a_nanosecond.decide("k", 0).allowed);
  EXPECT_EQ(faster_than_a_nanosecond.decide("k", 0).retry_after_ns, 1);
}

// --- Header values ----------------------------------------------------------------------------

TEST(Decision, RemainingResetAndLimitFollowTheBucket) {
  Limiter l(per(10, 1s, 3), 1000);  // T = 100 ms, tau = 200 ms
  struct Step {
    int64_t now_ms;
    bool allowed;
    uint64_t remaining;
    int64_t reset_ms;
    int64_t retry_after_ms;
  };
  const Step steps[] = {
      {0, true, 2, 100, 0},     // full bucket: one spent
      {0, true, 1, 200, 0},     //
      {0, true, 0, 300, 0},     //
      {0, false, 0, 300, 100},  // empty: one token in 100 ms, full in 300 ms
      {50, false, 0, 250, 50},  //
      {100, true, 0, 300, 0},   // the token that arrived is spent at once
      {250, true, 0, 250, 0},   // TAT 400 ms: 1.5 tokens, one spent, 0.5 left
      {450, true, 1, 150, 0},   // TAT 500 ms: 2.5 tokens, one spent, 1.5 left
      {1000, true, 2, 100, 0},  // long idle: full again
  };
  for (const Step& s : steps) {
    Decision d = l.decide("k", s.now_ms * kMs);
    EXPECT_EQ(d.allowed, s.allowed) << s.now_ms;
    EXPECT_EQ(d.limit, 3u) << s.now_ms;
    EXPECT_EQ(d.remaining, s.remaining) << s.now_ms;
    EXPECT_EQ(d.reset_ns, s.reset_ms * kMs) << s.now_ms;
    EXPECT_EQ(d.retry_after_ns, s.retry_after_ms * kMs) << s.now_ms;
  }
}

// --- Keys and threads -------------------------------------------------------------------------

TEST(Keys, EachKeyHasItsOwnBudget) {
  Limiter l(per(1, 1min, 2), 1000);
  EXPECT_TRUE(l.decide("alice", 0).allowed);
  EXPECT_TRUE(l.decide("alice", 0).allowed);
  EXPECT_FALSE(l.decide("alice", 0).allowed);
  EXPECT_EQ(l.decide("bob", 0).remaining, 1u);
  EXPECT_EQ(l.decide("", 0).remaining, 1u);                            // the empty key is a key
  EXPECT_EQ(l.decide(std::string_view("bob\0", 4), 0).remaining, 1u);  // so is a trailing NUL
  EXPECT_EQ(l.decide("bob", 0).remaining, 0u);
  EXPECT_EQ(l.keys(), 4u);
}

TEST(Threads, FourThreadsOnOneKeyAtOneInstantAdmitExactlyTheBurst) {
  Limiter l(per(10, 1s, 1000), 1000);
  std::atomic<uint64_t> allowed{0};
  std::latch start(4);
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&] {
      start.arrive_and_wait();
      uint64_t mine = 0;
      for (int j = 0; j < 1000; ++j) mine += l.decide("hot", 0).allowed ? 1 : 0;
      allowed += mine;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(allowed.load(), 1000u);
}

TEST(Threads, FourThreadsSteppingSimulatedTimeAdmitTheExactCount) {
  // 10/s burst 10, 20 requests per ms step for 1 s: 10 at t = 0, then one at each due time
  // 100n - 900 ms for n = 10..18 (the steps are all there), so 19 in [0, 1 s).
  Limiter l(per(10, 1s, 10), 1000);
  std::atomic<uint64_t> allowed{0};
  std::barrier step(4);
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&] {
      uint64_t mine = 0;
      for (int64_t ms = 0; ms < 1000; ++ms) {
        for (int j = 0; j < 5; ++j) mine += l.decide("hot", ms * kMs).allowed ? 1 : 0;
        step.arrive_and_wait();  // nobody reads the clock backwards
      }
      allowed += mine;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(allowed.load(), 19u);
}

TEST(Threads, FourThreadsOnManyKeysAdmitExactlyTheBurstOfEach) {
  Limiter l(per(1, 1min, 5), 100'000);
  std::atomic<uint64_t> allowed{0};
  std::latch start(4);
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      start.arrive_and_wait();
      char buf[32];
      uint64_t mine = 0;
      for (int round = 0; round < 3; ++round) {
        for (uint64_t k = 0; k < 1000; ++k) {
          mine += l.decide(client_key(buf, (k + 250 * i) % 1000), 0).allowed ? 1 : 0;
        }
      }
      allowed += mine;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(allowed.load(), 5u * 1000);  // 12 requests per key, 5 admitted
  EXPECT_EQ(l.keys(), 1000u);
}

// --- Memory bound, expiry, eviction, reload --------------------------------------------------

TEST(Memory, AMillionDistinctKeysStayWithinTheBound) {
  const size_t rss_before = rss_bytes();
  Limiter l(per(1, 1s, 1), 10'000);
  EXPECT_EQ(l.memory_bytes(), 0u);  // nothing until keys arrive
  char buf[32];
  uint64_t allowed = 0;
  // One new key per microsecond: every entry stays live (TAT = now + 1 s) for the whole flood.
  for (uint64_t i = 0; i < 1'000'000; ++i) {
    allowed += l.decide(client_key(buf, i), static_cast<int64_t>(i) * kUs).allowed ? 1 : 0;
  }
  const size_t rss_after = rss_bytes();
  const size_t rss_growth = rss_after > rss_before ? rss_after - rss_before : 0;
  const int64_t end = 1'000'000 * kUs;

  EXPECT_EQ(allowed, 1'000'000u);  // a new key always has a full bucket
  EXPECT_LE(l.keys(), 10'000u);
  EXPECT_GE(l.keys(), 10'000u - 10'000u / 16);      // a cleanup frees at most 1/16 of a shard
  EXPECT_EQ(l.evictions(), 1'000'000u - l.keys());  // nothing expired: every drop was an eviction
  EXPECT_LE(l.memory_bytes(), 10'000 * Limiter::kBytesPerKey);
  EXPECT_LT(rss_growth, size_t{16} << 20) << rss_growth;  // an unbounded table: ~75 MB
  // The latest keys kept their state; the oldest were evicted and come back full.
  EXPECT_FALSE(l.decide(client_key(buf, 999'999), end).allowed);
  EXPECT_TRUE(l.decide(client_key(buf, 0), end).allowed);

  const size_t stored = l.keys();
  EXPECT_EQ(l.sweep(end + 2 * kSec), stored);  // all expired by then
  EXPECT_EQ(l.keys(), 0u);
}

TEST(Memory, ALimiterReservesMemoryOnlyAsKeysArrive) {
  Limiter l(per(1, 1s, 1), 1'000'000);
  EXPECT_EQ(l.memory_bytes(), 0u);
  l.decide("k", 0);
  EXPECT_LE(l.memory_bytes(), 16 * 16u);  // one shard's first table
}

TEST(Expiry, AFullShardDropsExpiredEntriesBeforeEvictingAny) {
  Limiter l(per(10, 1s, 10), 100);  // one shard of 100; TAT = now + 100 ms after one request
  char buf[32];
  for (uint64_t i = 0; i < 100; ++i) l.decide(client_key(buf, i), 0);
  EXPECT_EQ(l.keys(), 100u);
  EXPECT_TRUE(l.decide("late", 100 * kMs).allowed);  // all 100 have expired (TAT <= now)
  EXPECT_EQ(l.keys(), 1u);
  EXPECT_EQ(l.evictions(), 0u);
}

TEST(Expiry, SweepDropsOnlyExpiredEntriesAndKeepsTheOthersState) {
  Limiter l(per(10, 1s, 10), 1000);
  l.decide("a", 0);                              // TAT 100 ms
  for (int i = 0; i < 3; ++i) l.decide("b", 0);  // TAT 300 ms
  EXPECT_EQ(l.sweep(99 * kMs), 0u);
  EXPECT_EQ(l.sweep(100 * kMs), 1u);
  EXPECT_EQ(l.keys(), 1u);
  // b: TAT 300 ms at 100 ms is 2 used; this one makes 3, 7 left.
  EXPECT_EQ(l.decide("b", 100 * kMs).remaining, 7u);
  EXPECT_EQ(l.sweep(kSec), 1u);
  EXPECT_EQ(l.keys(), 0u);
}

TEST(Eviction, WhenFullTheEntryClosestToFullIsEvicted) {
  Limiter l(per(1, 1s, 10), 4);  // one shard of 4, T = 1 s, tau = 9 s
  const std::pair<const char*, int> used[] = {{"a", 1}, {"b", 3}, {"c", 5}, {"d", 7}};
  for (auto [key, n] : used) {
    for (int i = 0; i < n; ++i) ASSERT_TRUE(l.decide(key, 0).allowed);
  }
  EXPECT_TRUE(l.decide("e", 0).allowed);  // full, nothing expired: `a` (TAT 1 s) goes
  EXPECT_EQ(l.keys(), 4u);
  EXPECT_EQ(l.evictions(), 1u);
  EXPECT_EQ(l.decide("b", 0).remaining, 6u);  // kept: 3 used + this one
  EXPECT_EQ(l.decide("d", 0).remaining, 2u);
  EXPECT_EQ(l.decide("a", 0).remaining, 9u);  // forgotten: over-admitted by the 1 it had used
}

// The limiter against a plain model of the same policy, under random traffic, with deletions in
// every cleanup (so the in-place rehash must keep every other key findable). One shard (max_keys
// < 128); burst 1 and distinct request times make every TAT distinct, so the model evicts exactly
// the entries the limiter does.
TEST(Eviction, MatchesAReferenceModelUnderRandomTraffic) {
  for (size_t max_keys : {1, 4, 37, 100, 127}) {
    Limiter l(per(1, 1s, 1), max_keys);  // T = 1 s, tau = 0
    const size_t keep_max = max_keys - std::max<size_t>(1, max_keys / 16);
    std::map<std::string, int64_t> model;  // key -> TAT
    std::mt19937_64 rng(max_keys);
    int64_t now = 0;
    for (int i = 0; i < 100'000; ++i) {
      now += 1 + static_cast<int64_t>(rng() % (20 * kMs));  // ~100 requests per T
      const std::string key = "k" + std::to_string(rng() % 400);
      const Decision d = l.decide(key, now);

      auto it = model.find(key);
      const int64_t tat = it != model.end() ? std::max(it->second, now) : now;
      const bool allowed = tat <= now;
      ASSERT_EQ(d.allowed, allowed) << max_keys << " " << i;
      ASSERT_EQ(d.retry_after_ns, allowed ? 0 : tat - now) << max_keys << " " << i;
      if (allowed && it != model.end()) {
        it->second = now + kSec;
      } else if (allowed) {
        if (model.size() >= max_keys) {  // full: expired entries first, then the smallest TATs
          std::erase_if(model, [now](const auto& kv) { return kv.second <= now; });
          while (model.size() > keep_max) {
            model.erase(std::min_element(model.begin(), model.end(),
                                         [](auto& a, auto& b) { return a.second < b.second; }));
          }
        }
        model[key] = now + kSec;
      }
      ASSERT_EQ(l.keys(), model.size()) << max_keys << " " << i;
      if (i % 1000 == 999) {
        const size_t swept =
            std::erase_if(model, [now](const auto& kv) { return kv.second <= now; });
        ASSERT_EQ(l.sweep(now), swept);
      }
    }
  }
}

TEST(Reload, SetLimitKeepsEachKeysState) {
  Limiter l(per(10, 1s, 10), 1000);
  for (int i = 0; i < 10; ++i) l.decide("k", 0);  // TAT 1 s: 10 used
  EXPECT_FALSE(l.decide("k", 0).allowed);

  l.set_limit(per(10, 1s, 20));
  EXPECT_EQ(l.limit().burst, 20u);
  Decision d = l.decide("k", 0);
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.limit, 20u);
  EXPECT_EQ(d.remaining, 9u);  // the 10 it had used still count
  EXPECT_EQ(l.decide("new", 0).remaining, 19u);

  l.set_limit(per(1, 1s, 1));
  d = l.decide("k", 0);  // TAT 1.1 s under T = 1 s, tau = 0
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.retry_after_ns, 1100 * kMs);
  EXPECT_EQ(l.keys(), 2u);
}

TEST(LimiterTest, RaiseMakesABucketAtLeastAsFullAsTheGlobalState) {
  using namespace std::chrono_literals;
  Limiter l(Limit{10, std::chrono::seconds(1), 10}, 1000);
  const int64_t t0 = 1'000'000'000;
  EXPECT_TRUE(l.decide("k", t0).allowed);  // TAT = t0 + 100ms
  // Another instance used 8 more: the global TAT is t0 + 900ms.
  l.raise("k", t0 + 900'000'000, t0);
  EXPECT_TRUE(l.decide("k", t0).allowed);   // the 10th
  EXPECT_FALSE(l.decide("k", t0).allowed);  // the 11th
  // Raising to an earlier TAT changes nothing.
  l.raise("k", t0, t0);
  EXPECT_FALSE(l.decide("k", t0).allowed);
  // A key never seen locally gets the global state.
  l.raise("new", t0 + 1'000'000'000, t0);
  EXPECT_FALSE(l.decide("new", t0).allowed);
  // A TAT in the past stores nothing.
  size_t before = l.keys();
  l.raise("old", t0 - 1, t0);
  EXPECT_EQ(l.keys(), before);
}
