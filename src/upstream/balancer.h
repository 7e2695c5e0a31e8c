// Choosing a target of an upstream for one attempt.
//
//   // One per worker per upstream, rebuilt when the config changes: no locks.
//   auto lb = make_balancer(Algorithm::RingHash, weights, addresses);
//   PickContext ctx{.hash = hash_key(client_ip), .load = &in_flight, .random = rng()};
//   std::vector<bool> excluded(targets.size());   // targets already tried by this exchange
//   while (auto i = lb->pick(ctx, excluded)) {
//     if (connect_to(targets[*i])) break;
//     excluded[*i] = true;                          // retry: the next target in preference order
//   }
//
// As in Pingora, a balancer yields targets in its preference order: a retry marks the failed
// target in `excluded` and picks again with the same context, so successive attempts walk one
// list (for the hashes: the key's next targets on the ring / in the table) instead of jumping.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sluice::upstream {

// What one pick may look at. Cheap to build per attempt; the pointer is not owned.
struct PickContext {
  // Hash of the request's `hash_on` key (hash_key() below); ring_hash and maglev only.
  uint64_t hash = 0;
  // In-flight requests per target, indexed like the targets; least_conn and p2c only. Null (or a
  // shorter vector) counts as 0.
  const std::vector<uint32_t>* load = nullptr;
  // A fresh uniformly random number for every pick; random and p2c only.
  uint64_t random = 0;
};

// The `balance:` values of an upstream (SPEC.md section 2).
enum class Algorithm { RoundRobin, LeastConn, P2C, RingHash, Maglev, Random };

// "round_robin" "least_conn" "p2c" "ring_hash" "maglev" "random"; nullopt for anything else.
std::optional<Algorithm> parse_algorithm(std::string_view name);
std::string_view algorithm_name(Algorithm a);

class Balancer {
 public:
  virtual ~Balancer() = default;
  // Next target index not set in `excluded` (same size as the target list; missing entries count
  // as not excluded), or nullopt when every target is excluded. Runs on one worker thread;
  // implementations keep per-worker state and never allocate here.
  virtual std::optional<size_t> pick(const PickContext& ctx, const std::vector<bool>& excluded) = 0;
};

// weights[i] = weight of target i (>= 1; 0 is treated as 1); names[i] = a stable identity of
// target i (its address as written in the config, distinct within the upstream) used by the
// consistent hashes so that a target keeps its keys when others come and go, whatever the order
// of the list. A missing name falls back to the decimal index (stable only while the order is).
//
//   round_robin  smooth weighted round robin (NGINX): exact ratios over every window of
//                sum(weights) picks, interleaved.
//   least_conn   lowest load/weight; ties go round robin (weighted) so idle traffic still spreads.
//   p2c          two distinct weighted-random candidates, the lower load/weight wins.
//   ring_hash    Ketama-style ring, 1024 points per unit of weight, capped below 100k points.
//   maglev       Maglev lookup table (65537 slots for up to 655 targets), weighted as in Envoy.
//   random       weighted random.
//
// Building is O(targets) except for the hashes, a few ms on the calling thread (-O2, 2.6 GHz):
// ring_hash ~1.3 ms for 10 targets, ~8 ms at the 100k-point cap; maglev ~2 ms.
std::unique_ptr<Balancer> make_balancer(Algorithm a, const std::vector<uint32_t>& weights,
                                        const std::vector<std::string>& names);

// A fast, well-mixed 64-bit hash of a balancing key (client IP, header or cookie value ...).
// Stable across runs, processes and hosts, so every sluice instance maps a key alike.
uint64_t hash_key(std::string_view key);

// Weighted choice for a route's `split:` given a uniformly random number.
size_t pick_split(const std::vector<uint32_t>& weights, uint64_t random);

}  // namespace sluice::upstream
