// A counter with one writer thread and any number of reader threads, without a locked instruction.
//
//   Counter c;              // in a block owned by one worker
//   c.add(1);               // worker thread only: a plain load, add and store
//   uint64_t v = c.get();   // any thread (the scraper)
//
// add() is a relaxed load followed by a relaxed store, not a fetch_add: on x86-64 and AArch64 it
// compiles to ordinary moves, where fetch_add would be a lock-prefixed (or LL/SC) instruction.
// That is only correct while a single thread writes the counter; two writers would lose counts
// (never corrupt memory). Readers see some recent value, never a torn one.
#pragma once

#include <atomic>
#include <cstdint>

namespace sluice::stats {

class Counter {
 public:
  void add(uint64_t n) noexcept {
    value_.store(value_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  // The same, and every write this thread made before it is visible to a reader whose
  // get_acquire() sees the new value.
  void add_release(uint64_t n) noexcept {
    value_.store(value_.load(std::memory_order_relaxed) + n, std::memory_order_release);
  }
  // Writer thread only.
  void reset() noexcept { value_.store(0, std::memory_order_relaxed); }
  uint64_t get() const noexcept { return value_.load(std::memory_order_relaxed); }
  uint64_t get_acquire() const noexcept { return value_.load(std::memory_order_acquire); }

 private:
  std::atomic<uint64_t> value_{0};
};

}  // namespace sluice::stats
