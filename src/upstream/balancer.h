// Choosing a target of an upstream for one attempt.
//
//   auto lb = make_balancer(upstream_config);       // one per worker per upstream: no locks
//   std::vector<bool> excluded(n);                   // targets already tried by this exchange
//   if (auto i = lb->pick(excluded)) connect_to(targets[*i]);
//
// Runs on the worker thread that owns it. A retry marks the failed target in `excluded` and
// picks again, so successive attempts walk the targets in the balancer's preference order.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "config/config.h"

namespace sluice::upstream {

class Balancer {
 public:
  virtual ~Balancer() = default;
  // The next target index, skipping those set in `excluded` (same size as the target list);
  // nullopt when every target is excluded.
  virtual std::optional<size_t> pick(const std::vector<bool>& excluded) = 0;
};

// Smooth weighted round robin (the NGINX algorithm): over any window of sum(weights) picks,
// target i is chosen exactly weight_i times, interleaved rather than in bursts.
class WeightedRoundRobin final : public Balancer {
 public:
  explicit WeightedRoundRobin(std::vector<uint32_t> weights);
  std::optional<size_t> pick(const std::vector<bool>& excluded) override;

 private:
  std::vector<int64_t> weights_;
  std::vector<int64_t> current_;
};

std::unique_ptr<Balancer> make_balancer(const config::Upstream& upstream);

// Weighted choice for a route's `split:` given a uniformly random number.
size_t pick_split(const std::vector<uint32_t>& weights, uint64_t random);

}  // namespace sluice::upstream
