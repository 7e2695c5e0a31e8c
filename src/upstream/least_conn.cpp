// least_conn: the target with the fewest in-flight requests relative to its weight
// (load / weight, compared by cross-multiplication). Ties, which are the rule when traffic is
// light and every load is 0, are broken by smooth weighted round robin among the tied targets,
// as NGINX does: equal weights rotate 0, 1, 2, 0 ... rather than always starting at target 0,
// and unequal weights still get their share when nothing is in flight.
#include "upstream/algorithms.h"

namespace sluice::upstream::detail {

namespace {

class LeastConn final : public Balancer {
 public:
  explicit LeastConn(const std::vector<uint32_t>& weights)
      : weights_(weights), current_(weights.size(), 0) {}

  std::optional<size_t> pick(const PickContext& ctx, const std::vector<bool>& excluded) override {
    std::optional<size_t> least;
    for (size_t i = 0; i < weights_.size(); ++i) {
      if (is_excluded(excluded, i)) continue;
      if (!least || lighter(load_of(ctx, i), weights_[i], load_of(ctx, *least), weights_[*least]))
        least = i;
    }
    if (!least) return std::nullopt;
    const uint64_t least_load = load_of(ctx, *least);
    const uint64_t least_weight = weights_[*least];
    int64_t total = 0;
    size_t best = *least;
    for (size_t i = *least; i < weights_.size(); ++i) {  // no tied target comes before `least`
      if (is_excluded(excluded, i)) continue;
      if (load_of(ctx, i) * least_weight != least_load * weights_[i]) continue;
      current_[i] += weights_[i];
      total += weights_[i];
      if (current_[i] > current_[best]) best = i;
    }
    current_[best] -= total;
    return best;
  }

 private:
  std::vector<uint32_t> weights_;
  std::vector<int64_t> current_;  // round-robin scores for breaking ties
};

}  // namespace

std::unique_ptr<Balancer> make_least_conn(const std::vector<uint32_t>& weights) {
  return std::make_unique<LeastConn>(weights);
}

}  // namespace sluice::upstream::detail
