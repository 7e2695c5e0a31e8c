// round_robin: smooth weighted round robin, the NGINX algorithm. Each pick adds every eligible
// target's weight to its running score, takes the highest score and charges it the total, so
// over any window of sum(weights) picks target i comes up exactly weight_i times, interleaved
// (5,1,1 gives a a b a c a a) rather than in bursts.
#include "upstream/algorithms.h"

namespace sluice::upstream::detail {

namespace {

class RoundRobin final : public Balancer {
 public:
  explicit RoundRobin(const std::vector<uint32_t>& weights)
      : weights_(weights.begin(), weights.end()), current_(weights.size(), 0) {}

  std::optional<size_t> pick(const PickContext&, const std::vector<bool>& excluded) override {
    int64_t total = 0;
    std::optional<size_t> best;
    for (size_t i = 0; i < weights_.size(); ++i) {
      if (is_excluded(excluded, i)) continue;
      current_[i] += weights_[i];
      total += weights_[i];
      if (!best || current_[i] > current_[*best]) best = i;
    }
    if (best) current_[*best] -= total;
    return best;
  }

 private:
  std::vector<int64_t> weights_;
  std::vector<int64_t> current_;  // scores stay within ±sum(weights), so never overflow
};

}  // namespace

std::unique_ptr<Balancer> make_round_robin(const std::vector<uint32_t>& weights) {
  return std::make_unique<RoundRobin>(weights);
}

}  // namespace sluice::upstream::detail
