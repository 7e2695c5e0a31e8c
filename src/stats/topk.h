// The heaviest keys of a stream in bounded memory: "top clients" by requests and by bytes.
//
//   stats::TopK by_requests(64), by_bytes(64);   // once per process
//   by_requests.add(client_ip, 1);               // any thread, per exchange
//   by_bytes.add(client_ip, bytes_in + bytes_out);
//   for (const TopK::Item& i : by_requests.top(10)) ...   // the admin API
//
// Algorithm: Space-Saving (Metwally, Agrawal, El Abbadi, "Efficient Computation of Frequent and
// Top-k Elements in Data Streams", 2005), weighted. At most `capacity` keys are monitored, each
// with a count and an error. A monitored key's weight is added to its count; an unmonitored key
// replaces the key with the smallest count m, taking count m + weight and error m.
//
// Guarantees, with N = total() (the sum of all weights added) and k = capacity:
//   - count - error <= true weight of the key <= count (it overestimates by at most `error`);
//   - error <= min count <= N / k (the counts sum to exactly N);
//   - every key whose true weight exceeds N / k is monitored, so it is in top(k).
// A key's true weight is its weight since it was last put in, plus at most `error` before.
//
// Cost: add() is O(log k): an open-addressing index (linear probing, at most 1/2 full) finds the
// key, and a binary min-heap of counts finds the key to replace. No allocation once k keys are
// monitored, except a replacing key longer than the string it overwrites. Memory: k entries
// (a std::string, three integers) plus 2k..4k four-byte index slots and k heap slots, whatever
// the number of distinct keys.
//
// Thread safety: every member may be called from any thread; one mutex, held by add() for the
// O(log k) update above and by top() for a copy and a sort of at most k entries. Counts and total()
// saturate at UINT64_MAX instead of wrapping.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace sluice::stats {

class TopK {
 public:
  struct Item {
    std::string key;
    uint64_t count = 0;  // an overestimate of the key's weight...
    uint64_t error = 0;  // ... by at most this much
  };

  explicit TopK(size_t capacity);  // 0 is treated as 1
  ~TopK();
  TopK(const TopK&) = delete;
  TopK& operator=(const TopK&) = delete;

  // Adds `weight` to `key` (an empty key is a key). A weight of 0 changes nothing.
  void add(std::string_view key, uint64_t weight);
  // The min(n, size()) monitored keys with the largest counts, by count descending (then key).
  std::vector<Item> top(size_t n) const;
  uint64_t total() const;  // N: the sum of every weight added
  size_t size() const;     // keys monitored, at most capacity()
  size_t capacity() const { return capacity_; }
  void clear();

 private:
  struct Entry {
    std::string key;
    uint64_t hash = 0;
    uint64_t count = 0;
    uint64_t error = 0;
  };
  static constexpr uint32_t kEmpty = UINT32_MAX;

  // mu_ held for all of these.
  size_t find_slot(std::string_view key, uint64_t hash) const;  // its index slot, or kEmpty's
  void erase_slot(size_t slot);  // backward-shift deletion, keeping probe chains intact
  void insert_slot(uint32_t entry);
  void sift_down(size_t pos);  // heap_[pos]'s count grew
  void sift_up(size_t pos);    // heap_[pos]'s count is new (at the end of the heap)
  void swap_heap(size_t a, size_t b);
  bool less(size_t a, size_t b) const;  // heap_[a] before heap_[b]

  const size_t capacity_;
  mutable std::mutex mu_;
  uint64_t total_ = 0;
  std::vector<Entry> entries_;      // at most capacity_; never moved, indexed by entry id
  std::vector<uint32_t> heap_;      // entry ids, a min-heap by count
  std::vector<uint32_t> heap_pos_;  // entry id -> its position in heap_
  std::vector<uint32_t> index_;     // open addressing: entry id or kEmpty; size a power of 2
};

}  // namespace sluice::stats
