// The balancing algorithms behind make_balancer(), one file each, and the helpers they share.
// Internal to src/upstream/: everything else goes through balancer.h.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "upstream/balancer.h"

namespace sluice::upstream::detail {

// Each takes the weights already clamped to >= 1 and, for the hashes, one distinct name per target.
std::unique_ptr<Balancer> make_round_robin(const std::vector<uint32_t>& weights);
std::unique_ptr<Balancer> make_least_conn(const std::vector<uint32_t>& weights);
std::unique_ptr<Balancer> make_p2c(const std::vector<uint32_t>& weights);
std::unique_ptr<Balancer> make_ring_hash(const std::vector<uint32_t>& weights,
                                         const std::vector<std::string>& names);
std::unique_ptr<Balancer> make_maglev(const std::vector<uint32_t>& weights,
                                      const std::vector<std::string>& names);
std::unique_ptr<Balancer> make_random(const std::vector<uint32_t>& weights);

// The splitmix64 finaliser: a bijection on 64 bits with full avalanche.
constexpr uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

// hash_key() with a seed, for the independent hashes Maglev needs per name.
uint64_t hash_bytes(std::string_view bytes, uint64_t seed);

inline bool is_excluded(const std::vector<bool>& excluded, size_t i) {
  return i < excluded.size() && excluded[i];
}

inline uint64_t load_of(const PickContext& ctx, size_t i) {
  return ctx.load != nullptr && i < ctx.load->size() ? (*ctx.load)[i] : 0;
}

// load_a / weight_a < load_b / weight_b without division (both products fit in 64 bits).
inline bool lighter(uint64_t load_a, uint64_t weight_a, uint64_t load_b, uint64_t weight_b) {
  return load_a * weight_b < load_b * weight_a;
}

// The weighted choice among targets not in `excluded`: `r` modulo their total weight, walked
// through the list, skipping `skip` too (pass SIZE_MAX for none). `total` = that total (> 0).
size_t weighted_choice(const std::vector<uint32_t>& weights, const std::vector<bool>& excluded,
                       size_t skip, uint64_t total, uint64_t r);

}  // namespace sluice::upstream::detail
