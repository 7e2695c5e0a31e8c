// ring_hash: consistent hashing on a Ketama-style ring. Target i owns points hash("name#0"),
// hash("name#1") ... in number proportional to its weight; a key goes to the first point at or
// clockwise after its hash. A target's points depend only on its own name and weight, so removing
// a target moves exactly the keys it had (while the ring is not capped, below) and adding it back
// restores the previous mapping.
//
// 1024 points per unit of weight: a target's share of the ring varies by about 1/sqrt(points)
// (Ketama's 160 gives ±8% per target, 1024 gives ±3%). The ring is capped below 100k points
// (1.2 MB) by scaling every target down alike once sum(weights) exceeds 97; a capped ring still
// maps a given set of targets the same way, but a change of the set also moves some keys between
// the remaining targets.
#include <algorithm>
#include <charconv>
#include <numeric>

#include "upstream/algorithms.h"

namespace sluice::upstream::detail {

namespace {

constexpr uint64_t k_points_per_weight = 1024;
constexpr uint64_t k_max_points = 99'999;

class RingHash final : public Balancer {
 public:
  RingHash(const std::vector<uint32_t>& weights, const std::vector<std::string>& names)
      : targets_(weights.size()) {
    const uint64_t total_weight = std::accumulate(weights.begin(), weights.end(), uint64_t{0});
    const bool capped = total_weight * k_points_per_weight > k_max_points;
    struct Point {
      uint64_t hash;
      uint32_t target;
    };
    std::vector<Point> ring;
    ring.reserve(capped ? k_max_points + weights.size() : total_weight * k_points_per_weight);
    for (size_t i = 0; i < weights.size(); ++i) {
      const uint64_t n = capped ? std::max<uint64_t>(1, weights[i] * k_max_points / total_weight)
                                : weights[i] * k_points_per_weight;
      std::string point = names[i] + '#';  // "name#j", built in place: no allocation per point
      const size_t prefix = point.size();
      for (uint64_t j = 0; j < n; ++j) {
        char digits[20];
        const auto end = std::to_chars(digits, digits + sizeof digits, j).ptr;
        point.replace(prefix, std::string::npos, digits, size_t(end - digits));
        ring.push_back({hash_key(point), uint32_t(i)});
      }
    }
    // Ties (a 64-bit collision) go by name, so the ring does not depend on the order of targets.
    std::sort(ring.begin(), ring.end(), [&](const Point& a, const Point& b) {
      return a.hash != b.hash ? a.hash < b.hash : names[a.target] < names[b.target];
    });
    hashes_.reserve(ring.size());
    owners_.reserve(ring.size());
    for (const Point& p : ring) {
      hashes_.push_back(p.hash);
      owners_.push_back(p.target);
    }
  }

  std::optional<size_t> pick(const PickContext& ctx, const std::vector<bool>& excluded) override {
    if (hashes_.empty()) return std::nullopt;
    size_t at =
        size_t(std::lower_bound(hashes_.begin(), hashes_.end(), ctx.hash) - hashes_.begin());
    if (at == hashes_.size()) at = 0;
    if (!is_excluded(excluded, owners_[at])) return owners_[at];
    // A retry: walk on clockwise to the next target not excluded (after making sure there is one,
    // so that the walk is bounded by a few points per excluded target, not by the ring).
    size_t left = 0;
    for (size_t i = 0; i < targets_; ++i) left += !is_excluded(excluded, i);
    if (left == 0) return std::nullopt;
    for (size_t step = 1; step < hashes_.size(); ++step) {
      const uint32_t owner = owners_[(at + step) % hashes_.size()];
      if (!is_excluded(excluded, owner)) return owner;
    }
    return std::nullopt;  // unreachable: every target has at least one point
  }

 private:
  size_t targets_;
  std::vector<uint64_t> hashes_;  // sorted; split from owners_ so the binary search stays dense
  std::vector<uint32_t> owners_;  // owners_[k] = target of the point hashes_[k]
};

}  // namespace

std::unique_ptr<Balancer> make_ring_hash(const std::vector<uint32_t>& weights,
                                         const std::vector<std::string>& names) {
  return std::make_unique<RingHash>(weights, names);
}

}  // namespace sluice::upstream::detail
