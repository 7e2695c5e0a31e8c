// The process-wide response cache shared by every worker thread, and request coalescing.
//
//   // Once per process (kept across reloads):
//   cache::Store store(512 << 20);   // LRU by bytes
//   cache::Inflight inflight;
//
//   // Per GET/HEAD request on a caching route, on its worker thread (rules from policy.h):
//   std::string key = cache::Store::make_key(host, path, query, consumer_or_empty);
//   auto header = [&](std::string_view name) -> std::optional<std::string_view> { ... };
//   if (auto hit = store.lookup(key, header); hit && hit->satisfies(rules, now_ns)) ...  // hit
//   if (inflight.join(key, wake_me)) {  // the leader: go upstream, maybe store, then
//     store.insert(key, std::make_shared<const cache::Entry>(...));
//     inflight.complete(key);           // on every path, errors included
//   } else { ... }                      // wait for wake_me, then look up again
//
// Entries are immutable once inserted and handed out as shared_ptr<const Entry>: a reader keeps
// its entry (and body) alive after it was replaced or evicted, and never copies it under a lock.
//
// Thread safety: every member of Store and Inflight may be called from any thread at once.
// A Store has one mutex, held by lookup()/insert()/erase() for a hash-table probe, a scan of at
// most kMaxVariants variants and a list splice (O(1) in the number of entries), and by
// purge_prefix() for one pass over the keys. Entries dropped by an operation are released after
// the mutex is unlocked, so freeing a large body never stalls other workers. Inflight has its own
// mutex; it never calls out while holding it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "cache/policy.h"

namespace sluice::cache {

using HeaderPairs = std::vector<std::pair<std::string, std::string>>;

// A request header by name (any case given; look it up case-insensitively): its value, or nullopt
// when the request has none. Several lines of one header should come as one comma-joined value.
using RequestHeader = std::function<std::optional<std::string_view>(std::string_view name)>;

// One stored response (one variant of a cache key).
struct Entry {
  // Fixed cost charged per entry besides its strings (see size()).
  static constexpr size_t kPairOverhead = sizeof(std::pair<std::string, std::string>);

  int status = 200;
  std::string reason;
  HeaderPairs headers;  // as to be sent: no hop-by-hop headers, no Age
  std::string body;
  int64_t stored_at_ns = 0;   // the caller's clock when the response arrived
  int64_t initial_age_s = 0;  // the upstream's Age header when stored
  int64_t ttl_s = 0;
  int64_t stale_if_error_s = 0;
  HeaderPairs vary_values;  // (lower-case name, request value or "" when absent): this variant

  // Bytes of memory this entry stands for: sizeof(Entry), plus the sizes (not capacities) of
  // body, reason, each header name and value and each vary name and value, plus kPairOverhead
  // per header and per vary value. The Store adds the key and its own bookkeeping (charge()).
  size_t size() const;
  // initial_age_s + the whole seconds since stored_at_ns; never negative (a clock reading before
  // stored_at_ns counts as no time), saturating.
  int64_t age_s(int64_t now_ns) const;
  bool fresh(int64_t now_ns) const;            // age < ttl
  bool usable_if_error(int64_t now_ns) const;  // age < ttl + stale_if_error
  // Fresh, and within the request's max-age and min-fresh: may answer the request.
  bool satisfies(const LookupRules& rules, int64_t now_ns) const;
};

// The vary_values of an Entry for a request: one (name, value or "") per name of
// StoreDecision::vary, in that order.
HeaderPairs select_vary_values(const std::vector<std::string>& vary_names,
                               const RequestHeader& header);

// Hashes keys with a per-table random seed, so clients cannot pick paths offline that all land
// in one hash bucket (std::hash<std::string> is unseeded).
struct SeededHash {
  SeededHash();  // a random seed
  size_t operator()(const std::string& key) const;
  uint64_t seed;
};

class Store {
 public:
  // Most variants kept per key; a further one replaces the key's least recently used variant
  // (a `Vary: User-Agent` upstream cannot make one key's lookup scan thousands of variants).
  static constexpr size_t kMaxVariants = 32;
  // Bytes charged per entry for the Store's bookkeeping: the LRU list node, the key's hash-table
  // node and variant slot, the shared_ptr control block, and allocator headers for those.
  static constexpr size_t kSlotOverhead = 200;

  // Keeps at most max_bytes of charge(); an entry whose charge exceeds max_object() is refused.
  explicit Store(size_t max_bytes);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  size_t max_bytes() const { return max_bytes_; }
  size_t max_object() const;  // min(max_bytes / 8, 64 MiB)

  // The cache key of a request. Only GET responses are stored, so the method is not part of it
  // (a HEAD request may be answered from a GET's entry, without the body). The host is
  // lower-cased and loses its port ("Example.COM:8080" -> "example.com", "[::1]:80" -> "[::1]");
  // path and query are taken as given (normalised by the caller); an empty query is the same as
  // none; `consumer` is empty except on per_consumer routes. The layout is length-prefixed
  // ("11:example.com4:/a/b3:x=10:"), so no field's content can make two requests share a key.
  static std::string make_key(std::string_view host, std::string_view path, std::string_view query,
                              std::string_view consumer);
  // What an entry costs under `key`: entry.size() + key.size() + kSlotOverhead.
  static size_t charge(const std::string& key, const Entry& entry);

  // The variant of `key` whose vary_values all match the request: `header(name)` equal to the
  // stored value, where an absent header matches a stored "". Stale or not (the caller checks
  // fresh() or satisfies()). If several match (the upstream changed its Vary), the one stored
  // last (greatest stored_at_ns). Marks it recently used. nullptr when there is none.
  // `header` is called under the Store's mutex: it must be quick and not use the Store.
  std::shared_ptr<const Entry> lookup(const std::string& key, const RequestHeader& header);

  // Stores `entry` under `key`, replacing the variant with equal vary_values, then evicts least
  // recently used entries until bytes() <= max_bytes(). Returns false, and stores nothing, for
  // a null entry or one whose charge() exceeds max_object(); the variant it would have replaced
  // is removed all the same, since it is older than what the upstream just sent.
  bool insert(const std::string& key, std::shared_ptr<const Entry> entry);

  void erase(const std::string& key);  // every variant of `key`

  // Removes every entry whose host is `host` (normalised as in make_key; empty = any host) and
  // whose path starts with `path_prefix` on a segment boundary: "/a" purges "/a", "/a/b" and
  // "/a?x", not "/ab"; "/a/" purges "/a/b", not "/a"; "" and "/" purge every path. Returns how
  // many entries (variants) it removed. Holds the mutex for one pass over all keys.
  size_t purge_prefix(std::string_view host, std::string_view path_prefix);

  size_t bytes() const;        // sum of charge() over the entries held
  size_t entries() const;      // variants held, over all keys
  uint64_t evictions() const;  // entries dropped to make room (not replaced/erased/purged ones)

 private:
  struct Slot {
    const std::string* key;  // the hash table's copy of the key (node-stable)
    std::shared_ptr<const Entry> entry;
    size_t charge;
    uint64_t last_used;  // tick_ when inserted or last found; picks the variant to drop
  };
  using Lru = std::list<Slot>;                                // front = most recently used
  using Dropped = std::vector<std::shared_ptr<const Entry>>;  // released after unlocking

  void unlink(Lru::iterator slot, Dropped& dropped);  // mu_ held

  const size_t max_bytes_;
  mutable std::mutex mu_;  // guards everything below
  Lru lru_;
  std::unordered_map<std::string, std::vector<Lru::iterator>, SeededHash> index_;
  size_t bytes_ = 0;
  uint64_t tick_ = 0;
  uint64_t evictions_ = 0;
};

// Request coalescing: concurrent misses for one key make one upstream request.
class Inflight {
 public:
  Inflight();
  ~Inflight();
  Inflight(const Inflight&) = delete;
  Inflight& operator=(const Inflight&) = delete;

  // The first caller for `key` becomes its leader and gets true: it must call complete(key)
  // exactly once, whatever happens (success, error, cancellation). Later callers, until then,
  // get false, and their `wake` is called exactly once, from the thread that calls complete(),
  // after the leader finished. They then look the cache up again and go upstream themselves if
  // it has nothing usable (the leader's response may not have been storable, or may be another
  // variant). `wake` must not throw and should only hand off to its own worker (e.g. post to
  // its executor): it runs on the leader's thread.
  bool join(const std::string& key, std::function<void()> wake);
  // Ends `key`'s round: the next join() makes a new leader. Calls the waiters' wake, in the
  // order they joined, after releasing the mutex. Does nothing for a key without a leader.
  void complete(const std::string& key);
  size_t waiting(const std::string& key) const;  // waiters of the current round; for tests
  size_t keys() const;                           // keys with a leader

 private:
  mutable std::mutex mu_;  // guards waiters_
  std::unordered_map<std::string, std::vector<std::function<void()>>, SeededHash> waiters_;
};

}  // namespace sluice::cache
