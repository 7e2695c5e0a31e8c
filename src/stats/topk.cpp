#include "stats/topk.h"

#include <algorithm>
#include <bit>
#include <functional>
#include <utility>

namespace sluice::stats {

namespace {

uint64_t saturating_add(uint64_t a, uint64_t b) { return a > UINT64_MAX - b ? UINT64_MAX : a + b; }

}  // namespace

TopK::TopK(size_t capacity)
    : capacity_(std::clamp<size_t>(capacity, 1, UINT32_MAX / 4)),
      index_(std::bit_ceil(2 * capacity_), kEmpty) {
  entries_.reserve(capacity_);
  heap_.reserve(capacity_);
  heap_pos_.reserve(capacity_);
}

TopK::~TopK() = default;

void TopK::add(std::string_view key, uint64_t weight) {
  if (weight == 0) return;
  const uint64_t hash = std::hash<std::string_view>{}(key);
  std::lock_guard lock(mu_);
  total_ = saturating_add(total_, weight);
  const size_t slot = find_slot(key, hash);
  if (index_[slot] != kEmpty) {  // monitored: count it
    Entry& e = entries_[index_[slot]];
    e.count = saturating_add(e.count, weight);
    sift_down(heap_pos_[index_[slot]]);
    return;
  }
  if (entries_.size() < capacity_) {  // room left: monitor it exactly
    const auto id = static_cast<uint32_t>(entries_.size());
    entries_.push_back(Entry{.key = std::string(key), .hash = hash, .count = weight, .error = 0});
    index_[slot] = id;
    heap_.push_back(id);
    heap_pos_.push_back(static_cast<uint32_t>(heap_.size() - 1));
    sift_up(heap_.size() - 1);
    return;
  }
  // Full: the key takes the place of the smallest count m, inheriting m as its possible error.
  const uint32_t id = heap_[0];
  Entry& e = entries_[id];
  erase_slot(find_slot(e.key, e.hash));
  const uint64_t m = e.count;
  e.key.assign(key);
  e.hash = hash;
  e.error = m;
  e.count = saturating_add(m, weight);
  insert_slot(id);
  sift_down(0);
}

std::vector<TopK::Item> TopK::top(size_t n) const {
  std::vector<Item> items;
  {
    std::lock_guard lock(mu_);
    items.reserve(entries_.size());
    for (const Entry& e : entries_) items.push_back(Item{e.key, e.count, e.error});
  }
  n = std::min(n, items.size());
  const auto by_count = [](const Item& a, const Item& b) {
    return a.count != b.count ? a.count > b.count : a.key < b.key;
  };
  std::partial_sort(items.begin(), items.begin() + static_cast<ptrdiff_t>(n), items.end(),
                    by_count);
  items.resize(n);
  return items;
}

uint64_t TopK::total() const {
  std::lock_guard lock(mu_);
  return total_;
}

size_t TopK::size() const {
  std::lock_guard lock(mu_);
  return entries_.size();
}

void TopK::clear() {
  std::lock_guard lock(mu_);
  total_ = 0;
  entries_.clear();
  heap_.clear();
  heap_pos_.clear();
  std::fill(index_.begin(), index_.end(), kEmpty);
}

size_t TopK::find_slot(std::string_view key, uint64_t hash) const {
  const size_t mask = index_.size() - 1;
  for (size_t i = hash & mask;; i = (i + 1) & mask) {  // ends: the index is at most half full
    const uint32_t id = index_[i];
    if (id == kEmpty || (entries_[id].hash == hash && entries_[id].key == key)) return i;
  }
}

void TopK::insert_slot(uint32_t entry) {
  const size_t mask = index_.size() - 1;
  size_t i = entries_[entry].hash & mask;
  while (index_[i] != kEmpty) i = (i + 1) & mask;
  index_[i] = entry;
}

void TopK::erase_slot(size_t hole) {
  const size_t mask = index_.size() - 1;
  for (size_t j = (hole + 1) & mask; index_[j] != kEmpty; j = (j + 1) & mask) {
    // The entry at j may fill the hole unless its home slot lies cyclically in (hole, j]: then
    // a lookup starting at home would no longer reach it.
    const size_t home = entries_[index_[j]].hash & mask;
    if (((j - home) & mask) >= ((j - hole) & mask)) {
      index_[hole] = index_[j];
      hole = j;
    }
  }
  index_[hole] = kEmpty;
}

bool TopK::less(size_t a, size_t b) const {
  return entries_[heap_[a]].count < entries_[heap_[b]].count;
}

void TopK::swap_heap(size_t a, size_t b) {
  std::swap(heap_[a], heap_[b]);
  heap_pos_[heap_[a]] = static_cast<uint32_t>(a);
  heap_pos_[heap_[b]] = static_cast<uint32_t>(b);
}

void TopK::sift_down(size_t pos) {
  const size_t n = heap_.size();
  for (;;) {
    size_t smallest = pos;
    const size_t left = 2 * pos + 1, right = left + 1;
    if (left < n && less(left, smallest)) smallest = left;
    if (right < n && less(right, smallest)) smallest = right;
    if (smallest == pos) return;
    swap_heap(pos, smallest);
    pos = smallest;
  }
}

void TopK::sift_up(size_t pos) {
  while (pos > 0) {
    const size_t parent = (pos - 1) / 2;
    if (!less(pos, parent)) return;
    swap_heap(pos, parent);
    pos = parent;
  }
}

}  // namespace sluice::stats
