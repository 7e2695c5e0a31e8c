#include "upstream/balancer.h"

namespace sluice::upstream {

WeightedRoundRobin::WeightedRoundRobin(std::vector<uint32_t> weights)
    : weights_(weights.begin(), weights.end()), current_(weights.size(), 0) {}

std::optional<size_t> WeightedRoundRobin::pick(const std::vector<bool>& excluded) {
  int64_t total = 0;
  std::optional<size_t> best;
  for (size_t i = 0; i < weights_.size(); ++i) {
    if (i < excluded.size() && excluded[i]) continue;
    current_[i] += weights_[i];
    total += weights_[i];
    if (!best || current_[i] > current_[*best]) best = i;
  }
  if (best) current_[*best] -= total;
  return best;
}

std::unique_ptr<Balancer> make_balancer(const config::Upstream& upstream) {
  std::vector<uint32_t> weights;
  weights.reserve(upstream.targets.size());
  for (const auto& t : upstream.targets) weights.push_back(t.weight);
  return std::make_unique<WeightedRoundRobin>(std::move(weights));
}

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

}  // namespace sluice::upstream
