// maglev: the lookup table of Maglev (Eisenbud et al., NSDI 2016). Each target walks its own
// permutation of the M slots (offset and skip from two hashes of its name; M prime, so any skip
// visits every slot) and, taking turns, claims its next free slot until the table is full. A key
// goes to table[hash % M]: one array read per pick, near-perfect balance, and when a target goes
// away only a little more than its own share of keys moves.
//
// Weights follow Envoy's variant: in round r a target of weight w takes a turn when
// r * w >= its turns so far * max weight, so it claims slots in proportion to w. Targets take
// turns in the order of their names, so the table depends on the set of targets, not their order.
//
// An excluded target's keys fall through to the owners of the following slots, in order: stable
// per key, so a retry always walks the same list, and spread across targets by table share.
#include <algorithm>

#include "upstream/algorithms.h"

namespace sluice::upstream::detail {

namespace {

// Table sizes: primes, the smallest at least 100 times the targets (the paper's advice for
// keeping every target's share within about 1% of its weight).
constexpr uint64_t k_table_sizes[] = {65'537, 131'071, 262'147, 524'287, 1'048'573, 2'097'143};

class Maglev final : public Balancer {
 public:
  Maglev(const std::vector<uint32_t>& weights, const std::vector<std::string>& names)
      : targets_(weights.size()) {
    if (weights.empty()) return;
    uint64_t m = k_table_sizes[std::size(k_table_sizes) - 1];
    for (uint64_t size : k_table_sizes) {
      if (size >= 100 * weights.size()) {
        m = size;
        break;
      }
    }
    struct Entry {
      uint32_t target;
      uint64_t offset, skip;
      uint64_t next = 0;   // position in this target's permutation
      uint64_t turns = 0;  // turns taken so far, times the max weight
    };
    std::vector<Entry> entries;
    for (size_t i = 0; i < weights.size(); ++i) {
      entries.push_back(
          {uint32_t(i), hash_bytes(names[i], 1) % m, hash_bytes(names[i], 2) % (m - 1) + 1});
    }
    std::sort(entries.begin(), entries.end(),
              [&](const Entry& a, const Entry& b) { return names[a.target] < names[b.target]; });
    const uint64_t max_weight = *std::max_element(weights.begin(), weights.end());

    constexpr uint32_t k_free = UINT32_MAX;
    table_.assign(m, k_free);
    uint64_t filled = 0;
    for (uint64_t round = 1; filled < m; ++round) {
      for (Entry& e : entries) {
        if (filled == m) break;
        if (round * weights[e.target] < e.turns) continue;
        e.turns += max_weight;
        uint64_t slot = (e.offset + e.next * e.skip) % m;
        while (table_[slot] != k_free) slot = (e.offset + ++e.next * e.skip) % m;
        table_[slot] = e.target;
        ++e.next;
        ++filled;
      }
    }
  }

  std::optional<size_t> pick(const PickContext& ctx, const std::vector<bool>& excluded) override {
    if (table_.empty()) return std::nullopt;
    const size_t slot = ctx.hash % table_.size();
    if (!is_excluded(excluded, table_[slot])) return table_[slot];
    size_t left = 0;
    for (size_t i = 0; i < targets_; ++i) left += !is_excluded(excluded, i);
    if (left == 0) return std::nullopt;
    for (size_t step = 1; step < table_.size(); ++step) {
      const uint32_t owner = table_[(slot + step) % table_.size()];
      if (!is_excluded(excluded, owner)) return owner;
    }
    // Only a target too light to own a slot is left (weights 1 : 100,000 and up).
    for (size_t i = 0; i < targets_; ++i) {
      if (!is_excluded(excluded, i)) return i;
    }
    return std::nullopt;
  }

 private:
  size_t targets_;
  std::vector<uint32_t> table_;  // slot -> target
};

}  // namespace

std::unique_ptr<Balancer> make_maglev(const std::vector<uint32_t>& weights,
                                      const std::vector<std::string>& names) {
  return std::make_unique<Maglev>(weights, names);
}

}  // namespace sluice::upstream::detail
