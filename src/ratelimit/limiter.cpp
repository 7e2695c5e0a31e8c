#include "ratelimit/limiter.h"

#include "core/hash.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

namespace sluice::ratelimit {
namespace {

// Longest interval and tolerance: 73 years. Their sum stays below 2^62, so tat - now never
// overflows for clocks within +-2^62 of their epoch.
constexpr int64_t kMaxSpan = int64_t{1} << 61;
constexpr size_t kMaxShards = 64;
constexpr size_t kMinKeysPerShard = 64;  // fewer shards for small bounds, never tiny shards
constexpr size_t kFirstCapacity = 16;
// A cleanup of a full shard frees at least 1/16 of it: a flood of new keys then costs O(16)
// slot visits per key (~0.3-0.5 us at -O2), where freeing one entry would cost a full scan each.
constexpr size_t kCleanupFraction = 16;

int64_t add_saturated(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_add_overflow(a, b, &r)) {
    return b > 0 ? std::numeric_limits<int64_t>::max() : std::numeric_limits<int64_t>::min();
  }
  return r;
}

int64_t sub_saturated(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_sub_overflow(a, b, &r)) {
    return b < 0 ? std::numeric_limits<int64_t>::max() : std::numeric_limits<int64_t>::min();
  }
  return r;
}

// A limit in the form decide() uses, clamped as the header describes.
struct Rule {
  int64_t interval = 1;   // T, ns
  int64_t tolerance = 0;  // tau = (burst - 1) * T, ns
  uint64_t burst = 1;
};

Rule compile(const Limit& limit) {
  const uint64_t rate = std::max<uint64_t>(limit.rate, 1);
  const auto period = static_cast<uint64_t>(std::clamp<int64_t>(limit.period.count(), 1, kMaxSpan));
  Rule r;
  // Rounded up: never more than `rate` per `period`. At least 1 ns.
  r.interval = static_cast<int64_t>(period / rate + (period % rate != 0 ? 1 : 0));
  const uint64_t max_burst = 1 + static_cast<uint64_t>(kMaxSpan / r.interval);
  r.burst = std::clamp<uint64_t>(limit.burst, 1, max_burst);
  r.tolerance = static_cast<int64_t>(r.burst - 1) * r.interval;  // <= kMaxSpan by the cap
  return r;
}

struct Slot {
  uint64_t hash = 0;  // 0 = empty (hash() never returns 0)
  int64_t tat = 0;
};
static_assert(sizeof(Slot) * 5 / 4 == Limiter::kBytesPerKey);

}  // namespace

// An open-addressing table with linear probing; every member is guarded by `mu` except
// `max_size`, `max_capacity` and `batch`, which are fixed at construction.
struct alignas(64) Limiter::Shard {
  mutable std::mutex mu;
  Rule rule;
  std::vector<Slot> slots;  // size() is the capacity: 0, then 16, 32 ... up to max_capacity
  size_t size = 0;
  uint64_t evictions = 0;
  size_t max_size = 1;
  size_t max_capacity = 2;
  size_t batch = 1;  // a cleanup of a full shard leaves at least this many entries free

  void configure(size_t share) {
    max_size = share;
    // Load factor <= 4/5 when full, and always one empty slot so that probes terminate.
    max_capacity = std::max(share + 1, share * 5 / 4);
    batch = std::max<size_t>(1, share / kCleanupFraction);
  }

  size_t home(uint64_t hash) const {  // the hash's high bits (the shard used its low bits)
    return static_cast<size_t>((static_cast<unsigned __int128>(hash) * slots.size()) >> 64);
  }

  Slot* find(uint64_t hash) {
    if (slots.empty()) return nullptr;
    for (size_t i = home(hash);; i = i + 1 == slots.size() ? 0 : i + 1) {
      if (slots[i].hash == hash) return &slots[i];
      if (slots[i].hash == 0) return nullptr;
    }
  }

  void place(Slot s) {  // s.hash is not in the table and there is an empty slot
    size_t i = home(s.hash);
    while (slots[i].hash != 0) i = i + 1 == slots.size() ? 0 : i + 1;
    slots[i] = s;
    ++size;
  }

  void insert(uint64_t hash, int64_t tat, int64_t now) {
    if (size >= max_size) compact(now, max_size - std::min(max_size, batch));
    if ((size + 1) * 5 > slots.size() * 4 && slots.size() < max_capacity) {
      grow(std::min(std::max(kFirstCapacity, slots.size() * 2), max_capacity));
    }
    place({hash, tat});
  }

  void grow(size_t capacity) {
    std::vector<Slot> old(capacity);  // exactly `capacity`: the memory bound counts it
    old.swap(slots);
    size = 0;
    for (const Slot& s : old) {
      if (s.hash != 0) place(s);
    }
  }

  size_t next(size_t i) const { return i + 1 == slots.size() ? 0 : i + 1; }

  // Drops every expired entry, then the entries with the smallest TAT until at most `keep_max`
  // remain; returns how many were dropped. In place, in two passes over the slots.
  size_t compact(int64_t now, size_t keep_max) {
    if (size == 0) return 0;
    // Pass 1: count the expired entries, find an empty slot, and collect the `must` smallest TATs
    // in a max-heap (the calling thread's, reused: at most `batch` values).
    const size_t must = size > keep_max ? size - keep_max : 0;
    thread_local std::vector<int64_t> heap;
    heap.clear();
    size_t expired = 0;
    size_t empty = 0;
    // What enters the heap: anything until it holds `must` values, then what is below its top.
    int64_t admit_below =
        must > 0 ? std::numeric_limits<int64_t>::max() : std::numeric_limits<int64_t>::min();
    for (size_t i = 0; i < slots.size(); ++i) {  // branch-light: this loop is most of a cleanup
      const Slot& s = slots[i];
      const bool used = s.hash != 0;
      empty = used ? empty : i;
      expired += static_cast<size_t>(used & (s.tat <= now));
      if (used & (s.tat < admit_below)) [[unlikely]] {
        if (heap.size() == must) {  // replace the largest
          std::pop_heap(heap.begin(), heap.end());
          heap.back() = s.tat;
        } else {
          heap.push_back(s.tat);
        }
        std::push_heap(heap.begin(), heap.end());
        if (heap.size() == must) admit_below = heap.front();
      }
    }
    // Expired entries have the smallest TATs: when fewer than `must`, the live ones below
    // `threshold` go too, and `ties` of those equal to it.
    int64_t threshold = std::numeric_limits<int64_t>::min();
    size_t ties = 0;
    if (expired < must) {
      threshold = heap.front();
      ties = static_cast<size_t>(std::count(heap.begin(), heap.end(), threshold));
      evictions += must - expired;
    }
    // Pass 2, in probe order from the empty slot: drop the chosen entries, and move every entry
    // that follows a hole in its cluster to the first free slot from its home. That slot is at
    // or before the entry's own, so nothing is visited twice; this is linear probing's in-place
    // rehash, and it needs no copy of the table.
    size_t dropped = 0;
    bool hole = false;  // a slot was freed since the last empty slot of the old layout
    for (size_t n = 0, i = empty; n < slots.size(); ++n) {
      i = next(i);
      const Slot s = slots[i];
      if (s.hash == 0) {
        hole = false;
        continue;
      }
      bool drop = s.tat <= now || s.tat < threshold;
      if (!drop && s.tat == threshold && ties > 0) {
        --ties;
        drop = true;
      }
      if (!drop && !hole) continue;
      slots[i] = Slot{};
      --size;
      if (drop) {
        ++dropped;
        hole = true;
      } else {
        place(s);
      }
    }
    return dropped;
  }
};

Limiter::Limiter(Limit limit, size_t max_keys) : seed_(random_seed()), limit_(limit) {
  max_keys = std::max<size_t>(max_keys, 1);
  size_t shards = kMaxShards;
  while (shards > 1 && max_keys / shards < kMinKeysPerShard) shards /= 2;
  shard_mask_ = shards - 1;
  shards_ = std::make_unique<Shard[]>(shards);
  const Rule rule = compile(limit);
  for (size_t i = 0; i < shards; ++i) {
    shards_[i].rule = rule;
    shards_[i].configure(max_keys / shards + (i < max_keys % shards ? 1 : 0));
  }
}

Limiter::~Limiter() = default;

// Eight bytes at a time through the splitmix64 finaliser, from a secret start state that also
// folds in the length (so keys differing only by trailing zero bytes differ). Byte order is the
// machine's: hashes never leave the process.
uint64_t Limiter::hash(std::string_view key) const { return seeded_hash(seed_, key); }

Decision Limiter::decide(std::string_view key, int64_t now_ns) {
  const uint64_t h = hash(key);
  Shard& shard = shards_[h & shard_mask_];
  std::lock_guard lock(shard.mu);
  const Rule& rule = shard.rule;
  Slot* slot = shard.find(h);
  const int64_t tat = slot != nullptr ? std::max(slot->tat, now_ns) : now_ns;
  const int64_t wait = sub_saturated(tat, now_ns);  // >= 0: what this key has used, in time

  Decision d;
  d.limit = rule.burst;
  if (wait > rule.tolerance) {  // a new key never gets here: wait is 0
    d.reset_ns = wait;
    d.retry_after_ns = wait - rule.tolerance;
    return d;
  }
  const int64_t next = add_saturated(tat, rule.interval);
  if (slot != nullptr) {
    slot->tat = next;
  } else {
    shard.insert(h, next, now_ns);
  }
  d.allowed = true;
  d.reset_ns = sub_saturated(next, now_ns);
  // Whole tokens left: burst - reset / T. reset <= tau + T unless `next` saturated.
  const int64_t left =
      rule.tolerance + rule.interval - std::min(d.reset_ns, rule.tolerance + rule.interval);
  d.remaining = std::min(static_cast<uint64_t>(left / rule.interval), rule.burst - 1);
  return d;
}

Decision Limiter::peek(std::string_view key, int64_t now_ns) const {
  const uint64_t h = hash(key);
  Shard& shard = shards_[h & shard_mask_];
  std::lock_guard lock(shard.mu);
  const Rule& rule = shard.rule;
  const Slot* slot = shard.find(h);
  const int64_t tat = slot != nullptr ? std::max(slot->tat, now_ns) : now_ns;
  const int64_t wait = sub_saturated(tat, now_ns);
  Decision d;
  d.limit = rule.burst;
  if (wait > rule.tolerance) {
    d.reset_ns = wait;
    d.retry_after_ns = wait - rule.tolerance;
    return d;
  }
  d.allowed = true;
  d.reset_ns = sub_saturated(add_saturated(tat, rule.interval), now_ns);
  const int64_t left =
      rule.tolerance + rule.interval - std::min(d.reset_ns, rule.tolerance + rule.interval);
  d.remaining = std::min(static_cast<uint64_t>(left / rule.interval), rule.burst - 1);
  return d;
}

void Limiter::raise(std::string_view key, int64_t tat_ns, int64_t now_ns) {
  const uint64_t h = hash(key);
  Shard& shard = shards_[h & shard_mask_];
  std::lock_guard lock(shard.mu);
  if (Slot* slot = shard.find(h)) {
    slot->tat = std::max(slot->tat, tat_ns);
  } else if (tat_ns > now_ns) {  // (a TAT in the past is a full bucket: nothing to store)
    shard.insert(h, tat_ns, now_ns);
  }
}

void Limiter::set_limit(Limit limit) {
  std::lock_guard config_lock(limit_mu_);  // one reload at a time: shards never end up mixed
  limit_ = limit;
  const Rule rule = compile(limit);
  for (size_t i = 0; i <= shard_mask_; ++i) {
    std::lock_guard lock(shards_[i].mu);
    shards_[i].rule = rule;
  }
}

Limit Limiter::limit() const {
  std::lock_guard lock(limit_mu_);
  return limit_;
}

size_t Limiter::keys() const {
  size_t n = 0;
  for (size_t i = 0; i <= shard_mask_; ++i) {
    std::lock_guard lock(shards_[i].mu);
    n += shards_[i].size;
  }
  return n;
}

size_t Limiter::sweep(int64_t now_ns) {
  size_t n = 0;
  for (size_t i = 0; i <= shard_mask_; ++i) {
    std::lock_guard lock(shards_[i].mu);
    n += shards_[i].compact(now_ns, std::numeric_limits<size_t>::max());
  }
  return n;
}

uint64_t Limiter::evictions() const {
  uint64_t n = 0;
  for (size_t i = 0; i <= shard_mask_; ++i) {
    std::lock_guard lock(shards_[i].mu);
    n += shards_[i].evictions;
  }
  return n;
}

size_t Limiter::memory_bytes() const {
  size_t n = 0;
  for (size_t i = 0; i <= shard_mask_; ++i) {
    std::lock_guard lock(shards_[i].mu);
    n += shards_[i].slots.capacity() * sizeof(Slot);
  }
  return n;
}

}  // namespace sluice::ratelimit
