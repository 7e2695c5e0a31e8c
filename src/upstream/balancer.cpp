#include "upstream/balancer.h"

#include <algorithm>
#include <string>
#include <utility>

#include "upstream/algorithms.h"

namespace sluice::upstream {

namespace {

constexpr std::pair<Algorithm, std::string_view> k_algorithm_names[] = {
    {Algorithm::RoundRobin, "round_robin"},
    {Algorithm::LeastConn, "least_conn"},
    {Algorithm::P2C, "p2c"},
    {Algorithm::RingHash, "ring_hash"},
    {Algorithm::Maglev, "maglev"},
    {Algorithm::Random, "random"},
};

// Little-endian whatever the host, so that hashes agree between machines.
uint64_t read_le(const char* p, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; ++i) v |= uint64_t(static_cast<unsigned char>(p[i])) << (8 * i);
  return v;
}

}  // namespace

std::optional<Algorithm> parse_algorithm(std::string_view name) {
  for (const auto& [a, n] : k_algorithm_names) {
    if (n == name) return a;
  }
  return std::nullopt;
}

std::string_view algorithm_name(Algorithm a) {
  for (const auto& [x, n] : k_algorithm_names) {
    if (x == a) return n;
  }
  return "unknown";
}

std::unique_ptr<Balancer> make_balancer(Algorithm a, const std::vector<uint32_t>& weights,
                                        const std::vector<std::string>& names) {
  std::vector<uint32_t> w(weights);
  for (uint32_t& x : w) x = std::max<uint32_t>(x, 1);
  std::vector<std::string> ids(names.begin(),
                               names.begin() + std::min(names.size(), weights.size()));
  for (size_t i = ids.size(); i < weights.size(); ++i) ids.push_back(std::to_string(i));
  switch (a) {
    case Algorithm::RoundRobin:
      return detail::make_round_robin(w);
    case Algorithm::LeastConn:
      return detail::make_least_conn(w);
    case Algorithm::P2C:
      return detail::make_p2c(w);
    case Algorithm::RingHash:
      return detail::make_ring_hash(w, ids);
    case Algorithm::Maglev:
      return detail::make_maglev(w, ids);
    case Algorithm::Random:
      return detail::make_random(w);
  }
  return detail::make_round_robin(w);
}

uint64_t hash_key(std::string_view key) { return detail::hash_bytes(key, 0); }

size_t pick_split(const std::vector<uint32_t>& weights, uint64_t random) {
  uint64_t total = 0;
  for (uint32_t w : weights) total += w;
  if (total == 0) return 0;
  uint64_t r = random % total;
  for (size_t i = 0; i < weights.size(); ++i) {
    if (r < weights[i]) return i;
    r -= weights[i];
  }
  return weights.size() - 1;
}

namespace detail {

// Eight bytes at a time through the splitmix64 finaliser; the length is folded into the start
// state so that keys differing only by trailing zero bytes still differ.
uint64_t hash_bytes(std::string_view bytes, uint64_t seed) {
  uint64_t h = mix64(seed ^ 0x243f6a8885a308d3ULL) + bytes.size() * 0x9e3779b97f4a7c15ULL;
  size_t i = 0;
  for (; i + 8 <= bytes.size(); i += 8) h = mix64(h ^ read_le(bytes.data() + i, 8));
  return mix64(h ^ read_le(bytes.data() + i, bytes.size() - i));
}

size_t weighted_choice(const std::vector<uint32_t>& weights, const std::vector<bool>& excluded,
                       size_t skip, uint64_t total, uint64_t r) {
  r %= total;
  size_t last = 0;
  for (size_t i = 0; i < weights.size(); ++i) {
    if (i == skip || is_excluded(excluded, i)) continue;
    if (r < weights[i]) return i;
    r -= weights[i];
    last = i;
  }
  return last;  // unreachable when `total` is right
}

}  // namespace detail

}  // namespace sluice::upstream
